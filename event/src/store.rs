//! `event_db`: the `events` and `claims` collections and the queries on them.

use crate::error::EventError;
use http_api::events::{
    Claim, ClaimFilter, ClaimStatus, Condition, Event, EventFilter, EventStatus,
};
use http_api::{Page, PageQuery};
use mongo_kit::mongodb::bson::{DateTime, Document, doc, to_bson};
use mongo_kit::mongodb::options::IndexOptions;
use mongo_kit::mongodb::{Collection, Database, IndexModel};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    pub description: String,
    pub starts_at: DateTime,
    pub ends_at: DateTime,
    /// As set by operators; [`EventDoc::effective_status`] is what clients see.
    pub status: EventStatus,
    pub condition: Condition,
    pub created_by: String,
    pub created_at: DateTime,
    pub updated_at: DateTime,
}

impl EventDoc {
    /// An event past its end reads as ENDED whatever its stored status.
    pub fn effective_status(&self, now: DateTime) -> EventStatus {
        if now >= self.ends_at {
            EventStatus::Ended
        } else {
            self.status
        }
    }

    pub fn to_api(&self, now: DateTime) -> Event {
        Event {
            id: self.id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            starts_at: rfc3339(self.starts_at),
            ends_at: rfc3339(self.ends_at),
            status: self.effective_status(now),
            condition: self.condition.clone(),
            created_by: self.created_by.clone(),
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub user_id: String,
    pub event_id: String,
    pub reward_id: String,
    pub status: ClaimStatus,
    pub failure_reason: Option<String>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
}

impl ClaimDoc {
    pub fn to_api(&self) -> Claim {
        Claim {
            id: self.id.clone(),
            user_id: self.user_id.clone(),
            event_id: self.event_id.clone(),
            reward_id: self.reward_id.clone(),
            status: self.status,
            failure_reason: self.failure_reason.clone(),
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        }
    }
}

pub fn rfc3339(time: DateTime) -> String {
    time.try_to_rfc3339_string().unwrap_or_default()
}

/// Parses an RFC 3339 time, naming `field` when it is not one.
pub fn parse_time(field: &str, text: &str) -> Result<DateTime, service_kit::FieldError> {
    DateTime::parse_rfc3339_str(text).map_err(|_| {
        service_kit::FieldError::new(field, "must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z")
    })
}

#[derive(Clone)]
pub struct Store {
    events: Collection<EventDoc>,
    claims: Collection<ClaimDoc>,
}

impl Store {
    pub fn new(db: &Database) -> Self {
        Self {
            events: db.collection("events"),
            claims: db.collection("claims"),
        }
    }

    pub async fn ensure_indexes(&self) -> Result<(), EventError> {
        self.events
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "status": 1, "endsAt": 1 })
                    .build(),
            )
            .await?;
        self.events
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "startsAt": 1, "endsAt": 1 })
                    .build(),
            )
            .await?;
        let by_user = IndexModel::builder()
            .keys(doc! { "userId": 1, "createdAt": -1 })
            .options(
                IndexOptions::builder()
                    .name("user_claims".to_owned())
                    .build(),
            )
            .build();
        self.claims.create_index(by_user).await?;
        self.claims
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "eventId": 1, "createdAt": -1 })
                    .build(),
            )
            .await?;
        Ok(())
    }

    pub async fn insert_event(&self, event: &EventDoc) -> Result<(), EventError> {
        self.events.insert_one(event).await?;
        Ok(())
    }

    pub async fn event(&self, id: &str) -> Result<EventDoc, EventError> {
        self.events
            .find_one(doc! { "_id": id })
            .await?
            .ok_or(EventError::EventNotFound)
    }

    pub async fn list_events(
        &self,
        filter: &EventFilter,
        page: PageQuery,
        now: DateTime,
    ) -> Result<Page<EventDoc>, EventError> {
        let mut query = Document::new();
        match filter.status {
            // What reads as ENDED: stored so, or past its end.
            Some(EventStatus::Ended) => {
                query.insert(
                    "$or",
                    vec![
                        doc! { "status": "ENDED" },
                        doc! { "endsAt": { "$lte": now } },
                    ],
                );
            }
            Some(status) => {
                query.insert("status", bson_of(&status)?);
                query.insert("endsAt", doc! { "$gt": now });
            }
            None => {}
        }
        if let Some(at) = &filter.active_at {
            let at = parse_time("activeAt", at).map_err(|e| EventError::Validation(vec![e]))?;
            query.insert("startsAt", doc! { "$lte": at });
            query.insert("endsAt", doc! { "$gt": at });
        }
        page_of(&self.events, query, doc! { "startsAt": -1, "_id": 1 }, page).await
    }

    pub async fn list_claims(
        &self,
        filter: &ClaimFilter,
        page: PageQuery,
    ) -> Result<Page<ClaimDoc>, EventError> {
        let mut query = Document::new();
        if let Some(user) = &filter.user_id {
            query.insert("userId", user);
        }
        if let Some(event) = &filter.event_id {
            query.insert("eventId", event);
        }
        if let Some(status) = filter.status {
            query.insert("status", bson_of(&status)?);
        }
        let mut created = Document::new();
        if let Some(from) = &filter.from {
            let from = parse_time("from", from).map_err(|e| EventError::Validation(vec![e]))?;
            created.insert("$gte", from);
        }
        if let Some(to) = &filter.to {
            let to = parse_time("to", to).map_err(|e| EventError::Validation(vec![e]))?;
            created.insert("$lt", to);
        }
        if !created.is_empty() {
            query.insert("createdAt", created);
        }
        page_of(
            &self.claims,
            query,
            doc! { "createdAt": -1, "_id": 1 },
            page,
        )
        .await
    }
}

async fn page_of<T>(
    collection: &Collection<T>,
    query: Document,
    sort: Document,
    page: PageQuery,
) -> Result<Page<T>, EventError>
where
    T: DeserializeOwned + Send + Sync,
{
    let page = page.clamped();
    let (items, total) =
        mongo_kit::find_page(collection, query, sort, page.skip(), page.size).await?;
    Ok(Page {
        items,
        page: page.page,
        size: page.size,
        total,
    })
}

fn bson_of<T: Serialize>(value: &T) -> Result<mongo_kit::mongodb::bson::Bson, EventError> {
    to_bson(value).map_err(|e| EventError::Internal(e.to_string()))
}
