//! Reading a topic as a person would: every message with its partition, offset, key and
//! headers, its Avro value decoded to JSON through the schema registry (what `kcat -s avro`
//! does). Behind `./dev topic`.
//!
//! The reader assigns partitions itself and never commits offsets, so looking at a topic
//! does not disturb any consumer group.

use crate::kafka::{self, KafkaClientError};
use crate::registry::SchemaRegistry;
use base64::Engine;
use mongo_kit::mongodb::bson::DateTime;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Map, Value, json};
use service_config::KafkaConfig;
use std::collections::BTreeMap;
use std::time::Duration;

/// Which messages to show.
#[derive(Debug, Clone, Default)]
pub struct InspectOptions {
    /// Only this partition (all when `None`).
    pub partition: Option<i32>,
    /// Only the last `n` messages of each partition (all that are retained when `None`).
    pub last: Option<i64>,
    /// Stop after this many messages.
    pub limit: Option<usize>,
    /// Keep waiting for new messages instead of stopping at the end of each partition.
    pub follow: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("topic {0:?} does not exist")]
    NoSuchTopic(String),
    #[error("topic {topic:?} has no partition {partition}")]
    NoSuchPartition { topic: String, partition: i32 },
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
}

impl From<rdkafka::error::KafkaError> for InspectError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        Self::Kafka(e.into())
    }
}

/// How long to wait for the next message before concluding that the rest of a partition is
/// not readable (for example transaction markers that take offsets but carry no message).
const IDLE_LIMIT: Duration = Duration::from_secs(10);

/// Hands each selected message of `topic`, as JSON, to `out`, in arrival order (ordered per
/// partition). Returns how many it handed over.
pub async fn inspect(
    config: &KafkaConfig,
    registry: &SchemaRegistry,
    topic: &str,
    options: &InspectOptions,
    mut out: impl FnMut(Value),
) -> Result<usize, InspectError> {
    let (consumer, ends) = assign(config, topic, options).await?;
    // Partitions still to read to their end (follow mode never runs out).
    let mut open: BTreeMap<i32, i64> = ends;
    let mut shown = 0;
    while options.follow || !open.is_empty() {
        if options.limit.is_some_and(|limit| shown >= limit) {
            break;
        }
        let message = if options.follow {
            consumer.recv().await?
        } else {
            match tokio::time::timeout(IDLE_LIMIT, consumer.recv()).await {
                Ok(message) => message?,
                Err(_) => break,
            }
        };
        out(describe(registry, &message).await);
        shown += 1;
        if let Some(&end) = open.get(&message.partition())
            && message.offset() + 1 >= end
        {
            open.remove(&message.partition());
        }
    }
    Ok(shown)
}

/// A consumer assigned to the selected partitions at their start offsets, and the end offset
/// (high watermark) of each partition that has something to read.
async fn assign(
    config: &KafkaConfig,
    topic: &str,
    options: &InspectOptions,
) -> Result<(StreamConsumer, BTreeMap<i32, i64>), InspectError> {
    let mut settings = kafka::consumer_config(config, "dev-tool-inspect");
    settings.set("enable.auto.commit", "false");
    let consumer: StreamConsumer = settings.create().map_err(KafkaClientError::from)?;
    let topic = topic.to_owned();
    let options = options.clone();
    // Metadata and watermark requests block their thread.
    tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let partitions: Vec<i32> = match metadata.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                t.partitions().iter().map(|p| p.id()).collect()
            }
            _ => return Err(InspectError::NoSuchTopic(topic)),
        };
        let selected = match options.partition {
            Some(p) if partitions.contains(&p) => vec![p],
            Some(partition) => return Err(InspectError::NoSuchPartition { topic, partition }),
            None => partitions,
        };
        let mut assignment = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for partition in selected {
            let (low, high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
            let start = options.last.map_or(low, |n| (high - n).max(low));
            assignment.add_partition_offset(&topic, partition, Offset::Offset(start))?;
            if start < high {
                ends.insert(partition, high);
            }
        }
        consumer.assign(&assignment)?;
        Ok((consumer, ends))
    })
    .await
    .expect("the partition lookup does not panic")
}

/// One message as JSON: where it sits, its key and headers, and its value decoded through the
/// registry, or the reason it could not be decoded and its raw bytes.
async fn describe(registry: &SchemaRegistry, message: &BorrowedMessage<'_>) -> Value {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut headers = Map::new();
    if let Some(all) = message.headers() {
        for header in all.iter() {
            headers.insert(header.key.to_owned(), header.value.map(text).into());
        }
    }
    let timestamp = message
        .timestamp()
        .to_millis()
        .and_then(|ms| DateTime::from_millis(ms).try_to_rfc3339_string().ok());
    let mut described = json!({
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp": timestamp,
        "key": message.key().map(text),
        "headers": headers,
    });
    let fields = described.as_object_mut().expect("an object");
    let Some(payload) = message.payload() else {
        fields.insert("value".into(), Value::Null);
        return described;
    };
    if payload.len() >= 5 && payload[0] == 0 {
        let id = u32::from_be_bytes(payload[1..5].try_into().expect("four bytes"));
        fields.insert("schemaId".into(), id.into());
    }
    match registry.decode_json(payload).await {
        Ok((record, value)) => {
            fields.insert("record".into(), record.into());
            fields.insert("value".into(), value);
        }
        Err(e) => {
            fields.insert("error".into(), e.to_string().into());
            let raw = base64::engine::general_purpose::STANDARD.encode(payload);
            fields.insert("payloadBase64".into(), raw.into());
        }
    }
    described
}
