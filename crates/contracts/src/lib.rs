//! The messages services exchange over Kafka: their Avro schemas (the `.avsc` files in
//! `schemas/` at the workspace root, embedded here at build time, so there is one source of
//! truth) and the Rust types that serialise to them.
//!
//! Field names are camelCase on the wire (Avro convention across languages) and snake_case
//! in Rust; `serde(rename_all)` bridges the two.

use serde::{Deserialize, Serialize};

/// An Avro schema the platform registers: its full name (the record name the
/// TopicRecordName strategy puts into the subject) and its JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContractSchema {
    pub full_name: &'static str,
    pub avsc: &'static str,
}

impl ContractSchema {
    pub fn parse(&self) -> Result<apache_avro::Schema, apache_avro::Error> {
        apache_avro::Schema::parse_str(self.avsc)
    }
}

pub const USER_ACTIVITY_EVENT: ContractSchema = ContractSchema {
    full_name: "rewards.events.UserActivityEvent",
    avsc: include_str!("../../../schemas/user-activity-event.avsc"),
};

/// Every schema in `schemas/`.
pub const ALL: &[ContractSchema] = &[USER_ACTIVITY_EVENT];

/// A Rust type that is the serde image of one contract schema.
pub trait Contract: Serialize + for<'de> Deserialize<'de> {
    const SCHEMA: ContractSchema;
}

/// Metadata every message carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    #[serde(with = "uuid_as_string")]
    pub message_id: uuid::Uuid,
    /// Milliseconds since the Unix epoch.
    pub occurred_at: i64,
    pub producer: String,
    pub correlation_id: Option<String>,
}

impl Envelope {
    /// A new envelope with a fresh time-ordered message id, stamped now.
    pub fn new(producer: impl Into<String>) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            message_id: uuid::Uuid::now_v7(),
            occurred_at: now.as_millis() as i64,
            producer: producer.into(),
            correlation_id: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActivityType {
    Login,
    QuestCompleted,
    ItemAcquired,
    ItemUsed,
    LevelUp,
    Unknown,
}

/// Something a player did in the game.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserActivityEvent {
    pub envelope: Envelope,
    pub user_id: String,
    pub activity_type: ActivityType,
    pub quest_id: Option<String>,
    pub item_code: Option<String>,
    pub item_count: Option<i32>,
    pub new_level: Option<i32>,
}

impl Contract for UserActivityEvent {
    const SCHEMA: ContractSchema = USER_ACTIVITY_EVENT;
}

/// UUIDs as the canonical hyphenated string the schemas' `{"type":"string","logicalType":"uuid"}`
/// expects. (Avro's serde is not "human readable", so `Uuid`'s own impl would write bytes.)
mod uuid_as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &uuid::Uuid, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&id.hyphenated())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<uuid::Uuid, D::Error> {
        let text = String::deserialize(d)?;
        uuid::Uuid::parse_str(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_parses_and_is_named_as_declared() {
        for contract in ALL {
            let schema = contract
                .parse()
                .unwrap_or_else(|e| panic!("{}: {e}", contract.full_name));
            let name = match &schema {
                apache_avro::Schema::Record(r) => r.name.fullname(None),
                other => panic!("{} is not a record: {other:?}", contract.full_name),
            };
            assert_eq!(name, contract.full_name);
        }
    }

    #[test]
    fn user_activity_event_matches_its_schema_both_ways() {
        let event = UserActivityEvent {
            envelope: Envelope::new("test"),
            user_id: "u-1".into(),
            activity_type: ActivityType::ItemAcquired,
            quest_id: None,
            item_code: Some("sword".into()),
            item_count: Some(2),
            new_level: None,
        };
        let schema = USER_ACTIVITY_EVENT.parse().unwrap();
        let value = apache_avro::to_value(&event)
            .unwrap()
            .resolve(&schema)
            .unwrap();
        let back: UserActivityEvent = apache_avro::from_value(&value).unwrap();
        assert_eq!(back, event);
    }
}
