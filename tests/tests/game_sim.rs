//! game-sim's tools against the test instance: `load` produces what its summary says, each
//! record keyed by its player and decodable through the registry; `scenario` signs a real
//! user in through the gateway, reads an event and produces the activity its condition asks
//! for, then waits until the event service reports the condition met.

use contracts::topics::USER_ACTIVITY;
use contracts::{ActivityType, UserActivityEvent};
use e2e_tests::{Api, binary, game_sim};
use messaging::SchemaRegistry;
use mongo_kit::mongodb::bson::DateTime;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

struct Record {
    key: String,
    message_id: Option<String>,
    partition: i32,
    offset: i64,
    event: UserActivityEvent,
}

/// Every record of `game.user-activity` (as of now) whose key `keep` selects, decoded through
/// the registry. Reads with assigned partitions and commits nothing.
async fn read_activity(keep: impl Fn(&str) -> bool) -> Vec<Record> {
    let registry = SchemaRegistry::new(&test_support::registry()).unwrap();
    let mut settings =
        messaging::kafka::consumer_config(&test_support::kafka(), &test_support::unique("gs"));
    settings.set("enable.auto.commit", "false");
    let consumer: StreamConsumer = settings.create().unwrap();
    let consumer = std::sync::Arc::new(consumer);
    let assigned = std::sync::Arc::clone(&consumer);
    let mut ends: BTreeMap<i32, i64> = tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let metadata = assigned
            .fetch_metadata(Some(USER_ACTIVITY), timeout)
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for partition in metadata.topics()[0].partitions() {
            let (low, high) = assigned
                .fetch_watermarks(USER_ACTIVITY, partition.id(), timeout)
                .unwrap();
            assignment
                .add_partition_offset(USER_ACTIVITY, partition.id(), Offset::Offset(low))
                .unwrap();
            if low < high {
                ends.insert(partition.id(), high);
            }
        }
        assigned.assign(&assignment).unwrap();
        ends
    })
    .await
    .unwrap();
    let mut records = Vec::new();
    let read_all = async {
        while !ends.is_empty() {
            let message = consumer.recv().await.unwrap();
            if let Some(&end) = ends.get(&message.partition())
                && message.offset() + 1 >= end
            {
                ends.remove(&message.partition());
            }
            let key = String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap();
            if !keep(&key) {
                continue;
            }
            let message_id = message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == "message-id")
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            let event = registry
                .decode::<UserActivityEvent>(message.payload().unwrap())
                .await
                .unwrap_or_else(|e| panic!("{key}@{}: {e}", message.offset()));
            records.push(Record {
                key,
                message_id,
                partition: message.partition(),
                offset: message.offset(),
                event,
            });
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_all)
        .await
        .expect("the topic is read to its end within 30 s");
    records
}

/// Each record is keyed by its user, carries its message id as a header and was produced by
/// game-sim.
fn assert_well_formed(records: &[Record]) {
    for r in records {
        assert_eq!(r.key, r.event.user_id);
        assert_eq!(
            r.message_id.as_deref(),
            Some(r.event.envelope.message_id.to_string().as_str())
        );
        assert_eq!(r.event.envelope.producer, "game-sim");
    }
}

#[tokio::test]
async fn load_produces_what_its_summary_reports_keyed_by_user_and_decodable() {
    let prefix = format!("{}-", test_support::unique("load"));
    let started = DateTime::now().timestamp_millis();
    let output = game_sim(&[
        "load",
        "--users",
        "5",
        "--rate",
        "200",
        "--duration",
        "2",
        "--json",
        "--user-prefix",
        &prefix,
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "game-sim load failed: {stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a summary line")).unwrap();
    let sent = summary["sent"].as_u64().unwrap();
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["acknowledged"].as_u64(), Some(sent), "{summary}");
    // 200/s for 2 s, paced by elapsed time.
    assert!((380..=401).contains(&sent), "{summary}");
    assert!(stderr.contains("acknowledged"), "{stderr}");

    let records = read_activity(|key| key.starts_with(&prefix)).await;
    assert_eq!(records.len() as u64, sent, "records on the topic");
    assert_well_formed(&records);
    let finished = DateTime::now().timestamp_millis();
    let mut levels: HashMap<&str, (i32, i32, i64)> = HashMap::new();
    let mut kinds: HashMap<ActivityType, usize> = HashMap::new();
    for r in &records {
        let user = r.event.user_id.as_str();
        let n: u32 = user.strip_prefix(&prefix).unwrap().parse().unwrap();
        assert!((1..=5).contains(&n), "{user}");
        let at = r.event.envelope.occurred_at;
        assert!(at >= started && at <= finished, "occurredAt {at} is now");
        *kinds.entry(r.event.activity_type).or_default() += 1;
        match r.event.activity_type {
            ActivityType::QuestCompleted => assert!(r.event.quest_id.is_some()),
            ActivityType::ItemAcquired | ActivityType::ItemUsed => {
                assert!(r.event.item_code.is_some());
                assert!(r.event.item_count.is_some_and(|c| c > 0));
            }
            ActivityType::LevelUp => {
                // One user's records share a partition; in offset order the level only rises.
                let level = r.event.new_level.unwrap();
                let last = levels.entry(user).or_insert((1, r.partition, -1));
                assert_eq!(last.1, r.partition, "{user} stays on one partition");
                assert!(r.offset > last.2);
                assert!(level > last.0, "{user}: level {level} after {}", last.0);
                *last = (level, r.partition, r.offset);
            }
            ActivityType::Login => {}
            ActivityType::Unknown => panic!("unknown activity"),
        }
    }
    // A realistic mix: every kind shows up in a few hundred records.
    assert_eq!(kinds.len(), 5, "{kinds:?}");
}

#[tokio::test]
async fn load_fails_when_kafka_is_unreachable() {
    let registry = test_support::required(test_support::REGISTRY_URL);
    let brokers = format!("127.0.0.1:{}", e2e_tests::closed_port());
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(binary("game-sim"))
            .args(["load", "--users", "1", "--rate", "10", "--duration", "1"])
            .args(["--brokers", &brokers, "--registry", &registry])
            .env_remove("REWARDS_CONFIG_FILE")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&brokers), "{stderr}");
}

#[tokio::test]
async fn scenario_produces_the_activity_an_events_condition_asks_for() {
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let player = api.new_user().await;
    let now = DateTime::now().timestamp_millis();
    let rfc3339 = |ms: i64| DateTime::from_millis(ms).try_to_rfc3339_string().unwrap();
    let quest = test_support::unique("quest");
    let starts_at = now - 2 * 86_400_000;
    let created = api
        .post(
            "/events",
            Some(&operator.access),
            serde_json::json!({
                "name": "game-sim scenario",
                "startsAt": rfc3339(starts_at),
                "endsAt": rfc3339(now + 86_400_000),
                "condition": { "all": [
                    { "metric": "LOGIN_STREAK", "op": ">=", "value": 2 },
                    { "metric": "QUEST_COMPLETED", "op": ">=", "value": 2,
                      "filter": { "questId": quest } },
                    { "any": [
                        { "metric": "ITEM_ACQUIRED", "op": ">=", "value": 3 },
                        { "metric": "QUEST_COMPLETED", "op": ">=", "value": 10 }
                    ] },
                    { "metric": "LEVEL", "op": ">=", "value": 4 }
                ] }
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let event_id = created.body["id"].as_str().unwrap();
    let activated = api
        .post(
            &format!("/events/{event_id}/status"),
            Some(&operator.access),
            serde_json::json!({ "status": "ACTIVE" }),
        )
        .await;
    assert_eq!(activated.status, 200, "{activated:?}");

    let output = game_sim(&[
        "scenario",
        "--event",
        event_id,
        "--email",
        &player.email,
        "--password",
        &player.password,
        "--gateway",
        &test_support::service_url("gateway"),
        "--wait",
        "45",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "game-sim scenario failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("producing 6 record(s)"), "{stdout}");
    // The event service folded the activity in and reports the condition met.
    assert!(stdout.contains("condition met"), "{stdout}");
    let progress = api
        .get(
            &format!("/events/{event_id}/progress/me"),
            Some(&player.access),
        )
        .await;
    assert_eq!(progress.status, 200, "{progress:?}");
    assert_eq!(progress.body["met"], true, "{progress:?}");

    let finished = DateTime::now().timestamp_millis();
    let records = read_activity(|key| key == player.id).await;
    assert_well_formed(&records);
    let mut seen: Vec<_> = records
        .iter()
        .map(|r| {
            let e = &r.event;
            assert!(e.envelope.occurred_at >= starts_at && e.envelope.occurred_at <= finished);
            (
                e.activity_type,
                e.quest_id.clone(),
                e.item_code.clone(),
                e.item_count,
                e.new_level,
            )
        })
        .collect();
    seen.sort_by_key(|s| format!("{s:?}"));
    let mut expected = vec![
        (ActivityType::Login, None, None, None, None),
        (ActivityType::Login, None, None, None, None),
        (
            ActivityType::QuestCompleted,
            Some(quest.clone()),
            None,
            None,
            None,
        ),
        (
            ActivityType::QuestCompleted,
            Some(quest.clone()),
            None,
            None,
            None,
        ),
        (
            ActivityType::ItemAcquired,
            None,
            Some("sim-item".to_owned()),
            Some(3),
            None,
        ),
        (ActivityType::LevelUp, None, None, None, Some(4)),
    ];
    expected.sort_by_key(|s| format!("{s:?}"));
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn scenario_explains_a_window_too_short_for_a_streak() {
    let api = Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let player = api.new_user().await;
    let now = DateTime::now().timestamp_millis();
    let rfc3339 = |ms: i64| DateTime::from_millis(ms).try_to_rfc3339_string().unwrap();
    let created = api
        .post(
            "/events",
            Some(&operator.access),
            serde_json::json!({
                "name": "too short",
                "startsAt": rfc3339(now - 60_000),
                "endsAt": rfc3339(now + 30 * 86_400_000),
                "condition": { "metric": "LOGIN_STREAK", "op": ">=", "value": 7 }
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{created:?}");
    let output = game_sim(&[
        "scenario",
        "--event",
        created.body["id"].as_str().unwrap(),
        "--email",
        &player.email,
        "--password",
        &player.password,
        "--gateway",
        &test_support::service_url("gateway"),
    ])
    .await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("7 consecutive login days are needed"),
        "{stderr}"
    );
    assert!(read_activity(|key| key == player.id).await.is_empty());
}

/// The load generator flat out: 1000 players, no rate limit, 10 s. Run on demand:
/// `./dev test --no-lint -p e2e-tests --test game_sim -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a benchmark, not a check"]
async fn load_flat_out() {
    let prefix = format!("{}-", test_support::unique("bench"));
    let output = game_sim(&[
        "load",
        "--users",
        "1000",
        "--rate",
        "0",
        "--duration",
        "10",
        "--json",
        "--user-prefix",
        &prefix,
    ])
    .await;
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(output.status.success());
}
