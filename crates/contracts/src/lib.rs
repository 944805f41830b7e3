//! The messages services exchange over Kafka: their Avro schemas (the `.avsc` files in
//! `schemas/` at the workspace root, embedded at build time, so there is one source of truth),
//! the topic each is produced to, and the Rust types that serialise to them.
//!
//! | record | topic | key |
//! |---|---|---|
//! | UserActivityEvent | `game.user-activity` | userId |
//! | UserRegistered, UserStatusChanged | `auth.user-events` | userId |
//! | GrantRewardCommand | `event.grant-commands` | userId |
//! | GrantResultEvent | `reward.grant-results` | userId |
//!
//! Everything is keyed by user id: a user's messages stay in one partition, in order, and
//! reach one consumer at a time, which is exactly the unit whose state (progress, balance,
//! inventory) the message changes. Claim ids would spread load no better and lose that.
//!
//! Field names are camelCase on the wire and snake_case in Rust; enums carry an UNKNOWN
//! symbol (the Avro default) that a reader built before a new symbol existed maps it to.

pub mod topics;

use serde::{Deserialize, Serialize};

/// An Avro schema the platform registers: its full name (the record name the
/// TopicRecordName strategy puts into the subject) and its JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContractSchema {
    pub full_name: &'static str,
    pub avsc: &'static str,
    /// The topic records of this schema are produced to.
    pub topic: &'static str,
}

impl ContractSchema {
    pub fn parse(&self) -> Result<apache_avro::Schema, apache_avro::Error> {
        apache_avro::Schema::parse_str(self.avsc)
    }
}

macro_rules! schema {
    ($name:ident, $full:literal, $file:literal, $topic:expr) => {
        pub const $name: ContractSchema = ContractSchema {
            full_name: $full,
            avsc: include_str!(concat!("../../../schemas/", $file)),
            topic: $topic,
        };
    };
}

schema!(
    USER_ACTIVITY_EVENT,
    "rewards.events.UserActivityEvent",
    "user-activity-event.avsc",
    topics::USER_ACTIVITY
);
schema!(
    USER_REGISTERED,
    "rewards.events.UserRegistered",
    "user-registered.avsc",
    topics::USER_EVENTS
);
schema!(
    USER_STATUS_CHANGED,
    "rewards.events.UserStatusChanged",
    "user-status-changed.avsc",
    topics::USER_EVENTS
);
schema!(
    GRANT_REWARD_COMMAND,
    "rewards.events.GrantRewardCommand",
    "grant-reward-command.avsc",
    topics::GRANT_COMMANDS
);
schema!(
    GRANT_RESULT_EVENT,
    "rewards.events.GrantResultEvent",
    "grant-result-event.avsc",
    topics::GRANT_RESULTS
);

/// Every schema in `schemas/`.
pub const ALL: &[ContractSchema] = &[
    USER_ACTIVITY_EVENT,
    USER_REGISTERED,
    USER_STATUS_CHANGED,
    GRANT_REWARD_COMMAND,
    GRANT_RESULT_EVENT,
];

/// A Rust type that is the serde image of one contract schema.
pub trait Contract: Serialize + for<'de> Deserialize<'de> + Send + Sync {
    const SCHEMA: ContractSchema;

    fn envelope(&self) -> &Envelope;

    /// The Kafka record key.
    fn key(&self) -> &str;
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

    pub fn correlated(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            $($variant,)*
            /// A symbol this build does not know (added to the schema later).
            #[serde(other)]
            Unknown,
        }
    };
}

wire_enum!(ActivityType {
    Login,
    QuestCompleted,
    ItemAcquired,
    ItemUsed,
    LevelUp
});
wire_enum!(Role {
    User,
    Operator,
    Auditor,
    Admin
});
wire_enum!(StatusChange {
    Banned,
    Unbanned,
    Deleted,
    RolesChanged
});
wire_enum!(UserStatus {
    Active,
    Banned,
    Deleted
});
wire_enum!(RewardType {
    Point,
    Item,
    Coupon
});
wire_enum!(GrantOutcome { Succeeded, Failed });

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRegistered {
    pub envelope: Envelope,
    pub user_id: String,
    pub email: String,
    pub nickname: String,
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserStatusChanged {
    pub envelope: Envelope,
    pub user_id: String,
    pub change: StatusChange,
    pub status: UserStatus,
    pub roles: Vec<Role>,
    pub token_version: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantRewardCommand {
    pub envelope: Envelope,
    #[serde(with = "uuid_as_string")]
    pub command_id: uuid::Uuid,
    pub claim_id: String,
    pub user_id: String,
    pub event_id: String,
    pub reward_id: String,
    pub reward_type: RewardType,
    pub points: Option<i64>,
    pub item_code: Option<String>,
    pub quantity: Option<i32>,
    pub coupon_template: Option<String>,
    pub attempt: i32,
    /// Epoch milliseconds after which the command must not be granted (answered FAILED).
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantResultEvent {
    pub envelope: Envelope,
    #[serde(with = "uuid_as_string")]
    pub command_id: uuid::Uuid,
    pub claim_id: String,
    pub user_id: String,
    pub outcome: GrantOutcome,
    pub reason: Option<String>,
    pub coupon_code: Option<String>,
}

macro_rules! contract {
    ($type:ty, $schema:expr) => {
        impl Contract for $type {
            const SCHEMA: ContractSchema = $schema;

            fn envelope(&self) -> &Envelope {
                &self.envelope
            }

            fn key(&self) -> &str {
                &self.user_id
            }
        }
    };
}

contract!(UserActivityEvent, USER_ACTIVITY_EVENT);
contract!(UserRegistered, USER_REGISTERED);
contract!(UserStatusChanged, USER_STATUS_CHANGED);
contract!(GrantRewardCommand, GRANT_REWARD_COMMAND);
contract!(GrantResultEvent, GRANT_RESULT_EVENT);

/// The records of `auth.user-events`, which carries two types.
#[derive(Debug, Clone, PartialEq)]
pub enum UserEvent {
    Registered(UserRegistered),
    StatusChanged(UserStatusChanged),
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
    fn every_schema_carries_the_same_envelope() {
        let envelope_of = |c: &ContractSchema| {
            let json: serde_json::Value = serde_json::from_str(c.avsc).unwrap();
            assert_eq!(json["fields"][0]["name"], "envelope", "{}", c.full_name);
            json["fields"][0].clone()
        };
        let first = envelope_of(&ALL[0]);
        for contract in ALL {
            assert_eq!(
                envelope_of(contract),
                first,
                "{} drifted",
                contract.full_name
            );
        }
    }

    fn round_trip<T: Contract + PartialEq + std::fmt::Debug>(record: T) {
        let schema = T::SCHEMA.parse().unwrap();
        let value = apache_avro::to_value(&record)
            .unwrap()
            .resolve(&schema)
            .unwrap_or_else(|e| panic!("{} does not fit its schema: {e}", T::SCHEMA.full_name));
        let back: T = apache_avro::from_value(&value).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn every_type_matches_its_schema_both_ways() {
        let envelope = || Envelope::new("test").correlated("claim-1");
        round_trip(UserActivityEvent {
            envelope: envelope(),
            user_id: "u-1".into(),
            activity_type: ActivityType::ItemAcquired,
            quest_id: None,
            item_code: Some("sword".into()),
            item_count: Some(2),
            new_level: None,
        });
        round_trip(UserRegistered {
            envelope: envelope(),
            user_id: "u-1".into(),
            email: "a@b.io".into(),
            nickname: "A".into(),
            roles: vec![Role::User],
        });
        round_trip(UserStatusChanged {
            envelope: envelope(),
            user_id: "u-1".into(),
            change: StatusChange::RolesChanged,
            status: UserStatus::Active,
            roles: vec![Role::User, Role::Operator],
            token_version: 3,
        });
        round_trip(GrantRewardCommand {
            envelope: envelope(),
            command_id: uuid::Uuid::new_v4(),
            claim_id: "c-1".into(),
            user_id: "u-1".into(),
            event_id: "e-1".into(),
            reward_id: "r-1".into(),
            reward_type: RewardType::Item,
            points: None,
            item_code: Some("sword".into()),
            quantity: Some(1),
            coupon_template: None,
            attempt: 2,
            expires_at: Some(1_800_000_000_000),
        });
        round_trip(GrantResultEvent {
            envelope: envelope(),
            command_id: uuid::Uuid::new_v4(),
            claim_id: "c-1".into(),
            user_id: "u-1".into(),
            outcome: GrantOutcome::Failed,
            reason: Some("out of coupons".into()),
            coupon_code: None,
        });
    }

    #[test]
    fn symbols_added_later_read_as_unknown() {
        let read: ActivityType = serde_json::from_str("\"GUILD_JOINED\"").unwrap();
        assert_eq!(read, ActivityType::Unknown);
    }
}
