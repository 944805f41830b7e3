//! A JSON body extractor whose rejections are problem+json with stable codes, naming the
//! offending field where serde can tell, instead of axum's plain-text ones.

use crate::Problem;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// `axum::Json`, with [`Problem`] rejections, for bodies that are JSON objects (every
/// request body of the API is one; serde alone would also read a struct from an array).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (bytes, is_json) = read_body(req, state).await?;
        if !is_json {
            return Err(unsupported_media_type());
        }
        if !starts_with(&bytes, b'{') {
            return Err(not_an_object());
        }
        parse(&bytes).map(Json)
    }
}

/// A body that may be left out: nothing (or only whitespace), or `null`, is `None`; anything
/// else is read as [`Json`] reads it.
#[derive(Debug, Clone, Default)]
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (bytes, is_json) = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        if !is_json {
            return Err(unsupported_media_type());
        }
        if !starts_with(&bytes, b'{') && !starts_with(&bytes, b'n') {
            return Err(not_an_object());
        }
        parse(&bytes).map(OptionalJson)
    }
}

/// The body, and whether its `Content-Type` says JSON (`application/json` or `+json`).
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<(Bytes, bool), Problem> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| {
            m.type_() == "application" && (m.subtype() == "json" || m.suffix() == Some(mime::JSON))
        });
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            payload_too_large()
        } else {
            Problem::new(
                rejection.status(),
                "unreadable_body",
                "The body could not be read",
            )
            .with_detail(rejection.body_text())
        }
    })?;
    Ok((bytes, is_json))
}

fn starts_with(bytes: &[u8], first: u8) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&first)
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    axum::Json::<T>::from_bytes(bytes)
        .map(|axum::Json(value)| value)
        .map_err(problem_for)
}

fn unsupported_media_type() -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "Send JSON with Content-Type: application/json",
    )
}

fn not_an_object() -> Problem {
    Problem::validation(vec![FieldError::new("body", "must be a JSON object")])
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn problem_for(rejection: JsonRejection) -> Problem {
    let text = rejection.body_text();
    match rejection {
        JsonRejection::JsonDataError(_) => {
            let (field, message) = field_of(&text);
            Problem::validation(vec![FieldError::new(field.unwrap_or("body"), message)])
        }
        JsonRejection::JsonSyntaxError(_) => Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "The body is not valid JSON",
        )
        .with_detail(text),
        JsonRejection::MissingJsonContentType(_) => unsupported_media_type(),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(),
        other => Problem::new(
            other.status(),
            "unreadable_body",
            "The body could not be read",
        )
        .with_detail(text),
    }
}

pub fn payload_too_large() -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "The request body is too large",
    )
}

/// `axum::extract::Query`, with [`Problem`] rejections (400 `invalid_query`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    "The query string is invalid",
                )
                .with_detail(rejection.body_text())
            })
    }
}

/// Picks the field out of serde's messages: "missing field `email`" or "email: invalid type".
fn field_of(text: &str) -> (Option<&str>, String) {
    let detail = text
        .strip_prefix("Failed to deserialize the JSON body into the target type: ")
        .unwrap_or(text);
    if let Some(rest) = detail.split("missing field `").nth(1) {
        return (rest.split('`').next(), detail.to_owned());
    }
    match detail.split_once(": ") {
        Some((path, _)) if !path.contains(' ') => (Some(path), detail.to_owned()),
        _ => (None, detail.to_owned()),
    }
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Problem {
    /// 422 `validation_failed`, listing each invalid field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "The request is invalid",
        )
        .with_detail(detail)
        .with_extension("errors", json!(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named_from_serde_messages() {
        let (field, _) = field_of(
            "Failed to deserialize the JSON body into the target type: missing field `email` at line 1 column 2",
        );
        assert_eq!(field, Some("email"));
        let (field, _) = field_of(
            "Failed to deserialize the JSON body into the target type: nickname: invalid type: integer `3`, expected a string at line 1 column 14",
        );
        assert_eq!(field, Some("nickname"));
    }
}
