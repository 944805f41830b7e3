//! The gateway: the platform's only public entry. Verifies JWTs, enforces roles and routes
//! each request to the service that owns it (auth, event, reward-fulfillment).

use axum::Router;
use serde::{Deserialize, Serialize};
use service_config::catalog::{AUTH, EVENT, GATEWAY as SPEC, REWARD_FULFILLMENT};
use service_config::{HttpConfig, LogConfig};
use service_kit::readiness::Readiness;
use service_kit::{App, Server};
use std::time::Duration;

/// Base URLs of the services the gateway routes to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Upstreams {
    pub auth: String,
    pub event: String,
    pub reward_fulfillment: String,
}

impl Default for Upstreams {
    fn default() -> Self {
        let local = |port: u16| format!("http://127.0.0.1:{port}");
        Self {
            auth: local(AUTH.default_port),
            event: local(EVENT.default_port),
            reward_fulfillment: local(REWARD_FULFILLMENT.default_port),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http: HttpConfig,
    pub upstreams: Upstreams,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::for_service(&SPEC),
            upstreams: Upstreams::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("building the upstream HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("binding the HTTP listener: {0}")]
    Bind(#[from] std::io::Error),
}

/// Builds the service; the result runs with `port()` and `run_until_stopped()`.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> Result<App, StartupError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .build()?;
        let upstreams = [
            (AUTH.name, config.upstreams.auth),
            (EVENT.name, config.upstreams.event),
            (REWARD_FULFILLMENT.name, config.upstreams.reward_fulfillment),
        ];
        // The gateway is ready when the services it routes to are alive.
        let readiness = upstreams
            .into_iter()
            .fold(Readiness::new(), |readiness, (name, base)| {
                let client = client.clone();
                let url = format!("{}/healthz", base.trim_end_matches('/'));
                readiness.check(name, move || upstream_alive(client.clone(), url.clone()))
            });
        let server = Server::bind(&config.http).await?;
        Ok(App::new(SPEC.name, server, Router::new(), readiness))
    }
}

async fn upstream_alive(client: reqwest::Client, url: String) -> Result<(), String> {
    let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {}", response.status()))
    }
}
