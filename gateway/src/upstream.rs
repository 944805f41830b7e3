//! HTTP to the services behind the gateway, each of which may run as several instances.
//!
//! An [`Upstream`] spreads requests over its instances round-robin and leaves out those that
//! are out of rotation: an instance leaves it when its `/readyz` fails or when a connection
//! to it is refused, and comes back with its next passing health check. When every instance
//! is out, requests go to all of them anyway (a dependency they share is down, and their own
//! answers, a 503 with a reason, say more than a gateway that refuses to try).
//!
//! A request is sent again to the next instance when that cannot do harm: always when no
//! connection could be made (the request never left), and after a broken exchange only when
//! the request is idempotent (see [`Retry`]). A timeout is not retried: the caller's time is
//! spent. Bodies are held in memory (they are capped at the gateway's body limit), so that a
//! request can be sent twice; responses stream.

use crate::metrics::{IN_ROTATION, RETRIES};
use auth_claims::IDENTITY_HEADER;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, Uri, request, uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream answered {0}")]
    Status(StatusCode),
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream answer unreadable: {0}")]
    Decode(String),
}

/// Whether a request may be sent to another instance after an exchange broke off midway,
/// when the first instance may have acted on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Safe to repeat: GET, HEAD, OPTIONS, PUT, DELETE (RFC 9110 §9.2.2), and a request with
    /// an `Idempotency-Key` on a route whose service honours the key (the route table says
    /// which; a key sent elsewhere makes nothing idempotent).
    Idempotent,
    /// Only when no connection was made.
    IfNotSent,
}

impl Retry {
    /// `keyed`: the route honours `Idempotency-Key`.
    pub fn of(method: &Method, headers: &axum::http::HeaderMap, keyed: bool) -> Self {
        let safe = matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
        );
        if safe || (keyed && headers.contains_key("idempotency-key")) {
            Retry::Idempotent
        } else {
            Retry::IfNotSent
        }
    }
}

/// One service's instances.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    name: &'static str,
    instances: Vec<Instance>,
    next: AtomicUsize,
    client: Client<HttpConnector, Body>,
    timeout: Duration,
}

struct Instance {
    scheme: uri::Scheme,
    authority: uri::Authority,
    in_rotation: AtomicBool,
}

impl Instance {
    fn uri(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))
    }
}

impl Upstream {
    /// `base_urls`: one `scheme://host:port` per instance.
    pub fn new(
        name: &'static str,
        base_urls: &[String],
        timeout: Duration,
    ) -> Result<Self, String> {
        if base_urls.is_empty() {
            return Err(format!("upstream {name} has no URL"));
        }
        let instances = base_urls
            .iter()
            .map(|url| instance(name, url))
            .collect::<Result<Vec<_>, _>>()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // Refused at once on loopback; a host that drops packets should not hold a request
        // for the whole timeout before the next instance is tried.
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        metrics::gauge!(IN_ROTATION, "upstream" => name).set(instances.len() as f64);
        Ok(Self {
            inner: Arc::new(Inner {
                name,
                instances,
                next: AtomicUsize::new(0),
                client,
                timeout,
            }),
        })
    }

    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    /// The instances to try, in order: those in rotation from the next in turn, or all of
    /// them when none is.
    fn candidates(&self) -> Vec<&Instance> {
        let instances = &self.inner.instances;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let ordered = (0..instances.len()).map(|i| &instances[(start + i) % instances.len()]);
        let in_rotation: Vec<&Instance> = ordered
            .clone()
            .filter(|i| i.in_rotation.load(Ordering::Relaxed))
            .collect();
        if in_rotation.is_empty() {
            ordered.collect()
        } else {
            in_rotation
        }
    }

    /// Sends the request to an instance (its path and query kept), trying the next one when
    /// the first fails in a way `retry` allows, all within one timeout. The response body
    /// streams.
    pub async fn send(
        &self,
        parts: &request::Parts,
        body: Bytes,
        retry: Retry,
    ) -> Result<Response<Body>, UpstreamError> {
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let candidates = self.candidates();
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        let mut last = None;
        for (attempt, instance) in candidates.iter().enumerate() {
            if attempt > 0 {
                metrics::counter!(RETRIES, "upstream" => self.name()).increment(1);
            }
            let mut request = Request::new(Body::from(body.clone()));
            *request.method_mut() = parts.method.clone();
            *request.headers_mut() = parts.headers.clone();
            *request.uri_mut() = instance.uri(path_and_query)?;
            let sent = tokio::time::timeout_at(deadline, self.inner.client.request(request))
                .await
                .map_err(|_| UpstreamError::Timeout(self.inner.timeout))?;
            match sent {
                Ok(response) => return Ok(response.map(Body::new)),
                Err(e) => {
                    let not_sent = e.is_connect();
                    if not_sent {
                        self.take_out(instance, &e);
                    }
                    last = Some(UpstreamError::Unreachable(error_chain(&e)));
                    if !not_sent && retry == Retry::IfNotSent {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| UpstreamError::Unreachable("no instance".into())))
    }

    fn take_out(&self, instance: &Instance, error: &dyn std::error::Error) {
        if instance.in_rotation.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                upstream = self.name(),
                instance = %instance.authority,
                error = %error_chain(error),
                "instance out of rotation: connection failed"
            );
            self.publish_rotation();
        }
    }

    fn publish_rotation(&self) {
        let count = self
            .inner
            .instances
            .iter()
            .filter(|i| i.in_rotation.load(Ordering::Relaxed))
            .count();
        metrics::gauge!(IN_ROTATION, "upstream" => self.name()).set(count as f64);
    }

    /// GET a JSON document, optionally with an identity assertion.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        identity: Option<&str>,
    ) -> Result<T, UpstreamError> {
        let mut request = Request::get(path)
            .body(())
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        if let Some(assertion) = identity {
            let value = HeaderValue::from_str(assertion)
                .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
            request.headers_mut().insert(IDENTITY_HEADER, value);
        }
        let (parts, ()) = request.into_parts();
        let response = self.send(&parts, Bytes::new(), Retry::Idempotent).await?;
        read_json(response).await
    }

    /// Ok when at least one instance answers `path` (the gateway's own readiness).
    pub async fn any_answers(&self, path: &str) -> Result<(), String> {
        let probes = self
            .inner
            .instances
            .iter()
            .map(|instance| self.probe(instance, path));
        let outcomes = futures::future::join_all(probes).await;
        if outcomes.iter().any(Result::is_ok) {
            return Ok(());
        }
        Err(outcomes
            .into_iter()
            .filter_map(Result::err)
            .collect::<Vec<_>>()
            .join("; "))
    }

    /// One GET of `path` on one instance, bounded by 1 s; Ok on a 2xx answer.
    async fn probe(&self, instance: &Instance, path: &str) -> Result<(), String> {
        self.fetch(instance, path).await.map(drop)
    }

    /// GET `path` of every instance, each bounded by 1 s: per instance (`host:port`), the
    /// body of a 2xx answer, or why there is none.
    pub async fn ask_each(&self, path: &str) -> Vec<(String, Result<Bytes, String>)> {
        let asked = self.inner.instances.iter().map(|instance| async move {
            (
                instance.authority.to_string(),
                self.fetch(instance, path).await,
            )
        });
        futures::future::join_all(asked).await
    }

    /// One GET of `path` on one instance, bounded by 1 s: the body of a 2xx answer.
    async fn fetch(&self, instance: &Instance, path: &str) -> Result<Bytes, String> {
        let request = Request::get(instance.uri(path).map_err(|e| e.to_string())?)
            .body(Body::empty())
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self.inner.client.request(request).await;
            let response =
                response.map_err(|e| format!("{}: {}", instance.authority, error_chain(&e)))?;
            let status = response.status();
            let body = response.into_body().collect().await;
            let body = body
                .map_err(|e| format!("{}: {e}", instance.authority))?
                .to_bytes();
            if status.is_success() {
                return Ok(body);
            }
            // A readiness problem names its failing checks.
            let checks = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|problem| problem.get("checks").map(ToString::to_string));
            let why = checks.map(|c| format!(": {c}")).unwrap_or_default();
            Err(format!("{} answered {status}{why}", instance.authority))
        };
        tokio::time::timeout(Duration::from_secs(1), exchange)
            .await
            .unwrap_or_else(|_| Err(format!("{}: no answer within 1s", instance.authority)))
    }

    /// Probes every instance's `/readyz` every `interval` until `stop`, and puts each in or
    /// out of rotation by the outcome.
    pub async fn check_health(self, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => self.check_once().await,
            }
        }
    }

    async fn check_once(&self) {
        let probes = self
            .inner
            .instances
            .iter()
            .map(|instance| async move { (instance, self.probe(instance, "/readyz").await) });
        let mut changed = false;
        for (instance, outcome) in futures::future::join_all(probes).await {
            let ready = outcome.is_ok();
            if instance.in_rotation.swap(ready, Ordering::Relaxed) == ready {
                continue;
            }
            changed = true;
            match outcome {
                Ok(()) => tracing::info!(
                    upstream = self.name(),
                    instance = %instance.authority,
                    "instance back in rotation"
                ),
                Err(reason) => tracing::warn!(
                    upstream = self.name(),
                    instance = %instance.authority,
                    %reason,
                    "instance out of rotation: not ready"
                ),
            }
        }
        if changed {
            self.publish_rotation();
        }
    }
}

fn instance(name: &str, base_url: &str) -> Result<Instance, String> {
    let base: Uri = base_url
        .trim()
        .parse()
        .map_err(|e| format!("upstream {name} URL {base_url:?}: {e}"))?;
    let parts = base.into_parts();
    let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
        return Err(format!(
            "upstream {name} URL {base_url:?} needs a scheme and a host"
        ));
    };
    Ok(Instance {
        scheme,
        authority,
        in_rotation: AtomicBool::new(true),
    })
}

async fn read_json<T: DeserializeOwned>(response: Response<Body>) -> Result<T, UpstreamError> {
    if !response.status().is_success() {
        return Err(UpstreamError::Status(response.status()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| UpstreamError::Decode(e.to_string()))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| UpstreamError::Decode(e.to_string()))
}

/// An error with its causes, on one line: hyper's top-level message alone says little.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(urls: &[&str]) -> Upstream {
        let urls: Vec<String> = urls.iter().map(|u| (*u).to_owned()).collect();
        Upstream::new("svc", &urls, Duration::from_secs(1)).unwrap()
    }

    fn authorities(candidates: &[&Instance]) -> Vec<String> {
        candidates.iter().map(|i| i.authority.to_string()).collect()
    }

    #[test]
    fn instances_take_turns_and_those_out_of_rotation_are_skipped() {
        let up = upstream(&["http://a:1", "http://b:1", "http://c:1"]);
        assert_eq!(authorities(&up.candidates()), ["a:1", "b:1", "c:1"]);
        assert_eq!(authorities(&up.candidates()), ["b:1", "c:1", "a:1"]);
        up.inner.instances[1]
            .in_rotation
            .store(false, Ordering::Relaxed);
        assert_eq!(authorities(&up.candidates()), ["c:1", "a:1"]);
    }

    #[test]
    fn with_every_instance_out_all_are_tried() {
        let up = upstream(&["http://a:1", "http://b:1"]);
        for instance in &up.inner.instances {
            instance.in_rotation.store(false, Ordering::Relaxed);
        }
        assert_eq!(authorities(&up.candidates()), ["a:1", "b:1"]);
    }

    #[test]
    fn only_idempotent_requests_are_repeated_after_a_broken_exchange() {
        let none = axum::http::HeaderMap::new();
        let mut keyed = axum::http::HeaderMap::new();
        keyed.insert("idempotency-key", HeaderValue::from_static("k"));
        assert_eq!(Retry::of(&Method::GET, &none, false), Retry::Idempotent);
        assert_eq!(Retry::of(&Method::PUT, &none, false), Retry::Idempotent);
        assert_eq!(Retry::of(&Method::POST, &none, false), Retry::IfNotSent);
        assert_eq!(Retry::of(&Method::PATCH, &none, false), Retry::IfNotSent);
        assert_eq!(Retry::of(&Method::POST, &keyed, true), Retry::Idempotent);
        // A key on a route that does not honour it changes nothing.
        assert_eq!(Retry::of(&Method::POST, &keyed, false), Retry::IfNotSent);
        assert_eq!(Retry::of(&Method::POST, &none, true), Retry::IfNotSent);
    }

    #[test]
    fn an_upstream_needs_a_url_with_scheme_and_host() {
        assert!(Upstream::new("svc", &[], Duration::from_secs(1)).is_err());
        assert!(Upstream::new("svc", &["nohost".into()], Duration::from_secs(1)).is_err());
    }

    #[tokio::test]
    async fn a_refused_connection_goes_to_the_next_instance_and_takes_the_first_out() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_port = live.local_addr().unwrap().port();
        let app = axum::Router::new().route("/x", axum::routing::post(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(live, app).await });
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let up = upstream(&[
            &format!("http://127.0.0.1:{closed_port}"),
            &format!("http://127.0.0.1:{live_port}"),
        ]);
        // A POST without a key: never sent to the closed port, so trying again is safe.
        let (parts, ()) = Request::post("/x").body(()).unwrap().into_parts();
        let response = up
            .send(&parts, Bytes::new(), Retry::IfNotSent)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!up.inner.instances[0].in_rotation.load(Ordering::Relaxed));
        assert!(up.inner.instances[1].in_rotation.load(Ordering::Relaxed));
    }
}
