//! The audit trail as the API shows it: one record per staff action, newest first, read a
//! page at a time by cursor (`before`, the last id of the previous page).

use crate::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The longest reason a staff member may give for an action, in characters. A reason is
/// [`crate::text::VISIBLE_TEXT`] and is kept trimmed in the action's record.
pub const MAX_REASON: usize = 500;

/// One staff action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Time-ordered (UUID version 7): later records have greater ids.
    pub id: String,
    /// The service whose database holds the record, and whose change it describes.
    pub service: String,
    /// The acting staff member's user id.
    pub actor: String,
    /// What was done, e.g. `event.create`, `user.ban`, `dead_letter.replay`.
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    /// The fields the action changed, before and after (`before` is absent for creations).
    pub changes: Vec<FieldChange>,
    /// The reason the actor gave, where the action takes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[schema(format = DateTime)]
    pub at: String,
    /// The `x-request-id` of the request that did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// One changed field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
}

/// One page of the trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub items: Vec<AuditRecord>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Filters and the page of `GET /audit`.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[serde(default, rename_all = "camelCase", try_from = "RawAuditQuery")]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Records of this actor (user id).
    pub actor: Option<String>,
    /// Records of this action.
    pub action: Option<String>,
    /// Records about this target id (a user, event, reward or dead letter).
    pub target: Option<String>,
    /// Records at or after this time.
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<Timestamp>,
    /// Records before this time.
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<Timestamp>,
    /// Records older than this id: the `next` of the previous page.
    pub before: Option<String>,
    /// Records per page.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub size: u64,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            actor: None,
            action: None,
            target: None,
            from: None,
            to: None,
            before: None,
            size: 20,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuditQuery {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    before: Option<String>,
    size: Option<u64>,
}

impl TryFrom<RawAuditQuery> for AuditQuery {
    type Error = String;

    fn try_from(raw: RawAuditQuery) -> Result<Self, String> {
        let size = raw.size.unwrap_or(20);
        if !(1..=100).contains(&size) {
            return Err("size: must be 1 to 100".to_owned());
        }
        Ok(Self {
            actor: raw.actor,
            action: raw.action,
            target: raw.target,
            from: raw.from,
            to: raw.to,
            before: raw.before,
            size,
        })
    }
}
