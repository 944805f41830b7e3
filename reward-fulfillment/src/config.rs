//! The reward-fulfillment service's configuration: the shared sections, its consumer and
//! relay, and failure injection, which lets a demo or a test make grants fail or slow down
//! on purpose so the event service's compensation path can be exercised.

use messaging::consumer::{ConsumerConfig, InboxConfig};
use messaging::outbox::RelayConfig;
use serde::{Deserialize, Serialize};
use service_config::catalog::REWARD_FULFILLMENT as SPEC;
use service_config::{HttpConfig, InternalConfig, LogConfig};
use service_deps::DepsConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http: HttpConfig,
    #[serde(flatten)]
    pub deps: DepsConfig,
    pub internal: InternalConfig,
    /// The consumer of event.grant-commands.
    pub grant_commands: ConsumerConfig,
    /// The inbox of the service's consumer.
    pub inbox: InboxConfig,
    /// The relay publishing grant results from the outbox.
    pub relay: RelayConfig,
    pub failure: FailureConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::for_service(&SPEC),
            deps: DepsConfig::for_service(&SPEC),
            internal: InternalConfig::default(),
            grant_commands: ConsumerConfig::default(),
            inbox: InboxConfig::default(),
            relay: RelayConfig::default(),
            failure: FailureConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Config {
    /// Refuses settings that would make the service misbehave quietly.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.failure.validate()
    }
}

/// Failure injection (`REWARDS_FAILURE__*`). All off by default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FailureConfig {
    /// Probability (0.0 to 1.0) that a grant FAILS with "injected failure".
    pub rate: f64,
    /// Delay added to every batch of commands, to simulate a slow ledger.
    pub latency_ms: u64,
    /// ITEM grants of these item codes always FAIL (a demo item for compensation).
    pub failing_item_codes: Vec<String>,
}

impl FailureConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.rate) {
            return Err(ConfigError(format!(
                "failure.rate must be between 0.0 and 1.0, got {}",
                self.rate
            )));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

#[cfg(test)]
// figment's Jail API fixes the closure's error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn the_inbox_retention_is_the_service_s_own_setting() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("REWARDS_INBOX__RETENTION_HOURS", "500");
            let config: Config = service_config::load().map_err(|e| e.to_string())?;
            assert_eq!(config.inbox.retention_hours, 500);
            jail.set_env("REWARDS_GRANT_COMMANDS__INBOX_RETENTION_HOURS", "400");
            assert!(service_config::load::<Config>().is_err());
            Ok(())
        });
    }

    #[test]
    fn failure_rate_must_be_a_probability() {
        let with_rate = |rate| FailureConfig {
            rate,
            ..FailureConfig::default()
        };
        assert!(with_rate(0.0).validate().is_ok());
        assert!(with_rate(1.0).validate().is_ok());
        assert!(with_rate(0.25).validate().is_ok());
        for bad in [-0.1, 1.5, f64::NAN] {
            let error = with_rate(bad).validate().unwrap_err();
            assert!(error.to_string().contains("failure.rate"), "{error}");
        }
    }

    #[test]
    fn defaults_inject_nothing() {
        let config = Config::default();
        assert_eq!(config.failure.rate, 0.0);
        assert_eq!(config.failure.latency_ms, 0);
        assert!(config.failure.failing_item_codes.is_empty());
        assert_eq!(config.http.port, 3003);
        assert!(config.validate().is_ok());
    }
}
