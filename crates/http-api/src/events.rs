//! Events, their conditions, and claims: bodies of the event service's routes.

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventStatus {
    /// Being prepared; not visible to claims.
    Draft,
    /// Claims accepted inside the time window.
    Active,
    /// Paused by an operator.
    Inactive,
    /// Over for good; also how an event past its `endsAt` reads.
    Ended,
}

/// How many levels a condition may nest, counting the leaves' level.
pub const MAX_CONDITION_DEPTH: usize = 4;

/// What a player must have done, as a tree: `all` / `any` of leaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum Condition {
    All {
        #[schema(no_recursion, min_items = 1, max_items = 10)]
        all: Vec<Condition>,
    },
    Any {
        #[schema(no_recursion, min_items = 1, max_items = 10)]
        any: Vec<Condition>,
    },
    Leaf(Leaf),
}

/// One measurable requirement: `metric op value`, optionally narrowed by `filter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Leaf {
    pub metric: Metric,
    /// Always `>=`: the only comparison conditions support (any other is refused).
    #[schema(pattern = r"^>=$")]
    pub op: String,
    #[serde(deserialize_with = "crate::de::integer")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub value: u32,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::de::object"
    )]
    pub filter: Option<LeafFilter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Metric {
    /// Distinct days with a login inside the event's window.
    LoginDays,
    /// Longest run of consecutive login days inside the window.
    LoginStreak,
    /// Quests completed (optionally one quest, `filter.questId`).
    QuestCompleted,
    /// Items acquired (optionally one item, `filter.itemCode`), counting quantities.
    ItemAcquired,
    /// Items used (optionally one item, `filter.itemCode`), counting quantities.
    ItemUsed,
    /// Highest level reached.
    Level,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeafFilter {
    /// QUEST_COMPLETED only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub quest_id: Option<String>,
    /// ITEM_ACQUIRED and ITEM_USED only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub item_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateEventRequest {
    /// Stored trimmed.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub description: String,
    #[schema(format = DateTime)]
    pub starts_at: String,
    /// After `startsAt`.
    #[schema(format = DateTime)]
    pub ends_at: String,
    pub condition: Condition,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: String,
    pub name: String,
    pub description: String,
    pub starts_at: String,
    pub ends_at: String,
    pub status: EventStatus,
    pub condition: Condition,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

/// Filters of the event list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(default, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    pub status: Option<EventStatus>,
    /// Only events whose window contains this time.
    #[param(value_type = Option<String>, format = DateTime)]
    pub active_at: Option<Timestamp>,
}

/// Changes to an event; absent fields stay as they are. The condition of an ACTIVE event
/// cannot change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateEventRequest {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    #[schema(format = DateTime)]
    pub starts_at: Option<String>,
    /// After `startsAt` (the new one, or the event's).
    #[schema(format = DateTime)]
    pub ends_at: Option<String>,
    pub condition: Option<Condition>,
}

/// `DRAFT -> ACTIVE | ENDED`, `ACTIVE <-> INACTIVE`, `ACTIVE | INACTIVE -> ENDED`; ENDED is final.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetStatusRequest {
    pub status: EventStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RewardType {
    /// `amount` points.
    Point,
    /// `quantity` of `itemCode`.
    Item,
    /// One coupon from `couponTemplate`, with a unique code.
    Coupon,
}

/// A new reward, by `type`: each type has the fields it needs and no others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE", deny_unknown_fields)]
pub enum CreateRewardRequest {
    /// `amount` points per claim.
    #[serde(rename_all = "camelCase")]
    Point {
        #[serde(deserialize_with = "crate::de::integer")]
        #[schema(minimum = 1, maximum = 1_000_000)]
        amount: i64,
        /// Units that can be claimed in all; absent or null is unlimited.
        #[serde(default, deserialize_with = "crate::de::optional_integer")]
        #[schema(minimum = 0, maximum = 1_000_000_000)]
        total_stock: Option<i64>,
        /// Claims one user may hold for this reward (default 1).
        #[serde(default, deserialize_with = "crate::de::optional_integer")]
        #[schema(minimum = 1, maximum = 1_000)]
        per_user_limit: Option<i32>,
    },
    /// `quantity` of `itemCode` per claim.
    #[serde(rename_all = "camelCase")]
    Item {
        /// Stored trimmed.
        #[schema(
            min_length = 1,
            max_length = 64,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )]
        item_code: String,
        #[serde(deserialize_with = "crate::de::integer")]
        #[schema(minimum = 1, maximum = 10_000)]
        quantity: i32,
        #[serde(default, deserialize_with = "crate::de::optional_integer")]
        #[schema(minimum = 0, maximum = 1_000_000_000)]
        total_stock: Option<i64>,
        #[serde(default, deserialize_with = "crate::de::optional_integer")]
        #[schema(minimum = 1, maximum = 1_000)]
        per_user_limit: Option<i32>,
    },
    /// One coupon per claim, with a unique code, from `couponTemplate`.
    #[serde(rename_all = "camelCase")]
    Coupon {
        /// Stored trimmed.
        #[schema(
            min_length = 1,
            max_length = 64,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
        )]
        coupon_template: String,
        #[serde(default, deserialize_with = "crate::de::optional_integer")]
        #[schema(minimum = 0, maximum = 1_000_000_000)]
        total_stock: Option<i64>,
        #[serde(default, deserialize_with = "crate::de::optional_integer")]
        #[schema(minimum = 1, maximum = 1_000)]
        per_user_limit: Option<i32>,
    },
}

impl CreateRewardRequest {
    /// Units that can be claimed in all; `None` is unlimited.
    pub fn total_stock(&self) -> Option<i64> {
        match self {
            Self::Point { total_stock, .. }
            | Self::Item { total_stock, .. }
            | Self::Coupon { total_stock, .. } => *total_stock,
        }
    }

    /// Claims one user may hold, if given.
    pub fn per_user_limit(&self) -> Option<i32> {
        match self {
            Self::Point { per_user_limit, .. }
            | Self::Item { per_user_limit, .. }
            | Self::Coupon { per_user_limit, .. } => *per_user_limit,
        }
    }
}

/// Changes to a reward. `totalStock` may grow, or shrink down to what is already reserved;
/// `null` makes it unlimited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRewardRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 1_000_000_000)]
    pub total_stock: Option<Option<i64>>,
    #[serde(default, deserialize_with = "crate::de::optional_integer")]
    #[schema(minimum = 1, maximum = 1_000)]
    pub per_user_limit: Option<i32>,
}

/// `Some(None)` for an explicit `null`, `None` (via `default`) when the field is absent.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    crate::de::optional_integer(deserializer).map(Some)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reward {
    pub id: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: RewardType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon_template: Option<String>,
    /// Null when unlimited.
    pub total_stock: Option<i64>,
    /// Units held by PENDING and SUCCEEDED claims.
    pub reserved: i64,
    /// `totalStock - reserved`; null when unlimited.
    pub remaining: Option<i64>,
    pub per_user_limit: i32,
    pub created_at: String,
    pub updated_at: String,
}

/// One leaf of an event's condition, for one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeafProgress {
    pub metric: Metric,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<LeafFilter>,
    pub current: i64,
    pub target: u32,
    pub met: bool,
}

/// A user's progress towards an event's condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub event_id: String,
    pub user_id: String,
    /// Whether the whole condition tree is met.
    pub met: bool,
    /// The leaves in the order they appear in the condition.
    pub leaves: Vec<LeafProgress>,
}

/// A claim request's body: optional, part of what an `Idempotency-Key` stands for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimRequest {
    /// Free text kept with the claim.
    #[schema(max_length = 200)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClaimStep {
    Requested,
    StockReserved,
    /// The grant command reached Kafka (one per attempt).
    CommandPublished,
    /// No result in time: the same command sent again. Claims stored before this step had
    /// its name may hold `RECOMMANDED`, which reads as this step.
    #[serde(alias = "RECOMMANDED")]
    CommandResent,
    ResultReceived,
    Completed,
    /// The grant failed or never answered: stock released, claim FAILED.
    Compensated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimEvent {
    pub step: ClaimStep,
    /// RFC 3339.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClaimStatus {
    /// Stock reserved, grant commanded, result not in yet.
    Pending,
    Succeeded,
    /// The grant failed; the stock was returned.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub id: String,
    pub user_id: String,
    pub event_id: String,
    pub reward_id: String,
    pub status: ClaimStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// COUPON rewards: the code issued, once SUCCEEDED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon_code: Option<String>,
    /// Grant commands sent so far (re-sent when no result arrives in time).
    pub attempts: i32,
    pub created_at: String,
    pub updated_at: String,
    /// The saga's steps with their times; only in `GET /claims/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<ClaimEvent>>,
}

/// Filters of the staff claim list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(default, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ClaimFilter {
    pub user_id: Option<String>,
    pub event_id: Option<String>,
    pub status: Option<ClaimStatus>,
    /// Claims made at or after this time.
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<Timestamp>,
    /// Claims made before this time.
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<Timestamp>,
}

/// Filters of a player's own claim list.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(default, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct MyClaimFilter {
    pub event_id: Option<String>,
    pub status: Option<ClaimStatus>,
    /// Claims made at or after this time.
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<Timestamp>,
    /// Claims made before this time.
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<Timestamp>,
}

impl MyClaimFilter {
    /// The staff filter that selects the same claims of `user_id`.
    pub fn of(self, user_id: String) -> ClaimFilter {
        ClaimFilter {
            user_id: Some(user_id),
            event_id: self.event_id,
            status: self.status,
            from: self.from,
            to: self.to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_branch_of_a_condition_takes_no_other_field() {
        let leaf = json!({ "metric": "LEVEL", "op": ">=", "value": 1 });
        assert!(serde_json::from_value::<Condition>(json!({ "all": [leaf] })).is_ok());
        for bad in [
            json!({ "all": [leaf], "any": [leaf] }),
            json!({ "all": [leaf], "x": 1 }),
        ] {
            assert!(
                serde_json::from_value::<Condition>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn each_reward_type_has_its_own_fields_and_no_others() {
        let item = json!({ "type": "ITEM", "itemCode": "gem", "quantity": 2, "totalStock": 5 });
        assert_eq!(
            serde_json::from_value::<CreateRewardRequest>(item).unwrap(),
            CreateRewardRequest::Item {
                item_code: "gem".into(),
                quantity: 2,
                total_stock: Some(5),
                per_user_limit: None,
            }
        );
        for bad in [
            json!({ "type": "ITEM", "quantity": 2 }),
            json!({ "type": "POINT", "amount": 1, "itemCode": "gem" }),
            json!({ "type": "COUPON" }),
            json!({ "type": "BADGE" }),
        ] {
            assert!(
                serde_json::from_value::<CreateRewardRequest>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_resent_step_is_written_command_resent_and_read_under_either_name() {
        let written = serde_json::to_value(ClaimStep::CommandResent).unwrap();
        assert_eq!(written, "COMMAND_RESENT");
        for name in ["COMMAND_RESENT", "RECOMMANDED"] {
            let read: ClaimStep = serde_json::from_value(name.into()).unwrap();
            assert_eq!(read, ClaimStep::CommandResent, "{name}");
        }
    }
}
