//! Events, their conditions, and claims: bodies of the event service's routes.

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

/// What a player must have done, as a tree: `all` / `any` of leaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Condition {
    All {
        #[schema(no_recursion)]
        all: Vec<Condition>,
    },
    Any {
        #[schema(no_recursion)]
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
    pub op: String,
    pub value: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quest_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateEventRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339; after `startsAt`.
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
pub struct EventFilter {
    pub status: Option<EventStatus>,
    /// Only events whose window contains this time (RFC 3339).
    pub active_at: Option<String>,
}

/// Changes to an event; absent fields stay as they are. The condition of an ACTIVE event
/// cannot change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateEventRequest {
    pub name: Option<String>,
    pub description: Option<String>,
    pub starts_at: Option<String>,
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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRewardRequest {
    #[serde(rename = "type")]
    pub kind: RewardType,
    /// POINT: points per grant (1 to 1,000,000).
    pub amount: Option<i64>,
    /// ITEM: the item granted.
    pub item_code: Option<String>,
    /// ITEM: how many per grant (1 to 10,000).
    pub quantity: Option<i32>,
    /// COUPON: the template coupon codes are issued from.
    pub coupon_template: Option<String>,
    /// Units that can be claimed in all; absent or null is unlimited.
    pub total_stock: Option<i64>,
    /// Claims one user may hold for this reward (default 1).
    pub per_user_limit: Option<i32>,
}

/// Changes to a reward. `totalStock` may grow, or shrink down to what is already reserved;
/// `null` makes it unlimited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRewardRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub total_stock: Option<Option<i64>>,
    pub per_user_limit: Option<i32>,
}

/// `Some(None)` for an explicit `null`, `None` (via `default`) when the field is absent.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
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
    /// Free text kept with the claim (at most 200 characters).
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
pub struct ClaimFilter {
    pub user_id: Option<String>,
    pub event_id: Option<String>,
    pub status: Option<ClaimStatus>,
    /// Claims made at or after this time (RFC 3339).
    pub from: Option<String>,
    /// Claims made before this time (RFC 3339).
    pub to: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
