//! The product service's errors, and the one place they become problems and statuses.

use axum::response::{IntoResponse, Response};
use shop_kit::error::{FieldError, Problem};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("sku already in use")]
    SkuTaken,
    #[error("product not found")]
    ProductNotFound,
    #[error("stock below reserved")]
    StockBelowReserved { reserved: i32 },
    #[error("out of stock")]
    OutOfStock { detail: String },
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
            Self::SkuTaken => Problem::conflict("sku_taken", "a product with this sku already exists"),
            Self::ProductNotFound => Problem::not_found("product_not_found", "no product with this id"),
            Self::StockBelowReserved { reserved } => Problem::conflict(
                "stock_below_reserved",
                format!("{reserved} units are reserved for orders; on_hand cannot go below that"),
            ),
            Self::OutOfStock { detail } => Problem::conflict("out_of_stock", detail),
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
