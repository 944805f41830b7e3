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
    #[error("reward not found")]
    RewardNotFound,
    #[error("claim not found")]
    ClaimNotFound,
    #[error("no Idempotency-Key header")]
    IdempotencyKeyMissing,
    #[error("idempotency key used for another request")]
    IdempotencyKeyReused,
    #[error("out of stock")]
    OutOfStock,
    #[error("claim limit reached")]
    ClaimLimitReached,
    #[error("event not active")]
    EventNotActive,
    #[error("condition not met")]
    ConditionNotMet(Box<http_api::events::Progress>),
    #[error("user may not claim")]
    UserNotAllowed,
    #[error("no transition from {from:?} to {to:?}")]
    InvalidTransition {
        from: http_api::events::EventStatus,
        to: http_api::events::EventStatus,
    },
    #[error("the condition of an active event cannot change")]
    EventActive,
    #[error("the event has ended")]
    EventEnded,
    /// Changed by someone else between our read and our write.
    #[error("concurrent change")]
    Conflict,
    #[error("stock below what is reserved")]
    StockBelowReserved { reserved: i64 },
    /// Refused by the identity or role check (401/403).
    #[error("{}", .0.title)]
    Denied(Problem),
    #[error("database: {0}")]
    Database(#[from] mongo_kit::mongodb::error::Error),
    /// The claim's batch did not decide within this time (the database is failing over).
    #[error("claim not decided within {0:?}")]
    Undecided(std::time::Duration),
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
            EventError::RewardNotFound => Problem::new(
                StatusCode::NOT_FOUND,
                "reward_not_found",
                "No such reward (in this event)",
            ),
            EventError::ClaimNotFound => {
                Problem::new(StatusCode::NOT_FOUND, "claim_not_found", "No such claim")
            }
            EventError::IdempotencyKeyMissing => Problem::new(
                StatusCode::BAD_REQUEST,
                "idempotency_key_missing",
                "A claim needs an Idempotency-Key header",
            )
            .with_detail("1 to 128 visible ASCII characters, unique per claim you mean to make"),
            EventError::IdempotencyKeyReused => Problem::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "This Idempotency-Key was used for a different request",
            ),
            EventError::OutOfStock => Problem::new(
                StatusCode::CONFLICT,
                "out_of_stock",
                "The reward is out of stock",
            ),
            EventError::ClaimLimitReached => Problem::new(
                StatusCode::CONFLICT,
                "claim_limit_reached",
                "You have claimed this reward as often as allowed",
            ),
            EventError::EventNotActive => Problem::new(
                StatusCode::CONFLICT,
                "event_not_active",
                "The event is not active (or outside its time window)",
            ),
            EventError::ConditionNotMet(progress) => Problem::new(
                StatusCode::CONFLICT,
                "condition_not_met",
                "The event's condition is not met yet",
            )
            .with_extension(
                "progress",
                serde_json::to_value(*progress).unwrap_or_default(),
            ),
            EventError::UserNotAllowed => Problem::new(
                StatusCode::FORBIDDEN,
                "user_not_allowed",
                "This account may not claim rewards",
            ),
            EventError::InvalidTransition { from, to } => Problem::new(
                StatusCode::CONFLICT,
                "invalid_transition",
                "The event cannot move to that status",
            )
            .with_detail(format!("{from:?} -> {to:?} is not allowed")),
            EventError::EventActive => Problem::new(
                StatusCode::CONFLICT,
                "event_active",
                "The condition of an ACTIVE event cannot change",
            ),
            EventError::EventEnded => Problem::new(
                StatusCode::CONFLICT,
                "event_ended",
                "The event has ended and cannot change",
            ),
            EventError::Conflict => Problem::new(
                StatusCode::CONFLICT,
                "concurrent_change",
                "Someone changed this at the same time; read it again and retry",
            ),
            EventError::StockBelowReserved { reserved } => Problem::new(
                StatusCode::CONFLICT,
                "stock_below_reserved",
                "Stock cannot shrink below what claims already hold",
            )
            .with_extension("reserved", reserved),
            EventError::Denied(problem) => problem,
            EventError::Database(e) => Problem::database_unavailable(&e),
            EventError::Undecided(within) => {
                Problem::database_unavailable(&format!("a claim batch took longer than {within:?}"))
                    .with_detail("Not decided in time; send it again with the same Idempotency-Key")
            }
            EventError::Internal(e) => Problem::internal(&e),
        };
        problem.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_not_decided_in_time_is_a_503_to_retry_with_the_same_key() {
        let response = EventError::Undecided(std::time::Duration::from_secs(5)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "2");
        assert_eq!(
            response.headers()[axum::http::header::CONTENT_TYPE],
            service_kit::problem::CONTENT_TYPE
        );
    }
}
