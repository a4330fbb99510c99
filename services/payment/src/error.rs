//! The payment service's errors, and the one place they become problems and statuses.

use axum::response::{IntoResponse, Response};
use shop_kit::error::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query string did not parse (`detail` is the extractor's explanation).
    #[error("bad query: {detail}")]
    BadQuery { detail: String },
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("payment not found")]
    PaymentNotFound,
    /// A problem from shop-kit (paging, authorization), as it is.
    #[error("{}", .0.detail)]
    Problem(Problem),
    /// Logged when it becomes a problem, never shown.
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
            Self::BadQuery { detail } => Problem::bad_request("bad_query", detail),
            Self::Validation(errors) => Problem::validation(errors),
            Self::PaymentNotFound => Problem::not_found("payment_not_found", "this order has no payment (yet)"),
            Self::Problem(problem) => problem,
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

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        error.problem().into()
    }
}
