//! The notification service's errors, and the one place they become problems.

use axum::response::{IntoResponse, Response};
use shop_kit::error::Problem;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Logged when it becomes a problem, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(error).context("database error"))
    }
}

impl Error {
    pub fn problem(self) -> Problem {
        match self {
            Self::Internal(cause) => Problem::internal(&cause),
        }
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        error.problem()
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}
