//! Everything that can go wrong at the event service's HTTP boundary, mapped to problem
//! responses in this one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use service_kit::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("invalid fields")]
    Validation(Vec<FieldError>),
    #[error("event not found")]
    EventNotFound,
    /// Refused by the identity or role check (401/403).
    #[error("{}", .0.title)]
    Denied(Problem),
    #[error("database: {0}")]
    Database(#[from] mongo_kit::mongodb::error::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<Problem> for EventError {
    fn from(problem: Problem) -> Self {
        EventError::Denied(problem)
    }
}

impl IntoResponse for EventError {
    fn into_response(self) -> Response {
        let problem = match self {
            EventError::Validation(errors) => Problem::validation(errors),
            EventError::EventNotFound => {
                Problem::new(StatusCode::NOT_FOUND, "event_not_found", "No such event")
            }
            EventError::Denied(problem) => problem,
            EventError::Database(e) => {
                tracing::error!(error = %e, "database error");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "The database did not answer; try again",
                )
            }
            EventError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "Something went wrong on our side",
                )
            }
        };
        problem.into_response()
    }
}
