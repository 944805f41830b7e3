//! The gateway: the platform's only public entry. It verifies access tokens (EdDSA, keys from
//! auth's JWKS), checks the route's role rule, and forwards the request to the owning service
//! with the verified identity in a signed header. Also: per-client rate limits on login and
//! register, request ids and trace context, 502/504 problems for failing upstreams, the staff
//! overview gathered from every instance, the console, and the OpenAPI document at
//! `/openapi.json`.

mod authn;
pub mod config;
mod console;
mod gather;
pub mod metrics;
mod overview;
mod proxy;
mod ratelimit;
pub mod routes;
mod upstream;

pub use config::Config;

use auth_claims::IdentityKey;
use authn::Authenticator;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, MethodRouter, get};
use ratelimit::ClientLimiter;
use routes::ROUTES;
use service_config::catalog::{AUTH, EVENT, GATEWAY as SPEC, REWARD_FULFILLMENT};
use service_kit::readiness::Readiness;
use service_kit::{App, Problem, Server};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use upstream::Upstream;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Config(String),
    #[error("binding the HTTP listener: {0}")]
    Bind(#[from] std::io::Error),
}

/// What every request handler shares.
pub(crate) struct Gateway {
    auth: Upstream,
    event: Upstream,
    reward_fulfillment: Upstream,
    authenticator: Authenticator,
    identity_key: IdentityKey,
    limiter: Arc<ClientLimiter>,
    max_body_bytes: usize,
    /// How long a client may take to send its request body (408 beyond).
    body_timeout: Duration,
    looks: overview::Looks,
}

/// Builds the gateway; the result runs with `port()` and `run_until_stopped()`.
pub struct Application;

impl Application {
    pub async fn build(config: Config) -> Result<App, StartupError> {
        let secret =
            config.internal.identity_secret.as_ref().ok_or_else(|| {
                StartupError::Config("internal.identity_secret is not set".into())
            })?;
        let identity_key =
            IdentityKey::new(secret).map_err(|e| StartupError::Config(e.to_string()))?;
        crate::metrics::describe_metrics();
        let upstreams = &config.upstreams;
        let timeout = Duration::from_millis(upstreams.timeout_ms);
        let client = |name, urls: &config::UrlList| {
            Upstream::new(name, &urls.0, timeout).map_err(StartupError::Config)
        };
        let auth = client(AUTH.name, &upstreams.auth)?;
        let gateway = Arc::new(Gateway {
            authenticator: Authenticator::new(&config.auth, auth.clone(), identity_key.clone()),
            event: client(EVENT.name, &upstreams.event)?,
            reward_fulfillment: client(REWARD_FULFILLMENT.name, &upstreams.reward_fulfillment)?,
            auth,
            identity_key,
            limiter: ClientLimiter::new(&config.rate_limit),
            max_body_bytes: config.http.max_body_bytes,
            body_timeout: timeout,
            looks: overview::Looks::default(),
        });

        let readiness = readiness(&gateway);
        let server = Server::bind(&config.http).await?;
        let mut app = App::new(SPEC.name, server, router(gateway.clone()), readiness);
        let interval = Duration::from_millis(config.upstreams.health_check_interval_ms.max(100));
        for upstream in gateway.upstreams() {
            let stop = app.shutdown_handle().token();
            app.spawn_background(upstream.clone().check_health(interval, stop));
        }
        Ok(app)
    }
}

impl Gateway {
    pub(crate) fn upstreams(&self) -> [&Upstream; 3] {
        [&self.auth, &self.event, &self.reward_fulfillment]
    }
}

/// Ready when every upstream has an instance alive and auth's signing keys are loaded
/// (fetched here, so the first signed-in request after a start does not wait for them).
fn readiness(gateway: &Arc<Gateway>) -> Readiness {
    let mut readiness = Readiness::new();
    for upstream in gateway.upstreams() {
        let upstream = upstream.clone();
        readiness = readiness.check(upstream.name(), move || {
            let upstream = upstream.clone();
            async move { upstream.any_answers("/healthz").await }
        });
    }
    let keys = Arc::clone(gateway);
    readiness.check("jwks", move || {
        let gateway = Arc::clone(&keys);
        async move {
            if gateway.authenticator.has_keys() {
                Ok(())
            } else {
                gateway.authenticator.refresh_keys().await
            }
        }
    })
}

/// The route table as axum routes, so that routing, `405`s and per-route metrics come from
/// the same table; plus `/openapi.json`.
fn router(gateway: Arc<Gateway>) -> Router {
    let openapi = axum::body::Bytes::from(
        serde_json::to_vec(&http_api::openapi()).expect("JSON values serialise"),
    );
    let mut by_path: BTreeMap<&'static str, MethodRouter<Arc<Gateway>>> = BTreeMap::new();
    for route in ROUTES {
        let filter = MethodFilter::try_from(route.method.clone())
            .expect("the table only uses standard methods");
        let handler =
            move |State(gateway): State<Arc<Gateway>>,
                  ConnectInfo(peer): ConnectInfo<SocketAddr>,
                  request: Request| { proxy::handle(gateway, route, peer, request) };
        let entry = by_path.remove(route.path).unwrap_or_else(|| {
            let allow = allowed_methods(route.path);
            MethodRouter::new().fallback(move || method_not_allowed(allow))
        });
        by_path.insert(route.path, entry.on(filter, handler));
    }
    by_path
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(path, methods)
        })
        .route(
            "/openapi.json",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    openapi.clone(),
                )
            }),
        )
        .merge(console::routes())
        .with_state(gateway)
}

/// The `Allow` header of `path`: the methods the route table lists for it.
fn allowed_methods(path: &str) -> HeaderValue {
    let methods: Vec<&str> = ROUTES
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.method.as_str())
        .collect();
    HeaderValue::from_str(&methods.join(", ")).expect("method names are header-safe")
}

async fn method_not_allowed(allow: HeaderValue) -> impl IntoResponse {
    let problem = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This path does not take that method",
    )
    .with_detail(format!("allowed: {}", allow.to_str().unwrap_or_default()));
    ([(axum::http::header::ALLOW, allow)], problem)
}
