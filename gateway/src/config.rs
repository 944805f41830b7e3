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
///
/// Each service may run as several instances: its value is a list of base URLs, written as
/// a TOML array or as one comma-separated string (which is what an environment variable
/// holds: `REWARDS_UPSTREAMS__EVENT=http://event-1:3002,http://event-2:3002`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Upstreams {
    pub auth: UrlList,
    pub event: UrlList,
    pub reward_fulfillment: UrlList,
    /// Time allowed for an upstream's response headers, all instances tried included (504
    /// beyond); a client's request body must arrive within it too (408 beyond).
    pub timeout_ms: u64,
    /// How often each instance's `/readyz` is asked whether it should get requests.
    pub health_check_interval_ms: u64,
}

impl Default for Upstreams {
    fn default() -> Self {
        let local = |port: u16| UrlList(vec![format!("http://127.0.0.1:{port}")]);
        Self {
            auth: local(AUTH.default_port),
            event: local(EVENT.default_port),
            reward_fulfillment: local(REWARD_FULFILLMENT.default_port),
            timeout_ms: 10_000,
            health_check_interval_ms: 1_000,
        }
    }
}

/// One or more base URLs: a list, or a string of comma-separated URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlList(pub Vec<String>);

impl Serialize for UrlList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for UrlList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        let urls = match Form::deserialize(deserializer)? {
            Form::One(joined) => joined.split(',').map(str::to_owned).collect(),
            Form::Many(urls) => urls,
        };
        Ok(UrlList(
            urls.into_iter()
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect(),
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Sample {
        urls: UrlList,
    }

    #[test]
    fn upstream_urls_are_a_list_or_a_comma_separated_string() {
        let list: Sample =
            serde_json::from_str(r#"{"urls": ["http://a:1", "http://b:2"]}"#).unwrap();
        let joined: Sample = serde_json::from_str(r#"{"urls": "http://a:1, http://b:2"}"#).unwrap();
        let one: Sample = serde_json::from_str(r#"{"urls": "http://a:1"}"#).unwrap();
        assert_eq!(list.urls.0, ["http://a:1", "http://b:2"]);
        assert_eq!(joined.urls, list.urls);
        assert_eq!(one.urls.0, ["http://a:1"]);
    }
}
