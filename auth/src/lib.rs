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
use passwords::Passwords;
use secrecy::ExposeSecret;
use service_config::catalog::AUTH as SPEC;
use service_deps::{Backend, ServiceError};
use service_kit::App;
use std::sync::Arc;
use store::{Store, UserDoc};
use tokens::Tokens;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Service(#[from] ServiceError),
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
        let identity = IdentityKey::from_config(&config.internal)?;
        let backend = Backend::connect(&SPEC, &config.deps, identity.clone()).await?;
        let state = AppState {
            store: Store::new(
                backend.deps().mongo.client().clone(),
                backend.db(),
                backend.outbox(),
                backend.audit(),
            ),
            passwords: Passwords::new(&config.passwords).await?,
            tokens: Arc::new(Tokens::new(&config.jwt)?),
            identity,
        };
        let (prepared, bootstrap) = (state.clone(), config.bootstrap_admin);
        let app = backend
            .publishes(
                config.relay,
                &[contracts::USER_REGISTERED, contracts::USER_STATUS_CHANGED],
            )
            .prepare(move || {
                let (state, bootstrap) = (prepared.clone(), bootstrap.clone());
                Box::pin(async move { prepare_database(&state, &bootstrap).await })
            })
            .serve(&config.http, routes::routes(state))
            .await?;
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
    match state.store.insert_user(&admin, None).await {
        // Another instance created it first.
        Ok(()) | Err(AuthError::EmailTaken) => {
            tracing::info!(%email, "bootstrap administrator ready");
            Ok(())
        }
        Err(e) => Err(e),
    }
}
