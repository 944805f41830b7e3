//! Everything that can go wrong at the reward-fulfillment service's HTTP boundary, mapped to
//! problem responses in this one place.

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
            FulfillmentError::Database(e) => Problem::database_unavailable(&e),
            FulfillmentError::Internal(e) => Problem::internal(&e),
        };
        problem.into_response()
    }
}
