//! The dead-letter queue: where a consumer puts a message it cannot process, and how an
//! administrator looks at, replays or discards it.
//!
//! A dead letter goes two places, both keyed by its original position
//! (`<topic>:<partition>:<offset>`, so recording it twice is harmless):
//! - `<topic>.dlq`, with the original key, value and headers plus `dlq.*` headers naming the
//!   original topic, partition and offset, the consumer group, the error class and message,
//!   the attempts and the first and last failure times: what `kcat` users see;
//! - the consuming service's `dead_letters` collection, which the admin API reads and where
//!   replays and discards are recorded.
//!
//! A replay sends the original record (key, value, headers, so also its message id) back to
//! its topic; the inbox still drops it if it was processed after all.

use crate::metrics as names;
use crate::outbox::MESSAGE_ID_HEADER;
use crate::registry::SchemaRegistry;
use audit::{Actor, Audit};
use auth_claims::{Identity, IdentityKey, Role};
use axum::Router;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use http_api::dlq::{
    DeadLetterFilter, DeadLetterView, DiscardRequest, LetterAction, LetterStatus, ReplayAllRequest,
    ReplayAllResponse,
};
use http_api::{Page, PageQuery};
use mongo_kit::mongodb::bson::{Binary, DateTime, Document, doc, spec::BinarySubtype, to_bson};
use mongo_kit::mongodb::options::UpdateOptions;
use mongo_kit::mongodb::{Collection, Database, IndexModel};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use service_kit::{Json, OptionalJson, Problem, Query};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why a message was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Not Avro in the Confluent framing (or empty).
    Undecodable,
    /// Framed, but the registry knows no schema with that id.
    UnknownSchema,
    /// Decoded, but the content is wrong (the consumer rejected it).
    InvalidContent,
    /// Processing kept failing.
    RetriesExhausted,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Undecodable => "UNDECODABLE",
            ErrorClass::UnknownSchema => "UNKNOWN_SCHEMA",
            ErrorClass::InvalidContent => "INVALID_CONTENT",
            ErrorClass::RetriesExhausted => "RETRIES_EXHAUSTED",
        }
    }
}

/// A dead letter as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    #[serde(rename = "_id")]
    pub id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Binary>,
    pub headers: Vec<(String, String)>,
    pub group: String,
    pub error_class: String,
    pub error: String,
    pub attempts: u32,
    pub first_failure_at: DateTime,
    pub last_failure_at: DateTime,
    pub status: LetterStatus,
    pub history: Vec<StoredAction>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredAction {
    pub action: String,
    pub by: String,
    pub at: DateTime,
    pub reason: Option<String>,
}

impl DeadLetter {
    pub fn from_message(
        raw: &OwnedMessage,
        group: &str,
        class: ErrorClass,
        error: &str,
        attempts: u32,
    ) -> Self {
        let now = DateTime::now();
        let headers = raw
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                        (h.key.to_owned(), value.unwrap_or_default())
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            id: format!("{}:{}:{}", raw.topic(), raw.partition(), raw.offset()),
            topic: raw.topic().to_owned(),
            partition: raw.partition(),
            offset: raw.offset(),
            key: raw.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            value: raw.payload().map(|v| Binary {
                subtype: BinarySubtype::Generic,
                bytes: v.to_vec(),
            }),
            headers,
            group: group.to_owned(),
            error_class: class.as_str().to_owned(),
            error: error.to_owned(),
            attempts,
            first_failure_at: now,
            last_failure_at: now,
            status: LetterStatus::New,
            history: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongo_kit::mongodb::error::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A letter, its status or an action that would not encode as BSON (a bug).
    #[error("encoding a dead letter as BSON: {0}")]
    Encoding(#[from] mongo_kit::mongodb::bson::ser::Error),
    #[error("no dead letter {0}")]
    NotFound(String),
    #[error("dead letter {0} is discarded")]
    Discarded(String),
}

/// A service's dead letters.
#[derive(Clone)]
pub struct DeadLetters {
    letters: Collection<DeadLetter>,
    producer: FutureProducer,
    registry: Arc<SchemaRegistry>,
    /// Replays and discards are staff actions.
    audit: Audit,
}

impl DeadLetters {
    pub fn new(
        db: &Database,
        producer: FutureProducer,
        registry: Arc<SchemaRegistry>,
        audit: Audit,
    ) -> Self {
        Self {
            letters: db.collection("dead_letters"),
            producer,
            registry,
            audit,
        }
    }

    pub async fn ensure_indexes(&self) -> Result<(), DlqError> {
        self.letters
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "status": 1, "topic": 1, "lastFailureAt": -1 })
                    .build(),
            )
            .await?;
        Ok(())
    }

    /// Sets the `dead_letters_pending` gauge of `service` every 5 s until `stop`; every
    /// instance samples the same count.
    pub async fn count_pending(self, service: &'static str, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.letters.count_documents(doc! { "status": "NEW" }).await {
                Ok(count) => {
                    metrics::gauge!(names::DEAD_LETTERS_PENDING, "service" => service)
                        .set(count as f64);
                }
                Err(e) => tracing::warn!(error = %e, "counting pending dead letters failed"),
            }
        }
    }

    /// Puts `letter` on `<topic>.dlq` and records it; safe to repeat for the same message.
    pub async fn record(&self, letter: DeadLetter) -> Result<(), DlqError> {
        let rfc3339 = |t: DateTime| t.try_to_rfc3339_string().unwrap_or_default();
        let mut headers = OwnedHeaders::new();
        let dlq_headers = [
            ("dlq.original.topic", letter.topic.clone()),
            ("dlq.original.partition", letter.partition.to_string()),
            ("dlq.original.offset", letter.offset.to_string()),
            ("dlq.consumer.group", letter.group.clone()),
            ("dlq.error.class", letter.error_class.clone()),
            ("dlq.error.message", letter.error.clone()),
            ("dlq.attempts", letter.attempts.to_string()),
            ("dlq.first.failure", rfc3339(letter.first_failure_at)),
            ("dlq.last.failure", rfc3339(letter.last_failure_at)),
        ];
        for (name, value) in letter
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .chain(dlq_headers)
        {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let dlq_topic = crate::topics::dead_letter_topic(&letter.topic);
        let empty = Vec::new();
        let mut record = FutureRecord::to(&dlq_topic)
            .payload(letter.value.as_ref().map_or(&empty, |v| &v.bytes))
            .headers(headers);
        if let Some(key) = &letter.key {
            record = record.key(key.as_bytes());
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| DlqError::Kafka(e))?;

        let mut fresh = to_document(&letter)?;
        for field in ["attempts", "lastFailureAt", "error", "errorClass"] {
            fresh.remove(field);
        }
        self.letters
            .update_one(
                doc! { "_id": &letter.id },
                doc! {
                    "$setOnInsert": fresh,
                    "$set": {
                        "attempts": letter.attempts,
                        "lastFailureAt": letter.last_failure_at,
                        "error": &letter.error,
                        "errorClass": &letter.error_class,
                    },
                },
            )
            .with_options(UpdateOptions::builder().upsert(true).build())
            .await?;
        Ok(())
    }

    pub async fn list(
        &self,
        filter: &DeadLetterFilter,
        page: PageQuery,
    ) -> Result<Page<DeadLetterView>, DlqError> {
        let mut query = Document::new();
        if let Some(topic) = &filter.topic {
            query.insert("topic", topic);
        }
        if let Some(status) = filter.status {
            query.insert("status", to_bson(&status)?);
        }
        let (letters, total) = mongo_kit::find_page(
            &self.letters,
            query,
            doc! { "lastFailureAt": -1 },
            page.skip(),
            page.size,
        )
        .await?;
        let mut items = Vec::with_capacity(letters.len());
        for letter in &letters {
            items.push(self.view(letter).await);
        }
        Ok(Page {
            items,
            page: page.page,
            size: page.size,
            total,
        })
    }

    pub async fn get(&self, id: &str) -> Result<DeadLetterView, DlqError> {
        let letter = self.letter(id).await?;
        Ok(self.view(&letter).await)
    }

    /// Sends the letter's record back to its topic and records who did it.
    pub async fn replay(&self, id: &str, by: &Actor) -> Result<DeadLetterView, DlqError> {
        let letter = self.letter(id).await?;
        if letter.status == LetterStatus::Discarded {
            return Err(DlqError::Discarded(id.to_owned()));
        }
        let mut headers = OwnedHeaders::new();
        for (name, value) in &letter.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let empty = Vec::new();
        let mut record = FutureRecord::to(&letter.topic)
            .payload(letter.value.as_ref().map_or(&empty, |v| &v.bytes))
            .headers(headers);
        if let Some(key) = &letter.key {
            record = record.key(key.as_bytes());
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| DlqError::Kafka(e))?;
        let action = ("REPLAYED", "dead_letter.replay");
        self.act(&letter, action, LetterStatus::Replayed, by, None)
            .await?;
        metrics::counter!(crate::metrics::DLQ_REPLAYED, "topic" => letter.topic.clone())
            .increment(1);
        self.get(id).await
    }

    /// Replays every NEW letter (of `topic`, if given).
    pub async fn replay_all(&self, topic: Option<&str>, by: &Actor) -> Result<u64, DlqError> {
        use futures::TryStreamExt;
        let mut query = doc! { "status": "NEW" };
        if let Some(topic) = topic {
            query.insert("topic", topic);
        }
        let ids: Vec<String> = self
            .letters
            .find(query)
            .sort(doc! { "topic": 1, "partition": 1, "offset": 1 })
            .await?
            .map_ok(|l| l.id)
            .try_collect()
            .await?;
        for id in &ids {
            self.replay(id, by).await?;
        }
        Ok(ids.len() as u64)
    }

    pub async fn discard(
        &self,
        id: &str,
        by: &Actor,
        reason: &str,
    ) -> Result<DeadLetterView, DlqError> {
        let letter = self.letter(id).await?;
        self.act(
            &letter,
            ("DISCARDED", "dead_letter.discard"),
            LetterStatus::Discarded,
            by,
            Some(reason),
        )
        .await?;
        self.get(id).await
    }

    /// Moves `letter` to `status` with an entry in its history named by `action`'s first
    /// part, and records the staff action (its second part) in the audit trail, in one
    /// transaction.
    async fn act(
        &self,
        letter: &DeadLetter,
        (action, audit_action): (&str, &str),
        status: LetterStatus,
        by: &Actor,
        reason: Option<&str>,
    ) -> Result<(), DlqError> {
        let entry = StoredAction {
            action: action.to_owned(),
            by: by.identity.sub.clone(),
            at: DateTime::now(),
            reason: reason.map(str::to_owned),
        };
        let audited = self
            .audit
            .entry(by, audit_action, ("dead_letter", &letter.id))
            .changed(
                Some(&serde_json::json!({ "status": letter.status })),
                &serde_json::json!({ "status": status }),
            )
            .reason(reason);
        let entry = to_bson(&entry)?;
        let status = to_bson(&status)?;
        let (letters, audit, id) = (self.letters.clone(), self.audit.clone(), letter.id.clone());
        let mut session = self.letters.client().start_session().await?;
        session
            .start_transaction()
            .and_run2(async move |s| {
                letters
                    .update_one(
                        doc! { "_id": &id },
                        doc! { "$set": { "status": status.clone() }, "$push": { "history": entry.clone() } },
                    )
                    .session(&mut *s)
                    .await?;
                audit.write(s, &audited).await
            })
            .await?;
        Ok(())
    }

    async fn letter(&self, id: &str) -> Result<DeadLetter, DlqError> {
        self.letters
            .find_one(doc! { "_id": id })
            .await?
            .ok_or_else(|| DlqError::NotFound(id.to_owned()))
    }

    async fn view(&self, letter: &DeadLetter) -> DeadLetterView {
        let rfc3339 = |t: DateTime| t.try_to_rfc3339_string().unwrap_or_default();
        let value = match &letter.value {
            Some(bytes) => self
                .registry
                .decode_json(&bytes.bytes)
                .await
                .ok()
                .map(|(_, v)| v),
            None => None,
        };
        DeadLetterView {
            id: letter.id.clone(),
            topic: letter.topic.clone(),
            partition: letter.partition,
            offset: letter.offset,
            key: letter.key.clone(),
            headers: letter.headers.clone(),
            group: letter.group.clone(),
            error_class: letter.error_class.clone(),
            error: letter.error.clone(),
            attempts: letter.attempts,
            first_failure_at: rfc3339(letter.first_failure_at),
            last_failure_at: rfc3339(letter.last_failure_at),
            status: letter.status,
            history: letter
                .history
                .iter()
                .map(|a| LetterAction {
                    action: a.action.clone(),
                    by: a.by.clone(),
                    at: rfc3339(a.at),
                    reason: a.reason.clone(),
                })
                .collect(),
            value,
            value_base64: letter
                .value
                .as_ref()
                .map(|v| base64::engine::general_purpose::STANDARD.encode(&v.bytes)),
        }
    }

    /// Whether a message id was dead-lettered (tests and tools).
    pub async fn contains_message(&self, message_id: &str) -> Result<bool, DlqError> {
        let found = self
            .letters
            .find_one(doc! { "headers": [MESSAGE_ID_HEADER, message_id] })
            .await?;
        Ok(found.is_some())
    }
}

fn to_document<T: Serialize>(value: &T) -> Result<Document, DlqError> {
    Ok(mongo_kit::mongodb::bson::to_document(value)?)
}

impl IntoResponse for DlqError {
    /// Failures name their cause in a stable `code`; the error text is logged, not sent.
    fn into_response(self) -> Response {
        match &self {
            DlqError::NotFound(_) => Problem::new(
                StatusCode::NOT_FOUND,
                "dead_letter_not_found",
                "No such dead letter",
            )
            .with_detail(self.to_string()),
            DlqError::Discarded(_) => Problem::new(
                StatusCode::CONFLICT,
                "dead_letter_discarded",
                "This dead letter was discarded; it cannot be replayed",
            )
            .with_detail(self.to_string()),
            DlqError::Mongo(e) => Problem::database_unavailable(e),
            DlqError::Kafka(e) => Problem::broker_unavailable(e),
            DlqError::Encoding(e) => Problem::internal(e),
        }
        .into_response()
    }
}

#[derive(Clone)]
struct DlqState {
    letters: DeadLetters,
    identity: IdentityKey,
}

impl FromRef<DlqState> for IdentityKey {
    fn from_ref(state: &DlqState) -> Self {
        state.identity.clone()
    }
}

/// The admin API over this service's dead letters, under `/dead-letters/<service>`. ADMIN
/// only.
pub fn routes(service: &str, letters: DeadLetters, identity: IdentityKey) -> Router {
    let api = Router::new()
        .route("/", get(list))
        .route("/replay", post(replay_all))
        .route("/{id}", get(show))
        .route("/{id}/replay", post(replay))
        .route("/{id}/discard", post(discard))
        .with_state(DlqState { letters, identity });
    Router::new().nest(&format!("/dead-letters/{service}"), api)
}

/// What the admin routes can answer besides success.
enum ApiError {
    Refused(Problem),
    Failed(DlqError),
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        ApiError::Refused(problem)
    }
}

impl From<DlqError> for ApiError {
    fn from(error: DlqError) -> Self {
        ApiError::Failed(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Refused(problem) => problem.into_response(),
            ApiError::Failed(error) => error.into_response(),
        }
    }
}

fn admin(identity: &Identity) -> Result<(), ApiError> {
    Ok(identity.require(&[Role::Admin])?)
}

async fn list(
    State(state): State<DlqState>,
    identity: Identity,
    Query(filter): Query<DeadLetterFilter>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<DeadLetterView>>, ApiError> {
    admin(&identity)?;
    state
        .letters
        .list(&filter, page)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

async fn show(
    State(state): State<DlqState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Result<Json<DeadLetterView>, ApiError> {
    admin(&identity)?;
    state
        .letters
        .get(&id)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

async fn replay(
    State(state): State<DlqState>,
    actor: Actor,
    Path(id): Path<String>,
) -> Result<Json<DeadLetterView>, ApiError> {
    admin(&actor.identity)?;
    state
        .letters
        .replay(&id, &actor)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

async fn replay_all(
    State(state): State<DlqState>,
    actor: Actor,
    OptionalJson(request): OptionalJson<ReplayAllRequest>,
) -> Result<Json<ReplayAllResponse>, ApiError> {
    admin(&actor.identity)?;
    // No body replays every topic's letters.
    let topic = request.and_then(|r| r.topic);
    let replayed = state
        .letters
        .replay_all(topic.as_deref(), &actor)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(ReplayAllResponse { replayed }))
}

async fn discard(
    State(state): State<DlqState>,
    actor: Actor,
    Path(id): Path<String>,
    Json(request): Json<DiscardRequest>,
) -> Result<Json<DeadLetterView>, ApiError> {
    admin(&actor.identity)?;
    let reason = audit::reason(&request.reason).map_err(|e| Problem::validation(vec![e]))?;
    state
        .letters
        .discard(&id, &actor, reason)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::RETRY_AFTER;
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;

    async fn answer(error: DlqError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, retry_after, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_broker_failure_is_a_503_naming_the_broker_without_its_error_text() {
        let error = KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure);
        let (status, retry_after, body) = answer(DlqError::Kafka(error)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("2"));
        assert_eq!(body["code"], "broker_unavailable");
        assert!(body.get("detail").is_none(), "{body}");
        assert!(!body.to_string().contains("Transport"), "{body}");
    }

    #[tokio::test]
    async fn a_database_failure_is_a_503_naming_the_database_without_its_error_text() {
        let error = mongo_kit::mongodb::error::Error::custom("secret host 10.0.0.7 refused");
        let (status, retry_after, body) = answer(DlqError::Mongo(error)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("2"));
        assert_eq!(body["code"], "database_unavailable");
        assert!(!body.to_string().contains("10.0.0.7"), "{body}");
    }

    #[tokio::test]
    async fn an_encoding_failure_is_our_bug_a_500_without_its_error_text() {
        let error = mongo_kit::mongodb::bson::to_bson(&u64::MAX).unwrap_err();
        let (status, retry_after, body) = answer(DlqError::Encoding(error)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry_after, None);
        assert_eq!(body["code"], "internal_error");
        assert!(body.get("detail").is_none(), "{body}");
    }

    #[tokio::test]
    async fn a_missing_letter_is_a_404_naming_it() {
        let (status, _, body) = answer(DlqError::NotFound("t:0:7".into())).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["code"], "dead_letter_not_found");
        assert_eq!(body["detail"], "no dead letter t:0:7");
    }
}
