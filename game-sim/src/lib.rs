//! game-sim: a simulated game server that produces UserActivityEvents (logins, quests, items,
//! level-ups) for simulated players; the platform's demo driver and load generator.

use axum::Router;
use messaging::{KafkaClientError, RegistryError, SchemaRegistry, kafka};
use serde::{Deserialize, Serialize};
use service_config::catalog::GAME_SIM as SPEC;
use service_config::{HttpConfig, KafkaConfig, LogConfig, RegistryConfig};
use service_kit::readiness::Readiness;
use service_kit::{Server, Shutdown};
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
            http: HttpConfig::on_port(SPEC.default_port),
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
        let producer = kafka::producer(&config.kafka)?;
        let registry = Arc::new(SchemaRegistry::new(&config.registry)?);
        let readiness = Readiness::new()
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
