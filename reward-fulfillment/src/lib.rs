//! The reward-fulfillment service: grants points, items and coupons into its own ledger
//! (`reward_db`) exactly once per GrantRewardCommand and answers with a GrantResultEvent.

use axum::Router;
use messaging::{KafkaClientError, RegistryError, SchemaRegistry, kafka};
use mongo_kit::{Mongo, MongoError};
use serde::{Deserialize, Serialize};
use service_config::catalog::REWARD_FULFILLMENT as SPEC;
use service_config::{HttpConfig, KafkaConfig, LogConfig, MongoConfig, RegistryConfig};
use service_kit::readiness::Readiness;
use service_kit::{Server, Shutdown};
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http: HttpConfig,
    pub mongo: MongoConfig,
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::on_port(SPEC.default_port),
            mongo: MongoConfig {
                database: SPEC.database.unwrap_or_default().into(),
                ..MongoConfig::default()
            },
            kafka: KafkaConfig {
                client_id: SPEC.name.into(),
                ..KafkaConfig::default()
            },
            registry: RegistryConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Mongo(#[from] MongoError),
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("binding the HTTP listener: {0}")]
    Bind(#[from] std::io::Error),
}

pub struct Application {
    server: Server,
    routes: Router,
    readiness: Readiness,
    shutdown: Shutdown,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let mongo = Mongo::connect(&config.mongo, SPEC.name).await?;
        let producer = kafka::producer(&config.kafka)?;
        let registry = Arc::new(SchemaRegistry::new(&config.registry)?);
        let readiness = Readiness::new()
            .check("mongodb", mongo.probe())
            .check("kafka", kafka::probe(&producer))
            .check("schema-registry", registry.probe());
        Ok(Self {
            server: Server::bind(&config.http).await?,
            routes: Router::new(),
            readiness,
            shutdown: Shutdown::new(),
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Stops the application as SIGTERM would.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let token = self.shutdown.on_signals().token();
        self.server
            .serve(SPEC.name, self.routes, self.readiness, token)
            .await
    }
}
