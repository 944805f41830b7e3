//! `event_db`: the `events` and `claims` collections and the queries on them.

use crate::error::EventError;
use audit::{Audit, Entry};
use http_api::events::{
    Claim, ClaimEvent, ClaimFilter, ClaimStatus, ClaimStep, Condition, Event, EventFilter,
    EventStatus, Reward, RewardType,
};
use http_api::{Page, PageQuery, Timestamp};
use mongo_kit::mongodb::bson::{DateTime, Document, doc, to_bson};
use mongo_kit::mongodb::options::IndexOptions;
use mongo_kit::mongodb::{Client, ClientSession, Collection, Database, IndexModel};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

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

/// What a reward grants, as commanded to fulfillment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub kind: RewardType,
    pub amount: Option<i64>,
    pub item_code: Option<String>,
    pub quantity: Option<i32>,
    pub coupon_template: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RewardDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub event_id: String,
    #[serde(flatten)]
    pub grant: Grant,
    /// `None`: unlimited.
    pub total_stock: Option<i64>,
    /// Units held by PENDING and SUCCEEDED claims; never above `total_stock`.
    pub reserved: i64,
    pub per_user_limit: i32,
    pub created_at: DateTime,
    pub updated_at: DateTime,
}

impl RewardDoc {
    pub fn to_api(&self) -> Reward {
        Reward {
            id: self.id.clone(),
            event_id: self.event_id.clone(),
            kind: self.grant.kind,
            amount: self.grant.amount,
            item_code: self.grant.item_code.clone(),
            quantity: self.grant.quantity,
            coupon_template: self.grant.coupon_template.clone(),
            total_stock: self.total_stock,
            reserved: self.reserved,
            remaining: self.total_stock.map(|t| (t - self.reserved).max(0)),
            per_user_limit: self.per_user_limit,
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub step: ClaimStep,
    pub at: DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Step {
    pub fn now(step: ClaimStep, detail: Option<String>) -> Self {
        Self {
            step,
            at: DateTime::now(),
            detail,
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
    #[serde(default)]
    pub coupon_code: Option<String>,
    pub idempotency_key: String,
    /// Hash of what the idempotency key stands for: event, reward and body.
    pub fingerprint: String,
    #[serde(default)]
    pub note: Option<String>,
    pub grant: Grant,
    /// The grant command's id, the same for every attempt (fulfillment deduplicates on it).
    pub command_id: String,
    /// Message ids of the commands sent, one per attempt.
    pub command_message_ids: Vec<String>,
    pub attempts: i32,
    /// The retry schedule the claim was made with: every instance follows it, whatever
    /// its own configuration says (a rollout with new timings leaves claims in flight alone).
    pub result_timeout_ms: i64,
    pub max_attempts: i32,
    /// When a PENDING claim without a result is looked at again.
    #[serde(default)]
    pub next_check_at: Option<DateTime>,
    pub timeline: Vec<Step>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    /// The `traceparent` of the request that made the claim: its grant commands, first and
    /// re-sent, continue that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
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
            coupon_code: self.coupon_code.clone(),
            attempts: self.attempts,
            created_at: rfc3339(self.created_at),
            updated_at: rfc3339(self.updated_at),
            timeline: None,
        }
    }

    /// The claim with its timeline, including when each command reached Kafka.
    pub fn to_api_with_timeline(&self, published: &[(String, DateTime)]) -> Claim {
        let mut steps: Vec<ClaimEvent> = Vec::with_capacity(self.timeline.len() + 2);
        let mut all: Vec<(DateTime, ClaimStep, Option<String>)> = self
            .timeline
            .iter()
            .map(|s| (s.at, s.step, s.detail.clone()))
            .collect();
        for (n, (id, at)) in published.iter().enumerate() {
            let attempt = self
                .command_message_ids
                .iter()
                .position(|m| m == id)
                .map_or(n + 1, |p| p + 1);
            all.push((
                *at,
                ClaimStep::CommandPublished,
                Some(format!("attempt {attempt}")),
            ));
        }
        all.sort_by_key(|(at, step, _)| (*at, *step as u8));
        for (at, step, detail) in all {
            steps.push(ClaimEvent {
                step,
                at: rfc3339(at),
                detail,
            });
        }
        Claim {
            timeline: Some(steps),
            ..self.to_api()
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

/// Whether an operator may move an event from `from` to `to` (staying put is allowed).
pub fn transition_allowed(from: EventStatus, to: EventStatus) -> bool {
    use EventStatus::*;
    from == to
        || matches!(
            (from, to),
            (Draft, Active | Ended) | (Active, Inactive | Ended) | (Inactive, Active | Ended)
        )
}

/// Changes to an event, already validated.
#[derive(Debug, Default)]
pub struct EventChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub starts_at: Option<DateTime>,
    pub ends_at: Option<DateTime>,
    pub condition: Option<Condition>,
}

#[derive(Clone)]
pub struct Store {
    client: Client,
    /// Staff changes to events and rewards are recorded with them.
    audit: Audit,
    events: Collection<EventDoc>,
    rewards: Collection<RewardDoc>,
    claims: Collection<ClaimDoc>,
    /// Short-lived copies of events and rewards for the claim path and `GET /events/{id}`.
    ///
    /// Every claim needs its event and reward before it can be queued, and at a few thousand
    /// claims a second two reads per claim are a good share of MongoDB's work for documents
    /// that change a few times a day. The copies only serve the checks before the batch
    /// (does the reward exist and belong to the event, what it grants): the batch reads the
    /// event and the stock again and decides on those. So a copy at most `cache_ttl` old
    /// widens a window that exists anyway (a request reads, its batch commits a little
    /// later), and this instance forgets an entry as soon as it changes it.
    cached_events: Copies<EventDoc>,
    cached_rewards: Copies<RewardDoc>,
}

/// At most 10 000 copies, each at most the ttl old; `None` when the ttl is zero.
type Copies<T> = Option<moka::future::Cache<String, Arc<T>>>;

fn copies<T: Send + Sync + 'static>(ttl: Duration) -> Copies<T> {
    (!ttl.is_zero()).then(|| {
        moka::future::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(ttl)
            .build()
    })
}

/// `id`'s copy in `copies`, or `read` it and keep a copy.
async fn copied<T, F>(copies: &Copies<T>, id: &str, read: F) -> Result<Arc<T>, EventError>
where
    T: Send + Sync + 'static,
    F: Future<Output = Result<T, EventError>>,
{
    let Some(copies) = copies else {
        return Ok(Arc::new(read.await?));
    };
    if let Some(copy) = copies.get(id).await {
        return Ok(copy);
    }
    let value = Arc::new(read.await?);
    copies.insert(id.to_owned(), value.clone()).await;
    Ok(value)
}

async fn forget<T: Send + Sync + 'static>(copies: &Copies<T>, id: &str) {
    if let Some(copies) = copies {
        copies.invalidate(id).await;
    }
}

impl Store {
    /// `cache_ttl`: how old the copies of events and rewards the claim path uses may be;
    /// zero turns the copies off.
    pub fn new(db: &Database, audit: Audit, cache_ttl: Duration) -> Self {
        Self {
            client: db.client().clone(),
            audit,
            events: db.collection("events"),
            rewards: db.collection("rewards"),
            claims: db.collection("claims"),
            cached_events: copies(cache_ttl),
            cached_rewards: copies(cache_ttl),
        }
    }

    /// Where staff changes are recorded.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The event, from a copy at most `cache_ttl` old.
    pub async fn cached_event(&self, id: &str) -> Result<Arc<EventDoc>, EventError> {
        copied(&self.cached_events, id, self.event(id)).await
    }

    /// The reward, from a copy at most `cache_ttl` old.
    pub async fn cached_reward(&self, id: &str) -> Result<Arc<RewardDoc>, EventError> {
        copied(&self.cached_rewards, id, self.reward(id)).await
    }

    /// Applies `changes` unless the event has ended, or they touch the condition of an ACTIVE
    /// event. The write is conditional on the event being as read, so a concurrent status
    /// change cannot slip between the check and the update.
    pub async fn update_event(
        &self,
        id: &str,
        changes: EventChanges,
        entry: Entry,
    ) -> Result<EventDoc, EventError> {
        let event = self.event(id).await?;
        let now = DateTime::now();
        if event.effective_status(now) == EventStatus::Ended {
            return Err(EventError::EventEnded);
        }
        if changes
            .condition
            .as_ref()
            .is_some_and(|c| *c != event.condition)
            && event.status == EventStatus::Active
        {
            return Err(EventError::EventActive);
        }
        let mut updated = event.clone();
        if let Some(name) = changes.name {
            updated.name = name;
        }
        if let Some(description) = changes.description {
            updated.description = description;
        }
        updated.starts_at = changes.starts_at.unwrap_or(updated.starts_at);
        updated.ends_at = changes.ends_at.unwrap_or(updated.ends_at);
        if updated.ends_at <= updated.starts_at {
            return Err(EventError::Validation(vec![service_kit::FieldError::new(
                "endsAt",
                "must be after startsAt",
            )]));
        }
        if let Some(condition) = changes.condition {
            updated.condition = condition;
        }
        updated.updated_at = now;
        let entry = entry.changed(Some(&event.to_api(now)), &updated.to_api(now));
        let filter =
            doc! { "_id": id, "status": bson_of(&event.status)?, "updatedAt": event.updated_at };
        let (events, audit, doc) = (self.events.clone(), self.audit.clone(), updated.clone());
        let replaced = self
            .transaction(async move |s| {
                let replaced = events
                    .replace_one(filter.clone(), &doc)
                    .session(&mut *s)
                    .await?;
                if replaced.matched_count == 1 {
                    audit.write(s, &entry).await?;
                }
                Ok(replaced.matched_count == 1)
            })
            .await?;
        forget(&self.cached_events, id).await;
        if !replaced {
            return Err(EventError::Conflict);
        }
        Ok(updated)
    }

    pub async fn set_status(
        &self,
        id: &str,
        to: EventStatus,
        entry: Entry,
    ) -> Result<EventDoc, EventError> {
        let event = self.event(id).await?;
        let now = DateTime::now();
        let from = event.effective_status(now);
        if !transition_allowed(from, to) {
            return Err(EventError::InvalidTransition { from, to });
        }
        if from == to {
            return Ok(event);
        }
        let updated = EventDoc {
            status: to,
            updated_at: now,
            ..event.clone()
        };
        let entry = entry.changed(Some(&event.to_api(now)), &updated.to_api(now));
        let filter = doc! { "_id": id, "status": bson_of(&event.status)? };
        let update = doc! { "$set": { "status": bson_of(&to)?, "updatedAt": now } };
        let (events, audit) = (self.events.clone(), self.audit.clone());
        let changed = self
            .transaction(async move |s| {
                let changed = events
                    .update_one(filter.clone(), update.clone())
                    .session(&mut *s)
                    .await?;
                if changed.matched_count == 1 {
                    audit.write(s, &entry).await?;
                }
                Ok(changed.matched_count == 1)
            })
            .await?;
        forget(&self.cached_events, id).await;
        if !changed {
            return Err(EventError::Conflict);
        }
        Ok(updated)
    }

    pub async fn insert_reward(&self, reward: &RewardDoc, entry: Entry) -> Result<(), EventError> {
        let entry = entry.changed(None, &reward.to_api());
        let (rewards, audit, reward) = (self.rewards.clone(), self.audit.clone(), reward.clone());
        self.transaction(async move |s| {
            rewards.insert_one(&reward).session(&mut *s).await?;
            audit.write(s, &entry).await
        })
        .await?;
        Ok(())
    }

    pub async fn reward(&self, id: &str) -> Result<RewardDoc, EventError> {
        self.rewards
            .find_one(doc! { "_id": id })
            .await?
            .ok_or(EventError::RewardNotFound)
    }

    pub async fn rewards_of(&self, event_id: &str) -> Result<Vec<RewardDoc>, EventError> {
        use futures::TryStreamExt;
        Ok(self
            .rewards
            .find(doc! { "eventId": event_id })
            .sort(doc! { "createdAt": 1, "_id": 1 })
            .limit(1000)
            .await?
            .try_collect()
            .await?)
    }

    /// `total_stock`: `Some(None)` makes the reward unlimited; a number may not go below what
    /// is reserved, checked in the update itself so a claim in between cannot be oversold.
    pub async fn update_reward(
        &self,
        id: &str,
        total_stock: Option<Option<i64>>,
        per_user_limit: Option<i32>,
        entry: Entry,
    ) -> Result<RewardDoc, EventError> {
        let mut filter = doc! { "_id": id };
        let mut set = doc! { "updatedAt": DateTime::now() };
        match total_stock {
            Some(Some(total)) => {
                filter.insert("reserved", doc! { "$lte": total });
                set.insert("totalStock", total);
            }
            Some(None) => {
                set.insert("totalStock", mongo_kit::mongodb::bson::Bson::Null);
            }
            None => {}
        }
        if let Some(limit) = per_user_limit {
            set.insert("perUserLimit", limit);
        }
        let (rewards, audit, id_filter) =
            (self.rewards.clone(), self.audit.clone(), doc! { "_id": id });
        let update = doc! { "$set": set };
        let updated = self
            .transaction(async move |s| {
                let before = rewards.find_one(id_filter.clone()).session(&mut *s).await?;
                let after = rewards
                    .find_one_and_update(filter.clone(), update.clone())
                    .return_document(mongo_kit::mongodb::options::ReturnDocument::After)
                    .session(&mut *s)
                    .await?;
                if let (Some(before), Some(after)) = (&before, &after) {
                    let entry = entry
                        .clone()
                        .changed(Some(&before.to_api()), &after.to_api());
                    audit.write(s, &entry).await?;
                }
                Ok(after)
            })
            .await?;
        forget(&self.cached_rewards, id).await;
        match updated {
            Some(reward) => Ok(reward),
            None => {
                let reward = self.reward(id).await?;
                Err(EventError::StockBelowReserved {
                    reserved: reward.reserved,
                })
            }
        }
    }

    pub async fn claim(&self, id: &str) -> Result<ClaimDoc, EventError> {
        self.claims
            .find_one(doc! { "_id": id })
            .await?
            .ok_or(EventError::ClaimNotFound)
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
        self.rewards
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "eventId": 1, "createdAt": 1 })
                    .build(),
            )
            .await?;
        Ok(())
    }

    pub async fn insert_event(&self, event: &EventDoc, entry: Entry) -> Result<(), EventError> {
        let entry = entry.changed(None, &event.to_api(event.created_at));
        let (events, audit, event) = (self.events.clone(), self.audit.clone(), event.clone());
        self.transaction(async move |s| {
            events.insert_one(&event).session(&mut *s).await?;
            audit.write(s, &entry).await
        })
        .await?;
        Ok(())
    }

    /// Runs `work` in a transaction, retried as a whole on transient errors.
    async fn transaction<T, F>(&self, work: F) -> Result<T, mongo_kit::mongodb::error::Error>
    where
        F: for<'s> AsyncFnMut(&'s mut ClientSession) -> Result<T, mongo_kit::mongodb::error::Error>,
    {
        let mut session = self.client.start_session().await?;
        session.start_transaction().and_run2(work).await
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
        if let Some(at) = filter.active_at {
            let at = DateTime::from_millis(at.unix_millis());
            query.insert("startsAt", doc! { "$lte": at });
            query.insert("endsAt", doc! { "$gt": at });
        }
        page_of(&self.events, query, doc! { "startsAt": -1, "_id": 1 }, page).await
    }

    /// Events that have been opened to players (any status but DRAFT), newest first: ids
    /// are UUID v7, in the order events were created.
    pub async fn opened_events(&self, page: PageQuery) -> Result<Page<EventDoc>, EventError> {
        let query = doc! { "status": { "$ne": bson_of(&EventStatus::Draft)? } };
        page_of(&self.events, query, doc! { "_id": -1 }, page).await
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
        let range = mongo_kit::time_range(
            filter.from.map(Timestamp::unix_millis),
            filter.to.map(Timestamp::unix_millis),
        );
        if let Some(range) = range {
            query.insert("createdAt", range);
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

#[cfg(test)]
mod tests {
    use super::*;
    use mongo_kit::mongodb::bson;

    #[test]
    fn a_stored_recommanded_step_loads_and_is_stored_again_as_command_resent() {
        let stored = doc! { "step": "RECOMMANDED", "at": DateTime::from_millis(0) };
        let step: Step = bson::from_document(stored).unwrap();
        assert_eq!(step.step, ClaimStep::CommandResent);
        let written = bson::to_document(&step).unwrap();
        assert_eq!(written.get_str("step"), Ok("COMMAND_RESENT"));
    }
}
