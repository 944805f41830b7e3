//! Liveness and readiness.
//!
//! `/healthz` answers 200 as long as the process serves HTTP: a supervisor restarts it when
//! it does not. `/readyz` runs every dependency check concurrently, each bounded by a timeout,
//! and answers 200 only if all pass; otherwise 503 with a problem body naming each check's
//! outcome, so a load balancer stops sending work and an operator sees why.

use crate::Problem;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::{BoxFuture, join_all};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

type CheckFn = dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync;

/// The dependency checks behind `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Arc<CheckFn>)>,
    timeout: Option<Duration>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a named check; `check` is called on every `/readyz` request.
    pub fn check<F, Fut, E>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let check = move || -> BoxFuture<'static, Result<(), String>> {
            let fut = check();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        };
        self.checks.push((name, Arc::new(check)));
        self
    }

    /// Bound on each check (default 2 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Runs every check; `Ok` when all pass, otherwise each check's outcome.
    pub async fn evaluate(&self) -> Result<Map<String, Value>, Map<String, Value>> {
        let timeout = self.timeout.unwrap_or(Duration::from_secs(2));
        let outcomes = join_all(self.checks.iter().map(|(name, check)| async move {
            let outcome = match tokio::time::timeout(timeout, check()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            (*name, outcome)
        }))
        .await;
        let all_ok = outcomes.iter().all(|(_, o)| o.is_ok());
        let report = outcomes
            .into_iter()
            .map(|(name, outcome)| {
                let value = match outcome {
                    Ok(()) => json!({ "status": "up" }),
                    Err(error) => json!({ "status": "down", "error": error }),
                };
                (name.to_owned(), value)
            })
            .collect();
        if all_ok { Ok(report) } else { Err(report) }
    }

    pub(crate) fn routes(self) -> Router {
        Router::new()
            .route(
                "/healthz",
                get(|| async { axum::Json(json!({ "status": "up" })) }),
            )
            .route("/readyz", get(move || ready(self.clone())))
    }
}

async fn ready(readiness: Readiness) -> Response {
    match readiness.evaluate().await {
        Ok(checks) => axum::Json(json!({ "status": "ready", "checks": checks })).into_response(),
        Err(checks) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "A dependency is unavailable",
        )
        .with_extension("checks", checks)
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_readyz(readiness: Readiness) -> (StatusCode, Value, String) {
        let app = crate::with_operational_routes(Router::new(), readiness);
        let resp = app
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let content_type = resp.headers()[axum::http::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap(), content_type)
    }

    #[tokio::test]
    async fn ready_when_every_check_passes() {
        let readiness = Readiness::new()
            .check("a", || async { Ok::<_, String>(()) })
            .check("b", || async { Ok::<_, String>(()) });
        let (status, body, _) = get_readyz(readiness).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["checks"]["b"]["status"], "up");
    }

    #[tokio::test]
    async fn one_failing_or_hanging_check_makes_the_service_unready() {
        let readiness = Readiness::new()
            .check("ok", || async { Ok::<_, String>(()) })
            .check("broken", || async { Err("connection refused") })
            .check("hangs", || async {
                futures::future::pending::<Result<(), String>>().await
            })
            .with_timeout(Duration::from_millis(50));
        let (status, body, content_type) = get_readyz(readiness).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(content_type, crate::problem::CONTENT_TYPE);
        assert_eq!(body["code"], "not_ready");
        assert_eq!(body["checks"]["ok"]["status"], "up");
        assert_eq!(body["checks"]["broken"]["error"], "connection refused");
        assert_eq!(body["checks"]["hangs"]["status"], "down");
    }

    #[tokio::test]
    async fn unknown_paths_are_problem_json_404s() {
        let app = crate::with_operational_routes(Router::new(), Readiness::new());
        let resp = app
            .oneshot(Request::get("/nope").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            resp.headers()[axum::http::header::CONTENT_TYPE],
            crate::problem::CONTENT_TYPE
        );
    }
}
