//! Every process of the platform in one table: name, default port, and what it needs.
//!
//! The dev tool starts processes from it, docker-compose is checked against it, and each
//! service takes its default port from it, so a port or a dependency is stated once.

/// Infrastructure a service connects to; each one maps to a config section and env vars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Mongo,
    Kafka,
    Registry,
    /// The shared secret behind the gateway's identity assertions.
    IdentitySecret,
    /// The private key access tokens are signed with (auth only).
    SigningKey,
}

impl Needs {
    /// The environment variable that points a service at this dependency.
    pub fn env_var(self) -> &'static str {
        match self {
            Needs::Mongo => "REWARDS_MONGO__URI",
            Needs::Kafka => "REWARDS_KAFKA__BROKERS",
            Needs::Registry => "REWARDS_REGISTRY__URL",
            Needs::IdentitySecret => "REWARDS_INTERNAL__IDENTITY_SECRET",
            Needs::SigningKey => "REWARDS_JWT__PRIVATE_KEY_PEM",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ServiceSpec {
    /// Cargo package, binary and docker-compose service name.
    pub name: &'static str,
    pub default_port: u16,
    /// MongoDB database the service owns, if any.
    pub database: Option<&'static str>,
    pub needs: &'static [Needs],
    /// Other services this one calls over HTTP, with the env var holding each one's URL.
    pub upstreams: &'static [(&'static str, &'static str)],
    /// How many instances run in the cluster topology (`./dev up --cluster`, the compose
    /// `cluster` profile): two of each service that holds state in MongoDB or consumes
    /// Kafka, so that losing one is survived; the gateway and the simulator stay single.
    pub cluster_instances: usize,
}

use Needs::*;

pub const GATEWAY: ServiceSpec = ServiceSpec {
    name: "gateway",
    default_port: 3000,
    database: None,
    needs: &[IdentitySecret],
    upstreams: &[
        ("auth", "REWARDS_UPSTREAMS__AUTH"),
        ("event", "REWARDS_UPSTREAMS__EVENT"),
        (
            "reward-fulfillment",
            "REWARDS_UPSTREAMS__REWARD_FULFILLMENT",
        ),
    ],
    cluster_instances: 1,
};

pub const AUTH: ServiceSpec = ServiceSpec {
    name: "auth",
    default_port: 3001,
    database: Some("auth_db"),
    needs: &[Mongo, Kafka, Registry, IdentitySecret, SigningKey],
    upstreams: &[],
    cluster_instances: 2,
};

pub const EVENT: ServiceSpec = ServiceSpec {
    name: "event",
    default_port: 3002,
    database: Some("event_db"),
    needs: &[Mongo, Kafka, Registry, IdentitySecret],
    upstreams: &[],
    cluster_instances: 2,
};

pub const REWARD_FULFILLMENT: ServiceSpec = ServiceSpec {
    name: "reward-fulfillment",
    default_port: 3003,
    database: Some("reward_db"),
    needs: &[Mongo, Kafka, Registry, IdentitySecret],
    upstreams: &[],
    cluster_instances: 2,
};

pub const GAME_SIM: ServiceSpec = ServiceSpec {
    name: "game-sim",
    default_port: 3004,
    database: None,
    needs: &[Kafka, Registry],
    upstreams: &[],
    cluster_instances: 1,
};

/// In start order: upstreams before the gateway that routes to them.
pub const SERVICES: [ServiceSpec; 5] = [AUTH, EVENT, REWARD_FULFILLMENT, GAME_SIM, GATEWAY];

pub const MONGO_PORT: u16 = 27017;
pub const KAFKA_PORT: u16 = 9092;
pub const KAFKA_CONTROLLER_PORT: u16 = 9093;
pub const REGISTRY_PORT: u16 = 8081;
/// The registry's health endpoints (Apicurio serves them on a separate management port).
pub const REGISTRY_MANAGEMENT_PORT: u16 = 8082;
