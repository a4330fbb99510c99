//! The user service's errors, and the one place they become problems (REST) and
//! statuses (gRPC).

use axum::response::{IntoResponse, Response};
use shop_kit::error::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("email already registered")]
    EmailTaken,
    #[error("wrong email or password")]
    InvalidCredentials,
    #[error("too many failed logins")]
    RateLimited { retry_after_secs: u32 },
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("refresh token reused")]
    RefreshTokenReused,
    #[error("current password is wrong")]
    WrongCurrentPassword,
    #[error("user not found")]
    UserNotFound,
    /// A problem decided elsewhere (authentication, authorization).
    #[error("{}", .0.detail)]
    Problem(Problem),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(error).context("database error"))
    }
}

impl From<Problem> for Error {
    fn from(problem: Problem) -> Self {
        Self::Problem(problem)
    }
}

impl Error {
    /// A 422 for one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn problem(self) -> Problem {
        match self {
            Self::Validation(errors) => Problem::validation(errors),
            Self::EmailTaken => Problem::conflict("email_taken", "an account with this email already exists"),
            Self::InvalidCredentials => {
                Problem::new(http::StatusCode::UNAUTHORIZED, "invalid_credentials", "the email or password is wrong")
            }
            Self::RateLimited { retry_after_secs } => Problem::rate_limited(retry_after_secs),
            Self::InvalidRefreshToken => Problem::new(
                http::StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
                "the refresh token is unknown, expired or revoked; log in again",
            ),
            Self::RefreshTokenReused => Problem::new(
                http::StatusCode::UNAUTHORIZED,
                "refresh_token_reused",
                "this refresh token was already used; every session of this login is revoked, log in again",
            ),
            Self::WrongCurrentPassword => Problem::new(
                axum::http::StatusCode::FORBIDDEN,
                "current_password_mismatch",
                "changing the password needs the current one, and current_password is missing or not it",
            ),
            Self::UserNotFound => Problem::not_found("user_not_found", "no user with this id"),
            Self::Problem(problem) => problem,
            Self::Internal(cause) => Problem::internal(&cause),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        error.problem().into()
    }
}
