//! The auth service: user accounts (argon2id password hashes), login issuing EdDSA JWTs,
//! rotating refresh tokens with reuse detection, and roles. Owns `auth_db`; publishes
//! UserRegistered and UserStatusChanged.

pub mod config;
mod error;
pub mod metrics;
pub mod passwords;
mod routes;
mod store;
mod tokens;
mod validate;

pub use config::Config;
pub use error::AuthError;

use auth_claims::{IdentityKey, Role};
use axum::extract::FromRef;
use http_api::auth::UserStatus;
use messaging::outbox::{Outbox, Relay};
use passwords::Passwords;
use secrecy::ExposeSecret;
use service_config::catalog::AUTH as SPEC;
use service_deps::{Deps, DepsError};
use service_kit::startup::StartupGate;
use service_kit::{App, Server};
use std::sync::Arc;
use store::{Store, UserDoc};
use tokens::Tokens;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Deps(#[from] DepsError),
    #[error("binding the HTTP listener: {0}")]
    Bind(#[from] std::io::Error),
    #[error(transparent)]
    IdentitySecret(#[from] auth_claims::IdentityError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

#[derive(Clone)]
pub(crate) struct AppState {
    store: Store,
    passwords: Passwords,
    tokens: Arc<Tokens>,
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
        let deps = Deps::connect(&config.deps, SPEC.name).await?;
        let identity = IdentityKey::from_config(&config.internal)?;
        let outbox = Outbox::new(deps.mongo.db(), deps.registry.clone(), SPEC.name);
        let state = AppState {
            store: Store::new(deps.mongo.client().clone(), deps.mongo.db(), outbox),
            passwords: Passwords::new(&config.passwords).await?,
            tokens: Arc::new(Tokens::new(&config.jwt)?),
            identity,
        };
        let gate = StartupGate::default();
        let readiness = deps.readiness();
        let server = Server::bind(&config.http).await?;
        let mut app = App::new(SPEC.name, server, routes::routes(state.clone()), readiness)
            .gated_by(gate.clone());
        let stop = app.shutdown_handle().token();
        let relay = Relay::new(
            deps.mongo.db(),
            deps.producer.clone(),
            config.relay.clone(),
            SPEC.name,
        );
        app.spawn_background(relay.run(stop.clone()));
        let (bootstrap, relay_config, db) = (
            config.bootstrap_admin.clone(),
            config.relay,
            deps.mongo.db().clone(),
        );
        let (registry, kafka) = (deps.registry.clone(), config.deps.kafka.clone());
        gate.run(stop, move || {
            let (state, bootstrap) = (state.clone(), bootstrap.clone());
            let (relay_config, db, registry) = (relay_config.clone(), db.clone(), registry.clone());
            let kafka = kafka.clone();
            Box::pin(async move {
                let publishes = [contracts::USER_REGISTERED, contracts::USER_STATUS_CHANGED];
                Relay::prepare(&db, &relay_config, &kafka, &registry, &publishes)
                    .await
                    .map_err(|e| AuthError::Internal(e.to_string()))?;
                prepare_database(&state, &bootstrap).await
            })
        });
        Ok(app)
    }
}

/// Indexes, and the bootstrap administrator if one is configured and missing.
async fn prepare_database(
    state: &AppState,
    bootstrap: &config::BootstrapAdmin,
) -> Result<(), AuthError> {
    state.store.ensure_indexes().await?;
    let (Some(email), Some(password)) = (&bootstrap.email, &bootstrap.password) else {
        return Ok(());
    };
    let email = email.trim().to_lowercase();
    if state.store.user_by_email(&email).await?.is_some() {
        return Ok(());
    }
    let hash = state
        .passwords
        .hash(password.expose_secret().to_owned())
        .await?;
    let mut admin = UserDoc::new(email.clone(), hash, "admin".into(), vec![Role::Admin]);
    admin.status = UserStatus::Active;
    match state.store.insert_user(&admin).await {
        // Another instance created it first.
        Ok(()) | Err(AuthError::EmailTaken) => {
            tracing::info!(%email, "bootstrap administrator ready");
            Ok(())
        }
        Err(e) => Err(e),
    }
}
