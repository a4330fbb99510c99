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

use crate::app::AppState;

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

#[derive(Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct PaymentResponse {
    pub id: Uuid,
    pub order_id: Uuid,
    #[sqlx(skip)]
    pub amount: Option<Money>,
    /// succeeded, failed or refunded.
    pub status: String,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Payments {
    pub items: Vec<PaymentResponse>,
}

#[derive(Deserialize, IntoParams)]
pub(crate) struct Filter {
    order_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    order_id: Uuid,
    amount: i64,
    currency: String,
    status: String,
    failure_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
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
) -> Result<Json<Payments>, Problem> {
    let Query(filter) = filter.map_err(|rejection| Problem::bad_request("bad_query", rejection.body_text()))?;
    let order_id = match filter.order_id.as_deref() {
        None => None,
        Some(text) => Some(
            Uuid::parse_str(text)
                .map_err(|_| Problem::validation(vec![FieldError::new("order_id", "must be a UUID")]))?,
        ),
    };
    let owner = (!caller.is_admin()).then_some(caller.user_id);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, order_id, amount, currency, status, failure_reason, created_at, updated_at FROM payments \
         WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::uuid IS NULL OR order_id = $2) ORDER BY id DESC LIMIT 100",
    )
    .bind(owner)
    .bind(order_id)
    .fetch_all(state.pool())
    .await
    .map_err(|error| Problem::internal(&error.into()))?;
    let items = rows
        .into_iter()
        .map(|row| PaymentResponse {
            id: row.id,
            order_id: row.order_id,
            amount: Some(Money { amount: row.amount, currency: row.currency }),
            status: row.status,
            failure_reason: row.failure_reason,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
        .collect();
    Ok(Json(Payments { items }))
}
