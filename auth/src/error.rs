//! Everything that can go wrong at the auth service's HTTP boundary, and how each maps to a
//! problem response: the one place status codes and `code`s are decided.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use service_kit::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid fields")]
    Validation(Vec<FieldError>),
    #[error("email already registered")]
    EmailTaken,
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("account banned")]
    Banned,
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("refresh token reused; session revoked")]
    RefreshTokenReused,
    #[error("current password is wrong")]
    WrongPassword,
    #[error("user not found")]
    UserNotFound,
    #[error("too busy to check passwords")]
    Busy,
    #[error("the account is deleted")]
    AccountDeleted,
    /// Refused by the identity or role check (401/403, already a problem).
    #[error("{}", .0.title)]
    Denied(Problem),
    #[error("database: {0}")]
    Database(#[from] mongo_kit::mongodb::error::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<Problem> for AuthError {
    fn from(problem: Problem) -> Self {
        AuthError::Denied(problem)
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let problem = match self {
            AuthError::Validation(errors) => Problem::validation(errors),
            AuthError::EmailTaken => Problem::new(
                StatusCode::CONFLICT,
                "email_taken",
                "An account with this email exists",
            ),
            AuthError::InvalidCredentials => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "Wrong email or password",
            ),
            AuthError::Banned => Problem::new(
                StatusCode::FORBIDDEN,
                "account_banned",
                "This account is banned",
            ),
            AuthError::InvalidRefreshToken => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
                "The refresh token is invalid, expired or revoked",
            ),
            AuthError::RefreshTokenReused => Problem::new(
                StatusCode::UNAUTHORIZED,
                "refresh_token_reused",
                "This refresh token was already used; its session is now revoked",
            ),
            AuthError::WrongPassword => Problem::new(
                StatusCode::FORBIDDEN,
                "wrong_password",
                "The current password is wrong",
            ),
            AuthError::Busy => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "Too many sign-ins at once; try again in a moment",
            ),
            AuthError::AccountDeleted => Problem::new(
                StatusCode::CONFLICT,
                "account_deleted",
                "The account is deleted; it cannot be changed",
            ),
            AuthError::UserNotFound => {
                Problem::new(StatusCode::NOT_FOUND, "user_not_found", "No such user")
            }
            AuthError::Denied(problem) => problem,
            AuthError::Database(e) => Problem::database_unavailable(&e),
            AuthError::Internal(e) => Problem::internal(&e),
        };
        problem.into_response()
    }
}
