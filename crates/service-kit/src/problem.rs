//! RFC 9457 problem details: the body of every error response, with a stable machine-readable
//! `code` that clients can switch on (the human `title`/`detail` may change).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    #[serde(skip)]
    pub status: StatusCode,
    /// A URI naming the problem type; `about:blank` plus `code` is enough for our clients.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: &'static str,
    #[serde(rename = "status")]
    pub status_code: u16,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Extension members (RFC 9457 §3.2), e.g. the failing field or the readiness checks.
    /// Boxed: most problems have none, and a small `Problem` keeps `Result`s small.
    #[serde(flatten)]
    pub extensions: Box<Map<String, Value>>,
    /// Seconds for the `Retry-After` header. Every 503 has one (1 s unless said otherwise):
    /// a client told "unavailable" is told when to come back, instead of guessing.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, title: &'static str) -> Self {
        Self {
            status,
            kind: "about:blank",
            title,
            status_code: status.as_u16(),
            code,
            detail: None,
            extensions: Box::default(),
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1),
        }
    }

    /// Sets the `Retry-After` header, in seconds.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_extension(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.into(), value.into());
        self
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "No such resource")
    }

    /// 503 for a database that failed us. The cause is logged, never shown to the client.
    /// Come back in 2 s: a replica set that lost its primary elects another within seconds.
    pub fn database_unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "database error");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "The database did not answer; try again",
        )
        .with_retry_after(2)
    }

    /// 503 for a Kafka broker that failed us. The cause is logged, never shown to the client.
    /// Come back in 2 s: a partition whose leader was lost gets another within seconds.
    pub fn broker_unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "broker error");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_unavailable",
            "The message broker did not answer; try again",
        )
        .with_retry_after(2)
    }

    /// 500 for a bug or broken invariant on our side. The cause is logged, never shown.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong on our side",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(&self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_503_says_when_to_retry_and_others_do_not() {
        let unavailable = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "x", "y").into_response();
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "1");
        let database = Problem::database_unavailable(&"gone").into_response();
        assert_eq!(database.headers()[header::RETRY_AFTER], "2");
        let broker = Problem::broker_unavailable(&"gone").into_response();
        assert_eq!(broker.headers()[header::RETRY_AFTER], "2");
        let conflict = Problem::new(StatusCode::CONFLICT, "x", "y").into_response();
        assert!(!conflict.headers().contains_key(header::RETRY_AFTER));
    }
}
