//! The gateway's configuration.

use serde::{Deserialize, Serialize};
use service_config::catalog::{AUTH, EVENT, GATEWAY as SPEC, REWARD_FULFILLMENT};
use service_config::{HttpConfig, InternalConfig, LogConfig};
use std::net::IpAddr;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http: HttpConfig,
    pub upstreams: Upstreams,
    pub internal: InternalConfig,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::for_service(&SPEC),
            upstreams: Upstreams::default(),
            internal: InternalConfig::default(),
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// Base URLs of the services the gateway routes to, and how long each may take.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Upstreams {
    pub auth: String,
    pub event: String,
    pub reward_fulfillment: String,
    /// Time allowed for an upstream's response headers (504 beyond).
    pub timeout_ms: u64,
}

impl Default for Upstreams {
    fn default() -> Self {
        let local = |port: u16| format!("http://127.0.0.1:{port}");
        Self {
            auth: local(AUTH.default_port),
            event: local(EVENT.default_port),
            reward_fulfillment: local(REWARD_FULFILLMENT.default_port),
            timeout_ms: 10_000,
        }
    }
}

/// Verifying access tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Clock skew tolerated on `exp`.
    pub leeway_seconds: u64,
    /// How often the signing keys are fetched again from auth's JWKS.
    pub jwks_refresh_seconds: u64,
    /// How long a user's status and token version are cached. A ban, deletion or role
    /// change takes effect at the gateway within this time.
    pub session_cache_ttl_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            leeway_seconds: 30,
            jwks_refresh_seconds: 300,
            session_cache_ttl_ms: 2_000,
        }
    }
}

/// Per-client limits on the routes that invite guessing (login, register).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    pub per_minute: u32,
    pub burst: u32,
    /// Peers (load balancers) whose `X-Forwarded-For` names the real client.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_minute: 30,
            burst: 10,
            trusted_proxies: Vec::new(),
        }
    }
}
