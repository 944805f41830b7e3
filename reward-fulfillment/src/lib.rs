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
use messaging::topics;
use service_config::catalog::REWARD_FULFILLMENT as SPEC;
use service_deps::{Backend, ServiceError};
use service_kit::App;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Service(#[from] ServiceError),
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
        let backend = Backend::connect(&SPEC, &config.deps, identity.clone()).await?;
        let ledger = Ledger::new(backend.db());
        let grants = Grants::new(ledger.clone(), backend.outbox(), config.failure.clone());
        let state = AppState {
            ledger: ledger.clone(),
            identity,
        };
        let app = backend
            .publishes(config.relay, &[contracts::GRANT_RESULT_EVENT])
            .inbox(config.inbox)
            .consumes(
                grants::CONSUMER_GROUP,
                topics::GRANT_COMMANDS,
                &config.grant_commands,
                grants,
            )
            .prepare(move || {
                let ledger = ledger.clone();
                Box::pin(async move { ledger.ensure_indexes().await })
            })
            .serve(&config.http, routes::routes(state))
            .await?;
        Ok(app)
    }
}
