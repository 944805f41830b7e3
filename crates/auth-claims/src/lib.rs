//! Who is calling, as the platform's services agree on it.
//!
//! - [`Role`]: what a user may do (USER, OPERATOR, AUDITOR, ADMIN) plus SYSTEM, the role of
//!   the platform's own service-to-service calls, which no user can be given.
//! - [`AccessClaims`]: the claims of the access tokens auth issues (EdDSA JWTs).
//! - [`IdentityKey`]: the gateway's *identity assertion*. After verifying a client's access
//!   token, the gateway forwards the request with a short-lived HS256 token in the
//!   [`IDENTITY_HEADER`], signed with a secret only the platform's services hold. Services
//!   accept nothing else as proof of identity, so calling one directly, around the gateway,
//!   gets no further than the gateway would let you.
//! - [`Identity`]: the axum extractor that verifies that assertion (401 when missing or
//!   invalid) and answers role questions (403 via [`Identity::require`]).

use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use service_kit::Problem;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The header carrying the gateway's identity assertion to the internal services. The
/// gateway removes any copy a client sends.
pub const IDENTITY_HEADER: &str = "x-rewards-identity";
/// Issuer and audience of access tokens.
pub const ISSUER: &str = "reward-platform/auth";
pub const AUDIENCE: &str = "reward-platform";
/// How long an identity assertion is accepted after the gateway made it. It only has to
/// survive one hop.
const IDENTITY_TTL: Duration = Duration::from_secs(30);

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    /// Claims rewards and reads their own claims.
    User,
    /// Manages events and rewards.
    Operator,
    /// Reads all claims and history; changes nothing.
    Auditor,
    /// Can do everything.
    Admin,
    /// The platform's own services calling each other; never a user's role.
    System,
}

impl Role {
    /// Roles an administrator may give to a user.
    pub const ASSIGNABLE: [Role; 4] = [Role::User, Role::Operator, Role::Auditor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "USER",
            Role::Operator => "OPERATOR",
            Role::Auditor => "AUDITOR",
            Role::Admin => "ADMIN",
            Role::System => "SYSTEM",
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user id.
    pub sub: String,
    pub roles: Vec<Role>,
    /// The user's token version when the token was issued; raising it (role change, ban,
    /// deletion, password change) revokes every token issued before.
    pub ver: i64,
    pub iat: u64,
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    pub iss: String,
    pub aud: String,
}

/// The verified caller of a request inside the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user id, or the name of the calling service for SYSTEM calls.
    pub sub: String,
    pub roles: Vec<Role>,
}

impl Identity {
    pub fn system(service: &str) -> Self {
        Self {
            sub: service.to_owned(),
            roles: vec![Role::System],
        }
    }

    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }

    /// ADMIN may do everything; otherwise one of `roles` is needed.
    pub fn may(&self, roles: &[Role]) -> bool {
        self.roles.contains(&Role::Admin) || self.has_any(roles)
    }

    /// `Ok` if [`Self::may`], else a 403 problem.
    pub fn require(&self, roles: &[Role]) -> Result<(), Problem> {
        if self.may(roles) {
            Ok(())
        } else {
            Err(forbidden())
        }
    }
}

pub fn forbidden() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "Your roles do not allow this",
    )
}

pub fn unauthenticated(detail: &str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "Authentication required",
    )
    .with_detail(detail)
}

#[derive(Debug, Serialize, Deserialize)]
struct IdentityClaims {
    sub: String,
    roles: Vec<Role>,
    iat: u64,
    exp: u64,
    aud: String,
}

const IDENTITY_AUDIENCE: &str = "reward-platform/internal";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("internal.identity_secret is not set")]
    MissingSecret,
    #[error("the identity secret must be at least 32 bytes")]
    WeakSecret,
    #[error("invalid identity assertion: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// The shared secret behind identity assertions: the gateway signs with it, services verify.
///
/// Cheap to clone (one `Arc`): the identity extractor takes it from the router's state for
/// every request, and copying the keys and the validation's sets each time showed in
/// profiles.
#[derive(Clone)]
pub struct IdentityKey(Arc<IdentityKeys>);

struct IdentityKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(..)")
    }
}

impl IdentityKey {
    pub fn new(secret: &SecretString) -> Result<Self, IdentityError> {
        let bytes = secret.expose_secret().as_bytes();
        if bytes.len() < 32 {
            return Err(IdentityError::WeakSecret);
        }
        // Pinned to HS256: a token naming any other algorithm (or none) is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[IDENTITY_AUDIENCE]);
        validation.leeway = 5;
        Ok(Self(Arc::new(IdentityKeys {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
        })))
    }

    /// The key every service builds from its `[internal]` config section.
    pub fn from_config(config: &service_config::InternalConfig) -> Result<Self, IdentityError> {
        Self::new(
            config
                .identity_secret
                .as_ref()
                .ok_or(IdentityError::MissingSecret)?,
        )
    }

    /// Signs an assertion that `identity` is calling.
    pub fn sign(&self, identity: &Identity) -> String {
        let now = unix_now();
        let claims = IdentityClaims {
            sub: identity.sub.clone(),
            roles: identity.roles.clone(),
            iat: now,
            exp: now + IDENTITY_TTL.as_secs(),
            aud: IDENTITY_AUDIENCE.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.0.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<Identity, IdentityError> {
        let data =
            jsonwebtoken::decode::<IdentityClaims>(token, &self.0.decoding, &self.0.validation)?;
        Ok(Identity {
            sub: data.claims.sub,
            roles: data.claims.roles,
        })
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl<S> FromRequestParts<S> for Identity
where
    IdentityKey: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let key = IdentityKey::from_ref(state);
        let token = parts
            .headers
            .get(IDENTITY_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthenticated("call through the gateway with a valid access token"))?;
        key.verify(token)
            .map_err(|_| unauthenticated("invalid identity assertion"))
    }
}

/// A new random Ed25519 private key as PKCS#8 PEM, the form `jwt.private_key_pem` takes.
///
/// Written as PKCS#8 version 1 (the seed alone, no public key): jsonwebtoken derives the
/// JWKS entry only from a key in that form.
pub fn generate_ed25519_pem() -> String {
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes};
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the OS random source is available");
    let key = KeypairBytes {
        secret_key: seed,
        public_key: None,
    };
    key.to_pkcs8_pem(LineEnding::LF)
        .expect("a 32-byte Ed25519 seed always encodes")
        .to_string()
}

/// A random secret for identity assertions (64 hex characters).
pub fn generate_identity_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> IdentityKey {
        IdentityKey::new(&SecretString::from(secret)).unwrap()
    }

    #[test]
    fn an_assertion_verifies_with_the_same_secret_only() {
        let identity = Identity {
            sub: "u1".into(),
            roles: vec![Role::User, Role::Auditor],
        };
        let token = key("0123456789abcdef0123456789abcdef").sign(&identity);
        assert_eq!(
            key("0123456789abcdef0123456789abcdef")
                .verify(&token)
                .unwrap(),
            identity
        );
        assert!(
            key("fedcba9876543210fedcba9876543210")
                .verify(&token)
                .is_err()
        );
    }

    #[test]
    fn unsigned_and_tampered_assertions_are_refused() {
        let k = key("0123456789abcdef0123456789abcdef");
        let token = k.sign(&Identity::system("gateway"));
        let (header_and_claims, _signature) = token.rsplit_once('.').unwrap();
        assert!(
            k.verify(&format!("{header_and_claims}.")).is_err(),
            "no signature"
        );
        let (header, claims) = header_and_claims.split_once('.').unwrap();
        // {"alg":"none","typ":"JWT"}
        let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        assert!(
            k.verify(&format!("{none_header}.{claims}.")).is_err(),
            "alg none"
        );
        let mut tampered = claims.to_owned();
        tampered.replace_range(5..6, if &claims[5..6] == "A" { "B" } else { "A" });
        assert!(
            k.verify(&format!("{header}.{tampered}.{_signature}"))
                .is_err(),
            "tampered claims"
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            IdentityKey::new(&SecretString::from("short")),
            Err(IdentityError::WeakSecret)
        ));
    }

    #[test]
    fn admin_may_do_everything_others_what_their_roles_allow() {
        let user = Identity {
            sub: "u".into(),
            roles: vec![Role::User],
        };
        let admin = Identity {
            sub: "a".into(),
            roles: vec![Role::Admin],
        };
        assert!(user.may(&[Role::User]));
        assert!(!user.may(&[Role::Operator]));
        assert!(admin.may(&[Role::Operator]));
        assert_eq!(user.require(&[Role::Auditor]).unwrap_err().status_code, 403);
    }

    #[test]
    fn generated_ed25519_keys_sign_tokens_that_their_jwk_verifies() {
        use jsonwebtoken::jwk::Jwk;
        let pem = generate_ed25519_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        assert_ne!(pem, generate_ed25519_pem());
        let key = EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
        let jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).unwrap();
        let claims = Identity::system("test");
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &key).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        let decoded = jsonwebtoken::decode::<Identity>(
            &token,
            &DecodingKey::from_jwk(&jwk).unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(decoded.claims, claims);
    }

    #[test]
    fn identity_secrets_are_64_hex_characters() {
        let secret = generate_identity_secret();
        assert_eq!(secret.len(), 64);
        assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret}");
        assert!(IdentityKey::new(&SecretString::from(secret)).is_ok());
    }
}
