//! The auth service: user accounts (argon2 password hashes), login issuing JWTs, refresh
//! tokens and roles. Owns `auth_db`; publishes UserRegistered and UserStatusChanged.

use axum::Router;
use serde::{Deserialize, Serialize};
use service_config::catalog::AUTH as SPEC;
use service_config::{HttpConfig, LogConfig};
use service_deps::{Deps, DepsConfig, DepsError};
use service_kit::{App, Server};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http: HttpConfig,
    #[serde(flatten)]
    pub deps: DepsConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::for_service(&SPEC),
            deps: DepsConfig::for_service(&SPEC),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Deps(#[from] DepsError),
    #[error("binding the HTTP listener: {0}")]
    Bind(#[from] std::io::Error),
}

/// Builds the service; the result runs with `port()` and `run_until_stopped()`.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> Result<App, StartupError> {
        let deps = Deps::connect(&config.deps, SPEC.name).await?;
        let server = Server::bind(&config.http).await?;
        Ok(App::new(SPEC.name, server, Router::new(), deps.readiness()))
    }
}
