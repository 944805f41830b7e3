//! Avro contracts through the real schema registry and the real Kafka broker started by
//! `./dev test`.

use contracts::{ActivityType, Envelope, USER_ACTIVITY_EVENT, UserActivityEvent};
use messaging::registry::RegistryError;
use messaging::topics::TopicSpec;
use messaging::{SchemaRegistry, kafka};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use std::time::Duration;
use test_support::unique;

fn sample_event() -> UserActivityEvent {
    UserActivityEvent {
        envelope: Envelope::new("roundtrip-test"),
        user_id: unique("user"),
        activity_type: ActivityType::QuestCompleted,
        quest_id: Some("dragon-slayer".into()),
        item_code: None,
        item_count: None,
        new_level: None,
    }
}

#[tokio::test]
async fn avro_record_round_trips_through_registry_and_broker() {
    let kafka_config = test_support::kafka();
    let registry = SchemaRegistry::new(&test_support::registry()).unwrap();
    let topic = unique("roundtrip");
    kafka::ensure_topics(&kafka_config, &[TopicSpec::new(&topic, 1)])
        .await
        .unwrap();
    let event = sample_event();

    let payload = registry.encode(&topic, &event).await.unwrap();

    // Confluent framing: magic byte 0, then the big-endian id the registry gave the schema.
    assert_eq!(payload[0], 0, "magic byte");
    let id = u32::from_be_bytes(payload[1..5].try_into().unwrap());
    let registered_id = registry
        .register(&topic, &USER_ACTIVITY_EVENT)
        .await
        .unwrap();
    assert_eq!(
        id, registered_id,
        "encoded with the id of the schema in schemas/"
    );

    let producer = kafka::producer(&kafka_config).unwrap();
    producer
        .send(
            FutureRecord::to(&topic)
                .key(event.user_id.as_bytes())
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let consumer = kafka::consumer(&kafka_config, &unique("roundtrip-group")).unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a message within 30 s")
        .unwrap();
    assert_eq!(message.key(), Some(event.user_id.as_bytes()));
    let decoded: UserActivityEvent = registry.decode(message.payload().unwrap()).await.unwrap();
    assert_eq!(decoded, event);
}

#[tokio::test]
async fn registry_refuses_incompatible_evolution_under_its_backward_default() {
    let registry = SchemaRegistry::new(&test_support::registry()).unwrap();
    assert_eq!(registry.global_compatibility().await.unwrap(), "BACKWARD");
    let subject = SchemaRegistry::subject(&unique("evolution"), &USER_ACTIVITY_EVENT);
    let v1 = registry
        .register_schema(&subject, USER_ACTIVITY_EVENT.avsc)
        .await
        .unwrap();

    // New readers can still read old data: an optional field with a default.
    let compatible = with_field(r#"{"name":"platform","type":["null","string"],"default":null}"#);
    let v2 = registry
        .register_schema(&subject, &compatible)
        .await
        .unwrap();
    assert_ne!(v1, v2);

    // A required field without a default: new readers could not read old records.
    let incompatible = with_field(r#"{"name":"region","type":"string"}"#);
    let refused = registry.register_schema(&subject, &incompatible).await;
    assert!(
        matches!(refused, Err(RegistryError::Incompatible { .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn undecodable_bytes_and_unknown_schema_ids_are_permanent_errors() {
    let registry = SchemaRegistry::new(&test_support::registry()).unwrap();

    let garbage = registry
        .decode::<UserActivityEvent>(b"not avro at all")
        .await;
    let error = garbage.expect_err("garbage must not decode");
    assert!(!error.is_retriable(), "{error}");

    // Well framed, but no schema has this id.
    let unknown_id = [0u8, 0x7f, 0xff, 0xff, 0xf0, 2, 4, 6];
    let error = registry
        .decode::<UserActivityEvent>(&unknown_id)
        .await
        .expect_err("an unknown schema id must not decode");
    assert!(!error.is_retriable(), "{error}");
}

/// The UserActivityEvent schema with one more field.
fn with_field(field: &str) -> String {
    let mut schema: serde_json::Value = serde_json::from_str(USER_ACTIVITY_EVENT.avsc).unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::from_str(field).unwrap());
    schema.to_string()
}

/// `./dev topic`'s reader: every message of every partition, decoded through the registry to
/// JSON, with key, headers and position; bytes that are not Avro shown raw with the reason.
#[tokio::test]
async fn the_topic_reader_shows_each_message_decoded_with_its_position_key_and_headers() {
    use messaging::inspect::{InspectOptions, inspect};
    use rdkafka::message::{Header, OwnedHeaders};

    let kafka_config = test_support::kafka();
    let registry = SchemaRegistry::new(&test_support::registry()).unwrap();
    let topic = unique("inspect");
    kafka::ensure_topics(&kafka_config, &[TopicSpec::new(&topic, 2)])
        .await
        .unwrap();
    let producer = kafka::producer(&kafka_config).unwrap();
    let events = [sample_event(), sample_event()];
    for (partition, event) in events.iter().enumerate() {
        let payload = registry.encode(&topic, event).await.unwrap();
        let id = event.envelope.message_id.to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: "message-id",
            value: Some(id.as_bytes()),
        });
        let record = FutureRecord::to(&topic)
            .partition(partition as i32)
            .key(event.user_id.as_bytes())
            .payload(&payload)
            .headers(headers);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer
        .send(
            FutureRecord::to(&topic)
                .partition(1)
                .key("not-avro")
                .payload("{\"plain\": \"json\"}"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let mut shown = Vec::new();
    let count = inspect(
        &kafka_config,
        &registry,
        &topic,
        &InspectOptions::default(),
        |m| shown.push(m),
    )
    .await
    .unwrap();
    assert_eq!(count, 3);
    shown.sort_by_key(|m| (m["partition"].as_i64(), m["offset"].as_i64()));
    for (shown, event) in shown.iter().zip(&events) {
        assert_eq!(shown["topic"], topic.as_str());
        assert_eq!(shown["offset"], 0);
        assert_eq!(shown["key"], event.user_id.as_str());
        assert_eq!(
            shown["headers"]["message-id"],
            event.envelope.message_id.to_string()
        );
        assert_eq!(shown["record"], USER_ACTIVITY_EVENT.full_name);
        assert_eq!(shown["value"]["userId"], event.user_id.as_str());
        assert_eq!(shown["value"]["activityType"], "QUEST_COMPLETED");
        assert_eq!(shown["value"]["questId"], "dragon-slayer");
        assert!(shown["schemaId"].as_u64().is_some());
    }
    let raw = &shown[2];
    assert_eq!(
        (raw["partition"].as_i64(), raw["offset"].as_i64()),
        (Some(1), Some(1))
    );
    assert!(raw["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(raw["payloadBase64"], "eyJwbGFpbiI6ICJqc29uIn0=");

    // The last message of partition 1 only.
    let mut tail = Vec::new();
    let options = InspectOptions {
        partition: Some(1),
        last: Some(1),
        ..Default::default()
    };
    inspect(&kafka_config, &registry, &topic, &options, |m| tail.push(m))
        .await
        .unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0]["key"], "not-avro");
}
