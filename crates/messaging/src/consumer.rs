//! The consumer runner every service uses: at-least-once from Kafka, effectively-once in
//! effect.
//!
//! - Each assigned partition gets a worker that takes its messages in order, in batches.
//!   A batch is applied in one MongoDB transaction together with an *inbox* record of its
//!   message ids; ids already in the inbox are skipped (re-deliveries, re-sends, replays).
//!   The inbox is not read first: a unique index on the ids refuses a record naming an id
//!   already there, which aborts the transaction, and only then is the batch applied again
//!   without the ids the inbox knows. Re-deliveries are rare, so most batches cost one
//!   insert of one document, not a lookup and a document per message.
//!   A message the handler reports as [`Outcome::Repeatable`] (no effect, or only an
//!   idempotent one) gets no inbox record: applying it again would change nothing, and on a
//!   high-volume stream the record would be most of the database's work.
//! - The partition's offset is stored only after that transaction committed, and committed
//!   to Kafka from there: a crash after the commit re-delivers messages the inbox then drops.
//! - Errors are classified. Undecodable bytes, an unknown schema id, content the handler
//!   rejects, and retries exhausted are *permanent*: the message goes to `<topic>.dlq` (with
//!   headers saying where it came from and why; see [`crate::dlq`]) and the partition moves
//!   on. Everything else is *retryable*: the batch is tried again with exponential backoff and
//!   jitter, the partition waits (it is paused when its backlog grows), nothing is skipped.
//!   Unreachable infrastructure is retried for as long as it takes; other retryable errors
//!   a bounded number of times, then message by message, so one bad message cannot hold a
//!   partition forever.
//! - Inbox records expire after the service's [`InboxConfig::retention_hours`] (one inbox,
//!   and so one retention, for all the consumer groups of a database), which must exceed the
//!   topics' retention so that nothing old enough to be re-delivered has been forgotten.
//! - A Kafka consumer whose group stays unsettled (not joined, or no working connection to
//!   its coordinator, by librdkafka's own statistics) for `rebuild_unsettled_after_ms` is
//!   closed like at shutdown and made again: librdkafka can wedge a coordinator connection
//!   after a broker is frozen, and only a new client gets out of it.

use crate::dlq::{DeadLetter, DeadLetters, ErrorClass};
use crate::kafka::KafkaClientError;
use crate::metrics as names;
use crate::outbox::MESSAGE_ID_HEADER;
use crate::registry::SchemaRegistry;
use apache_avro::types::Value;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use contracts::{Contract, UserEvent};
use mongo_kit::Mongo;
use mongo_kit::mongodb::bson::{DateTime, doc};
use mongo_kit::mongodb::options::IndexOptions;
use mongo_kit::mongodb::{ClientSession, Collection, IndexModel};
use rdkafka::consumer::{CommitMode, Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{ClientContext, Statistics, TopicPartitionList};
use serde::{Deserialize, Serialize};
use service_config::KafkaConfig;
use service_kit::retry;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use telemetry::trace::{self, TraceParent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How a consumer behaves. Unknown keys are refused: a misspelt or removed setting stops
/// the service at start-up instead of being ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Most messages applied in one transaction.
    pub batch_size: usize,
    /// Attempts at a batch (then at each of its messages) before a message is dead-lettered.
    /// Unreachable infrastructure and lost write conflicts do not count.
    pub max_attempts: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// How long the consumer's group may stay unsettled (librdkafka's statistics show it not
    /// joined, or its coordinator connection down) before the Kafka consumer is closed and
    /// made again. librdkafka can wedge a consumer's coordinator connection after a broker
    /// is frozen or restarted, with requests queued that are never sent; a new consumer
    /// does not inherit that state.
    pub rebuild_unsettled_after_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            max_attempts: 5,
            backoff_initial_ms: 100,
            backoff_max_ms: 10_000,
            rebuild_unsettled_after_ms: 60_000,
        }
    }
}

/// The inbox of a service's database, which all its consumer groups share.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct InboxConfig {
    /// How long processed message ids are remembered (longer than any topic's retention).
    pub retention_hours: u64,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            retention_hours: 14 * 24,
        }
    }
}

/// The inbox's indexes: the TTL that forgets records after `config.retention_hours`, and
/// the unique index on the ids.
pub async fn ensure_inbox_indexes(
    db: &mongo_kit::mongodb::Database,
    config: &InboxConfig,
) -> Result<(), mongo_kit::mongodb::error::Error> {
    mongo_kit::ensure_ttl_index(
        &db.collection::<InboxRecord>(INBOX),
        "processed_ttl",
        "processedAt",
        Duration::from_secs(config.retention_hours * 3600),
    )
    .await?;
    ensure_ids_index(db).await
}

/// The unique index that makes a second record of an id fail. Sparse, because records of
/// the old shape have no `ids`.
async fn ensure_ids_index(
    db: &mongo_kit::mongodb::Database,
) -> Result<(), mongo_kit::mongodb::error::Error> {
    let unique = IndexOptions::builder()
        .name("ids_unique".to_owned())
        .unique(true)
        .sparse(true)
        .build();
    db.collection::<InboxRecord>(INBOX)
        .create_index(
            IndexModel::builder()
                .keys(doc! { "ids": 1 })
                .options(unique)
                .build(),
        )
        .await?;
    Ok(())
}

const INBOX: &str = "inbox";

/// A decoded message and where it came from.
#[derive(Debug, Clone)]
pub struct Delivery<M> {
    pub message: M,
    pub message_id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The trace the message belongs to (its `traceparent` header), continued by what the
    /// handler writes because of it.
    pub trace: Option<TraceParent>,
}

impl<M> Delivery<M> {
    /// A span naming the message and its trace, for the handler's work on this message.
    pub fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "message",
            topic = %self.topic,
            partition = self.partition,
            offset = self.offset,
            message_id = %self.message_id,
            trace_id = self.trace.as_ref().map(TraceParent::trace_id),
        )
    }
}

/// What the handler made of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Applied, and applying it again later would add nothing: it changed nothing, or only
    /// idempotently (a set insert, a maximum). No inbox record is kept for it, which saves a
    /// write per message on high-volume streams; a re-delivery or re-send is applied again
    /// (to no further effect) instead of being dropped, so it is not counted as a duplicate.
    Repeatable,
    /// The content cannot be processed (and never will be as it is): dead-letter it.
    Invalid(String),
}

/// Why a batch could not be applied this time.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongo_kit::mongodb::error::Error),
    /// Worth trying again (a dependency failed).
    #[error("{0}")]
    Retryable(String),
}

/// Things to do once the transaction of the batch being applied has committed.
type Deferred = Arc<std::sync::Mutex<Vec<Box<dyn FnOnce() + Send>>>>;

tokio::task_local! {
    static AFTER_COMMIT: Deferred;
}

/// Runs `effect` once the consumer transaction that is applying the current batch commits,
/// and never if it aborts; outside a consumer batch, runs it now.
///
/// For what must not happen twice when a batch is tried again (after a write conflict, or
/// without the ids its inbox record turned out to repeat) and cannot be rolled back, such
/// as counting a metric: `on_commit(|| counter!("x").increment(1))`.
pub fn on_commit(effect: impl FnOnce() + Send + 'static) {
    let mut effect = Some(effect);
    let deferred = AFTER_COMMIT.try_with(|pending| {
        if let Some(effect) = effect.take() {
            pending
                .lock()
                .expect("never poisoned")
                .push(Box::new(effect));
        }
    });
    if deferred.is_err()
        && let Some(effect) = effect.take()
    {
        effect();
    }
}

/// Applies messages to a service's state.
pub trait Handler: Send + Sync + 'static {
    type Message: Decode + Clone + Send + Sync + 'static;

    /// Applies `batch` inside the transaction `session`: one outcome per message, in order.
    /// It may run more than once for the same batch (a transaction retried after a transient
    /// error), always in a fresh transaction, and it may see messages that were applied
    /// before: the inbox is not read first, and a batch holding such a message is aborted and
    /// applied again without it. So what cannot be rolled back waits for the commit
    /// ([`on_commit`]); log lines may repeat.
    fn handle(
        &self,
        session: &mut ClientSession,
        batch: &[Delivery<Self::Message>],
    ) -> impl Future<Output = Result<Vec<Outcome>, HandlerError>> + Send;
}

/// Turns a decoded Avro record into a message type.
pub trait Decode: Sized {
    /// The contracts this type decodes from. A service registers them at start-up, so
    /// producers outside the platform can run with automatic registration off.
    const SCHEMAS: &'static [contracts::ContractSchema];

    /// `record` is the writer's full record name.
    fn decode(record: &str, value: &Value) -> Result<Self, String>;
    fn message_id(&self) -> String;
}

/// A contract decodes from its own record type only.
fn decode_contract<T: Contract>(record: &str, value: &Value) -> Result<T, String> {
    if record != T::SCHEMA.full_name {
        return Err(format!("expected {}, got {record}", T::SCHEMA.full_name));
    }
    apache_avro::from_value(value).map_err(|e| e.to_string())
}

macro_rules! decode_contracts {
    ($($type:ty),*) => {$(
        impl Decode for $type {
            const SCHEMAS: &'static [contracts::ContractSchema] = &[<$type as Contract>::SCHEMA];

            fn decode(record: &str, value: &Value) -> Result<Self, String> {
                decode_contract(record, value)
            }

            fn message_id(&self) -> String {
                self.envelope().message_id.to_string()
            }
        }
    )*};
}

decode_contracts!(
    contracts::UserActivityEvent,
    contracts::UserRegistered,
    contracts::UserStatusChanged,
    contracts::GrantRewardCommand,
    contracts::GrantResultEvent
);

impl Decode for UserEvent {
    const SCHEMAS: &'static [contracts::ContractSchema] =
        &[contracts::USER_REGISTERED, contracts::USER_STATUS_CHANGED];

    fn decode(record: &str, value: &Value) -> Result<Self, String> {
        match record {
            r if r == contracts::USER_REGISTERED.full_name => {
                decode_contract(record, value).map(UserEvent::Registered)
            }
            r if r == contracts::USER_STATUS_CHANGED.full_name => {
                decode_contract(record, value).map(UserEvent::StatusChanged)
            }
            other => Err(format!("auth.user-events does not carry {other}")),
        }
    }

    fn message_id(&self) -> String {
        match self {
            UserEvent::Registered(e) => e.envelope.message_id.to_string(),
            UserEvent::StatusChanged(e) => e.envelope.message_id.to_string(),
        }
    }
}

/// The inbox record of one applied batch: the ids of its messages that must not be applied
/// again, and where they came from (a batch is one partition's messages, in order).
///
/// Inbox documents of the per-message shape (`_id` the message id, no `ids`) are honoured too
/// (`check_inbox`, `known`) until they expire. A consumer that knows only that shape does not
/// see records of this one, so it must not consume alongside this runner.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InboxRecord {
    ids: Vec<String>,
    group: String,
    topic: String,
    partition: i32,
    /// The first and last offsets of the batch.
    offsets: [i64; 2],
    processed_at: DateTime,
}

/// Reports consumer lag, and whether the group is settled, from librdkafka's statistics.
struct LagContext {
    group: String,
    settled: Arc<Settled>,
}

/// When the consumer's group was last seen settled.
struct Settled {
    since: std::sync::Mutex<std::time::Instant>,
}

impl Settled {
    fn now() -> Arc<Self> {
        Arc::new(Self {
            since: std::sync::Mutex::new(std::time::Instant::now()),
        })
    }

    fn seen(&self) {
        *self.since.lock().expect("never poisoned") = std::time::Instant::now();
    }

    fn unsettled_for(&self) -> Duration {
        self.since.lock().expect("never poisoned").elapsed()
    }
}

/// A consumer's group is settled when librdkafka has joined it (`up`, `steady`) and holds a
/// working connection to its coordinator.
fn group_settled(statistics: &Statistics) -> bool {
    let Some(group) = &statistics.cgrp else {
        return false;
    };
    let coordinator_up = statistics
        .brokers
        .values()
        .any(|b| b.name.starts_with("GroupCoordinator") && b.state == "UP");
    group.state == "up" && group.join_state == "steady" && coordinator_up
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        if group_settled(&statistics) {
            self.settled.seen();
        }
        for (topic, stats) in statistics.topics {
            for (partition, p) in stats.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(
                        names::CONSUMER_LAG,
                        "group" => self.group.clone(),
                        "topic" => topic.clone(),
                        "partition" => partition.to_string()
                    )
                    .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for LagContext {}

type KafkaConsumer = StreamConsumer<LagContext>;

/// Runs a [`Handler`] over topics.
pub struct ConsumerRunner<H: Handler> {
    group: String,
    topics: Vec<String>,
    kafka: KafkaConfig,
    config: ConsumerConfig,
    handler: Arc<H>,
    registry: Arc<SchemaRegistry>,
    mongo: Mongo,
    inbox: Collection<InboxRecord>,
    /// Whether every inbox record has the shape the unique index on ids covers, so that a
    /// batch may skip the lookup and rely on the index (set by `run`, which also makes sure
    /// the index exists).
    optimistic: bool,
    /// Whether per-message records of the old shape may still be there.
    legacy: bool,
    dead_letters: DeadLetters,
}

impl<H: Handler> ConsumerRunner<H> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        group: impl Into<String>,
        topics: &[&str],
        kafka: KafkaConfig,
        config: ConsumerConfig,
        handler: H,
        registry: Arc<SchemaRegistry>,
        mongo: Mongo,
        dead_letters: DeadLetters,
    ) -> Self {
        Self {
            group: group.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            kafka,
            config,
            handler: Arc::new(handler),
            registry,
            inbox: mongo.db().collection(INBOX),
            optimistic: false,
            legacy: true,
            mongo,
            dead_letters,
        }
    }

    /// Makes sure the inbox's unique index exists, then decides how batches are checked
    /// against the inbox: by that index alone when no record of the old shape is left,
    /// otherwise by looking the ids up first. Nothing is consumed before the index exists:
    /// it is also what stops two consumers that briefly own the same partition (a
    /// rebalance) from both committing a message. False if stopped first.
    async fn check_inbox(&mut self, stop: &CancellationToken) -> bool {
        let check = || async {
            ensure_ids_index(self.mongo.db()).await?;
            self.inbox
                .clone_with_type::<mongo_kit::mongodb::bson::Document>()
                .find_one(doc! { "_id": { "$type": "string" } })
                .projection(doc! { "_id": 1 })
                .await
                .map(|found| found.is_some())
        };
        let checked = retry::until_stopped(self.backoff(), stop, check, |e, _| {
            tracing::warn!(group = %self.group, error = %e, "checking the inbox failed; retrying");
            true
        })
        .await;
        let Ok(legacy) = checked else {
            return false;
        };
        self.legacy = legacy;
        self.optimistic = !legacy;
        if legacy {
            tracing::info!(group = %self.group,
                "inbox records of the old shape remain: ids are looked up before each batch");
        }
        true
    }

    /// Consumes until `stop` fires; then finishes the batches in progress, commits the stored
    /// offsets and returns. A consumer whose group stays unsettled for
    /// `rebuild_unsettled_after_ms` is closed the same way and made again.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), KafkaClientError> {
        if !self.check_inbox(&stop).await {
            return Ok(());
        }
        let runner = Arc::new(self);
        while runner.consume(&stop).await? == Ended::Unsettled {
            metrics::counter!(names::CONSUMER_REBUILDS, "group" => runner.group.clone())
                .increment(1);
        }
        Ok(())
    }

    /// One Kafka consumer's life: until `stop`, or until its group has been unsettled too
    /// long.
    async fn consume(
        self: &Arc<Self>,
        stop: &CancellationToken,
    ) -> Result<Ended, KafkaClientError> {
        let settled = Settled::now();
        let consumer: Arc<KafkaConsumer> = Arc::new(
            crate::kafka::consumer_config(&self.kafka, &self.group)
                .set("statistics.interval.ms", "5000")
                .create_with_context(LagContext {
                    group: self.group.clone(),
                    settled: Arc::clone(&settled),
                })?,
        );
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        tracing::info!(group = %self.group, topics = ?self.topics, "consumer started");
        let runner = Arc::clone(self);
        // Workers retrying a batch stop on this too, when the consumer is made again.
        let lanes_stop = stop.child_token();
        let limit = Duration::from_millis(runner.config.rebuild_unsettled_after_ms);
        let mut check = tokio::time::interval(Duration::from_secs(1));
        let mut workers: HashMap<(String, i32), Worker> = HashMap::new();
        let ended = loop {
            let message = tokio::select! {
                () = stop.cancelled() => break Ended::Stopped,
                _ = check.tick() => {
                    if settled.unsettled_for() > limit {
                        tracing::error!(
                            group = %runner.group,
                            unsettled = ?settled.unsettled_for(),
                            "consumer group unsettled too long; making the consumer again"
                        );
                        lanes_stop.cancel();
                        break Ended::Unsettled;
                    }
                    continue;
                }
                message = consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message.detach(),
                Err(e) => {
                    tracing::warn!(group = %runner.group, error = %e, "kafka consumer error");
                    continue;
                }
            };
            let key = (message.topic().to_owned(), message.partition());
            let worker = workers.entry(key.clone()).or_insert_with(|| {
                Worker::spawn(
                    Arc::clone(&runner),
                    Arc::clone(&consumer),
                    key.0.clone(),
                    key.1,
                    lanes_stop.clone(),
                )
            });
            worker.enqueue(message, &consumer, runner.config.batch_size);
        };
        // Stop taking work: workers finish the batch in hand, then the offsets go out.
        let tasks: Vec<_> = workers.into_values().map(Worker::close).collect();
        for task in tasks {
            let _ = task.await;
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::warn!(group = %runner.group, error = %e, "final offset commit failed");
        }
        if ended == Ended::Unsettled {
            // Closing a wedged consumer may block its thread for a while: not this one, and
            // not forever (a new consumer does not need the old one gone).
            let closing = tokio::task::spawn_blocking(move || drop(consumer));
            let _ = tokio::time::timeout(Duration::from_secs(30), closing).await;
        }
        tracing::info!(group = %runner.group, "consumer stopped");
        Ok(ended)
    }

    /// Processes one partition's messages, batch by batch, in order.
    async fn work(
        self: Arc<Self>,
        consumer: Arc<KafkaConsumer>,
        lane: Lane,
        mut queue: mpsc::UnboundedReceiver<OwnedMessage>,
        stop: CancellationToken,
    ) {
        let Lane {
            topic,
            partition,
            backlog,
            paused,
        } = lane;
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            while batch.len() < self.config.batch_size {
                match queue.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            let last_offset = batch.last().map(Message::offset).unwrap_or_default();
            let count = batch.len();
            if !self.process(batch, &stop).await {
                // Stopped while retrying: leave the offset where it is; the batch is redone
                // by whoever consumes the partition next.
                return;
            }
            if let Err(e) = consumer.store_offset(&topic, partition, last_offset) {
                // The partition was revoked meanwhile; its next owner re-delivers, the inbox
                // drops what was done here.
                tracing::debug!(%topic, partition, error = %e, "offset not stored");
            }
            let left = backlog.fetch_sub(count, Ordering::AcqRel) - count;
            // Resume while a full batch is still queued: pausing drops librdkafka's prefetched
            // messages for the partition, and resuming starts a fresh fetch, so a worker that
            // resumed only when nearly idle waited for that fetch after every few batches.
            if left < self.config.batch_size && paused.swap(false, Ordering::AcqRel) {
                let _ = consumer.resume(&one_partition(&topic, partition));
            }
        }
    }

    /// Decodes, applies and dead-letters one batch. Returns false if `stop` cut it short.
    async fn process(&self, batch: Vec<OwnedMessage>, stop: &CancellationToken) -> bool {
        let Some((deliveries, mut given_up)) = self.decode_all(&batch, stop).await else {
            return false;
        };
        let deliveries = self.without_repeats(deliveries);
        let Some(rejected) = self.apply_or_isolate(&batch, &deliveries, stop).await else {
            return false;
        };
        given_up.extend(rejected);
        self.dead_letter_all(given_up, stop).await
    }

    /// Decodes every message of `batch`: the deliveries, and the messages given up on as
    /// undecodable. While the registry is unreachable, waits and decodes the batch again
    /// (nothing is skipped); None if stopped meanwhile.
    async fn decode_all<'a>(
        &self,
        batch: &'a [OwnedMessage],
        stop: &CancellationToken,
    ) -> Option<(Vec<Delivery<H::Message>>, Vec<GivenUp<'a>>)> {
        let mut backoff = self.backoff().build();
        'decoding: loop {
            let mut deliveries = Vec::with_capacity(batch.len());
            let mut given_up = Vec::new();
            for raw in batch {
                match self.decode(raw).await {
                    Decoded::Message(delivery) => deliveries.push(delivery),
                    Decoded::Dead(class, reason) => {
                        given_up.push(GivenUp::once(raw, class, reason))
                    }
                    Decoded::Retry(reason) => {
                        tracing::warn!(topic = raw.topic(), error = %reason, "cannot decode yet");
                        if !self.wait(stop, &mut backoff).await {
                            return None;
                        }
                        continue 'decoding;
                    }
                }
            }
            return Some((deliveries, given_up));
        }
    }

    /// `deliveries` without re-sends within the batch (a message id seen earlier in it),
    /// which are counted as duplicates.
    fn without_repeats(
        &self,
        mut deliveries: Vec<Delivery<H::Message>>,
    ) -> Vec<Delivery<H::Message>> {
        let first: Vec<bool> = {
            let mut seen = HashSet::with_capacity(deliveries.len());
            deliveries
                .iter()
                .map(|d| seen.insert(d.message_id.as_str()))
                .collect()
        };
        let repeats = first.iter().filter(|first| !**first).count();
        if repeats > 0 {
            self.count(names::CONSUMER_DUPLICATES, repeats as u64);
            let mut first = first.into_iter();
            deliveries.retain(|_| first.next().unwrap_or(true));
        }
        deliveries
    }

    /// Applies `deliveries`; when the batch keeps failing, applies them one at a time to find
    /// the culprits. Returns the messages given up on; None if stopped.
    async fn apply_or_isolate<'a>(
        &self,
        batch: &'a [OwnedMessage],
        deliveries: &[Delivery<H::Message>],
        stop: &CancellationToken,
    ) -> Option<Vec<GivenUp<'a>>> {
        match self.apply_with_retries(deliveries, stop).await {
            Applied::Outcomes(outcomes) => {
                log_sampled(deliveries, &outcomes);
                Some(invalid(batch, deliveries.iter().zip(outcomes)))
            }
            Applied::Stopped => None,
            Applied::Exhausted(attempts, reason) => {
                let failed = format!("batch failed {attempts} times: {reason}");
                self.isolate(batch, deliveries, &failed, stop).await
            }
        }
    }

    /// Applies each of `deliveries` on its own, each with its own attempts.
    async fn isolate<'a>(
        &self,
        batch: &'a [OwnedMessage],
        deliveries: &[Delivery<H::Message>],
        failed: &str,
        stop: &CancellationToken,
    ) -> Option<Vec<GivenUp<'a>>> {
        let mut given_up = Vec::new();
        for delivery in deliveries {
            match self
                .apply_with_retries(std::slice::from_ref(delivery), stop)
                .await
            {
                Applied::Outcomes(outcomes) => {
                    log_sampled(std::slice::from_ref(delivery), &outcomes);
                    given_up.extend(invalid(batch, std::iter::once(delivery).zip(outcomes)));
                }
                Applied::Stopped => return None,
                Applied::Exhausted(attempts, error) => {
                    given_up.extend(raw_of(batch, delivery).map(|raw| GivenUp {
                        raw,
                        class: ErrorClass::RetriesExhausted,
                        reason: format!("{error} ({failed})"),
                        attempts,
                    }))
                }
            }
        }
        Some(given_up)
    }

    /// Records each message given up on in the dead-letter queue, retrying until it is
    /// recorded: the offset must not move past a message that is neither applied nor there.
    /// False if stopped first.
    async fn dead_letter_all(&self, given_up: Vec<GivenUp<'_>>, stop: &CancellationToken) -> bool {
        for GivenUp {
            raw,
            class,
            reason,
            attempts,
        } in given_up
        {
            let letter = DeadLetter::from_message(raw, &self.group, class, &reason, attempts);
            let record = || self.dead_letters.record(letter.clone());
            let recorded = retry::until_stopped(self.backoff(), stop, record, |e, _| {
                tracing::warn!(error = %e, "dead-lettering failed; retrying");
                true
            })
            .await;
            if recorded.is_err() {
                return false;
            }
            let trace = header(raw, trace::HEADER).and_then(|v| TraceParent::parse(&v));
            tracing::warn!(topic = raw.topic(), partition = raw.partition(), offset = raw.offset(),
                trace_id = trace.as_ref().map(TraceParent::trace_id),
                class = class.as_str(), %reason, "message dead-lettered");
            metrics::counter!(names::CONSUMER_DEAD_LETTERED, "group" => self.group.clone(), "class" => class.as_str())
                .increment(1);
        }
        true
    }

    async fn decode(&self, raw: &OwnedMessage) -> Decoded<H::Message> {
        let Some(bytes) = raw.payload() else {
            return Decoded::Dead(ErrorClass::Undecodable, "empty payload".into());
        };
        let (record, value) = match self.registry.decode_value(bytes).await {
            Ok((Some(record), value)) => (record, value),
            Ok((None, _)) => {
                return Decoded::Dead(ErrorClass::Undecodable, "not an Avro record".into());
            }
            Err(e) if e.is_retriable() => return Decoded::Retry(e.to_string()),
            Err(e) => {
                // Well-framed bytes whose schema id the registry does not know, or garbage.
                let framed = bytes.len() > 5 && bytes[0] == 0;
                let class = if framed && e.is_unknown_schema() {
                    ErrorClass::UnknownSchema
                } else {
                    ErrorClass::Undecodable
                };
                return Decoded::Dead(class, e.to_string());
            }
        };
        match H::Message::decode(&record, &value) {
            Ok(message) => {
                let message_id =
                    header(raw, MESSAGE_ID_HEADER).unwrap_or_else(|| message.message_id());
                Decoded::Message(Delivery {
                    message,
                    message_id,
                    topic: raw.topic().to_owned(),
                    partition: raw.partition(),
                    offset: raw.offset(),
                    trace: header(raw, trace::HEADER).and_then(|v| TraceParent::parse(&v)),
                })
            }
            Err(reason) => Decoded::Dead(ErrorClass::InvalidContent, reason),
        }
    }

    /// Applies `batch` (with its inbox records) in one transaction, retrying as the error
    /// deserves.
    async fn apply_with_retries(
        &self,
        batch: &[Delivery<H::Message>],
        stop: &CancellationToken,
    ) -> Applied {
        if batch.is_empty() {
            return Applied::Outcomes(Vec::new());
        }
        let mut counted = 0;
        let mut waited = 0;
        let mut backoff = self.backoff().build();
        let mut look_up = !self.optimistic;
        loop {
            let error = match self.apply(batch, look_up, stop).await {
                Ok(outcomes) => return Applied::Outcomes(outcomes),
                // The inbox's unique index refused an id it holds (or a handler's own unique
                // key refused something): apply the batch again, without the ids the inbox
                // knows. A handler's own duplicate that the inbox does not explain fails that
                // second attempt and is counted from there.
                Err(HandlerError::Mongo(e)) if !look_up && mongo_kit::is_duplicate_key(&e) => {
                    look_up = true;
                    continue;
                }
                Err(e) => e,
            };
            self.count(names::CONSUMER_RETRIES, 1);
            // Neither an unreachable database nor a transaction that lost a write conflict
            // says anything about the messages: retry without using up their attempts.
            let not_their_fault = matches!(&error, HandlerError::Mongo(e)
                if is_unreachable(e)
                    || e.contains_label(mongo_kit::mongodb::error::TRANSIENT_TRANSACTION_ERROR));
            if !not_their_fault {
                counted += 1;
                if counted >= self.config.max_attempts {
                    return Applied::Exhausted(counted, error.to_string());
                }
            }
            waited += 1;
            tracing::warn!(group = %self.group, error = %error, attempt = waited, "batch failed; retrying");
            if !self.wait(stop, &mut backoff).await {
                return Applied::Stopped;
            }
        }
    }

    /// Applies `batch` in one transaction. `look_up`: read which ids the inbox knows first,
    /// instead of relying on its unique index to refuse them.
    async fn apply(
        &self,
        batch: &[Delivery<H::Message>],
        look_up: bool,
        stop: &CancellationToken,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let mut session = self.mongo.client().start_session().await?;
        session.start_transaction().await?;
        let deferred = Deferred::default();
        let result = AFTER_COMMIT
            .scope(
                deferred.clone(),
                self.apply_in(&mut session, batch, look_up),
            )
            .await;
        match result {
            Ok(outcomes) => {
                commit_with_retry(&mut session, self.backoff().build(), stop).await?;
                let effects = std::mem::take(&mut *deferred.lock().expect("never poisoned"));
                for effect in effects {
                    effect();
                }
                let done = outcomes
                    .iter()
                    .filter(|o| matches!(o, Outcome::Done | Outcome::Repeatable))
                    .count();
                self.count(names::CONSUMER_PROCESSED, done as u64);
                Ok(outcomes)
            }
            Err(e) => {
                let _ = session.abort_transaction().await;
                Err(e)
            }
        }
    }

    async fn apply_in(
        &self,
        session: &mut ClientSession,
        batch: &[Delivery<H::Message>],
        look_up: bool,
    ) -> Result<Vec<Outcome>, HandlerError> {
        let known = if look_up {
            self.known(session, batch).await?
        } else {
            HashSet::new()
        };
        // Usually nothing is known (re-deliveries are rare): the batch goes to the handler as
        // it is, without copying it.
        let new: std::borrow::Cow<'_, [Delivery<H::Message>]> = if known.is_empty() {
            std::borrow::Cow::Borrowed(batch)
        } else {
            let seen = batch.len()
                - batch
                    .iter()
                    .filter(|d| !known.contains(&d.message_id))
                    .count();
            // This attempt may still abort and be tried again: count when it commits.
            let group = self.group.clone();
            on_commit(move || {
                metrics::counter!(names::CONSUMER_DUPLICATES, "group" => group)
                    .increment(seen as u64);
            });
            std::borrow::Cow::Owned(
                batch
                    .iter()
                    .filter(|d| !known.contains(&d.message_id))
                    .cloned()
                    .collect(),
            )
        };
        let outcomes = if new.is_empty() {
            Vec::new()
        } else {
            self.handler.handle(session, &new).await?
        };
        if outcomes.len() != new.len() {
            return Err(HandlerError::Retryable(format!(
                "handler returned {} outcomes for {} messages",
                outcomes.len(),
                new.len()
            )));
        }
        // Only what must not be applied twice is remembered (see `Outcome::Repeatable`).
        let ids: Vec<String> = new
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == Outcome::Done)
            .map(|(d, _)| d.message_id.clone())
            .collect();
        if let (false, Some(first), Some(last)) = (ids.is_empty(), new.first(), new.last()) {
            let record = InboxRecord {
                ids,
                group: self.group.clone(),
                topic: first.topic.clone(),
                partition: first.partition,
                offsets: [first.offset, last.offset],
                processed_at: DateTime::now(),
            };
            self.inbox.insert_one(record).session(&mut *session).await?;
        }
        if known.is_empty() {
            return Ok(outcomes);
        }
        // Outcomes for the whole batch, in order: duplicates count as done.
        let mut by_id: HashMap<&str, Outcome> = new
            .iter()
            .map(|d| d.message_id.as_str())
            .zip(outcomes)
            .collect();
        Ok(batch
            .iter()
            .map(|d| by_id.remove(d.message_id.as_str()).unwrap_or(Outcome::Done))
            .collect())
    }

    /// The ids of `batch` the inbox already holds.
    async fn known(
        &self,
        session: &mut ClientSession,
        batch: &[Delivery<H::Message>],
    ) -> Result<HashSet<String>, HandlerError> {
        use mongo_kit::mongodb::bson::{Bson, Document};
        let ids: Vec<&str> = batch.iter().map(|d| d.message_id.as_str()).collect();
        let filter = if self.legacy {
            doc! { "$or": [{ "_id": { "$in": &ids } }, { "ids": { "$in": &ids } }] }
        } else {
            doc! { "ids": { "$in": &ids } }
        };
        // Plain documents: records of the old shape have only `_id` (the message id) in common
        // with an `InboxRecord`.
        let records: Vec<Document> =
            mongo_kit::find_all(&self.inbox.clone_with_type(), filter, session).await?;
        let wanted: HashSet<&str> = ids.into_iter().collect();
        let mut known = HashSet::new();
        for record in &records {
            let named: Vec<&str> = match record.get_array("ids") {
                Ok(ids) => ids.iter().filter_map(Bson::as_str).collect(),
                Err(_) => record.get_str("_id").into_iter().collect(),
            };
            known.extend(
                named
                    .into_iter()
                    .filter(|id| wanted.contains(id))
                    .map(str::to_owned),
            );
        }
        Ok(known)
    }

    /// The backoff between attempts: exponential from `backoff_initial_ms`, each wait between
    /// a step's delay and twice it (backon's jitter), never longer than `backoff_max_ms`.
    fn backoff(&self) -> ExponentialBuilder {
        retry::exponential(
            Duration::from_millis(self.config.backoff_initial_ms),
            Duration::from_millis(self.config.backoff_max_ms / 2),
        )
    }

    /// Waits the next delay of `backoff`. False if stopped first.
    async fn wait(&self, stop: &CancellationToken, backoff: &mut ExponentialBackoff) -> bool {
        let delay = backoff
            .next()
            .unwrap_or(Duration::from_millis(self.config.backoff_max_ms));
        retry::pause(stop.clone(), delay).await
    }

    fn count(&self, name: &'static str, n: u64) {
        metrics::counter!(name, "group" => self.group.clone()).increment(n);
    }
}

enum Decoded<M> {
    Message(Delivery<M>),
    Dead(ErrorClass, String),
    Retry(String),
}

/// Why a consumer stopped consuming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The service is stopping.
    Stopped,
    /// Its group stayed unsettled too long: make another consumer.
    Unsettled,
}

enum Applied {
    Outcomes(Vec<Outcome>),
    Exhausted(u32, String),
    Stopped,
}

/// A message the consumer gives up on, for the dead-letter queue.
struct GivenUp<'a> {
    raw: &'a OwnedMessage,
    class: ErrorClass,
    reason: String,
    attempts: u32,
}

impl<'a> GivenUp<'a> {
    fn once(raw: &'a OwnedMessage, class: ErrorClass, reason: String) -> Self {
        Self {
            raw,
            class,
            reason,
            attempts: 1,
        }
    }
}

/// The raw message of `batch` that `delivery` was decoded from.
fn raw_of<'a, M>(batch: &'a [OwnedMessage], delivery: &Delivery<M>) -> Option<&'a OwnedMessage> {
    batch.iter().find(|raw| raw.offset() == delivery.offset)
}

/// The deliveries the handler found invalid, given up on.
/// One line per committed message of a sampled trace, in the message's span: what lets a
/// trace be followed through consumers. Messages without a trace, or of an unsampled one
/// (most game activity), log nothing per message.
fn log_sampled<M>(deliveries: &[Delivery<M>], outcomes: &[Outcome]) {
    let sampled = deliveries
        .iter()
        .zip(outcomes)
        .filter(|(d, _)| d.trace.as_ref().is_some_and(TraceParent::sampled));
    for (delivery, outcome) in sampled {
        let outcome = match outcome {
            Outcome::Done | Outcome::Repeatable => "applied",
            Outcome::Invalid(_) => "invalid",
        };
        delivery
            .span()
            .in_scope(|| tracing::info!(outcome, "message handled"));
    }
}

fn invalid<'a, 'd, M: 'd>(
    batch: &'a [OwnedMessage],
    outcomes: impl Iterator<Item = (&'d Delivery<M>, Outcome)>,
) -> Vec<GivenUp<'a>> {
    outcomes
        .filter_map(|(delivery, outcome)| match outcome {
            Outcome::Invalid(reason) => raw_of(batch, delivery)
                .map(|raw| GivenUp::once(raw, ErrorClass::InvalidContent, reason)),
            Outcome::Done | Outcome::Repeatable => None,
        })
        .collect()
}

/// A partition's identity and the counters its worker and the dispatcher share.
struct Lane {
    topic: String,
    partition: i32,
    backlog: Arc<AtomicUsize>,
    paused: Arc<AtomicBool>,
}

/// One partition's queue and worker task.
struct Worker {
    queue: mpsc::UnboundedSender<OwnedMessage>,
    backlog: Arc<AtomicUsize>,
    paused: Arc<AtomicBool>,
    topic: String,
    partition: i32,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    fn spawn<H: Handler>(
        runner: Arc<ConsumerRunner<H>>,
        consumer: Arc<KafkaConsumer>,
        topic: String,
        partition: i32,
        stop: CancellationToken,
    ) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let paused = Arc::new(AtomicBool::new(false));
        let lane = Lane {
            topic: topic.clone(),
            partition,
            backlog: Arc::clone(&backlog),
            paused: Arc::clone(&paused),
        };
        let task = tokio::spawn(runner.work(consumer, lane, receiver, stop));
        Self {
            queue,
            backlog,
            paused,
            topic,
            partition,
            task,
        }
    }

    /// Hands a message to the worker; pauses the partition when its backlog passes four
    /// batches (a slow or retrying worker), so fetching stops instead of memory filling up.
    fn enqueue(&self, message: OwnedMessage, consumer: &KafkaConsumer, batch_size: usize) {
        let backlog = self.backlog.fetch_add(1, Ordering::AcqRel) + 1;
        if self.queue.send(message).is_err() {
            return;
        }
        if backlog > 4 * batch_size && !self.paused.swap(true, Ordering::AcqRel) {
            let _ = consumer.pause(&one_partition(&self.topic, self.partition));
        }
    }

    fn close(self) -> tokio::task::JoinHandle<()> {
        drop(self.queue);
        self.task
    }
}

fn one_partition(topic: &str, partition: i32) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    list
}

fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}

/// Commits, retrying the commit itself (with `backoff`) while its outcome is unknown (the
/// driver's advice for `UnknownTransactionCommitResult`), until `stop` fires: then the last
/// error is returned and the batch is left for whoever consumes the partition next (the inbox
/// drops it there if this commit went through after all).
async fn commit_with_retry(
    session: &mut ClientSession,
    mut backoff: ExponentialBackoff,
    stop: &CancellationToken,
) -> Result<(), mongo_kit::mongodb::error::Error> {
    loop {
        let error = match session.commit_transaction().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let unknown =
            error.contains_label(mongo_kit::mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT);
        let retry_in = backoff.next().filter(|_| unknown && !stop.is_cancelled());
        match retry_in {
            Some(delay) if retry::pause(stop.clone(), delay).await => {
                tracing::warn!(error = %error, "commit outcome unknown; committing again");
            }
            _ => return Err(error),
        }
    }
}

/// Whether MongoDB could not be reached at all (as opposed to refusing the operation).
fn is_unreachable(error: &mongo_kit::mongodb::error::Error) -> bool {
    use mongo_kit::mongodb::error::ErrorKind;
    matches!(
        error.kind.as_ref(),
        ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statistics(state: &str, join_state: &str, coordinator: Option<&str>) -> Statistics {
        let mut statistics = Statistics {
            cgrp: Some(rdkafka::statistics::ConsumerGroup {
                state: state.into(),
                join_state: join_state.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let broker = |name: &str, state: &str| rdkafka::statistics::Broker {
            name: name.into(),
            state: state.into(),
            ..Default::default()
        };
        statistics
            .brokers
            .insert("b1".into(), broker("127.0.0.1:9092/1", "UP"));
        if let Some(state) = coordinator {
            statistics.brokers.insert(
                "GroupCoordinator".into(),
                broker("GroupCoordinator/1", state),
            );
        }
        statistics
    }

    #[test]
    fn a_group_is_settled_only_when_joined_with_its_coordinator_connected() {
        assert!(group_settled(&statistics("up", "steady", Some("UP"))));
        assert!(!group_settled(&statistics("up", "wait-join", Some("UP"))));
        assert!(!group_settled(&statistics("wait-coord", "init", None)));
        // Joined, but the coordinator connection is down: what a wedged consumer looks like.
        assert!(!group_settled(&statistics("up", "steady", Some("DOWN"))));
        assert!(
            !group_settled(&Statistics::default()),
            "no group statistics yet"
        );
    }

    #[tokio::test]
    async fn after_commit_effects_wait_inside_a_batch_and_run_at_once_outside() {
        let ran = Arc::new(AtomicUsize::new(0));
        let count = |ran: &Arc<AtomicUsize>| {
            let ran = ran.clone();
            move || {
                ran.fetch_add(1, Ordering::SeqCst);
            }
        };
        on_commit(count(&ran));
        assert_eq!(ran.load(Ordering::SeqCst), 1, "outside a batch: at once");

        let deferred = Deferred::default();
        AFTER_COMMIT
            .scope(deferred.clone(), async { on_commit(count(&ran)) })
            .await;
        assert_eq!(ran.load(Ordering::SeqCst), 1, "inside a batch: not yet");
        let effects = std::mem::take(&mut *deferred.lock().unwrap());
        assert_eq!(effects.len(), 1);
        effects.into_iter().for_each(|effect| effect());
        assert_eq!(ran.load(Ordering::SeqCst), 2);
    }
}
