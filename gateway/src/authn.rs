//! Who is calling: the bearer access token verified against auth's published keys, then the
//! user's current status and token version (cached for a few seconds) so that a ban, a
//! deletion or a role change ends outstanding tokens within that time.
//!
//! A token's signature is checked once: an Ed25519 verification is the largest CPU cost of a
//! proxied request, and a client sends the same token with every request until it expires.
//! Verified tokens are remembered by their SHA-256 (see [`VerifiedToken`]); the expiry and the
//! session state are still checked on every request.

use crate::config::AuthConfig;
use crate::upstream::{Upstream, UpstreamError};
use auth_claims::{AUDIENCE, AccessClaims, ISSUER, Identity, IdentityKey, unix_now};
use axum::http::{HeaderMap, StatusCode, header};
use http_api::auth::{SessionState, UserStatus};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use service_kit::Problem;
use sha2::{Digest, Sha256};
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
        metrics::counter!(crate::metrics::AUTH_FAILURES, "code" => code).increment(1);
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
    /// Tokens whose signature and claims passed, by the SHA-256 of the whole token.
    verified: moka::future::Cache<[u8; 32], Arc<VerifiedToken>>,
    auth: Upstream,
    system_identity: IdentityKey,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
    /// Last fetch attempt, successful or not: unknown kids cannot make every request fetch.
    attempted: Option<Instant>,
    /// Counts the key sets fetched. A verified token is trusted again only while the keys
    /// that verified it are still the current ones: a key dropped from the JWKS (a rotation
    /// after a leak) stops its tokens at the next fetch, cached or not.
    generation: u64,
}

/// What the gateway keeps of a token that passed verification. Keyed by the digest of the
/// exact token text, so a hit has the very claims that were verified; `exp` is checked again
/// on each use, with the same leeway as the verification.
struct VerifiedToken {
    claims: AccessClaims,
    generation: u64,
}

/// How many verified tokens are remembered (about 300 bytes each), and for how long at most
/// (a token is verified again after that, even if it is still valid).
const VERIFIED_TOKENS: u64 = 100_000;
const VERIFIED_TOKEN_TTL: Duration = Duration::from_secs(300);

impl Authenticator {
    pub fn new(config: &AuthConfig, auth: Upstream, identity_key: IdentityKey) -> Self {
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
            verified: moka::future::Cache::builder()
                .time_to_live(VERIFIED_TOKEN_TTL)
                .max_capacity(VERIFIED_TOKENS)
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
        let claims = self.verify(token).await?;
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

    /// The token's claims once its signature, algorithm, issuer, audience and expiry pass.
    async fn verify(&self, token: &str) -> Result<AccessClaims, AuthFailure> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Read before the key is looked up: keys only move forward, so an entry is never
        // tagged with a newer generation than the key that verified it.
        let (generation, stale) = {
            let keys = self.keys.read().expect("keys lock");
            (keys.generation, self.is_stale(&keys))
        };
        // Keys due for a refresh send every request the long way, which is what fetches
        // them: cache hits must not postpone noticing a key that was withdrawn.
        if !stale
            && let Some(verified) = self.verified.get(&digest).await
            && verified.generation == generation
        {
            // The check jsonwebtoken makes (`exp < now - leeway`), with the same leeway.
            let expired = verified.claims.exp < unix_now().saturating_sub(self.validation.leeway);
            return if expired {
                Err(AuthFailure::Expired)
            } else {
                Ok(verified.claims.clone())
            };
        }
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
        let verified = VerifiedToken {
            claims: claims.clone(),
            generation,
        };
        self.verified.insert(digest, Arc::new(verified)).await;
        Ok(claims)
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
        (keys.by_kid.get(kid).cloned(), self.is_stale(&keys))
    }

    fn is_stale(&self, keys: &Keys) -> bool {
        keys.fetched
            .is_none_or(|t| t.elapsed() > self.refresh_every)
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
        keys.generation += 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use auth_claims::Role;

    /// An authenticator whose keys were "fetched" now (generation 1), with no key in them: a
    /// token that is not answered from the cache fails before any upstream is asked.
    fn authenticator() -> Authenticator {
        let auth = Upstream::new(
            "auth",
            &["http://127.0.0.1:9".into()],
            Duration::from_secs(1),
        )
        .expect("a valid URL");
        let secret = secrecy::SecretString::from(auth_claims::generate_identity_secret());
        let authenticator = Authenticator::new(
            &AuthConfig::default(),
            auth,
            IdentityKey::new(&secret).expect("a strong secret"),
        );
        {
            let mut keys = authenticator.keys.write().unwrap();
            keys.fetched = Some(Instant::now());
            keys.generation = 1;
        }
        authenticator
    }

    fn claims(exp: u64) -> AccessClaims {
        AccessClaims {
            sub: "u1".into(),
            roles: vec![Role::User],
            ver: 0,
            iat: exp.saturating_sub(900),
            exp,
            jti: "j".into(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        }
    }

    async fn remember(authenticator: &Authenticator, token: &str, exp: u64, generation: u64) {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let verified = VerifiedToken {
            claims: claims(exp),
            generation,
        };
        authenticator
            .verified
            .insert(digest, Arc::new(verified))
            .await;
    }

    #[tokio::test]
    async fn a_remembered_token_is_not_verified_again() {
        let authenticator = authenticator();
        remember(&authenticator, "remembered", unix_now() + 60, 1).await;
        let claims = authenticator.verify("remembered").await.unwrap();
        assert_eq!(claims.sub, "u1");
    }

    #[tokio::test]
    async fn a_remembered_token_still_expires() {
        let authenticator = authenticator();
        let leeway = AuthConfig::default().leeway_seconds;
        remember(&authenticator, "expired", unix_now() - leeway - 1, 1).await;
        assert_eq!(
            authenticator.verify("expired").await.unwrap_err(),
            AuthFailure::Expired
        );
    }

    #[tokio::test]
    async fn tokens_verified_with_earlier_keys_are_verified_again() {
        let authenticator = authenticator();
        remember(&authenticator, "old keys", unix_now() + 60, 0).await;
        assert_eq!(
            authenticator.verify("old keys").await.unwrap_err(),
            AuthFailure::InvalidToken
        );
    }

    #[tokio::test]
    async fn keys_due_for_a_refresh_bypass_the_cache() {
        let authenticator = authenticator();
        remember(&authenticator, "stale keys", unix_now() + 60, 1).await;
        authenticator.keys.write().unwrap().fetched = None;
        assert_eq!(
            authenticator.verify("stale keys").await.unwrap_err(),
            AuthFailure::InvalidToken
        );
    }
}
