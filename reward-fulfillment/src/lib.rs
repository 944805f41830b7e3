//! The reward-fulfillment service: grants points, items and coupons into its own ledger
//! (`reward_db`) exactly once per GrantRewardCommand and answers with a GrantResultEvent.
//!
//! It consumes `event.grant-commands` (group `reward-fulfillment.grants`), decides each
//! command once per command id, and writes the result to its outbox in the same transaction;
//! the relay publishes it to `reward.grant-results`. Players read what they hold at
//! `GET /inventory/me`; operators and auditors read anyone's at `GET /inventory/{userId}`.

pub mod config;
mod error;
mod grants;
mod ledger;
pub mod metrics;
mod routes;

pub use config::{Config, ConfigError, FailureConfig};
pub use error::FulfillmentError;
pub use grants::CONSUMER_GROUP;

use auth_claims::IdentityKey;
use axum::extract::FromRef;
use grants::Grants;
use ledger::Ledger;
use messaging::consumer::ConsumerRunner;
use messaging::dlq::DeadLetters;
use messaging::outbox::{Outbox, Relay};
use messaging::topics;
use service_config::catalog::REWARD_FULFILLMENT as SPEC;
use service_deps::{Deps, DepsError};
use service_kit::startup::StartupGate;
use service_kit::{App, Server};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Deps(#[from] DepsError),
    #[error("binding the HTTP listener: {0}")]
    Bind(#[from] std::io::Error),
    #[error(transparent)]
    IdentitySecret(#[from] auth_claims::IdentityError),
}

#[derive(Clone)]
pub(crate) struct AppState {
    ledger: Ledger,
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
        crate::metrics::describe_metrics();
        config.validate()?;
        let identity = IdentityKey::from_config(&config.internal)?;
        let deps = Deps::connect(&config.deps, SPEC.name).await?;
        let ledger = Ledger::new(deps.mongo.db());
        let state = AppState {
            ledger: ledger.clone(),
            identity,
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

        let relay = Relay::new(
            deps.mongo.db(),
            deps.producer.clone(),
            config.relay.clone(),
            SPEC.name,
        );
        app.spawn_background(relay.run(stop.clone()));

        let outbox = Outbox::new(deps.mongo.db(), deps.registry.clone(), SPEC.name);
        let consumer = ConsumerRunner::new(
            grants::CONSUMER_GROUP,
            &[topics::GRANT_COMMANDS],
            config.deps.kafka.clone(),
            config.grant_commands.clone(),
            Grants::new(ledger.clone(), outbox, config.failure.clone()),
            deps.registry.clone(),
            deps.mongo.clone(),
            dead_letters.clone(),
        );
        let consumer_stop = stop.clone();
        app.spawn_background(async move {
            if let Err(e) = consumer.run(consumer_stop).await {
                tracing::error!(error = %e, "the grant-commands consumer stopped");
            }
        });

        let db = deps.mongo.db().clone();
        let registry = deps.registry.clone();
        let (consumer_config, relay_config) = (config.grant_commands, config.relay);
        let kafka = config.deps.kafka.clone();
        gate.run(stop, move || {
            let (ledger, letters, db) = (ledger.clone(), dead_letters.clone(), db.clone());
            let (consumer_config, relay_config) = (consumer_config.clone(), relay_config.clone());
            let (registry, kafka) = (registry.clone(), kafka.clone());
            Box::pin(async move {
                let internal =
                    |e: &dyn std::fmt::Display| FulfillmentError::Internal(e.to_string());
                ledger.ensure_indexes().await?;
                letters.ensure_indexes().await.map_err(|e| internal(&e))?;
                ConsumerRunner::<Grants>::ensure_indexes(&db, &consumer_config).await?;
                Relay::prepare(
                    &db,
                    &relay_config,
                    &kafka,
                    &registry,
                    &[contracts::GRANT_RESULT_EVENT],
                )
                .await
                .map_err(|e| internal(&e))?;
                Ok::<_, FulfillmentError>(())
            })
        });
        Ok(app)
    }
}
