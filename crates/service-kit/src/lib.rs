//! The HTTP side every service shares: binding, the operational routes (`/healthz`,
//! `/readyz`, `/metrics`), request ids, trace context and access logs,
//! `application/problem+json` errors, and graceful shutdown.
//!
//! A service builds its own `Router` and hands it to [`App::new`] with its bound [`Server`]
//! and readiness checks (the backend services through `service_deps::Backend`); the
//! [`App`] adds the rest when it runs.

pub mod json;
pub mod metrics;
pub mod problem;
pub mod readiness;
pub mod retry;
pub mod shutdown;
pub mod startup;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use readiness::Readiness;
use service_config::HttpConfig;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use json::{FieldError, Json, OptionalJson, Query};
pub use problem::Problem;
pub use shutdown::Shutdown;
pub use telemetry::trace::TraceParent;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A service ready to run: its bound listener, routes, readiness checks and stop signal.
///
/// Each service's `Application::build(config)` returns one of these, and its `main` runs it
/// with `run_until_stopped()`; `port()` tells where it listens (port 0 picks a free one).
pub struct App {
    name: &'static str,
    server: Server,
    routes: Router,
    readiness: Readiness,
    shutdown: Shutdown,
    gate: Option<startup::StartupGate>,
    /// Consumers, relays: stopped by the same signal, waited for after the server.
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl App {
    pub fn new(name: &'static str, server: Server, routes: Router, readiness: Readiness) -> Self {
        Self {
            name,
            server,
            routes,
            readiness,
            shutdown: Shutdown::new(),
            gate: None,
            background: Vec::new(),
        }
    }

    /// Runs `task` beside the server. It must end once the [`Self::shutdown_handle`]'s token
    /// is cancelled; the app waits for it (up to the shutdown grace) before returning.
    pub fn spawn_background(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.background.push(tokio::spawn(task));
    }

    /// Start-up work (indexes, seed data) that must finish before the service's own routes
    /// answer: until then they answer 503 `starting`, and `/readyz` says why.
    pub fn gated_by(mut self, gate: startup::StartupGate) -> Self {
        self.readiness = self.readiness.check("startup", gate.probe());
        self.gate = Some(gate);
        self
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Stops the application as SIGTERM would.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Serves until SIGTERM, ctrl-c or [`Self::shutdown_handle`] says stop.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let token = self.shutdown.on_signals().token();
        let routes = match self.gate {
            Some(gate) => self
                .routes
                .route_layer(axum::middleware::from_fn_with_state(
                    gate,
                    startup::require_started,
                )),
            None => self.routes,
        };
        let grace = self.server.grace;
        let served = self
            .server
            .serve(self.name, routes, self.readiness, token.clone())
            .await;
        token.cancel();
        let background = futures::future::join_all(self.background);
        if tokio::time::timeout(grace, background).await.is_err() {
            tracing::warn!(
                service = self.name,
                "background tasks cut off after the grace period"
            );
        }
        served
    }
}

/// A bound listener: the port is known (and reachable) before the server runs, which is what
/// lets tests ask for port 0 and then call the service.
pub struct Server {
    listener: TcpListener,
    grace: Duration,
    max_body_bytes: usize,
}

impl Server {
    pub async fn bind(config: &HttpConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind((config.host.as_str(), config.port)).await?;
        Ok(Self {
            listener,
            grace: config.shutdown_grace_ms,
            max_body_bytes: config.max_body_bytes,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has an address")
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serves `routes` plus the operational routes until `shutdown` fires, then stops
    /// accepting, gives in-flight requests up to the configured grace period, and returns.
    pub async fn serve(
        self,
        service: &'static str,
        routes: Router,
        readiness: Readiness,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        // Handlers run on tasks of their own (see `run_to_completion`); the tracker lets the
        // shutdown wait for those whose client already left.
        let handlers = TaskTracker::new();
        let app = with_operational_routes(routes, readiness)
            .layer(axum::middleware::from_fn_with_state(
                handlers.clone(),
                run_to_completion,
            ))
            .layer(axum::extract::DefaultBodyLimit::max(self.max_body_bytes));
        tracing::info!(service, addr = %self.local_addr(), "listening");
        let stopping = shutdown.clone();
        // Connect info gives handlers the peer address (the gateway's per-client limits).
        let server = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stopping.cancelled().await });
        let mut server = std::pin::pin!(server.into_future());
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(self.grace).await;
        };
        let mut deadline = std::pin::pin!(deadline);
        tokio::select! {
            result = &mut server => result?,
            () = &mut deadline => tracing::warn!(service, grace = ?self.grace, "in-flight requests cut off after the grace period"),
        }
        handlers.close();
        tokio::select! {
            () = handlers.wait() => {}
            () = &mut deadline => tracing::warn!(service, "detached handlers cut off after the grace period"),
        }
        tracing::info!(service, "stopped");
        Ok(())
    }
}

/// Adds `/healthz`, `/readyz` and `/metrics` and the layers every service wants: a request id
/// (kept when the caller sent one, generated otherwise, echoed in the response) and a span per
/// request carrying it.
pub fn with_operational_routes(routes: Router, readiness: Readiness) -> Router {
    // Installed now, not on the first scrape, so that no request before it goes uncounted.
    let recorder = telemetry::metrics();
    routes
        .merge(readiness.routes())
        .route(
            "/metrics",
            axum::routing::get(move || async move {
                // Histograms' buckets are compacted here because no background task does it.
                recorder.run_upkeep();
                recorder.render()
            }),
        )
        .fallback(|| async { Problem::not_found() })
        .layer(axum::middleware::from_fn(record_metrics))
        .layer(
            TraceLayer::new_for_http()
                // One access-log line per request, with the span's request id and trace.
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
                .make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let trace = request.extensions().get::<TraceParent>();
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id,
                        trace_id = trace.map(TraceParent::trace_id),
                        traceparent = trace.map(tracing::field::display),
                    )
                }),
        )
        .layer(axum::middleware::map_request(trace_context))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Puts every request in a trace: the client's `traceparent` when it is valid, else a new
/// one. The header then holds it for whatever the request is passed on to, and handlers read
/// it as `Extension<TraceParent>` for the messages they write.
async fn trace_context(mut request: Request) -> Request {
    let sent = request.headers().get(telemetry::trace::HEADER);
    let trace = TraceParent::parse_or_root(sent.and_then(|v| v.to_str().ok()));
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        request
            .headers_mut()
            .insert(telemetry::trace::HEADER, value);
    }
    request.extensions_mut().insert(trace);
    request
}

/// Runs each request's handler on a task of its own, so that a client hanging up does not
/// drop the handler half-way. Work that has started finishes: a MongoDB transaction commits or
/// aborts instead of being abandoned mid-flight (and the driver's pool, which does not take
/// kindly to cancelled operations, stalled for seconds after a burst of them).
async fn run_to_completion(
    axum::extract::State(handlers): axum::extract::State<TaskTracker>,
    request: Request,
    next: Next,
) -> Response {
    match handlers.spawn(next.run(request)).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "request handler panicked");
            Problem::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Something went wrong on our side",
            )
            .into_response()
        }
    }
}

/// Counts requests and times them, labelled by route template (not the raw path, which would
/// give every user id its own series) and status.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Standard methods only: an arbitrary method string per request would mint a new
    // series each time.
    let method = match *request.method() {
        axum::http::Method::GET
        | axum::http::Method::POST
        | axum::http::Method::PUT
        | axum::http::Method::PATCH
        | axum::http::Method::DELETE
        | axum::http::Method::HEAD
        | axum::http::Method::OPTIONS => request.method().to_string(),
        _ => "OTHER".to_owned(),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    ::metrics::counter!(crate::metrics::HTTP_REQUESTS, &labels).increment(1);
    ::metrics::histogram!(crate::metrics::HTTP_REQUEST_DURATION, &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
