//! The audit trail: one record per staff action (who did what to which target, the fields
//! it changed before and after, when, and in which request), written in the same MongoDB
//! transaction as the change it describes, in the acting service's own database.
//!
//! Records are only ever inserted: this crate has no function that updates or deletes one,
//! and the only route over them is `GET /audit`, which the gateway gathers from every service
//! (`http_api::audit` has the API's shape).

use auth_claims::{Identity, IdentityKey, Role};
use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use futures::TryStreamExt;
use http_api::Timestamp;
use http_api::audit::{AuditPage, AuditQuery, AuditRecord, FieldChange, MAX_REASON};
use mongo_kit::mongodb::bson::{DateTime, Document, doc};
use mongo_kit::mongodb::{ClientSession, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use service_kit::{FieldError, Problem, Query};

const COLLECTION: &str = "audit";

/// Who acts: the caller's identity, and the request it acts in.
#[derive(Debug, Clone)]
pub struct Actor {
    pub identity: Identity,
    pub request_id: Option<String>,
}

impl<S> FromRequestParts<S> for Actor
where
    IdentityKey: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let identity = Identity::from_request_parts(parts, state).await?;
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Self {
            identity,
            request_id,
        })
    }
}

/// A record as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditDoc {
    #[serde(rename = "_id")]
    id: String,
    service: String,
    actor: String,
    action: String,
    target_type: String,
    target_id: String,
    changes: Vec<FieldChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    at: DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

impl AuditDoc {
    fn to_api(&self) -> AuditRecord {
        AuditRecord {
            id: self.id.clone(),
            service: self.service.clone(),
            actor: self.actor.clone(),
            action: self.action.clone(),
            target_type: self.target_type.clone(),
            target_id: self.target_id.clone(),
            changes: self.changes.clone(),
            reason: self.reason.clone(),
            at: self.at.try_to_rfc3339_string().unwrap_or_default(),
            request_id: self.request_id.clone(),
        }
    }
}

/// One action about to be recorded: see [`Audit::entry`].
#[derive(Debug, Clone)]
pub struct Entry(AuditDoc);

impl Entry {
    /// The fields that differ between `before` (None for a creation) and `after`, compared
    /// as JSON objects; `updatedAt` is left out, since every change moves it.
    pub fn changed<T: Serialize>(mut self, before: Option<&T>, after: &T) -> Self {
        self.0.changes = changes(before, after);
        self
    }

    pub fn reason(mut self, reason: Option<&str>) -> Self {
        self.0.reason = reason.map(str::to_owned);
        self
    }
}

/// The reason a staff member gives for an action, trimmed, or why it cannot be one (the field
/// `reason`): 1 to [`MAX_REASON`] characters, not all blank, without control characters.
pub fn reason(text: &str) -> Result<&str, FieldError> {
    if http_api::text::is_visible_text(text, MAX_REASON) {
        Ok(text.trim())
    } else {
        Err(FieldError::new(
            "reason",
            format!(
                "say why: 1 to {MAX_REASON} characters, not all blank, without control characters"
            ),
        ))
    }
}

/// A service's audit trail.
#[derive(Clone)]
pub struct Audit {
    records: Collection<AuditDoc>,
    service: &'static str,
}

impl Audit {
    pub fn new(db: &Database, service: &'static str) -> Self {
        Self {
            records: db.collection(COLLECTION),
            service,
        }
    }

    /// The record of `actor` doing `action` to the target `(type, id)`.
    pub fn entry(&self, actor: &Actor, action: &str, target: (&str, &str)) -> Entry {
        Entry(AuditDoc {
            id: uuid::Uuid::now_v7().to_string(),
            service: self.service.to_owned(),
            actor: actor.identity.sub.clone(),
            action: action.to_owned(),
            target_type: target.0.to_owned(),
            target_id: target.1.to_owned(),
            changes: Vec::new(),
            reason: None,
            at: DateTime::now(),
            request_id: actor.request_id.clone(),
        })
    }

    /// Records `entry` inside the caller's transaction, so it exists exactly when the change
    /// it describes does.
    pub async fn write(
        &self,
        session: &mut ClientSession,
        entry: &Entry,
    ) -> Result<(), mongo_kit::mongodb::error::Error> {
        self.records.insert_one(&entry.0).session(session).await?;
        Ok(())
    }

    /// Indexes for the filters of `GET /audit`, each newest first.
    pub async fn ensure_indexes(&self) -> Result<(), mongo_kit::mongodb::error::Error> {
        for field in ["actor", "targetId", "action"] {
            let keys = doc! { field: 1, "_id": -1 };
            self.records
                .create_index(IndexModel::builder().keys(keys).build())
                .await?;
        }
        Ok(())
    }

    /// The newest `query.size` records that match, and the cursor to the next page.
    pub async fn list(
        &self,
        query: &AuditQuery,
    ) -> Result<AuditPage, mongo_kit::mongodb::error::Error> {
        let found: Vec<AuditDoc> = self
            .records
            .find(filter(query))
            .sort(doc! { "_id": -1 })
            .limit(i64::try_from(query.size + 1).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        let more = found.len() as u64 > query.size;
        let items: Vec<AuditRecord> = found
            .iter()
            .take(query.size as usize)
            .map(AuditDoc::to_api)
            .collect();
        let next = more.then(|| items.last().map(|r| r.id.clone())).flatten();
        Ok(AuditPage { items, next })
    }
}

fn filter(query: &AuditQuery) -> Document {
    let mut filter = Document::new();
    let exact = [
        ("actor", &query.actor),
        ("action", &query.action),
        ("targetId", &query.target),
    ];
    for (field, value) in exact {
        if let Some(value) = value {
            filter.insert(field, value);
        }
    }
    let range = mongo_kit::time_range(
        query.from.map(Timestamp::unix_millis),
        query.to.map(Timestamp::unix_millis),
    );
    if let Some(range) = range {
        filter.insert("at", range);
    }
    if let Some(before) = &query.before {
        filter.insert("_id", doc! { "$lt": before });
    }
    filter
}

/// The fields of `after` (a JSON object) whose values differ from `before`'s.
fn changes<T: Serialize>(before: Option<&T>, after: &T) -> Vec<FieldChange> {
    let object = |value: Option<Value>| match value {
        Some(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let before = object(before.and_then(|b| serde_json::to_value(b).ok()));
    let after = object(serde_json::to_value(after).ok());
    let mut fields: Vec<&String> = before.keys().chain(after.keys()).collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter(|field| *field != "updatedAt" && before.get(*field) != after.get(*field))
        .map(|field| FieldChange {
            field: field.clone(),
            before: before.get(field).cloned(),
            after: after.get(field).cloned(),
        })
        .collect()
}

#[derive(Clone)]
struct AuditState {
    audit: Audit,
    identity: IdentityKey,
}

impl FromRef<AuditState> for IdentityKey {
    fn from_ref(state: &AuditState) -> Self {
        state.identity.clone()
    }
}

/// `GET /audit` of one service (AUDITOR and ADMIN); the gateway gathers every service's.
pub fn routes(audit: Audit, identity: IdentityKey) -> Router {
    Router::new()
        .route("/audit", get(list))
        .with_state(AuditState { audit, identity })
}

async fn list(
    State(state): State<AuditState>,
    identity: Identity,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, Problem> {
    identity.require(&[Role::Auditor])?;
    state
        .audit
        .list(&query)
        .await
        .map(Json)
        .map_err(|e| Problem::database_unavailable(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_name_each_differing_field_with_both_values() {
        let before = json!({ "name": "a", "stock": 5, "updatedAt": 1, "same": true });
        let after = json!({ "name": "b", "stock": 5, "updatedAt": 2, "same": true, "new": 1 });
        let changed: Vec<_> = changes(Some(&before), &after)
            .into_iter()
            .map(|c| (c.field, c.before, c.after))
            .collect();
        assert_eq!(
            changed,
            [
                ("name".to_owned(), Some(json!("a")), Some(json!("b"))),
                ("new".to_owned(), None, Some(json!(1))),
            ]
        );
    }

    #[test]
    fn a_reason_is_visible_text_of_at_most_500_characters_kept_trimmed() {
        assert_eq!(reason("  spam  "), Ok("spam"));
        assert_eq!(
            reason(&"x".repeat(MAX_REASON)).map(str::len),
            Ok(MAX_REASON)
        );
        for refused in ["", "   ", "a\u{0}b", &"x".repeat(MAX_REASON + 1)] {
            assert_eq!(reason(refused).unwrap_err().field, "reason", "{refused:?}");
        }
    }

    #[test]
    fn a_creation_lists_every_field_without_a_before() {
        let changed = changes(None, &json!({ "name": "a" }));
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].before, None);
    }
}
