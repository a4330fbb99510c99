//! `GET /v1/payments?order_id=&limit=&cursor=`: the caller's payments, a page at a time (an
//! admin sees all).

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shop_kit::{
    api::{Money, Page, decode_cursor, encode_cursor, page_limit},
    auth::Caller,
    error::{FieldError, Problem},
};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{app::AppState, domain::Payment, error::Error, store};

/// Every REST route of the service, each with its operation in the OpenAPI document.
pub fn api(state: AppState) -> OpenApiRouter {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).routes(routes!(list)).with_state(state)
}

#[derive(OpenApi)]
#[openapi(info(title = "Shop payment service", version = "1.0.0"), components(schemas(Problem, FieldError, Money)))]
pub struct ApiDoc;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PaymentResponse {
    pub id: Uuid,
    pub order_id: Uuid,
    pub amount: Option<Money>,
    /// pending (the charge is under way), succeeded, failed, refund_pending, refunded or refund_failed.
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Filter {
    /// Only this order's payment.
    #[param(value_type = Option<Uuid>)]
    order_id: Option<String>,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page: opaque, only what this API returned (400 otherwise).
    cursor: Option<String>,
}

/// Payments of the caller's orders (an admin's: every payment), newest first, a page at a time.
#[utoipa::path(get, path = "/v1/payments", tag = "payments", security(("bearer" = [])), params(Filter), responses(
    (status = 200, body = Page<PaymentResponse>),
    (status = 400, body = Problem, content_type = "application/problem+json"),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    filter: Result<Query<Filter>, QueryRejection>,
) -> Result<Json<Page<PaymentResponse>>, Error> {
    let Query(filter) = filter.map_err(|rejection| Error::BadQuery { detail: rejection.body_text() })?;
    let order_id = match filter.order_id.as_deref() {
        None => None,
        Some(text) => Some(Uuid::parse_str(text).map_err(|_| Error::invalid("order_id", "must be a UUID"))?),
    };
    let limit = page_limit(filter.limit)?;
    let before: Option<Uuid> = filter.cursor.as_deref().map(decode_cursor).transpose()?.flatten();
    let owner = (!caller.is_admin()).then_some(caller.user_id);
    let mut connection = state.pool().acquire().await?;
    let (payments, next) = store::page(&mut connection, owner, order_id, before, limit).await?;
    Ok(Json(Page {
        items: payments.into_iter().map(PaymentResponse::from).collect(),
        next_cursor: next.as_ref().map(encode_cursor),
    }))
}
