//! The load generator: simulated players' activity produced as fast as asked.
//!
//! One thread generates, encodes and hands records to librdkafka without waiting for each
//! delivery (a [`ThreadedProducer`] counts the acknowledgements in its delivery callback);
//! when librdkafka's queue is full it waits for deliveries to drain it. Pacing is by elapsed
//! time (record `k` is due at `k / rate` seconds), so it does not drift.

use crate::avro::ActivityEncoder;
use crate::mix::Mix;
use crate::now_ms;
use contracts::topics::USER_ACTIVITY;
use messaging::{SchemaRegistry, kafka};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;
use service_config::{KafkaConfig, RegistryConfig};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub users: usize,
    /// Records per second in all; 0 is as fast as possible.
    pub rate: u64,
    pub duration: Duration,
    pub user_prefix: String,
    pub seed: Option<u64>,
    /// Progress lines on stderr once a second.
    pub progress: bool,
}

/// What a run did. `--json` prints it as one line.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub users: usize,
    pub user_prefix: String,
    pub target_rate: u64,
    /// Records handed to the producer.
    pub sent: u64,
    /// Records the broker acknowledged (acks=all).
    pub acknowledged: u64,
    /// Records that failed, were refused, or were not acknowledged in time.
    pub errors: u64,
    /// From the first record to the last acknowledgement.
    pub duration_secs: f64,
    /// Acknowledged records per second over `duration_secs`.
    pub average_rate: f64,
    pub schema_id: u32,
    /// The first error seen, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Summary {
    pub fn succeeded(&self) -> bool {
        self.errors == 0 && self.acknowledged == self.sent
    }

    pub fn human(&self) -> String {
        format!(
            "sent {} acknowledged {} errors {} in {:.2} s: {:.0} records/s on average{}",
            self.sent,
            self.acknowledged,
            self.errors,
            self.duration_secs,
            self.average_rate,
            self.first_error
                .as_deref()
                .map(|e| format!(" (first error: {e})"))
                .unwrap_or_default()
        )
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    fn error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(message);
    }
}

/// Counts deliveries as librdkafka reports them.
struct Deliveries(Arc<Counters>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => self.0.error(format!("delivery failed: {e}")),
        }
    }
}

/// How long to wait at the end for outstanding acknowledgements.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the load and returns its summary (errors in producing are counted, not returned).
pub async fn run(
    kafka_config: &KafkaConfig,
    registry_config: &RegistryConfig,
    options: LoadOptions,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(options.users > 0, "--users must be at least 1");
    let mut mix = Mix::new(options.users, &options.user_prefix, options.seed);
    let registry = SchemaRegistry::new(registry_config)?;
    // The one registry call: the schema is registered or found, and its id cached.
    let sample = mix.next_event(now_ms());
    let encoder = ActivityEncoder::from_registry(&registry, USER_ACTIVITY, &sample)
        .await
        .map_err(|e| anyhow::anyhow!("preparing the encoder at {}: {e}", registry.url()))?;

    let counters = Arc::new(Counters::default());
    let producer: ThreadedProducer<Deliveries> = kafka::client_config(kafka_config)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "10")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(Deliveries(Arc::clone(&counters)))?;
    let producer = Arc::new(producer);
    // Fail fast with a clear message when no broker answers.
    {
        let probe = Arc::clone(&producer);
        tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(Some(USER_ACTIVITY), Duration::from_secs(10))
        })
        .await?
        .map_err(|e| anyhow::anyhow!("kafka at {}: {e}", kafka_config.brokers))?;
    }

    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let reporter = options.progress.then(|| {
        let counters = Arc::clone(&counters);
        let done = Arc::clone(&done);
        tokio::spawn(report_progress(counters, done, started))
    });

    let hot = {
        let counters = Arc::clone(&counters);
        let producer = Arc::clone(&producer);
        let options = options.clone();
        tokio::task::spawn_blocking(move || {
            let mut pending = Some(sample);
            produce(
                &producer,
                &encoder,
                &mut mix,
                &counters,
                &options,
                started,
                &mut pending,
            );
            let flushed = producer.flush(FLUSH_TIMEOUT);
            (flushed, encoder.schema_id())
        })
    };
    let (flushed, schema_id) = hot.await?;
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    if let Some(reporter) = reporter {
        let _ = reporter.await;
    }

    let sent = counters.sent.load(Ordering::Relaxed);
    let acknowledged = counters.acked.load(Ordering::Relaxed);
    let failed = counters.errors.load(Ordering::Relaxed);
    // Records neither acknowledged nor failed when the flush gave up.
    let missing = sent.saturating_sub(acknowledged + failed);
    if missing > 0 {
        let reason = match flushed {
            Err(e) => format!("{missing} not acknowledged within {FLUSH_TIMEOUT:?}: {e}"),
            Ok(()) => format!("{missing} not acknowledged"),
        };
        counters.error(reason);
    }
    let errors = failed + missing;
    let duration_secs = elapsed.as_secs_f64();
    let first_error = counters
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(Summary {
        users: options.users,
        user_prefix: options.user_prefix,
        target_rate: options.rate,
        sent,
        acknowledged,
        errors,
        duration_secs,
        average_rate: if duration_secs > 0.0 {
            acknowledged as f64 / duration_secs
        } else {
            0.0
        },
        schema_id,
        first_error,
    })
}

/// The hot loop: until the duration is over, produce each record when it is due.
fn produce(
    producer: &ThreadedProducer<Deliveries>,
    encoder: &ActivityEncoder,
    mix: &mut Mix,
    counters: &Counters,
    options: &LoadOptions,
    started: Instant,
    pending: &mut Option<contracts::UserActivityEvent>,
) {
    let mut buf = Vec::with_capacity(256);
    let mut sent: u64 = 0;
    loop {
        let elapsed = started.elapsed();
        if elapsed >= options.duration {
            break;
        }
        if options.rate > 0 {
            // Record `sent` is due at sent / rate seconds after the start.
            let due = Duration::from_secs_f64(sent as f64 / options.rate as f64);
            if due > elapsed {
                let wake = due.min(options.duration);
                std::thread::sleep(wake.saturating_sub(elapsed));
                continue;
            }
        }
        let event = pending
            .take()
            .unwrap_or_else(|| mix.next_event(crate::now_ms()));
        if let Err(e) = encoder.encode_into(&event, &mut buf) {
            counters.sent.fetch_add(1, Ordering::Relaxed);
            sent += 1;
            counters.error(format!("encoding: {e}"));
            continue;
        }
        let mut id_buf = uuid::Uuid::encode_buffer();
        let id: &str = event
            .envelope
            .message_id
            .hyphenated()
            .encode_lower(&mut id_buf);
        let mut record = BaseRecord::to(USER_ACTIVITY)
            .key(event.user_id.as_str())
            .payload(buf.as_slice())
            .headers(OwnedHeaders::new_with_capacity(1).insert(Header {
                key: "message-id",
                value: Some(id),
            }));
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // Wait for deliveries to make room (the producer's thread polls them).
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    counters.error(format!("send: {e}"));
                    break;
                }
            }
        }
        sent += 1;
        counters.sent.fetch_add(1, Ordering::Relaxed);
    }
}

async fn report_progress(counters: Arc<Counters>, done: Arc<AtomicBool>, started: Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_acked = 0;
    let mut last_at = started;
    loop {
        ticker.tick().await;
        if done.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        let acked = counters.acked.load(Ordering::Relaxed);
        let rate = (acked - last_acked) as f64 / now.duration_since(last_at).as_secs_f64();
        eprintln!(
            "[{:>5.1}s] sent {} acked {} errors {} rate {:.0}/s",
            now.duration_since(started).as_secs_f64(),
            counters.sent.load(Ordering::Relaxed),
            acked,
            counters.errors.load(Ordering::Relaxed),
            rate
        );
        last_acked = acked;
        last_at = now;
    }
}
