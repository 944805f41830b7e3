//! The auth service's configuration.

use messaging::outbox::RelayConfig;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use service_config::catalog::AUTH as SPEC;
use service_config::{HttpConfig, InternalConfig, LogConfig, expose_option_for_layering};
use service_deps::DepsConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http: HttpConfig,
    #[serde(flatten)]
    pub deps: DepsConfig,
    pub internal: InternalConfig,
    pub jwt: JwtConfig,
    pub passwords: PasswordConfig,
    pub bootstrap_admin: BootstrapAdmin,
    pub relay: RelayConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::for_service(&SPEC),
            deps: DepsConfig::for_service(&SPEC),
            internal: InternalConfig::default(),
            jwt: JwtConfig::default(),
            passwords: PasswordConfig::default(),
            bootstrap_admin: BootstrapAdmin::default(),
            relay: RelayConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// Access and refresh tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct JwtConfig {
    /// Ed25519 private key, PKCS#8 PEM. Without one, a random key is made at start-up, so
    /// tokens do not survive a restart: fine for a demo, wrong for anything else.
    #[serde(serialize_with = "expose_option_for_layering")]
    pub private_key_pem: Option<SecretString>,
    /// The `kid` of the key in tokens and the JWKS.
    pub key_id: String,
    pub access_ttl_seconds: u64,
    pub refresh_ttl_seconds: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            private_key_pem: None,
            key_id: "auth-1".into(),
            access_ttl_seconds: 15 * 60,
            refresh_ttl_seconds: 30 * 24 * 3600,
        }
    }
}

/// Argon2id cost. The defaults are OWASP's recommendation (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PasswordConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// An ADMIN account created at start-up when no user has this email yet: how the first
/// administrator comes to exist.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BootstrapAdmin {
    pub email: Option<String>,
    #[serde(serialize_with = "expose_option_for_layering")]
    pub password: Option<SecretString>,
}
