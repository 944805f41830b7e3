//! The transactional outbox: a service records the messages a state change implies in the
//! same MongoDB transaction as the change ([`Outbox::write`]); the [`Relay`] publishes them.
//!
//! A message is therefore never published without its change, and never lost after it.
//!
//! ## How the relay works
//! - It encodes nothing: entries hold the exact Kafka record (topic, key, Confluent-framed
//!   Avro value, headers), encoded by [`Outbox::message`] before the transaction. The headers
//!   include the `traceparent` of what caused the message, so consumers continue its trace.
//! - It learns of new entries from a change stream on the outbox collection, within
//!   milliseconds, and publishes them in the stream's order, which is commit order, straight
//!   from the stream (entries old enough to have been swept are checked first). The stream's
//!   resume token is stored with each batch, so a restarted relay picks up about where the
//!   last one stopped, in the same order.
//! - On taking the lease it first publishes every unpublished entry in `(createdAt, _id)`
//!   order (what a token past unpublished entries, or none, would miss), and it repeats that
//!   sweep every `poll_interval` for stragglers, so a lost stream delays messages but loses
//!   none.
//!   Messages of one key come from changes to one aggregate (a user, a claim), whose
//!   transactions conflict and so commit in the order they were written.
//! - It publishes with an idempotent producer (`acks=all`) and marks an entry published only
//!   after the broker acknowledged it. A crash in between re-sends it: duplicates happen, as
//!   re-sends with the same message id, which consumers drop.
//! - One relay per service publishes at a time: a lease in the `outbox_state` collection,
//!   renewed while it works, taken over by another instance when it expires. Two relays could
//!   otherwise interleave a key's messages.
//! - Published entries expire after `retention_hours` (TTL index).

use crate::metrics as names;
use crate::registry::{RegistryError, SchemaRegistry};
use backon::BackoffBuilder;
use contracts::Contract;
use futures::{FutureExt, StreamExt, TryStreamExt};
use mongo_kit::mongodb::bson::{Binary, DateTime, Document, doc, spec::BinarySubtype};
use mongo_kit::mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongo_kit::mongodb::options::{IndexOptions, UpdateOptions};
use mongo_kit::mongodb::{ClientSession, Collection, Database, IndexModel};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use service_config::KafkaConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};
use telemetry::trace::{self, TraceParent};
use tokio_util::sync::CancellationToken;

/// Header carrying the envelope's message id, so consumers can deduplicate (and DLQ tools
/// can show) a record without decoding it.
pub const MESSAGE_ID_HEADER: &str = "message-id";
/// Header naming the record's schema (full name).
pub const RECORD_HEADER: &str = "record";
/// Header naming the producing service.
pub const PRODUCER_HEADER: &str = "producer";

const OUTBOX: &str = "outbox";
const STATE: &str = "outbox_state";

/// One message waiting in (or published from) the outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    /// The envelope's message id.
    #[serde(rename = "_id")]
    pub id: String,
    pub topic: String,
    pub key: String,
    pub payload: Binary,
    pub headers: Vec<(String, String)>,
    pub created_at: DateTime,
    /// A plain flag (not the absence of `publishedAt`) because partial indexes, which keep
    /// the relay's query small, can only select on equality.
    pub published: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<DateTime>,
}

/// Where a service writes its outgoing messages.
#[derive(Clone)]
pub struct Outbox {
    entries: Collection<OutboxEntry>,
    registry: Arc<SchemaRegistry>,
    producer_name: &'static str,
}

impl Outbox {
    pub fn new(db: &Database, registry: Arc<SchemaRegistry>, producer_name: &'static str) -> Self {
        Self {
            entries: db.collection(OUTBOX),
            registry,
            producer_name,
        }
    }

    /// When each of these entries was published, for those that were (and have not expired).
    pub async fn published_at(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, DateTime)>, mongo_kit::mongodb::error::Error> {
        let entries: Vec<OutboxEntry> = self
            .entries
            .find(doc! { "_id": { "$in": ids }, "published": true })
            .await?
            .try_collect()
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|e| Some((e.id, e.published_at?)))
            .collect())
    }

    /// Encodes `record` for its topic (registering its schema on first use). Done before the
    /// transaction, so a retried transaction does no network I/O besides MongoDB. `trace` is
    /// the trace that caused the record (an HTTP request's, or a consumed message's): its
    /// next hop goes into the `traceparent` header.
    pub async fn message<T: Contract>(
        &self,
        record: &T,
        trace: Option<&TraceParent>,
    ) -> Result<OutboxEntry, RegistryError> {
        let payload = self.registry.encode(T::SCHEMA.topic, record).await?;
        let id = record.envelope().message_id.to_string();
        let mut headers = vec![
            (MESSAGE_ID_HEADER.into(), id.clone()),
            (RECORD_HEADER.into(), T::SCHEMA.full_name.into()),
            (PRODUCER_HEADER.into(), self.producer_name.into()),
        ];
        if let Some(trace) = trace {
            headers.push((trace::HEADER.into(), trace.child().to_string()));
        }
        Ok(OutboxEntry {
            headers,
            id,
            topic: T::SCHEMA.topic.into(),
            key: record.key().into(),
            payload: Binary {
                subtype: BinarySubtype::Generic,
                bytes: payload,
            },
            created_at: DateTime::now(),
            published: false,
            published_at: None,
        })
    }

    /// Records `messages` inside the caller's transaction.
    pub async fn write(
        &self,
        session: &mut ClientSession,
        messages: &[OutboxEntry],
    ) -> Result<(), mongo_kit::mongodb::error::Error> {
        if messages.is_empty() {
            return Ok(());
        }
        self.entries.insert_many(messages).session(session).await?;
        Ok(())
    }
}

/// How the relay behaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayConfig {
    /// Most entries sent before their acknowledgements are awaited.
    pub batch_size: usize,
    /// How often unpublished entries are swept up without the change stream's help.
    pub poll_interval_ms: u64,
    /// How long the lease lasts without renewal.
    pub lease_ms: u64,
    /// How long one change-stream read waits on the server for new entries.
    pub stream_await_ms: u64,
    /// How long published entries stay before their TTL removes them.
    pub retention_hours: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval_ms: 1_000,
            lease_ms: 10_000,
            stream_await_ms: 500,
            retention_hours: 7 * 24,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongo_kit::mongodb::error::Error),
    /// The broker refused or failed a record.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The producer dropped a record without reporting its delivery.
    #[error("kafka: delivery report lost")]
    DeliveryLost,
    /// Creating the platform's topics failed.
    #[error("topics: {0}")]
    Topics(#[from] crate::kafka::KafkaClientError),
    #[error("the outbox change stream ended")]
    StreamEnded,
    /// The change stream's resume token would not encode as BSON.
    #[error("encoding the resume token: {0}")]
    Encoding(#[from] mongo_kit::mongodb::bson::ser::Error),
    #[error("the lease was taken over")]
    LeaseLost,
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Publishes a service's outbox.
pub struct Relay {
    entries: Collection<OutboxEntry>,
    state: Collection<Document>,
    producer: FutureProducer,
    config: RelayConfig,
    /// This relay's lease holder id.
    owner: String,
    service: &'static str,
}

impl Relay {
    pub fn new(
        db: &Database,
        producer: FutureProducer,
        config: RelayConfig,
        service: &'static str,
    ) -> Self {
        Self {
            entries: db.collection(OUTBOX),
            state: db.collection(STATE),
            producer,
            config,
            owner: uuid::Uuid::new_v4().to_string(),
            service,
        }
    }

    /// A producing service's start-up work before it writes to its outbox: the outbox's
    /// indexes, the platform's topics created where missing (replicated as `kafka` says, so
    /// a fresh cluster needs no separate step), and the schemas of what it publishes
    /// registered. An incompatible schema stops the service here, before it writes anything
    /// it could not publish.
    pub async fn prepare(
        db: &Database,
        config: &RelayConfig,
        kafka: &KafkaConfig,
        registry: &SchemaRegistry,
        publishes: &[contracts::ContractSchema],
    ) -> Result<(), RelayError> {
        Self::ensure_indexes(db, config).await?;
        crate::kafka::ensure_topics(kafka, &crate::topics::all()).await?;
        for schema in publishes {
            registry.register(schema.topic, schema).await?;
        }
        Ok(())
    }

    /// The outbox's indexes: unpublished entries in order, and the TTL of published ones.
    pub async fn ensure_indexes(db: &Database, config: &RelayConfig) -> Result<(), RelayError> {
        let entries: Collection<OutboxEntry> = db.collection(OUTBOX);
        let pending = IndexOptions::builder()
            .name("pending".to_owned())
            .partial_filter_expression(doc! { "published": false })
            .build();
        entries
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "createdAt": 1, "_id": 1 })
                    .options(pending)
                    .build(),
            )
            .await?;
        // A changed retention changes the index rather than failing start-up.
        mongo_kit::ensure_ttl_index(
            &entries,
            "published_ttl",
            "publishedAt",
            Duration::from_secs(config.retention_hours * 3600),
        )
        .await?;
        Ok(())
    }

    /// Publishes until `stop` fires: waits for the lease, leads while it holds it. After an
    /// interruption it backs off (200 ms doubling to 5 s); between tries at the lease it
    /// waits a quarter of the lease at least.
    pub async fn run(self, stop: CancellationToken) {
        let backoff = || {
            backon::ExponentialBuilder::new()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .without_max_times()
                .build()
        };
        let mut delays = backoff();
        let lease_wait =
            Duration::from_millis(self.config.lease_ms / 4).max(Duration::from_millis(200));
        while !stop.is_cancelled() {
            let wait = match self.try_to_lead(&stop).await {
                Ok(()) => {
                    delays = backoff();
                    lease_wait
                }
                Err(e) => {
                    let retry_in = delays.next().unwrap_or_default().max(lease_wait);
                    tracing::warn!(service = self.service, error = %e, ?retry_in, "outbox relay interrupted");
                    retry_in
                }
            };
            if !service_kit::retry::pause(stop.clone(), wait).await {
                break;
            }
        }
        self.release_lease().await;
    }

    /// Leads if the lease can be had, until `stop` or an error.
    async fn try_to_lead(&self, stop: &CancellationToken) -> Result<(), RelayError> {
        if !self.take_lease().await? {
            return Ok(());
        }
        tracing::info!(service = self.service, owner = %self.owner, "outbox relay leading");
        let led = self.lead(stop).await;
        // The backlog is the leader's to report; a former leader's last count would go stale.
        metrics::gauge!(names::OUTBOX_PENDING, "service" => self.service).set(0.0);
        led
    }

    /// Takes the lease if it is free, expired or already ours.
    async fn take_lease(&self) -> Result<bool, RelayError> {
        let now = DateTime::now();
        let until = DateTime::from_millis(now.timestamp_millis() + self.config.lease_ms as i64);
        let result = self
            .state
            .update_one(
                doc! { "_id": "lease", "$or": [ { "owner": &self.owner }, { "until": { "$lt": now } } ] },
                doc! { "$set": { "owner": &self.owner, "until": until } },
            )
            .with_options(UpdateOptions::builder().upsert(true).build())
            .await;
        match result {
            Ok(r) => Ok(r.matched_count == 1 || r.upserted_id.is_some()),
            // Another relay holds an unexpired lease (the upsert collided with its document).
            Err(e) if mongo_kit::is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn release_lease(&self) {
        let _ = self
            .state
            .update_one(
                doc! { "_id": "lease", "owner": &self.owner },
                doc! { "$set": { "until": DateTime::from_millis(0) } },
            )
            .await;
    }

    /// Publishes while holding the lease: catch-up sweep, then the change stream.
    async fn lead(&self, stop: &CancellationToken) -> Result<(), RelayError> {
        // Open the stream before sweeping, so entries committed during the sweep are seen.
        let token = self.stored_token().await?;
        let mut stream = match self.watch(token.clone()).await {
            Ok(stream) => stream,
            Err(e) if token.is_some() => {
                tracing::warn!(error = %e, "resume token unusable; starting a new change stream");
                self.watch(None).await?
            }
            Err(e) => return Err(e),
        };
        self.sweep(None).await?;
        let poll_interval = Duration::from_millis(self.config.poll_interval_ms);
        // The start-up sweep published entries the stream is about to show again (as may a
        // previous leader); for a poll interval, stream entries are checked against the store.
        let careful_until = Instant::now() + poll_interval;
        let mut poll = tokio::time::interval(poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending_gauge = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                _ = poll.tick() => {
                    if !self.take_lease().await? {
                        return Err(RelayError::LeaseLost);
                    }
                    // Only entries older than a poll interval: younger ones are the stream's.
                    let cutoff = DateTime::from_millis(
                        DateTime::now().timestamp_millis() - self.config.poll_interval_ms as i64,
                    );
                    self.sweep(Some(cutoff)).await?;
                }
                _ = pending_gauge.tick() => {
                    let pending = self.entries.count_documents(doc! { "published": false }).await?;
                    metrics::gauge!(names::OUTBOX_PENDING, "service" => self.service).set(pending as f64);
                }
                event = stream.next() => {
                    let Some(event) = event else {
                        return Err(RelayError::StreamEnded);
                    };
                    // Take what the stream has already buffered, without another round trip:
                    // waiting for a fuller batch (`next_if_any`) would hold this one back for
                    // as long as new entries keep arriving, or up to the await time when none
                    // do. Dropping a pending `next()` keeps its getMore in the cursor.
                    let mut batch = vec![event?];
                    while batch.len() < self.config.batch_size {
                        match stream.next().now_or_never() {
                            Some(Some(event)) => batch.push(event?),
                            Some(None) | None => break,
                        }
                    }
                    let entries: Vec<OutboxEntry> =
                        batch.iter().filter_map(|e| e.full_document.clone()).collect();
                    // An entry younger than a poll interval cannot have been swept (sweeps
                    // take older ones only), so the stream's copy is published as it is,
                    // without a round trip to check; older ones may have been, and are.
                    let young_since =
                        DateTime::now().timestamp_millis() - self.config.poll_interval_ms as i64;
                    let checked = Instant::now() < careful_until
                        || entries
                            .iter()
                            .any(|e| e.created_at.timestamp_millis() < young_since);
                    let publish = async {
                        if checked {
                            let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
                            self.publish_ids(&ids).await
                        } else {
                            self.publish(&entries).await
                        }
                    };
                    // The last event's own id, not `stream.resume_token()`: the stream may
                    // have a getMore in flight, and asking it for its token then fails.
                    // Stored while the batch is published, not after: the token only saves
                    // replaying the stream on a restart, and a token past entries that did
                    // not get out loses nothing, since a new leader first sweeps every
                    // unpublished entry.
                    let token = batch.last().map(|last| last.id.clone());
                    let store = async {
                        match token {
                            Some(token) => self.store_token(token).await,
                            None => Ok(()),
                        }
                    };
                    tokio::try_join!(publish, store)?;
                }
            }
        }
    }

    async fn watch(
        &self,
        token: Option<ResumeToken>,
    ) -> Result<
        mongo_kit::mongodb::change_stream::ChangeStream<ChangeStreamEvent<OutboxEntry>>,
        RelayError,
    > {
        let mut watch = self
            .entries
            .watch()
            .pipeline([doc! { "$match": { "operationType": "insert" } }])
            .max_await_time(Duration::from_millis(self.config.stream_await_ms));
        if let Some(token) = token {
            watch = watch.resume_after(token);
        }
        Ok(watch.await?)
    }

    async fn stored_token(&self) -> Result<Option<ResumeToken>, RelayError> {
        let state = self.state.find_one(doc! { "_id": "stream" }).await?;
        Ok(state
            .and_then(|d| d.get("token").cloned())
            .and_then(|t| mongo_kit::mongodb::bson::from_bson(t).ok()))
    }

    async fn store_token(&self, token: ResumeToken) -> Result<(), RelayError> {
        let token = mongo_kit::mongodb::bson::to_bson(&token)?;
        self.state
            .update_one(
                doc! { "_id": "stream" },
                doc! { "$set": { "token": token } },
            )
            .with_options(UpdateOptions::builder().upsert(true).build())
            .await?;
        Ok(())
    }

    /// Publishes unpublished entries (created before `cutoff`, if given) in creation order.
    async fn sweep(&self, cutoff: Option<DateTime>) -> Result<(), RelayError> {
        let mut filter = doc! { "published": false };
        if let Some(cutoff) = cutoff {
            filter.insert("createdAt", doc! { "$lt": cutoff });
        }
        loop {
            let batch: Vec<OutboxEntry> = mongo_kit::find_page(
                &self.entries,
                filter.clone(),
                doc! { "createdAt": 1, "_id": 1 },
                0,
                self.config.batch_size as u64,
            )
            .await?
            .0;
            if batch.is_empty() {
                return Ok(());
            }
            let full = batch.len() == self.config.batch_size;
            self.publish(&batch).await?;
            if !full {
                return Ok(());
            }
        }
    }

    /// Publishes the entries with these ids that are still unpublished, in the given order.
    async fn publish_ids(&self, ids: &[String]) -> Result<(), RelayError> {
        if ids.is_empty() {
            return Ok(());
        }
        let found: Vec<OutboxEntry> = self
            .entries
            .find(doc! { "_id": { "$in": ids }, "published": false })
            .await?
            .try_collect()
            .await?;
        let mut ordered = Vec::with_capacity(found.len());
        let mut by_id: std::collections::HashMap<String, OutboxEntry> =
            found.into_iter().map(|e| (e.id.clone(), e)).collect();
        for id in ids {
            if let Some(entry) = by_id.remove(id) {
                ordered.push(entry);
            }
        }
        self.publish(&ordered).await
    }

    /// Sends `entries` in order, then marks published the prefix the broker acknowledged.
    async fn publish(&self, entries: &[OutboxEntry]) -> Result<(), RelayError> {
        if entries.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut deliveries = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut headers = OwnedHeaders::new_with_capacity(entry.headers.len());
            for (name, value) in &entry.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let mut record = FutureRecord::to(&entry.topic)
                .key(entry.key.as_bytes())
                .payload(&entry.payload.bytes)
                .headers(headers);
            // Enqueued in order; librdkafka keeps that order per partition (idempotence).
            let delivery = loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => break delivery,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        back,
                    )) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(RelayError::Kafka(e)),
                }
            };
            deliveries.push(delivery);
        }
        let mut acknowledged = 0;
        let mut failure = None;
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) if failure.is_none() => acknowledged += 1,
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    failure.get_or_insert(RelayError::Kafka(e));
                }
                Err(_) => {
                    failure.get_or_insert(RelayError::DeliveryLost);
                }
            }
        }
        let acked_at = Instant::now();
        let done = &entries[..acknowledged];
        if !done.is_empty() {
            let ids: Vec<&str> = done.iter().map(|e| e.id.as_str()).collect();
            let now = DateTime::now();
            self.entries
                .update_many(
                    doc! { "_id": { "$in": ids } },
                    doc! { "$set": { "published": true, "publishedAt": now } },
                )
                .await?;
            for entry in done {
                let latency = (now.timestamp_millis() - entry.created_at.timestamp_millis()).max(0);
                metrics::histogram!(names::OUTBOX_PUBLISH_LATENCY, "service" => self.service)
                    .record(latency as f64 / 1000.0);
            }
            metrics::counter!(names::OUTBOX_PUBLISHED, "service" => self.service)
                .increment(done.len() as u64);
        }
        tracing::debug!(count = done.len(), took = ?started.elapsed(), acked = ?acked_at.duration_since(started), "outbox batch published");
        failure.map_or(Ok(()), Err)
    }
}
