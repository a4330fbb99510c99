//! The order service's errors, and the one place they become problems and statuses.

use axum::response::{IntoResponse, Response};
use shop_kit::error::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("cart is empty")]
    CartEmpty,
    #[error("out of stock")]
    OutOfStock { detail: String },
    #[error("a product is not for sale")]
    ProductUnavailable { detail: String },
    #[error("idempotency key reused with another request")]
    IdempotencyKeyReused,
    #[error("a request with this idempotency key is in progress")]
    RequestInProgress,
    #[error("order not found")]
    OrderNotFound,
    #[error("illegal transition")]
    IllegalTransition { from: String, to: &'static str },
    #[error("a dependency is unavailable")]
    DependencyUnavailable { service: &'static str },
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
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn problem(self) -> Problem {
        match self {
            Self::Validation(errors) => Problem::validation(errors),
            Self::CartEmpty => Problem::conflict("cart_empty", "the cart is empty; add products before ordering"),
            Self::OutOfStock { detail } => Problem::conflict("out_of_stock", detail),
            Self::ProductUnavailable { detail } => Problem::conflict("product_unavailable", detail),
            Self::IdempotencyKeyReused => Problem::new(
                http::StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body",
            ),
            Self::RequestInProgress => {
                Problem::conflict("request_in_progress", "a request with this Idempotency-Key is still being processed")
            }
            Self::OrderNotFound => Problem::not_found("order_not_found", "no order with this id"),
            Self::IllegalTransition { from, to } => {
                Problem::conflict("illegal_transition", format!("an order that is {from} cannot become {to}"))
            }
            Self::DependencyUnavailable { service } => Problem::unavailable(
                "dependency_unavailable",
                format!("the {service} service did not answer in time; nothing was ordered, retry shortly"),
            ),
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
