//! Everything between a service and Kafka: client settings, topic names and provisioning,
//! and Avro encoding in the Confluent wire format through the schema registry.
//!
//! The transactional outbox relay, the idempotent consumer runner and the dead-letter queue
//! build on these pieces and live here too, so every service uses one implementation; so does
//! the topic reader behind `./dev topic`.

pub mod consumer;
pub mod dlq;
pub mod inspect;
pub mod kafka;
pub mod metrics;
pub mod outbox;
pub mod registry;
pub mod topics;

pub use kafka::KafkaClientError;
pub use registry::{RegistryError, SchemaRegistry};
