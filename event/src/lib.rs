//! The event service: events (time window, status), rewards (type, quantity, stock),
//! conditions, reward claims and their history. Owns `event_db`; folds UserActivityEvent into
//! per-user progress and runs the claim saga (reserve stock, command the grant, finish or
//! compensate).

mod condition;
mod error;
mod routes;
mod store;
mod users;

pub use error::EventError;

use auth_claims::IdentityKey;
use axum::extract::FromRef;
use messaging::consumer::{ConsumerConfig, ConsumerRunner};
use messaging::dlq::DeadLetters;
use messaging::topics;
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
    /// The consumer of auth.user-events.
    pub user_events: ConsumerConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::for_service(&SPEC),
            deps: DepsConfig::for_service(&SPEC),
            internal: InternalConfig::default(),
            user_events: ConsumerConfig::default(),
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
        let dead_letters = DeadLetters::new(
            deps.mongo.db(),
            deps.producer.clone(),
            deps.registry.clone(),
        );
        let routes = routes::routes(state.clone()).merge(messaging::dlq::routes(
            SPEC.name,
            dead_letters.clone(),
            state.identity.clone(),
        ));
        let gate = StartupGate::default();
        let server = Server::bind(&config.http).await?;
        let mut app = App::new(SPEC.name, server, routes, deps.readiness()).gated_by(gate.clone());
        let stop = app.shutdown_handle().token();

        let user_states = ConsumerRunner::new(
            users::CONSUMER_GROUP,
            &[topics::USER_EVENTS],
            config.deps.kafka.clone(),
            config.user_events.clone(),
            users::UserStates::new(deps.mongo.db()),
            deps.registry.clone(),
            deps.mongo.clone(),
            dead_letters.clone(),
        );
        let consumer_stop = stop.clone();
        app.spawn_background(async move {
            if let Err(e) = user_states.run(consumer_stop).await {
                tracing::error!(error = %e, "the user-states consumer stopped");
            }
        });

        let (db, consumer_config) = (deps.mongo.db().clone(), config.user_events);
        gate.run(stop, move || {
            let (store, letters) = (state.store.clone(), dead_letters.clone());
            let (db, consumer_config) = (db.clone(), consumer_config.clone());
            Box::pin(async move {
                store.ensure_indexes().await?;
                letters
                    .ensure_indexes()
                    .await
                    .map_err(|e| EventError::Internal(e.to_string()))?;
                ConsumerRunner::<users::UserStates>::ensure_indexes(&db, &consumer_config).await?;
                Ok::<_, EventError>(())
            })
        });
        Ok(app)
    }
}
