//! The metrics the messaging pieces record, each named and described once.

/// Consumer lag by group, topic and partition (gauge, from librdkafka's statistics).
pub const CONSUMER_LAG: &str = "consumer_lag";
/// Messages applied (done or repeatable) by consumer group.
pub const CONSUMER_PROCESSED: &str = "consumer_processed_total";
/// Messages dropped as already applied (the inbox knew them, or a re-send in the same batch),
/// by consumer group.
pub const CONSUMER_DUPLICATES: &str = "consumer_duplicates_total";
/// Batch attempts that failed and were tried again, by consumer group.
pub const CONSUMER_RETRIES: &str = "consumer_retries_total";
/// Messages put in the dead-letter queue, by consumer group and error class.
pub const CONSUMER_DEAD_LETTERED: &str = "consumer_dead_lettered_total";
/// Kafka consumers closed and made again because their group stayed unsettled, by group.
pub const CONSUMER_REBUILDS: &str = "consumer_rebuilds_total";
/// Outbox entries not yet published, by service (gauge, sampled every 5 s by the leader;
/// other instances report 0, so the maximum over instances is the backlog).
pub const OUTBOX_PENDING: &str = "outbox_pending";
/// Outbox entries published, by service.
pub const OUTBOX_PUBLISHED: &str = "outbox_published_total";
/// Seconds from an outbox entry's creation to its publication, by service.
pub const OUTBOX_PUBLISH_LATENCY: &str = "outbox_publish_latency_seconds";
/// Dead letters sent back to their topic, by topic.
pub const DLQ_REPLAYED: &str = "dlq_replayed_total";
/// Dead letters neither replayed nor discarded, by service (gauge, sampled every 5 s).
pub const DEAD_LETTERS_PENDING: &str = "dead_letters_pending";

/// Describes every metric above to the recorder; called once at service start.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONSUMER_LAG, "Messages the consumer group is behind");
    describe_counter!(CONSUMER_PROCESSED, "Messages applied");
    describe_counter!(CONSUMER_DUPLICATES, "Messages dropped as already applied");
    describe_counter!(
        CONSUMER_RETRIES,
        "Batch attempts that failed and were tried again"
    );
    describe_counter!(
        CONSUMER_DEAD_LETTERED,
        "Messages put in the dead-letter queue"
    );
    describe_counter!(
        CONSUMER_REBUILDS,
        "Kafka consumers closed and made again because their group stayed unsettled"
    );
    describe_gauge!(OUTBOX_PENDING, "Outbox entries not yet published");
    describe_counter!(OUTBOX_PUBLISHED, "Outbox entries published");
    describe_histogram!(
        OUTBOX_PUBLISH_LATENCY,
        "Time from an outbox entry's creation to its publication"
    );
    describe_counter!(DLQ_REPLAYED, "Dead letters sent back to their topic");
    describe_gauge!(
        DEAD_LETTERS_PENDING,
        "Dead letters neither replayed nor discarded"
    );
}
