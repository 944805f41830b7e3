//! The connections a backend service holds to the platform's infrastructure (MongoDB, Kafka,
//! the schema registry), configured and made the same way in every service, together with
//! the readiness checks that report on them; and [`Backend`], which wires a service's
//! outbox relay, consumers, dead letters and start-up work on top of them.

pub mod backend;

pub use backend::{Backend, BoxError, ServiceError};

use messaging::{KafkaClientError, RegistryError, SchemaRegistry, kafka};
use mongo_kit::{Mongo, MongoError};
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use service_config::catalog::ServiceSpec;
use service_config::{KafkaConfig, MongoConfig, RegistryConfig};
use service_kit::readiness::Readiness;
use std::sync::Arc;

/// The config sections for the infrastructure; flattened into a service's own config, so they
/// read as `[mongo]`, `[kafka]`, `[registry]` (env `REWARDS_MONGO__URI`, ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DepsConfig {
    pub mongo: MongoConfig,
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
}

impl DepsConfig {
    /// Local defaults, with the service's own database and Kafka client id.
    pub fn for_service(spec: &ServiceSpec) -> Self {
        Self {
            mongo: MongoConfig::for_service(spec),
            kafka: KafkaConfig::for_service(spec),
            registry: RegistryConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error(transparent)]
    Mongo(#[from] MongoError),
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Clients for the infrastructure. Creating them does no I/O, so a service starts (and
/// reports "not ready") while a dependency is still coming up.
#[derive(Clone)]
pub struct Deps {
    pub mongo: Mongo,
    pub producer: FutureProducer,
    pub registry: Arc<SchemaRegistry>,
}

impl Deps {
    pub async fn connect(config: &DepsConfig, app_name: &str) -> Result<Self, DepsError> {
        Ok(Self {
            mongo: Mongo::connect(&config.mongo, app_name).await?,
            producer: kafka::producer(&config.kafka)?,
            registry: Arc::new(SchemaRegistry::new(&config.registry)?),
        })
    }

    /// `/readyz`: MongoDB answers a ping, Kafka its metadata request, the registry a request.
    pub fn readiness(&self) -> Readiness {
        Readiness::new()
            .check("mongodb", self.mongo.probe())
            .check("kafka", kafka::probe(&self.producer))
            .check("schema-registry", self.registry.probe())
    }
}
