//! game-sim: a simulated game server that produces UserActivityEvents (logins, quests, items,
//! level-ups) for simulated players; the platform's demo driver and load generator.
//!
//! - [`Application`]: the service (health, readiness, metrics), `game-sim` or `game-sim serve`;
//! - [`load`]: `game-sim load`, the load generator over the activity [`mix`];
//! - [`scenario`]: `game-sim scenario`, which makes a real user meet an event's condition with
//!   activity from [`plan`].

mod avro;
pub mod cli;
pub mod load;
pub mod mix;
pub mod plan;
pub mod scenario;

pub use avro::{ActivityEncoder, EncodeError};

use axum::Router;
use messaging::{KafkaClientError, RegistryError, SchemaRegistry, kafka};
use serde::{Deserialize, Serialize};
use service_config::catalog::GAME_SIM as SPEC;
use service_config::{HttpConfig, KafkaConfig, LogConfig, RegistryConfig};
use service_kit::readiness::Readiness;
use service_kit::{App, Server};
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http: HttpConfig,
    pub kafka: KafkaConfig,
    pub registry: RegistryConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::for_service(&SPEC),
            kafka: KafkaConfig::for_service(&SPEC),
            registry: RegistryConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Kafka(#[from] KafkaClientError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("binding the HTTP listener: {0}")]
    Bind(#[from] std::io::Error),
}

/// The `producer` every record's envelope names.
pub const PRODUCER: &str = "game-sim";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Builds the service; the result runs with `port()` and `run_until_stopped()`.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> Result<App, StartupError> {
        let producer = kafka::producer(&config.kafka)?;
        let registry = Arc::new(SchemaRegistry::new(&config.registry)?);
        let readiness = Readiness::new()
            .check("kafka", kafka::probe(&producer))
            .check("schema-registry", registry.probe());
        let server = Server::bind(&config.http).await?;
        Ok(App::new(SPEC.name, server, Router::new(), readiness))
    }
}
