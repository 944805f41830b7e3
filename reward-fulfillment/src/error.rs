//! Everything that can go wrong at the reward-fulfillment service's HTTP boundary, mapped to
//! problem responses in this one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use service_kit::Problem;

#[derive(Debug, thiserror::Error)]
pub enum FulfillmentError {
    /// Refused by the identity or role check (401/403).
    #[error("{}", .0.title)]
    Denied(Problem),
    #[error("database: {0}")]
    Database(#[from] mongo_kit::mongodb::error::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<Problem> for FulfillmentError {
    fn from(problem: Problem) -> Self {
        FulfillmentError::Denied(problem)
    }
}

impl IntoResponse for FulfillmentError {
    fn into_response(self) -> Response {
        let problem = match self {
            FulfillmentError::Denied(problem) => problem,
            FulfillmentError::Database(e) => {
                tracing::error!(error = %e, "database error");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "The database did not answer; try again",
                )
            }
            FulfillmentError::Internal(e) => {
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
