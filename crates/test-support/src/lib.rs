//! What integration tests share: where the real MongoDB, Kafka, registry and services of this
//! test run listen, unique names so tests do not see each other's data, and polling with a
//! deadline in place of sleeps.
//!
//! `./dev test` starts the infrastructure and services on free loopback ports and exports
//! their addresses as `REWARDS_TEST_*` variables before running `cargo test`. A test that
//! needs them and does not find them fails: a skipped integration test would prove nothing.

use service_config::{KafkaConfig, MongoConfig, RegistryConfig};
use std::future::Future;
use std::time::Duration;

pub const MONGO_URI: &str = "REWARDS_TEST_MONGO_URI";
pub const KAFKA_BROKERS: &str = "REWARDS_TEST_KAFKA_BROKERS";
pub const REGISTRY_URL: &str = "REWARDS_TEST_REGISTRY_URL";
/// Directory of the service config files the dev tool wrote for this instance.
pub const CONFIG_DIR: &str = "REWARDS_TEST_CONFIG_DIR";
/// The instance's shape: `single` or `cluster` (see `./dev up --cluster`).
pub const TOPOLOGY: &str = "REWARDS_TEST_TOPOLOGY";
/// The bootstrap administrator of this instance.
pub const ADMIN_EMAIL: &str = "REWARDS_TEST_ADMIN_EMAIL";
pub const ADMIN_PASSWORD: &str = "REWARDS_TEST_ADMIN_PASSWORD";
/// The instance's token signing key, so tests can make the tokens an attacker would try.
pub const JWT_PRIVATE_KEY_PEM: &str = "REWARDS_TEST_JWT_PRIVATE_KEY_PEM";
/// The instance's identity-assertion secret.
pub const IDENTITY_SECRET: &str = "REWARDS_TEST_IDENTITY_SECRET";
/// Prefix of the variables holding each service's base URL, e.g. `REWARDS_TEST_URL_GATEWAY`.
pub const SERVICE_URL_PREFIX: &str = "REWARDS_TEST_URL_";

pub fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: integration tests run against real servers started by \
             `./dev test` (or export the REWARDS_TEST_* variables of a running `./dev up`)"
        )
    })
}

/// A MongoDB config pointing at a database no other test uses.
pub fn mongo(database_prefix: &str) -> MongoConfig {
    MongoConfig::new(&required(MONGO_URI), &unique(database_prefix))
}

pub fn kafka() -> KafkaConfig {
    KafkaConfig {
        brokers: required(KAFKA_BROKERS),
        client_id: unique("test"),
        ..KafkaConfig::default()
    }
}

pub fn registry() -> RegistryConfig {
    RegistryConfig {
        url: required(REGISTRY_URL),
    }
}

/// Base URL of a service started by the dev tool, by its catalog name.
pub fn service_url(name: &str) -> String {
    let var = format!(
        "{SERVICE_URL_PREFIX}{}",
        name.to_uppercase().replace('-', "_")
    );
    required(&var)
}

/// `prefix` plus a short random suffix; names of databases, topics and groups.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Polls `check` every 50 ms until it returns `Some`, or panics naming `what` after `deadline`.
pub async fn poll_until<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    use backon::Retryable;
    let give_up = tokio::time::Instant::now() + deadline;
    let every_50_ms = backon::ConstantBuilder::new()
        .with_delay(Duration::from_millis(50))
        .without_max_times();
    let polled = (|| {
        let checked = check();
        async move { checked.await.ok_or(()) }
    })
    .retry(every_50_ms)
    .when(|()| tokio::time::Instant::now() < give_up)
    .await;
    polled.unwrap_or_else(|()| panic!("timed out after {deadline:?} waiting for {what}"))
}
