//! The cart service's errors, and the one place they become problems and statuses.

use axum::response::{IntoResponse, Response};
use shop_kit::error::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("product not found")]
    ProductNotFound,
    #[error("product not for sale")]
    ProductUnavailable,
    #[error("currency differs from the cart's")]
    CurrencyMismatch { cart: String },
    #[error("too many lines")]
    TooManyLines { max: u32 },
    #[error("line not in cart")]
    LineNotFound,
    #[error("product service unavailable")]
    ProductServiceUnavailable,
    #[error("{}", .0.detail)]
    Problem(Problem),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<redis::RedisError> for Error {
    fn from(error: redis::RedisError) -> Self {
        Self::Internal(anyhow::Error::new(error).context("redis error"))
    }
}

impl From<Problem> for Error {
    fn from(problem: Problem) -> Self {
        Self::Problem(problem)
    }
}

impl Error {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn problem(self) -> Problem {
        match self {
            Self::Validation(errors) => Problem::validation(errors),
            Self::ProductNotFound => Problem::not_found("product_not_found", "no product with this id"),
            Self::ProductUnavailable => Problem {
                errors: vec![FieldError::new("product_id", "this product is not for sale")],
                ..Problem::new(
                    http::StatusCode::UNPROCESSABLE_ENTITY,
                    "product_unavailable",
                    "this product is not for sale",
                )
            },
            Self::CurrencyMismatch { cart } => Problem {
                errors: vec![FieldError::new(
                    "product_id",
                    format!("is priced in another currency than the cart ({cart})"),
                )],
                ..Problem::new(
                    http::StatusCode::UNPROCESSABLE_ENTITY,
                    "currency_mismatch",
                    "one cart holds one currency",
                )
            },
            Self::TooManyLines { max } => {
                Problem::conflict("cart_full", format!("a cart holds at most {max} different products"))
            }
            Self::LineNotFound => Problem::not_found("line_not_found", "this product is not in the cart"),
            Self::ProductServiceUnavailable => {
                Problem::unavailable("product_service_unavailable", "prices cannot be checked right now; retry shortly")
            }
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
