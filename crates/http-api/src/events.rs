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
    /// Only `>=` for now.
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
    pub created_at: String,
    pub updated_at: String,
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
