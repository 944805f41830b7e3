//! The event service: events (time window, status), rewards (type, quantity, stock),
//! conditions, reward claims and their history. Owns `event_db`; folds UserActivityEvent into
//! per-user progress and runs the claim saga (reserve stock, command the grant, finish or
//! compensate).

mod batch;
mod claims;
mod condition;
mod error;
pub mod metrics;
mod progress;
mod routes;
mod store;
mod users;

pub use claims::SagaConfig;
pub use error::EventError;

use auth_claims::IdentityKey;
use axum::extract::FromRef;
use claims::{GrantResults, Saga};
use messaging::consumer::{ConsumerConfig, InboxConfig};
use messaging::outbox::RelayConfig;
use messaging::topics;
use progress::ProgressFolder;
use serde::{Deserialize, Serialize};
use service_config::catalog::EVENT as SPEC;
use service_config::{HttpConfig, InternalConfig, LogConfig};
use service_deps::{Backend, DepsConfig, ServiceError};
use service_kit::App;
use std::sync::Arc;
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
    /// The consumer of game.user-activity (progress).
    pub activity: ConsumerConfig,
    /// The consumer of reward.grant-results (the saga's second half).
    pub grant_results: ConsumerConfig,
    /// The inbox all three consumers share.
    pub inbox: InboxConfig,
    pub saga: SagaConfig,
    pub relay: RelayConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::for_service(&SPEC),
            deps: DepsConfig::for_service(&SPEC),
            internal: InternalConfig::default(),
            user_events: ConsumerConfig::default(),
            // Game activity is the high-volume stream: larger batches spread each
            // transaction's fixed cost (session, events read, commit) over more messages and
            // fold more of one player's activity into one update. Measured (BENCHMARKS.md):
            // 2 000 fell behind at 30 000/s with one progress update per message; 6 000 keeps
            // up with 34 000/s at a third of the updates, and the event service's peak RSS
            // fell too (its queues no longer fill). 10 000 measured the same as 6 000.
            activity: ConsumerConfig {
                batch_size: 6_000,
                ..ConsumerConfig::default()
            },
            grant_results: ConsumerConfig::default(),
            inbox: InboxConfig::default(),
            saga: SagaConfig::default(),
            relay: RelayConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    IdentitySecret(#[from] auth_claims::IdentityError),
}

/// What the handlers share. axum clones the state for every request, and cloning these
/// field by field (a few dozen reference counts) was 9% of the service's CPU on
/// `GET /events/{id}`: one `Arc` instead.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

pub(crate) struct Shared {
    store: Store,
    saga: Saga,
    progress: ProgressFolder,
    identity: IdentityKey,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
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
        crate::metrics::describe_metrics();
        let identity = IdentityKey::from_config(&config.internal)?;
        let backend = Backend::connect(&SPEC, &config.deps, identity.clone()).await?;
        let db = backend.db().clone();
        let store = Store::new(
            &db,
            backend.audit(),
            std::time::Duration::from_millis(config.saga.catalog_ttl_ms),
        );
        let saga = Saga::new(
            backend.deps().mongo.client().clone(),
            &db,
            store.clone(),
            backend.outbox(),
            config.saga.clone(),
        );
        let state = AppState(Arc::new(Shared {
            store: store.clone(),
            saga: saga.clone(),
            progress: ProgressFolder::new(&db),
            identity,
        }));
        let timeouts = saga.clone();
        let app = backend
            .publishes(config.relay, &[contracts::GRANT_REWARD_COMMAND])
            .inbox(config.inbox)
            .consumes(
                users::CONSUMER_GROUP,
                topics::USER_EVENTS,
                &config.user_events,
                users::UserStates::new(&db),
            )
            .consumes(
                progress::CONSUMER_GROUP,
                topics::USER_ACTIVITY,
                &config.activity,
                ProgressFolder::new(&db),
            )
            .consumes(
                claims::RESULTS_GROUP,
                topics::GRANT_RESULTS,
                &config.grant_results,
                GrantResults::new(saga.clone()),
            )
            .background(move |stop| timeouts.run_timeouts(stop))
            .prepare(move || {
                let (store, saga) = (store.clone(), saga.clone());
                Box::pin(async move {
                    store.ensure_indexes().await?;
                    saga.ensure_indexes().await
                })
            })
            .serve(&config.http, routes::routes(state))
            .await?;
        Ok(app)
    }
}

#[cfg(test)]
// figment's Jail API fixes the closure's error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn one_inbox_retention_for_the_service_from_file_or_env() {
        Jail::expect_with(|jail| {
            jail.create_file("event.toml", "[inbox]\nretention_hours = 400\n")?;
            jail.set_env(service_config::CONFIG_FILE_ENV, "event.toml");
            let config: Config = service_config::load().map_err(|e| e.to_string())?;
            assert_eq!(config.inbox.retention_hours, 400);
            jail.set_env("REWARDS_INBOX__RETENTION_HOURS", "500");
            let config: Config = service_config::load().map_err(|e| e.to_string())?;
            assert_eq!(config.inbox.retention_hours, 500);
            Ok(())
        });
    }

    #[test]
    fn a_consumer_section_refuses_the_retention_key_it_no_longer_has() {
        Jail::expect_with(|jail| {
            jail.set_env("REWARDS_ACTIVITY__INBOX_RETENTION_HOURS", "400");
            assert!(service_config::load::<Config>().is_err());
            Ok(())
        });
    }
}
