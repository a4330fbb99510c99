//! `GET /v1/payments?order_id=`: the caller's payments (an admin sees all).

use axum::{
    Json, Router,
    extract::{Query, State, rejection::QueryRejection},
    routing::get,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shop_kit::{
    api::Money,
    auth::Caller,
    error::{FieldError, Problem},
};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::{app::AppState, domain::Payment, error::Error, store};

pub fn router(state: AppState) -> Router {
    Router::new().route("/v1/payments", get(list)).with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Shop payment service", version = "1.0.0"),
    paths(list),
    components(schemas(Problem, FieldError, Money))
)]
pub struct ApiDoc;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PaymentResponse {
    pub id: Uuid,
    pub order_id: Uuid,
    pub amount: Option<Money>,
    /// succeeded, failed or refunded.
    pub status: String,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Payment> for PaymentResponse {
    fn from(payment: Payment) -> Self {
        Self {
            id: payment.id,
            order_id: payment.order_id,
            amount: Some(payment.amount()),
            status: payment.status.as_str().to_owned(),
            failure_reason: payment.failure_reason,
            created_at: payment.created_at,
            updated_at: payment.updated_at,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Payments {
    pub items: Vec<PaymentResponse>,
}

#[derive(Deserialize, IntoParams)]
pub(crate) struct Filter {
    order_id: Option<String>,
}

/// Payments of the caller's orders, newest first (at most 100).
#[utoipa::path(get, path = "/v1/payments", params(Filter), responses(
    (status = 200, body = Payments),
    (status = 401, body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    filter: Result<Query<Filter>, QueryRejection>,
) -> Result<Json<Payments>, Error> {
    let Query(filter) = filter.map_err(|rejection| Error::BadQuery { detail: rejection.body_text() })?;
    let order_id = match filter.order_id.as_deref() {
        None => None,
        Some(text) => Some(Uuid::parse_str(text).map_err(|_| Error::invalid("order_id", "must be a UUID"))?),
    };
    let owner = (!caller.is_admin()).then_some(caller.user_id);
    let mut connection = state.pool().acquire().await?;
    let payments = store::list(&mut connection, owner, order_id).await?;
    Ok(Json(Payments { items: payments.into_iter().map(PaymentResponse::from).collect() }))
}
