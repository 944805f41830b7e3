//! The platform registers the contracts it consumes when it starts, so a game server may
//! produce with automatic schema registration off (the usual production setting). Such a
//! producer only looks its schema up under the subject, as stock clients do with
//! `auto.register.schemas=false`, and frames each record with the id it finds.
//!
//! This file holds one test on purpose: it starts a second event service, whose consumers
//! join the instance's groups, and no other test of this binary runs beside it.

use contracts::{ActivityType, Envelope, UserActivityEvent};
use e2e_tests::ServiceProcess;
use e2e_tests::saga::{Direct, active_event};
use rdkafka::producer::FutureRecord;
use serde_json::{Value, json};
use std::time::Duration;
use test_support::{poll_until, unique};

const SUBJECT: &str = "game.user-activity-rewards.events.UserActivityEvent";

/// The id the registry answers for `avsc` under `subject` without registering it, or the
/// registry's error code (40401 no such subject, 40403 no such schema).
async fn look_up(subject: &str, avsc: &str) -> Result<u64, u64> {
    let url = format!("{}/subjects/{subject}", test_support::registry().url);
    let reply = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&json!({ "schema": avsc }))
        .send()
        .await
        .unwrap();
    let ok = reply.status().is_success();
    let body: Value = reply.json().await.unwrap();
    match ok {
        true => Ok(body["id"].as_u64().expect("an id")),
        false => Err(body["error_code"].as_u64().expect("an error code")),
    }
}

/// Confluent framing: magic byte 0, the schema id (4 bytes, big-endian), the Avro body.
fn frame(id: u64, event: &UserActivityEvent) -> Vec<u8> {
    let schema = contracts::USER_ACTIVITY_EVENT.parse().unwrap();
    let value = apache_avro::to_value(event)
        .unwrap()
        .resolve(&schema)
        .unwrap();
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()
        .unwrap();
    let mut bytes = vec![0];
    bytes.extend(u32::try_from(id).unwrap().to_be_bytes());
    bytes.extend(writer.write_value_to_vec(value).unwrap());
    bytes
}

fn registered_in(log: &[String]) -> Option<u64> {
    log.iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|e| e["message"] == "consumed schema registered" && e["subject"] == SUBJECT)
        .and_then(|e| e["id"].as_u64())
}

#[tokio::test]
async fn a_game_server_producing_with_registration_off_finds_activity_registered_at_start() {
    // An event service starting registers the activity contract during its start-up work.
    let event_service = ServiceProcess::start("event", &[]).ready().await;
    event_service.signal("TERM");
    let (_, log) = event_service.wait_for_exit(Duration::from_secs(30));
    let registered = registered_in(&log).expect("the start-up log names the registered subject");

    // A lookup finds that schema; a schema nobody registered is not found (so the lookup
    // registers nothing, as with registration off).
    let avsc = contracts::USER_ACTIVITY_EVENT.avsc;
    assert_eq!(look_up(SUBJECT, avsc).await, Ok(registered));
    let unregistered = avsc.replacen(
        r#""fields": ["#,
        r#""fields": [{"name": "unregistered", "type": ["null", "string"], "default": null},"#,
        1,
    );
    assert_ne!(unregistered, avsc);
    assert!(look_up(SUBJECT, &unregistered).await.is_err());

    // Activity framed with the looked-up id is counted.
    let api = e2e_tests::Api::gateway();
    let operator = api.user_with_roles(&["OPERATOR"]).await;
    let quest = unique("quest");
    let event = active_event(
        &api,
        &operator,
        json!({ "metric": "QUEST_COMPLETED", "op": ">=", "value": 1, "filter": { "questId": quest } }),
    )
    .await;
    let player = unique("player");
    let activity = UserActivityEvent {
        envelope: Envelope::new("registration-off"),
        user_id: player.clone(),
        activity_type: ActivityType::QuestCompleted,
        quest_id: Some(quest),
        item_code: None,
        item_count: None,
        new_level: None,
    };
    let producer = messaging::kafka::producer(&test_support::kafka()).unwrap();
    producer
        .send(
            FutureRecord::to(contracts::topics::USER_ACTIVITY)
                .key(&player)
                .payload(&frame(registered, &activity)),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let direct = Direct::to_event_service();
    poll_until(
        Duration::from_secs(30),
        "the activity to be counted",
        || async {
            let reply = direct
                .get(&player, &format!("/events/{event}/progress/me"))
                .await;
            (reply.body["met"] == true).then_some(())
        },
    )
    .await;
}
