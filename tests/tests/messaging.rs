//! The messaging backbone under faults, on the real broker, registry and MongoDB: the outbox
//! relay killed mid-stream, consumers fed duplicates and poison, crashed between their
//! MongoDB commit and their offset commit, and dead letters replayed.

use contracts::{ActivityType, Envelope, UserActivityEvent, UserStatus, UserStatusChanged};
use e2e_tests::{effects, header, produce_raw, read_topic};
use messaging::dlq::DeadLetters;
use messaging::outbox::{
    MESSAGE_ID_HEADER, OutboxEntry, PRODUCER_HEADER, RECORD_HEADER, Relay, RelayConfig,
};
use messaging::topics::{TopicSpec, dead_letter_topic};
use messaging::{SchemaRegistry, kafka};
use mongo_kit::Mongo;
use mongo_kit::mongodb::bson::{Binary, DateTime, Document, doc, spec::BinarySubtype};
use rdkafka::Message;
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;
use test_support::{poll_until, unique};
use tokio_util::sync::CancellationToken;

fn registry() -> Arc<SchemaRegistry> {
    Arc::new(SchemaRegistry::new(&test_support::registry()).unwrap())
}

async fn database(prefix: &str) -> Mongo {
    Mongo::connect(&test_support::mongo(prefix), "messaging-test")
        .await
        .unwrap()
}

/// A fresh topic (and its dead-letter topic).
async fn topic(prefix: &str, partitions: i32) -> String {
    let name = unique(prefix);
    kafka::ensure_topics(
        &test_support::kafka(),
        &[
            TopicSpec::new(&name, partitions),
            TopicSpec::new(dead_letter_topic(&name), 1),
        ],
    )
    .await
    .unwrap();
    name
}

fn activity(user: &str, quest: &str, item_count: Option<i32>) -> UserActivityEvent {
    UserActivityEvent {
        envelope: Envelope::new("messaging-test"),
        user_id: user.into(),
        activity_type: ActivityType::QuestCompleted,
        quest_id: Some(quest.into()),
        item_code: None,
        item_count,
        new_level: None,
    }
}

async fn produce_activity(registry: &SchemaRegistry, topic: &str, event: &UserActivityEvent) {
    let bytes = registry.encode(topic, event).await.unwrap();
    let id = event.envelope.message_id.to_string();
    produce_raw(topic, &event.user_id, &bytes, Some(&id)).await;
}

async fn effects_of(mongo: &Mongo, message_id: &str) -> u64 {
    mongo
        .db()
        .collection::<Document>("effects")
        .count_documents(doc! { "messageId": message_id })
        .await
        .unwrap()
}

async fn wait_for_effect(mongo: &Mongo, message_id: &str) {
    poll_until(Duration::from_secs(60), "the message's effect", || async {
        (effects_of(mongo, message_id).await > 0).then_some(())
    })
    .await;
}

/// A harness process, killed when dropped (a failing test must not leave it running).
struct Harness(Child);

impl Harness {
    fn kill(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        self.0.wait().unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kill();
    }
}

fn harness(name: &str, args: &[&str], failpoint: Option<&str>) -> Harness {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join(name);
    let mut command = Command::new(bin);
    command.args(args);
    if let Some(point) = failpoint {
        command.env("REWARDS_FAILPOINT", point);
    }
    Harness(command.spawn().unwrap())
}

// --- the outbox relay -------------------------------------------------------------------

/// Writes `count` outbox entries, `keys` users round robin, each user's `tokenVersion`
/// counting up: the order a consumer must see them in.
async fn fill_outbox(
    mongo: &Mongo,
    registry: &SchemaRegistry,
    topic: &str,
    keys: usize,
    first: usize,
    count: usize,
) {
    let collection = mongo.db().collection::<OutboxEntry>("outbox");
    let mut entries = Vec::with_capacity(count);
    for n in first..first + count {
        let record = UserStatusChanged {
            envelope: Envelope::new("relay-test"),
            user_id: format!("user-{}", n % keys),
            change: contracts::StatusChange::RolesChanged,
            status: UserStatus::Active,
            roles: vec![contracts::Role::User],
            token_version: (n / keys) as i64,
        };
        let id = record.envelope.message_id.to_string();
        entries.push(OutboxEntry {
            headers: vec![
                (MESSAGE_ID_HEADER.into(), id.clone()),
                (
                    RECORD_HEADER.into(),
                    contracts::USER_STATUS_CHANGED.full_name.into(),
                ),
                (PRODUCER_HEADER.into(), "relay-test".into()),
            ],
            id,
            topic: topic.into(),
            key: record.user_id.clone(),
            payload: Binary {
                subtype: BinarySubtype::Generic,
                bytes: registry.encode(topic, &record).await.unwrap(),
            },
            created_at: DateTime::now(),
            published: false,
            published_at: None,
        });
    }
    for chunk in entries.chunks(200) {
        collection.insert_many(chunk).await.unwrap();
    }
}

async fn published(mongo: &Mongo) -> u64 {
    mongo
        .db()
        .collection::<Document>("outbox")
        .count_documents(doc! { "published": true })
        .await
        .unwrap()
}

/// The change stream, not the sweep, brings a single new entry to Kafka, and the relay does not
/// hold it back waiting for more: the sweep and the server-side wait are both set far beyond
/// the deadline, so only prompt stream handling passes.
#[tokio::test]
async fn a_lone_new_entry_is_published_without_waiting_for_a_sweep_or_more_entries() {
    let mongo = database("relay_lone").await;
    let registry = registry();
    let topic = topic("relay_lone", 1).await;
    let config = messaging::outbox::RelayConfig {
        poll_interval_ms: 600_000,
        lease_ms: 1_200_000,
        stream_await_ms: 120_000,
        ..Default::default()
    };
    messaging::outbox::Relay::ensure_indexes(mongo.db(), &config)
        .await
        .unwrap();
    let producer = kafka::producer(&test_support::kafka()).unwrap();
    let stop = CancellationToken::new();
    let relay = tokio::spawn(
        messaging::outbox::Relay::new(mongo.db(), producer, config, "lone-test").run(stop.clone()),
    );

    // The first entry may go out with the start-up sweep; once it has, the relay is watching.
    fill_outbox(&mongo, &registry, &topic, 1, 0, 1).await;
    poll_until(
        Duration::from_secs(30),
        "the first entry published",
        || async { (published(&mongo).await == 1).then_some(()) },
    )
    .await;
    fill_outbox(&mongo, &registry, &topic, 1, 1, 1).await;
    poll_until(
        Duration::from_secs(20),
        "the second entry published by the change stream",
        || async { (published(&mongo).await == 2).then_some(()) },
    )
    .await;

    stop.cancel();
    relay.await.unwrap();
    mongo.db().drop().await.unwrap();
}

#[tokio::test]
async fn the_relay_killed_mid_stream_publishes_everything_in_order_after_a_restart() {
    let mongo = database("relay").await;
    let registry = registry();
    let topic = topic("relay", 3).await;
    let (keys, first_wave, second_wave) = (20, 3_000, 500);
    fill_outbox(&mongo, &registry, &topic, keys, 0, first_wave).await;
    let db = mongo.db().name().to_owned();

    let mut relay = harness("relay_harness", &[&db], None);
    poll_until(
        Duration::from_secs(60),
        "the relay to publish some",
        || async { (published(&mongo).await >= 300).then_some(()) },
    )
    .await;
    relay.kill(); // SIGKILL: no chance to finish the batch or store its resume token
    let at_kill = published(&mongo).await;
    assert!(
        at_kill < first_wave as u64,
        "the kill came too late to be mid-stream ({at_kill})"
    );

    // Written while no relay runs: found by the catch-up sweep.
    fill_outbox(&mongo, &registry, &topic, keys, first_wave, second_wave).await;
    let total = first_wave + second_wave;
    let mut relay = harness("relay_harness", &[&db], None);
    poll_until(
        Duration::from_secs(120),
        "every entry published",
        || async { (published(&mongo).await == total as u64).then_some(()) },
    )
    .await;
    relay.kill();

    let messages = read_topic(&topic, Duration::from_secs(60), |seen| {
        seen.iter()
            .filter_map(|m| header(m, MESSAGE_ID_HEADER))
            .collect::<HashSet<_>>()
            .len()
            == total
    })
    .await;
    // Drop re-sends as a consumer's inbox would; then each key must read 0, 1, 2, ... in order.
    let mut first_seen = HashSet::new();
    let mut versions: HashMap<String, Vec<i64>> = HashMap::new();
    let mut resends = 0;
    for message in &messages {
        let id = header(message, MESSAGE_ID_HEADER).unwrap();
        if !first_seen.insert(id) {
            resends += 1;
            continue;
        }
        let record: UserStatusChanged = registry.decode(message.payload().unwrap()).await.unwrap();
        versions
            .entry(record.user_id)
            .or_default()
            .push(record.token_version);
    }
    assert_eq!(versions.len(), keys);
    for (key, seen) in &versions {
        let expected: Vec<i64> = (0..(total / keys) as i64).collect();
        assert_eq!(seen, &expected, "{key} out of order or incomplete");
    }
    eprintln!(
        "{total} entries, {} records read, {resends} re-sends after the kill",
        messages.len()
    );
}

// --- idempotent consumers ---------------------------------------------------------------

#[tokio::test]
async fn a_message_delivered_five_times_has_one_effect() {
    let mongo = database("dupes").await;
    let registry = registry();
    let topic = topic("dupes", 1).await;
    let event = activity("u1", "q", None);
    for _ in 0..5 {
        produce_activity(&registry, &topic, &event).await;
    }
    let sentinel = activity("u1", "sentinel", None);
    produce_activity(&registry, &topic, &sentinel).await;

    let (stop, task) = effects::start_consumer(&mongo, &topic, &unique("dupes"));
    wait_for_effect(&mongo, &sentinel.envelope.message_id.to_string()).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(
        effects_of(&mongo, &event.envelope.message_id.to_string()).await,
        1
    );
}

#[tokio::test]
async fn what_waits_for_the_commit_happens_once_when_a_batch_is_tried_again() {
    let mongo = database("oncommit").await;
    let registry = registry();
    let topic = topic("oncommit", 1).await;
    let event = activity("u1", "fail-once", None);
    produce_activity(&registry, &topic, &event).await;
    let id = event.envelope.message_id.to_string();

    let (stop, task) = effects::start_consumer(&mongo, &topic, &unique("oncommit"));
    wait_for_effect(&mongo, &id).await;
    stop.cancel();
    task.await.unwrap();
    // The first attempt applied the effect and registered its count, then failed: the
    // transaction rolled the effect back, and the count was dropped with it.
    assert_eq!(effects_of(&mongo, &id).await, 1);
    assert_eq!(effects::committed(&id), 1);
}

#[tokio::test]
async fn a_message_in_an_inbox_record_of_the_old_per_message_shape_is_not_applied_again() {
    let mongo = database("legacy").await;
    let registry = registry();
    let topic = topic("legacy", 1).await;
    let (done, fresh) = (activity("u1", "done", None), activity("u1", "fresh", None));
    // What an earlier version wrote for a message it applied: one document, `_id` its id.
    mongo
        .db()
        .collection::<Document>("inbox")
        .insert_one(doc! {
            "_id": done.envelope.message_id.to_string(),
            "topic": &topic, "partition": 0, "offset": 0_i64,
            "processedAt": mongo_kit::mongodb::bson::DateTime::now(),
        })
        .await
        .unwrap();
    produce_activity(&registry, &topic, &done).await;
    produce_activity(&registry, &topic, &fresh).await;

    let (stop, task) = effects::start_consumer(&mongo, &topic, &unique("legacy"));
    wait_for_effect(&mongo, &fresh.envelope.message_id.to_string()).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(
        effects_of(&mongo, &done.envelope.message_id.to_string()).await,
        0
    );
}

#[tokio::test]
async fn a_crash_between_the_commit_and_the_offset_commit_causes_no_second_effect() {
    let mongo = database("crash").await;
    let registry = registry();
    let topic = topic("crash", 1).await;
    let events: Vec<UserActivityEvent> = (0..10)
        .map(|i| activity("u1", &format!("q{i}"), None))
        .collect();
    for event in &events {
        produce_activity(&registry, &topic, event).await;
    }
    let (db, group) = (mongo.db().name().to_owned(), unique("crash"));

    // Applies the first batch, commits it, and aborts before its offset is stored.
    let mut crashing = harness(
        "consumer_harness",
        &[&db, &topic, &group],
        Some("consumer-after-commit"),
    );
    let status = crashing.wait();
    assert!(
        !status.success(),
        "the harness was to crash at the failpoint"
    );
    let applied = mongo
        .db()
        .collection::<Document>("effects")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert!(applied > 0, "the crash came after a commit");

    // The restarted consumer gets the same messages again; the inbox drops them.
    let sentinel = activity("u1", "sentinel", None);
    produce_activity(&registry, &topic, &sentinel).await;
    let mut healthy = harness("consumer_harness", &[&db, &topic, &group], None);
    wait_for_effect(&mongo, &sentinel.envelope.message_id.to_string()).await;
    healthy.kill();
    for event in &events {
        assert_eq!(
            effects_of(&mongo, &event.envelope.message_id.to_string()).await,
            1
        );
    }
    // Dropped as already done, not dead-lettered as failures.
    let dead = mongo
        .db()
        .collection::<Document>("dead_letters")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(dead, 0, "re-delivered messages were dead-lettered");
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_with_their_story_and_the_rest_is_processed() {
    let mongo = database("poison").await;
    let registry = registry();
    let topic = topic("poison", 1).await;
    let before = activity("u1", "before", None);
    produce_activity(&registry, &topic, &before).await;
    produce_raw(&topic, "u1", b"\xde\xad\xbe\xef not avro", Some("garbage")).await;
    produce_raw(
        &topic,
        "u1",
        &[0, 0x7f, 0xff, 0xff, 0xf0, 2, 4, 6],
        Some("unknown-schema"),
    )
    .await;
    let invalid = activity("u1", "invalid", Some(-3));
    produce_activity(&registry, &topic, &invalid).await;
    let after = activity("u1", "after", None);
    produce_activity(&registry, &topic, &after).await;

    let group = unique("poison");
    let (stop, task) = effects::start_consumer(&mongo, &topic, &group);
    wait_for_effect(&mongo, &after.envelope.message_id.to_string()).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(
        effects_of(&mongo, &before.envelope.message_id.to_string()).await,
        1
    );
    assert_eq!(
        effects_of(&mongo, &invalid.envelope.message_id.to_string()).await,
        0
    );

    let dead = read_topic(
        &dead_letter_topic(&topic),
        Duration::from_secs(30),
        |seen| seen.len() >= 3,
    )
    .await;
    let classes: Vec<String> = dead
        .iter()
        .map(|m| header(m, "dlq.error.class").unwrap())
        .collect();
    assert_eq!(
        classes,
        ["UNDECODABLE", "UNKNOWN_SCHEMA", "INVALID_CONTENT"]
    );
    for (letter, offset) in dead.iter().zip([1, 2, 3]) {
        assert_eq!(
            header(letter, "dlq.original.topic").as_deref(),
            Some(topic.as_str())
        );
        assert_eq!(
            header(letter, "dlq.original.partition").as_deref(),
            Some("0")
        );
        assert_eq!(
            header(letter, "dlq.original.offset"),
            Some(offset.to_string())
        );
        assert_eq!(
            header(letter, "dlq.consumer.group").as_deref(),
            Some(group.as_str())
        );
        assert_eq!(header(letter, "dlq.attempts").as_deref(), Some("1"));
        for name in ["dlq.error.message", "dlq.first.failure", "dlq.last.failure"] {
            assert!(
                header(letter, name).is_some_and(|v| !v.is_empty()),
                "{name}"
            );
        }
        assert_eq!(letter.key(), Some(&b"u1"[..]), "the original key is kept");
    }
    assert_eq!(
        header(&dead[0], MESSAGE_ID_HEADER).as_deref(),
        Some("garbage")
    );
    assert_eq!(
        dead[0].payload(),
        Some(&b"\xde\xad\xbe\xef not avro"[..]),
        "the original bytes are kept"
    );
    let recorded = mongo
        .db()
        .collection::<Document>("dead_letters")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(recorded, 3);
}

#[tokio::test]
async fn a_replay_after_the_cause_is_fixed_is_processed_once() {
    let mongo = database("replay").await;
    let registry = registry();
    let topic = topic("replay", 1).await;
    let blocked = activity("u1", "needs-fix", None);
    produce_activity(&registry, &topic, &blocked).await;
    let sentinel = activity("u1", "sentinel-1", None);
    produce_activity(&registry, &topic, &sentinel).await;

    let (stop, task) = effects::start_consumer(&mongo, &topic, &unique("replay"));
    wait_for_effect(&mongo, &sentinel.envelope.message_id.to_string()).await;
    let blocked_id = blocked.envelope.message_id.to_string();
    assert_eq!(
        effects_of(&mongo, &blocked_id).await,
        0,
        "dead-lettered, not applied"
    );

    // The fix, then the replay.
    mongo
        .db()
        .collection::<Document>("flags")
        .insert_one(doc! { "_id": "fixed" })
        .await
        .unwrap();
    let producer = kafka::producer(&test_support::kafka()).unwrap();
    let letters = DeadLetters::new(
        mongo.db(),
        producer,
        registry.clone(),
        audit::Audit::new(mongo.db(), "test"),
    );
    let letter_id = format!("{topic}:0:0");
    // Dead letters are recorded after the batch's transaction; wait for it.
    poll_until(Duration::from_secs(30), "the dead letter", || async {
        letters.get(&letter_id).await.ok()
    })
    .await;
    let replayed = letters.replay(&letter_id, &test_admin()).await.unwrap();
    assert_eq!(replayed.history.len(), 1);
    assert_eq!(replayed.history[0].by, "test-admin");
    wait_for_effect(&mongo, &blocked_id).await;

    // Replayed once more: the inbox knows it.
    letters.replay(&letter_id, &test_admin()).await.unwrap();
    let sentinel = activity("u1", "sentinel-2", None);
    produce_activity(&registry, &topic, &sentinel).await;
    wait_for_effect(&mongo, &sentinel.envelope.message_id.to_string()).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(effects_of(&mongo, &blocked_id).await, 1);
}

/// A consumer whose group never settles (here: its only broker address answers nothing) is
/// closed and made again after `rebuild_unsettled_after_ms`, again and again, and still
/// stops when told to: the way out of a consumer librdkafka has wedged.
#[tokio::test]
async fn a_consumer_whose_group_stays_unsettled_is_made_again() {
    use messaging::consumer::{ConsumerConfig, ConsumerRunner};
    use messaging::metrics::CONSUMER_REBUILDS as REBUILDS;
    let metrics = telemetry::metrics();
    let mongo = database("rebuild").await;
    let registry = registry();
    let mut kafka = test_support::kafka();
    let letters = DeadLetters::new(
        mongo.db(),
        kafka::producer(&kafka).unwrap(),
        registry.clone(),
        audit::Audit::new(mongo.db(), "test"),
    );
    kafka.brokers = format!("127.0.0.1:{}", e2e_tests::closed_port());
    let group = unique("unsettled");
    let config = ConsumerConfig {
        rebuild_unsettled_after_ms: 1_000,
        ..ConsumerConfig::default()
    };
    let runner = ConsumerRunner::new(
        group.clone(),
        &["never.settles"],
        kafka,
        config,
        effects::Effects::new(mongo.db()),
        registry,
        mongo.clone(),
        letters,
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(runner.run(stop.clone()));
    let line = format!("{REBUILDS}{{group=\"{group}\"}}");
    poll_until(Duration::from_secs(30), "two rebuilds", || async {
        let rendered = metrics.render();
        let count: f64 = rendered
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        (count >= 2.0).then_some(())
    })
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the runner stops when told to, rebuilding or not")
        .unwrap()
        .unwrap();
}

/// Seconds after which `collection`'s TTL index `name` forgets a document.
async fn ttl_seconds(mongo: &Mongo, collection: &str, name: &str) -> i64 {
    use futures::TryStreamExt;
    let indexes: Vec<Document> = mongo
        .db()
        .collection::<Document>(collection)
        .list_indexes()
        .await
        .unwrap()
        .map_ok(|index| mongo_kit::mongodb::bson::to_document(&index).unwrap())
        .try_collect()
        .await
        .unwrap();
    let ttl = indexes
        .iter()
        .find(|index| index.get_str("name") == Ok(name))
        .unwrap_or_else(|| panic!("no {name} index among {indexes:?}"));
    match ttl.get("expireAfterSeconds") {
        Some(mongo_kit::mongodb::bson::Bson::Int32(n)) => i64::from(*n),
        Some(mongo_kit::mongodb::bson::Bson::Int64(n)) => *n,
        other => panic!("expireAfterSeconds: {other:?}"),
    }
}

/// A made-up administrator acting directly on a service's dead letters.
fn test_admin() -> audit::Actor {
    audit::Actor {
        identity: auth_claims::Identity {
            sub: "test-admin".into(),
            roles: vec![auth_claims::Role::Admin],
        },
        request_id: None,
    }
}

async fn inbox_ttl_seconds(mongo: &Mongo) -> i64 {
    ttl_seconds(mongo, "inbox", "processed_ttl").await
}

/// The outbox's TTL follows `[relay] retention_hours` when it changes, instead of failing
/// start-up on the index that is already there.
#[tokio::test]
async fn the_outbox_ttl_index_takes_the_configured_retention_and_follows_a_change() {
    let mongo = database("outbox_ttl").await;
    for hours in [30, 50] {
        let config = RelayConfig {
            retention_hours: hours,
            ..RelayConfig::default()
        };
        Relay::ensure_indexes(mongo.db(), &config).await.unwrap();
        assert_eq!(
            ttl_seconds(&mongo, "outbox", "published_ttl").await,
            hours as i64 * 3600
        );
    }
}

/// The inbox's TTL takes the service's retention, and a changed retention changes the index
/// (instead of failing start-up on the index that is already there).
#[tokio::test]
async fn the_inbox_ttl_index_takes_the_configured_retention_and_follows_a_change() {
    use messaging::consumer::{InboxConfig, ensure_inbox_indexes};
    let mongo = database("inbox_ttl").await;
    let retention = |hours| InboxConfig {
        retention_hours: hours,
    };
    ensure_inbox_indexes(mongo.db(), &retention(30))
        .await
        .unwrap();
    assert_eq!(inbox_ttl_seconds(&mongo).await, 30 * 3600);
    ensure_inbox_indexes(mongo.db(), &retention(50))
        .await
        .unwrap();
    assert_eq!(inbox_ttl_seconds(&mongo).await, 50 * 3600);
}

/// A service that consumes gets the inbox TTL of its own `[inbox]` settings, whatever its
/// consumers' settings say: the start-up work of the service builder makes the index.
#[tokio::test]
async fn a_consuming_service_s_inbox_ttl_is_the_service_s_configured_retention() {
    use messaging::consumer::{ConsumerConfig, InboxConfig};
    use service_config::catalog::ServiceSpec;
    const SPEC: ServiceSpec = ServiceSpec {
        name: "inbox-test",
        default_port: 0,
        database: None,
        needs: &[],
        upstreams: &[],
        cluster_instances: 1,
    };
    let deps = service_deps::DepsConfig {
        mongo: test_support::mongo("inbox_service"),
        kafka: test_support::kafka(),
        registry: test_support::registry(),
    };
    let mongo = Mongo::connect(&deps.mongo, "messaging-test").await.unwrap();
    let topic = topic("inbox_service", 1).await;
    let identity = auth_claims::IdentityKey::new(
        &test_support::required(test_support::IDENTITY_SECRET).into(),
    )
    .unwrap();
    let backend = service_deps::Backend::connect(&SPEC, &deps, identity)
        .await
        .unwrap();
    let handler = effects::Effects::new(backend.db());
    let app = backend
        .inbox(InboxConfig {
            retention_hours: 77,
        })
        .consumes("inbox-test", &topic, &ConsumerConfig::default(), handler)
        .serve(&service_config::HttpConfig::default(), axum::Router::new())
        .await
        .unwrap();
    let shutdown = app.shutdown_handle();
    let running = tokio::spawn(app.run_until_stopped());
    poll_until(Duration::from_secs(60), "the inbox's TTL index", || async {
        let indexes = mongo
            .db()
            .collection::<Document>("inbox")
            .list_index_names()
            .await;
        indexes
            .is_ok_and(|names| names.iter().any(|n| n == "processed_ttl"))
            .then_some(())
    })
    .await;
    assert_eq!(inbox_ttl_seconds(&mongo).await, 77 * 3600);
    shutdown.trigger();
    running.await.unwrap().unwrap();
}

// --- the first users: auth's events, the event service's consumer and DLQ --------------

#[tokio::test]
async fn account_changes_reach_auth_user_events_in_order_and_the_event_service_follows() {
    use e2e_tests::Api;
    let api = Api::gateway();
    let admin = api.admin().await;
    let user = api.new_user().await;
    let post = |path: String| {
        let (api, token) = (api.clone(), admin.access.clone());
        async move {
            api.call(reqwest::Method::POST, &path, Some(&token), None)
                .await
        }
    };
    assert_eq!(post(format!("/users/{}/ban", user.id)).await.status, 200);

    // The event service hears of the ban (through the outbox, Kafka and its consumer).
    let states = Mongo::connect(&test_support::mongo("unused"), "messaging-test")
        .await
        .unwrap();
    let states = states
        .client()
        .database("event_db")
        .collection::<Document>("user_states");
    let status_of = |wanted: &'static str| {
        let (states, id) = (states.clone(), user.id.clone());
        async move {
            poll_until(
                Duration::from_secs(30),
                "the event service to hear of it",
                || async {
                    let state = states.find_one(doc! { "_id": &id }).await.unwrap()?;
                    (state.get_str("status").ok() == Some(wanted)).then_some(state)
                },
            )
            .await
        }
    };
    status_of("BANNED").await;
    assert_eq!(post(format!("/users/{}/unban", user.id)).await.status, 200);
    let roles = api
        .call(
            reqwest::Method::PUT,
            &format!("/users/{}/roles", user.id),
            Some(&admin.access),
            Some(serde_json::json!({ "roles": ["USER", "OPERATOR"] })),
        )
        .await;
    assert_eq!(roles.status, 200);
    let state = status_of("ACTIVE").await;
    poll_until(
        Duration::from_secs(30),
        "the latest token version",
        || async {
            let state = states.find_one(doc! { "_id": &user.id }).await.unwrap()?;
            (state.get_i64("tokenVersion").ok() == Some(3)).then_some(())
        },
    )
    .await;
    drop(state);

    // On the topic, keyed by the user, in the order it happened.
    let registry = registry();
    let mine = read_topic(
        messaging::topics::USER_EVENTS,
        Duration::from_secs(30),
        |seen| {
            seen.iter()
                .filter(|m| m.key() == Some(user.id.as_bytes()))
                .count()
                >= 4
        },
    )
    .await;
    let mut story = Vec::new();
    for message in mine.iter().filter(|m| m.key() == Some(user.id.as_bytes())) {
        let record = header(message, RECORD_HEADER).unwrap();
        if record == contracts::USER_REGISTERED.full_name {
            let event: contracts::UserRegistered =
                registry.decode(message.payload().unwrap()).await.unwrap();
            assert_eq!(event.email, user.email);
            story.push("REGISTERED".to_owned());
        } else {
            let event: UserStatusChanged =
                registry.decode(message.payload().unwrap()).await.unwrap();
            story.push(format!("{:?}@{}", event.change, event.token_version));
        }
        assert_eq!(header(message, PRODUCER_HEADER).as_deref(), Some("auth"));
    }
    assert_eq!(
        story,
        ["REGISTERED", "Banned@1", "Unbanned@2", "RolesChanged@3"]
    );
}

#[tokio::test]
async fn administrators_inspect_replay_and_discard_dead_letters_through_the_gateway() {
    use e2e_tests::Api;
    let api = Api::gateway();
    let admin = api.admin().await;
    // Garbage on a topic the event service consumes, under a key of its own.
    let key = unique("poison");
    produce_raw(
        messaging::topics::USER_EVENTS,
        &key,
        b"not avro at all",
        Some(&key),
    )
    .await;

    let list = format!(
        "/dead-letters/event?topic={}&status=NEW&size=100",
        messaging::topics::USER_EVENTS
    );
    let letter = poll_until(
        Duration::from_secs(30),
        "the dead letter to be listed",
        || async {
            let page = api.get(&list, Some(&admin.access)).await;
            page.body["items"]
                .as_array()?
                .iter()
                .find(|l| l["key"] == key.as_str())
                .cloned()
        },
    )
    .await;
    assert_eq!(letter["errorClass"], "UNDECODABLE");
    assert_eq!(letter["group"], "event.user-states");
    assert_eq!(letter["valueBase64"], "bm90IGF2cm8gYXQgYWxs");
    let id = letter["id"].as_str().unwrap().to_owned();
    let path = |suffix: &str| format!("/dead-letters/event/{}{suffix}", id.replace('.', "%2E"));

    let shown = api.get(&path(""), Some(&admin.access)).await;
    assert_eq!(
        (shown.status, shown.body["id"].as_str()),
        (200, Some(id.as_str()))
    );

    let user = api.new_user().await;
    let refused = api.get(&path(""), Some(&user.access)).await;
    assert_eq!(refused.status, 403, "ADMIN only");

    let replayed = api
        .call(
            reqwest::Method::POST,
            &path("/replay"),
            Some(&admin.access),
            None,
        )
        .await;
    assert_eq!(replayed.body["status"], "REPLAYED");
    assert_eq!(replayed.body["history"][0]["action"], "REPLAYED");

    let discard = |reason: &str| {
        let (api, token, path) = (api.clone(), admin.access.clone(), path("/discard"));
        let body = serde_json::json!({ "reason": reason });
        async move {
            api.call(reqwest::Method::POST, &path, Some(&token), Some(body))
                .await
        }
    };
    assert_eq!(discard(" ").await.status, 422, "a discard needs a reason");
    let discarded = discard("garbage from a broken test producer").await;
    assert_eq!(discarded.body["status"], "DISCARDED");
    assert_eq!(
        discarded.body["history"][1]["reason"],
        "garbage from a broken test producer"
    );
    let again = api
        .call(
            reqwest::Method::POST,
            &path("/replay"),
            Some(&admin.access),
            None,
        )
        .await;
    assert_eq!((again.status, again.code()), (409, "dead_letter_discarded"));

    // Both actions are in the audit trail, with the actor, the status change and the reason;
    // the refused replay is not.
    let audit = api
        .get(
            &format!("/audit?target={}", id.replace('.', "%2E")),
            Some(&admin.access),
        )
        .await;
    assert_eq!(audit.status, 200, "{audit:?}");
    let records = audit.body["items"].as_array().unwrap();
    let actions: Vec<_> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["dead_letter.discard", "dead_letter.replay"],
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .all(|r| r["actor"] == admin.id.as_str() && r["service"] == "event")
    );
    assert_eq!(records[0]["reason"], "garbage from a broken test producer");
    assert_eq!(records[0]["changes"][0]["field"], "status");
    assert_eq!(records[0]["changes"][0]["before"], "REPLAYED");
    assert_eq!(records[0]["changes"][0]["after"], "DISCARDED");

    // The replayed copy failed again, as a letter of its own (a later offset).
    poll_until(
        Duration::from_secs(30),
        "the replayed copy to be dead-lettered",
        || async {
            let page = api.get(&list, Some(&admin.access)).await;
            let copies = page.body["items"]
                .as_array()?
                .iter()
                .filter(|l| l["key"] == key.as_str())
                .count();
            (copies >= 1).then_some(())
        },
    )
    .await;
}
