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
        }
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
    pub fn database_unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "database error");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "The database did not answer; try again",
        )
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
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}
