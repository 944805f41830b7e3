//! Dead letters: messages a consumer could not process, as administrators see and handle them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LetterStatus {
    /// Waiting for a decision.
    New,
    /// Sent back to its original topic (it may be replayed again).
    Replayed,
    /// Given up on, with a reason.
    Discarded,
}

/// Something done to a dead letter, and by whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LetterAction {
    /// `REPLAYED` or `DISCARDED`.
    pub action: String,
    pub by: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterView {
    /// `<topic>:<partition>:<offset>` of the original message.
    pub id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The consumer group that gave up on it.
    pub group: String,
    /// `UNDECODABLE`, `UNKNOWN_SCHEMA`, `INVALID_CONTENT` or `RETRIES_EXHAUSTED`.
    pub error_class: String,
    pub error: String,
    pub attempts: u32,
    pub first_failure_at: String,
    pub last_failure_at: String,
    pub status: LetterStatus,
    pub history: Vec<LetterAction>,
    /// The value decoded through the schema registry, when it can be.
    pub value: Option<serde_json::Value>,
    /// The raw value, base64.
    pub value_base64: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterFilter {
    pub topic: Option<String>,
    pub status: Option<LetterStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiscardRequest {
    /// Kept in the letter's history and the audit record, trimmed.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ReplayAllRequest {
    /// Only this topic's NEW letters (default: all of them).
    #[serde(default)]
    pub topic: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplayAllResponse {
    pub replayed: u64,
}
