//! The event service: events (time window, status), rewards (type, quantity, stock),
//! conditions, reward claims and their history. Owns `event_db`; folds UserActivityEvent into
//! per-user progress and runs the claim saga (reserve stock, command the grant, finish or
//! compensate).

mod condition;
mod error;
mod routes;
mod store;

pub use error::EventError;

use auth_claims::IdentityKey;
use axum::extract::FromRef;
use serde::{Deserialize, Serialize};
use service_config::catalog::EVENT as SPEC;
use service_config::{HttpConfig, InternalConfig, LogConfig};
use service_deps::{Deps, DepsConfig, DepsError};
use service_kit::startup::StartupGate;
use service_kit::{App, Server};
use store::Store;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http: HttpConfig,
    #[serde(flatten)]
    pub deps: DepsConfig,
    pub internal: InternalConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::for_service(&SPEC),
            deps: DepsConfig::for_service(&SPEC),
            internal: InternalConfig::default(),
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
    #[error(transparent)]
    IdentitySecret(#[from] auth_claims::IdentityError),
}

#[derive(Clone)]
pub(crate) struct AppState {
    store: Store,
    identity: IdentityKey,
}

impl FromRef<AppState> for IdentityKey {
    fn from_ref(state: &AppState) -> Self {
        state.identity.clone()
    }
}

/// Builds the service; the result runs with `port()` and `run_until_stopped()`.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> Result<App, StartupError> {
        let deps = Deps::connect(&config.deps, SPEC.name).await?;
        let state = AppState {
            store: Store::new(deps.mongo.db()),
            identity: IdentityKey::from_config(&config.internal)?,
        };
        let gate = StartupGate::default();
        let readiness = deps.readiness();
        let server = Server::bind(&config.http).await?;
        let app = App::new(SPEC.name, server, routes::routes(state.clone()), readiness)
            .gated_by(gate.clone());
        gate.run(app.shutdown_handle().token(), move || {
            let store = state.store.clone();
            Box::pin(async move { store.ensure_indexes().await })
        });
        Ok(app)
    }
}
