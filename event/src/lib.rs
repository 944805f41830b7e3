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
use messaging::consumer::{ConsumerConfig, ConsumerRunner, Handler};
use messaging::dlq::DeadLetters;
use messaging::outbox::{Outbox, Relay, RelayConfig};
use messaging::topics;
use progress::ProgressFolder;
use serde::{Deserialize, Serialize};
use service_config::catalog::EVENT as SPEC;
use service_config::{HttpConfig, InternalConfig, LogConfig};
use service_deps::{Deps, DepsConfig, DepsError};
use service_kit::startup::StartupGate;
use service_kit::{App, Server};
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
            saga: SagaConfig::default(),
            relay: RelayConfig::default(),
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
        let deps = Deps::connect(&config.deps, SPEC.name).await?;
        let db = deps.mongo.db().clone();
        let outbox = Outbox::new(&db, deps.registry.clone(), SPEC.name);
        let store = Store::new(
            &db,
            std::time::Duration::from_millis(config.saga.catalog_ttl_ms),
        );
        let saga = Saga::new(
            deps.mongo.client().clone(),
            &db,
            store.clone(),
            outbox,
            config.saga.clone(),
        );
        let state = AppState(Arc::new(Shared {
            store,
            saga: saga.clone(),
            progress: ProgressFolder::new(&db),
            identity: IdentityKey::from_config(&config.internal)?,
        }));
        let dead_letters = DeadLetters::new(&db, deps.producer.clone(), deps.registry.clone());
        let routes = routes::routes(state.clone()).merge(messaging::dlq::routes(
            SPEC.name,
            dead_letters.clone(),
            state.identity.clone(),
        ));
        let gate = StartupGate::default();
        let server = Server::bind(&config.http).await?;
        let mut app = App::new(SPEC.name, server, routes, deps.readiness()).gated_by(gate.clone());
        let stop = app.shutdown_handle().token();

        let consumers = Consumers {
            deps: &deps,
            kafka: &config.deps.kafka,
            dead_letters: &dead_letters,
        };
        consumers.spawn(
            &mut app,
            users::CONSUMER_GROUP,
            topics::USER_EVENTS,
            &config.user_events,
            users::UserStates::new(&db),
        );
        consumers.spawn(
            &mut app,
            progress::CONSUMER_GROUP,
            topics::USER_ACTIVITY,
            &config.activity,
            ProgressFolder::new(&db),
        );
        consumers.spawn(
            &mut app,
            claims::RESULTS_GROUP,
            topics::GRANT_RESULTS,
            &config.grant_results,
            GrantResults::new(saga.clone()),
        );
        let relay = Relay::new(&db, deps.producer.clone(), config.relay.clone(), SPEC.name);
        app.spawn_background(relay.run(stop.clone()));
        app.spawn_background(saga.clone().run_timeouts(stop.clone()));

        let (consumer_config, relay_config, registry) =
            (config.user_events, config.relay, deps.registry.clone());
        let kafka = config.deps.kafka.clone();
        gate.run(stop, move || {
            let (store, letters, saga) = (state.store.clone(), dead_letters.clone(), saga.clone());
            let (db, consumer_config, relay_config, registry) = (
                db.clone(),
                consumer_config.clone(),
                relay_config.clone(),
                registry.clone(),
            );
            let kafka = kafka.clone();
            Box::pin(async move {
                let internal = |e: String| EventError::Internal(e);
                store.ensure_indexes().await?;
                saga.ensure_indexes().await?;
                letters
                    .ensure_indexes()
                    .await
                    .map_err(|e| internal(e.to_string()))?;
                // One inbox serves every consumer group of this database.
                ConsumerRunner::<users::UserStates>::ensure_indexes(&db, &consumer_config).await?;
                Relay::prepare(
                    &db,
                    &relay_config,
                    &kafka,
                    &registry,
                    &[contracts::GRANT_REWARD_COMMAND],
                )
                .await
                .map_err(|e| internal(e.to_string()))?;
                Ok::<_, EventError>(())
            })
        });
        Ok(app)
    }
}

/// What every consumer group of the service shares.
struct Consumers<'a> {
    deps: &'a Deps,
    kafka: &'a service_config::KafkaConfig,
    dead_letters: &'a DeadLetters,
}

impl Consumers<'_> {
    /// Runs one consumer group in the background until the app stops; a consumer that dies
    /// is logged (and readiness reports the dependency it lost).
    fn spawn<H: Handler>(
        &self,
        app: &mut App,
        group: &'static str,
        topic: &str,
        config: &ConsumerConfig,
        handler: H,
    ) {
        let runner = ConsumerRunner::new(
            group,
            &[topic],
            self.kafka.clone(),
            config.clone(),
            handler,
            self.deps.registry.clone(),
            self.deps.mongo.clone(),
            self.dead_letters.clone(),
        );
        let stop = app.shutdown_handle().token();
        app.spawn_background(async move {
            if let Err(e) = runner.run(stop).await {
                tracing::error!(group, error = %e, "consumer stopped");
            }
        });
    }
}
