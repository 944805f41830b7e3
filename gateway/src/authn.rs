//! Who is calling: the bearer access token verified against auth's published keys, then the
//! user's current status and token version (cached for a few seconds) so that a ban, a
//! deletion or a role change ends outstanding tokens within that time.

use crate::config::AuthConfig;
use crate::upstream::{UpstreamClient, UpstreamError};
use auth_claims::{AUDIENCE, AccessClaims, ISSUER, Identity, IdentityKey};
use axum::http::{HeaderMap, StatusCode, header};
use http_api::auth::{SessionState, UserStatus};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use service_kit::Problem;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// Why a request is not authenticated; each is a 401 with its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    MissingToken,
    InvalidToken,
    Expired,
    Revoked,
    /// Auth (keys or session state) could not be asked: 503, not the caller's fault.
    Unavailable,
}

impl AuthFailure {
    pub fn problem(self) -> Problem {
        let (status, code, title) = match self {
            AuthFailure::MissingToken => (
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "A bearer access token is required",
            ),
            AuthFailure::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "The access token is invalid",
            ),
            AuthFailure::Expired => (
                StatusCode::UNAUTHORIZED,
                "token_expired",
                "The access token has expired",
            ),
            AuthFailure::Revoked => (
                StatusCode::UNAUTHORIZED,
                "token_revoked",
                "The access token is no longer valid; sign in again",
            ),
            AuthFailure::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "Sign-in cannot be checked right now; try again",
            ),
        };
        let problem = Problem::new(status, code, title);
        metrics::counter!("gateway_auth_failures_total", "code" => code).increment(1);
        problem
    }
}

/// Verifies access tokens.
pub struct Authenticator {
    keys: RwLock<Keys>,
    /// One JWKS fetch at a time.
    refreshing: tokio::sync::Mutex<()>,
    validation: Validation,
    refresh_every: Duration,
    sessions: moka::future::Cache<String, SessionState>,
    auth: UpstreamClient,
    system_identity: IdentityKey,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
    /// Last fetch attempt, successful or not: unknown kids cannot make every request fetch.
    attempted: Option<Instant>,
}

impl Authenticator {
    pub fn new(config: &AuthConfig, auth: UpstreamClient, identity_key: IdentityKey) -> Self {
        // Pinned to EdDSA: `alg: none`, HS256 signed with the public key, RS256 and the
        // rest are refused before any signature is looked at.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        validation.leeway = config.leeway_seconds;
        Self {
            keys: RwLock::new(Keys::default()),
            refreshing: tokio::sync::Mutex::new(()),
            validation,
            refresh_every: Duration::from_secs(config.jwks_refresh_seconds),
            sessions: moka::future::Cache::builder()
                .time_to_live(Duration::from_millis(config.session_cache_ttl_ms))
                .max_capacity(1_000_000)
                .build(),
            auth,
            system_identity: identity_key,
        }
    }

    /// Whether signing keys have been loaded (part of readiness).
    pub fn has_keys(&self) -> bool {
        !self.keys.read().expect("keys lock").by_kid.is_empty()
    }

    /// The caller behind the `Authorization` header.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, AuthFailure> {
        let token = bearer(headers).ok_or(AuthFailure::MissingToken)?;
        let kid = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthFailure::InvalidToken)?
            .kid
            .ok_or(AuthFailure::InvalidToken)?;
        let key = self.key(&kid).await?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthFailure::Expired,
                _ => AuthFailure::InvalidToken,
            })?
            .claims;
        let mut state = self.session(&claims.sub).await?;
        if state.token_version < claims.ver {
            // The token is newer than what the cache holds (issued after an unban or a role
            // change), so the cache is what is stale: ask again.
            self.sessions.invalidate(&claims.sub).await;
            state = self.session(&claims.sub).await?;
        }
        if state.status != UserStatus::Active || state.token_version != claims.ver {
            return Err(AuthFailure::Revoked);
        }
        Ok(Identity {
            sub: claims.sub,
            roles: claims.roles,
        })
    }

    /// The key for `kid`. Known keys older than `jwks_refresh_seconds` are refreshed by one
    /// request while the others go on with the old copy; an unknown kid (a rotation) makes one
    /// request fetch, at most every 10 s, while the others wait for that fetch.
    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthFailure> {
        let (known, stale) = self.lookup(kid);
        if let Some(key) = known {
            if stale
                && let Ok(_only_me) = self.refreshing.try_lock()
                && let Err(e) = self.refresh_keys().await
            {
                tracing::warn!(error = %e, "refreshing the JWKS failed; keeping the old keys");
            }
            return Ok(key);
        }
        let _only_me = self.refreshing.lock().await;
        // Someone may have fetched while we waited.
        if let (Some(key), _) = self.lookup(kid) {
            return Ok(key);
        }
        let recently = {
            let keys = self.keys.read().expect("keys lock");
            keys.attempted
                .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
        };
        if recently {
            return Err(AuthFailure::InvalidToken);
        }
        self.refresh_keys().await.map_err(|e| {
            tracing::warn!(error = %e, "fetching the JWKS failed");
            AuthFailure::Unavailable
        })?;
        self.lookup(kid).0.ok_or(AuthFailure::InvalidToken)
    }

    fn lookup(&self, kid: &str) -> (Option<DecodingKey>, bool) {
        let keys = self.keys.read().expect("keys lock");
        let stale = keys
            .fetched
            .is_none_or(|t| t.elapsed() > self.refresh_every);
        (keys.by_kid.get(kid).cloned(), stale)
    }

    pub async fn refresh_keys(&self) -> Result<(), String> {
        self.keys.write().expect("keys lock").attempted = Some(Instant::now());
        let set: JwkSet = self
            .auth
            .get_json("/.well-known/jwks.json", None)
            .await
            .map_err(|e| e.to_string())?;
        let by_kid: HashMap<String, DecodingKey> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
            })
            .collect();
        if by_kid.is_empty() {
            return Err("the JWKS holds no usable key".into());
        }
        let mut keys = self.keys.write().expect("keys lock");
        keys.by_kid = by_kid;
        keys.fetched = Some(Instant::now());
        Ok(())
    }

    async fn session(&self, user_id: &str) -> Result<SessionState, AuthFailure> {
        self.sessions
            .try_get_with(user_id.to_owned(), async {
                let assertion = self.system_identity.sign(&Identity::system("gateway"));
                self.auth
                    .get_json::<SessionState>(
                        &format!("/internal/users/{user_id}/session"),
                        Some(&assertion),
                    )
                    .await
            })
            .await
            .map_err(|e: Arc<UpstreamError>| match *e {
                // A user id the token names but auth does not know: the token is no good.
                UpstreamError::Status(StatusCode::NOT_FOUND) => AuthFailure::Revoked,
                _ => {
                    tracing::warn!(error = %e, "session state lookup failed");
                    AuthFailure::Unavailable
                }
            })
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
