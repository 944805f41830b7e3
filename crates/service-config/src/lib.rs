//! Configuration shared by every service: how it is loaded and the sections all services have.
//!
//! Each service describes its configuration as one `Deserialize` struct whose fields have
//! defaults, and loads it with [`load`], which layers, lowest precedence first:
//!
//! 1. the struct's own defaults (`Default` / `#[serde(default)]`),
//! 2. a TOML file named by `REWARDS_CONFIG_FILE`, if that variable is set,
//! 3. environment variables prefixed `REWARDS_`, nested with `__`
//!    (`REWARDS_HTTP__PORT=3001`, `REWARDS_MONGO__URI=mongodb://...`).
//!
//! Secrets (credentials inside URIs, signing keys) are [`secrecy::SecretString`] so that
//! they never end up in a `Debug` print or a log line.
//!
//! [`catalog`] names every process of the platform with its port and dependencies: the one
//! place the dev tool, docker-compose checks and the services agree on.

pub mod catalog;

use catalog::ServiceSpec;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Prefix of every environment variable the services read.
pub const ENV_PREFIX: &str = "REWARDS_";
/// Environment variable naming an optional TOML configuration file.
pub const CONFIG_FILE_ENV: &str = "REWARDS_CONFIG_FILE";

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

/// Loads `T` from defaults, then the optional file, then `REWARDS_*` environment variables.
pub fn load<T>() -> Result<T, ConfigError>
where
    T: Default + Serialize + for<'de> Deserialize<'de>,
{
    extract(figment(T::default()))
}

/// The layered provider chain behind [`load`], exposed so tests can add their own layer.
pub fn figment<T: Serialize>(defaults: T) -> Figment {
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Ok(path) = std::env::var(CONFIG_FILE_ENV) {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment.merge(Env::prefixed(ENV_PREFIX).split("__"))
}

pub fn extract<T: for<'de> Deserialize<'de>>(figment: Figment) -> Result<T, ConfigError> {
    figment.extract().map_err(|e| ConfigError(Box::new(e)))
}

/// Where a service listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    pub host: String,
    /// 0 picks a free port (tests do this).
    pub port: u16,
    /// How long in-flight requests get to finish after a shutdown signal.
    #[serde(with = "duration_ms")]
    pub shutdown_grace_ms: Duration,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
}

impl HttpConfig {
    /// Listening on the service's well-known port.
    pub fn for_service(spec: &ServiceSpec) -> Self {
        Self {
            port: spec.default_port,
            ..Self::default()
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            shutdown_grace_ms: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
        }
    }
}

/// A MongoDB deployment and the database this service owns in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MongoConfig {
    /// Connection string; may hold credentials, hence secret.
    #[serde(serialize_with = "expose_for_layering")]
    pub uri: SecretString,
    pub database: String,
}

impl MongoConfig {
    pub fn new(uri: &str, database: &str) -> Self {
        Self {
            uri: SecretString::from(uri),
            database: database.into(),
        }
    }

    /// The local default deployment and the database the service owns.
    pub fn for_service(spec: &ServiceSpec) -> Self {
        Self {
            database: spec.database.unwrap_or(spec.name).into(),
            ..Self::default()
        }
    }
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self::new("mongodb://127.0.0.1:27017/?replicaSet=rs0", "rewards")
    }
}

/// The Kafka cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list (librdkafka's `bootstrap.servers`).
    pub brokers: String,
    /// Identifies this process to the brokers (`client.id`) and in logs.
    pub client_id: String,
    /// Replication factor of topics the platform creates (1 on a one-broker cluster, 3 on a
    /// cluster of three or more).
    pub topic_replication: i32,
    /// `min.insync.replicas` of topics the platform creates: with `acks=all`, how many
    /// replicas must hold a record before it counts as written. 2 with a replication factor
    /// of 3 survives one broker lost without losing or refusing a write.
    pub topic_min_insync_replicas: i32,
    /// How long the group waits for a consumer that stopped heartbeating before handing its
    /// partitions to another: the pause a crashed consumer causes (Kafka's default is 45 s).
    pub session_timeout_ms: u32,
    /// How long a producer holds records to batch them (librdkafka's `linger.ms`). The
    /// outbox relays send a batch and wait for its acknowledgements, so for them lingering
    /// is pure latency, paid twice per claim; under load, records that queue while a
    /// request is in flight are batched anyway (game-sim's load producer sets its own).
    pub linger_ms: u32,
}

impl KafkaConfig {
    /// The local default cluster, with the service's name as client id.
    pub fn for_service(spec: &ServiceSpec) -> Self {
        Self {
            client_id: spec.name.into(),
            ..Self::default()
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            client_id: "rewards".into(),
            topic_replication: 1,
            topic_min_insync_replicas: 1,
            session_timeout_ms: 10_000,
            linger_ms: 1,
        }
    }
}

/// The Confluent-compatible schema registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// Base URL of the Confluent-compatible API (`/subjects`, `/schemas/ids/{id}` below it).
    pub url: String,
}

impl Default for RegistryConfig {
    /// The local registry `./dev up` runs (Apicurio's Confluent API); a Confluent registry
    /// serves the same API at its root, as in docker-compose.
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8081/apis/ccompat/v7".into(),
        }
    }
}

/// Service-to-service trust: the secret behind the gateway's identity assertions (see the
/// `auth-claims` crate). Every service and the gateway must hold the same one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct InternalConfig {
    /// At least 32 bytes; `openssl rand -hex 32` makes a good one.
    #[serde(serialize_with = "expose_option_for_layering")]
    pub identity_secret: Option<SecretString>,
}

/// Logging output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `tracing_subscriber::EnvFilter` directives; `RUST_LOG` wins when set.
    pub filter: String,
    /// `json` (default, for machines) or `pretty` (for a developer's terminal).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: LogFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Serialising a secret is only needed to seed figment's default layer; the value goes no
/// further than the provider chain.
pub fn expose_for_layering<S: serde::Serializer>(
    secret: &SecretString,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

pub fn expose_option_for_layering<S: serde::Serializer>(
    secret: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => serializer.serialize_some(secret.expose_secret()),
        None => serializer.serialize_none(),
    }
}

/// Durations in config are plain milliseconds: easy to write in TOML and in env vars.
pub mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
// figment's Jail API fixes the closure's error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Sample {
        http: HttpConfig,
        mongo: MongoConfig,
    }

    #[test]
    fn env_overrides_file_which_overrides_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "svc.toml",
                "[http]\nport = 4000\nhost = \"0.0.0.0\"\n[mongo]\ndatabase = \"from_file\"\n",
            )?;
            jail.set_env(CONFIG_FILE_ENV, "svc.toml");
            jail.set_env("REWARDS_HTTP__PORT", "4001");
            let cfg: Sample = load().map_err(|e| e.to_string())?;
            assert_eq!(cfg.http.port, 4001, "env wins over file");
            assert_eq!(cfg.http.host, "0.0.0.0", "file wins over default");
            assert_eq!(cfg.mongo.database, "from_file");
            assert_eq!(
                cfg.http.shutdown_grace_ms,
                Duration::from_secs(10),
                "default kept"
            );
            Ok(())
        });
    }

    #[test]
    fn missing_named_file_is_an_error() {
        Jail::expect_with(|jail| {
            jail.set_env(CONFIG_FILE_ENV, "nope.toml");
            assert!(load::<Sample>().is_err());
            Ok(())
        });
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let cfg = MongoConfig::new("mongodb://user:hunter2@db/?replicaSet=rs0", "x");
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
