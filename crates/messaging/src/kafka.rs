//! Kafka clients configured the one way the platform wants them.

use crate::topics::TopicSpec;
use futures::future::BoxFuture;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use service_config::KafkaConfig;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KafkaClientError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("kafka did not answer within {0:?}")]
    Timeout(Duration),
}

/// Settings every client shares.
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.brokers)
        .set("client.id", &config.client_id)
        // Loopback brokers answer in microseconds; do not wait long to notice one is gone.
        .set("socket.connection.setup.timeout.ms", "5000")
        // Reconnection attempts back off up to 1 s instead of librdkafka's 10 s, so a client
        // finds a restarted broker within a second rather than up to ten after it is back.
        .set("reconnect.backoff.max.ms", "1000")
        // A request to a broker that stopped answering (frozen, partitioned) is given up
        // after 10 s instead of 60 s, and sent again to whoever leads the partition now.
        .set("socket.timeout.ms", "10000");
    cc
}

/// A producer that never duplicates or reorders on its own retries (idempotence) and only
/// reports success once all in-sync replicas have the record.
pub fn producer(config: &KafkaConfig) -> Result<FutureProducer, KafkaClientError> {
    Ok(client_config(config)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // An acknowledgement not back within 5 s (librdkafka: 30 s) means the partition's
        // leader is gone or frozen: the batch is sent again (idempotence keeps it single)
        // once the cluster names a new leader, which it does after 4 s.
        .set("request.timeout.ms", "5000")
        .set("linger.ms", config.linger_ms.to_string())
        .set("compression.type", "lz4")
        .create()?)
}

/// A consumer in `group` that starts from the earliest offset when the group has none and
/// commits only offsets the application stored explicitly (after its work is durable).
pub fn consumer(config: &KafkaConfig, group: &str) -> Result<StreamConsumer, KafkaClientError> {
    Ok(consumer_config(config, group).create()?)
}

/// The settings behind [`consumer`], for consumers with a context of their own.
pub fn consumer_config(config: &KafkaConfig, group: &str) -> ClientConfig {
    let mut cc = client_config(config);
    cc.set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // The runner pauses a partition whose worker falls behind and resumes it a batch
        // later. With the default (1 s) a resumed partition then often waited a second for
        // its next fetch: measured as exactly ~1 000 messages per partition per second at any
        // load. Re-checking after 20 ms costs nothing on an idle consumer.
        .set("fetch.queue.backoff.ms", "20")
        // What librdkafka fetches ahead, per consumer (default 64 MiB): a loopback broker
        // refills it in milliseconds, and the default let the event service's three
        // consumers hold ~300 MiB during the ingestion benchmark.
        .set("queued.max.messages.kbytes", "8192")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (config.session_timeout_ms / 5).max(500).to_string(),
        );
    cc
}

/// Asks the cluster for its metadata: proves a broker is reachable and answering.
pub async fn ping(producer: &FutureProducer, timeout: Duration) -> Result<(), KafkaClientError> {
    let producer = producer.clone();
    // fetch_metadata blocks its thread for up to `timeout`.
    let result = tokio::task::spawn_blocking(move || {
        producer.client().fetch_metadata(None, timeout).map(|_| ())
    })
    .await;
    match result {
        Ok(r) => Ok(r?),
        Err(_) => Err(KafkaClientError::Timeout(timeout)),
    }
}

/// A topic's partitions as the cluster describes them: `(leader, replicas, in-sync
/// replicas)`, replicas sorted.
#[derive(Debug, Clone)]
pub struct TopicState {
    pub name: String,
    pub partitions: Vec<(i32, Vec<i32>, Vec<i32>)>,
}

/// The platform's topics (those of [`crate::topics::all`]) as the cluster describes them now.
pub async fn describe_topics(
    producer: &FutureProducer,
    timeout: Duration,
) -> Result<Vec<TopicState>, KafkaClientError> {
    let producer = producer.clone();
    let metadata =
        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, timeout))
            .await
            .map_err(|_| KafkaClientError::Timeout(timeout))??;
    let ours: Vec<String> = crate::topics::all().into_iter().map(|t| t.name).collect();
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| ours.iter().any(|n| n == t.name()))
        .map(|t| TopicState {
            name: t.name().to_owned(),
            partitions: t
                .partitions()
                .iter()
                .map(|p| {
                    let mut replicas = p.replicas().to_vec();
                    let mut isr = p.isr().to_vec();
                    replicas.sort_unstable();
                    isr.sort_unstable();
                    (p.leader(), replicas, isr)
                })
                .collect(),
        })
        .collect())
}

/// A readiness check: a metadata request bounded by 1 s.
pub fn probe(
    producer: &FutureProducer,
) -> impl Fn() -> BoxFuture<'static, Result<(), KafkaClientError>> + Send + Sync + 'static {
    let producer = producer.clone();
    move || {
        let producer = producer.clone();
        Box::pin(async move { ping(&producer, Duration::from_secs(1)).await })
    }
}

/// Creates the topics that do not exist yet, replicated as `config` says; existing ones are
/// left as they are.
pub async fn ensure_topics(
    config: &KafkaConfig,
    topics: &[TopicSpec],
) -> Result<(), KafkaClientError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config).create()?;
    let min_isr = config.topic_min_insync_replicas.to_string();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(config.topic_replication),
            )
            .set("min.insync.replicas", &min_isr)
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaClientError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}
