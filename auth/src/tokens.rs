//! Issuing tokens: EdDSA-signed access JWTs (verified by anyone holding the public key from
//! the JWKS) and opaque refresh tokens (stored only as SHA-256 hashes).

use crate::config::JwtConfig;
use crate::error::AuthError;
use auth_claims::{AUDIENCE, AccessClaims, ISSUER, Role, unix_now};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use std::time::Duration;

pub struct Tokens {
    key: EncodingKey,
    header: Header,
    jwks: JwkSet,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl Tokens {
    pub fn new(config: &JwtConfig) -> Result<Self, AuthError> {
        let pem = match &config.private_key_pem {
            Some(pem) => pem.expose_secret().to_owned(),
            None => {
                tracing::warn!(
                    "jwt.private_key_pem is not set: signing with a random key; tokens will not \
                     survive a restart"
                );
                auth_claims::generate_ed25519_pem()
            }
        };
        let key = EncodingKey::from_ed_pem(pem.as_bytes())
            .map_err(|e| AuthError::Internal(format!("jwt.private_key_pem: {e}")))?;
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA)
            .map_err(|e| AuthError::Internal(format!("deriving the public key: {e}")))?;
        jwk.common.key_id = Some(config.key_id.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(config.key_id.clone());
        Ok(Self {
            key,
            header,
            jwks: JwkSet { keys: vec![jwk] },
            access_ttl: Duration::from_secs(config.access_ttl_seconds),
            refresh_ttl: Duration::from_secs(config.refresh_ttl_seconds),
        })
    }

    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// A signed access token for the user as they are now.
    pub fn access_token(&self, user_id: &str, roles: &[Role], version: i64) -> String {
        let now = unix_now();
        let claims = AccessClaims {
            sub: user_id.to_owned(),
            roles: roles.to_vec(),
            ver: version,
            iat: now,
            exp: now + self.access_ttl.as_secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key)
            .expect("signing with a loaded Ed25519 key cannot fail")
    }
}

/// A new refresh token (256 random bits, base64url) and the hash it is stored under.
pub fn new_refresh_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    (token, hash)
}

/// Refresh tokens are stored hashed: a leaked database does not leak live sessions.
pub fn hash_refresh_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn access_tokens_verify_with_the_published_key() {
        let config = JwtConfig {
            private_key_pem: Some(auth_claims::generate_ed25519_pem().into()),
            ..JwtConfig::default()
        };
        let tokens = Tokens::new(&config).unwrap();
        let token = tokens.access_token("u1", &[Role::User], 3);
        let jwk = tokens.jwks().find("auth-1").unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        let claims = jsonwebtoken::decode::<AccessClaims>(
            &token,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.ver, 3);
        assert_eq!(claims.exp - claims.iat, 15 * 60);
    }

    #[test]
    fn refresh_tokens_are_random_and_stored_by_hash() {
        let (a, hash_a) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(hash_refresh_token(&a), hash_a);
        assert!(!hash_a.contains(&a));
    }
}
