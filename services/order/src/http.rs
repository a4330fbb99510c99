//! `/v1/orders`: checkout from the cart, list, read, cancel; ship and deliver (admins).

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use shop_kit::{
    api::{Money, Page, decode_cursor, encode_cursor, page_limit},
    auth::Caller,
    error::{ApiJson, FieldError, Problem, parse_id},
};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::AppState,
    checkout::{self, Idempotency, NewOrder, Placed},
    domain::{Order, OrderStatus, Shipment, ShippingAddress, validate_card_token},
    error::Error,
    fulfilment, store,
};

/// Every REST route of the service, each with its operation in the OpenAPI document.
pub fn api(state: AppState) -> OpenApiRouter {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(place, list))
        .routes(routes!(read))
        .routes(routes!(cancel))
        .routes(routes!(ship))
        .routes(routes!(deliver))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Shop order service", version = "1.0.0", description = "Checkout and orders."),
    components(schemas(Problem, FieldError, Money, ShippingAddress, OrderStatus, Shipment)),
    tags((name = "orders")),
)]
pub struct ApiDoc;

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderItemResponse {
    pub product_id: Uuid,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
}

/// An order as clients see it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderResponse {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    pub items: Vec<OrderItemResponse>,
    pub total: Money,
    pub shipping_address: ShippingAddress,
    pub failure_reason: Option<String>,
    /// Set once the order is shipped.
    pub shipment: Option<Shipment>,
    pub delivered_at: Option<chrono::DateTime<Utc>>,
    pub created_at: chrono::DateTime<Utc>,
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<Order> for OrderResponse {
    fn from(order: Order) -> Self {
        let items = order
            .lines
            .iter()
            .map(|line| OrderItemResponse {
                product_id: line.product_id,
                name: line.name.clone(),
                quantity: i64::from(line.quantity),
                unit_price: line.unit_price(),
                line_total: line.line_total(),
            })
            .collect();
        Self {
            id: order.id,
            user_id: order.user_id,
            status: order.status,
            items,
            total: order.total(),
            shipping_address: order.shipping_address,
            failure_reason: order.failure_reason,
            shipment: order.shipment,
            delivered_at: order.delivered_at,
            created_at: order.created_at,
            updated_at: order.updated_at,
        }
    }
}

/// The stored answer of a placed order, replayed for its idempotency key.
fn answer(order: &Order) -> Result<serde_json::Value, Error> {
    serde_json::to_value(OrderResponse::from(order.clone())).map_err(|error| Error::Internal(error.into()))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PaymentDetails {
    /// A payment provider token: tok_visa, tok_chargeDeclined, tok_insufficientFunds, tok_processingError.
    /// Never a card number: 13 to 19 digits (spaces and dashes aside) that pass the Luhn check
    /// are refused with 422 before anything is stored, published or logged. At most 100 of
    /// `A-Z a-z 0-9 _ -`, with a letter or `_` among them.
    #[schema(max_length = 100, pattern = "^[A-Za-z0-9_-]*[A-Za-z_][A-Za-z0-9_-]*$")]
    card_token: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlaceOrder {
    shipping_address: ShippingAddress,
    payment: PaymentDetails,
}

/// Place an order from the caller's cart. With an `Idempotency-Key`, a retry of the same
/// request gets the first answer; the same key with another body is 422.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", security(("bearer" = [])), request_body = PlaceOrder,
    params(("Idempotency-Key" = Option<String>, Header, max_length = 255, pattern = r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$",
        description = "makes retries safe: 1 to 255 visible ASCII characters (inner spaces allowed)")), responses(
    (status = 201, body = OrderResponse),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "cart_empty, out_of_stock, product_unavailable, request_in_progress", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "validation_failed, idempotency_key_reused", body = Problem, content_type = "application/problem+json"),
    (status = 429, description = "rate_limited: this customer placed RATE_LIMIT_CHECKOUT orders already; see Retry-After", body = Problem, content_type = "application/problem+json"),
    (status = 503, description = "dependency_unavailable", body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn place(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PlaceOrder>,
) -> Result<Response, Error> {
    let mut errors = Vec::new();
    let address = body.shipping_address.validate().map_err(|mut failing| errors.append(&mut failing)).ok();
    if let Err(error) = validate_card_token(&body.payment.card_token) {
        errors.push(error);
    }
    let key = match headers.get("idempotency-key").map(|value| value.to_str()) {
        None => None,
        Some(Ok(key))
            if !key.is_empty()
                && key.len() <= 255
                && key.bytes().all(|byte| (0x20..0x7f).contains(&byte))
                && !key.starts_with(' ')
                && !key.ends_with(' ') =>
        {
            Some(key.to_owned())
        }
        Some(_) => {
            errors.push(FieldError::new("Idempotency-Key", "must be 1 to 255 visible ASCII characters"));
            None
        }
    };
    let Some(address) = address.filter(|_| errors.is_empty()) else {
        return Err(Error::Validation(errors));
    };
    let request_hash = Sha256::digest(serde_json::to_vec(&body).map_err(|error| Error::Internal(error.into()))?);
    let request = NewOrder {
        shipping_address: address,
        card_token: &body.payment.card_token,
        idempotency: key.as_deref().map(|key| Idempotency { key, request_hash: request_hash.to_vec() }),
    };
    match checkout::place(&state, caller, request, answer).await? {
        Placed::Created(order) => {
            let location = format!("/v1/orders/{}", order.id);
            Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(OrderResponse::from(*order))).into_response())
        }
        Placed::Replayed { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            Ok((status, [("idempotent-replayed", "true")], Json(body)).into_response())
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page: opaque, only what this API returned (400 otherwise).
    cursor: Option<String>,
}

/// The caller's orders, newest first (an admin sees everyone's).
#[utoipa::path(get, path = "/v1/orders", tag = "orders", security(("bearer" = [])), params(ListParams), responses(
    (status = 200, body = Page<OrderResponse>),
    (status = 401, body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page<OrderResponse>>, Error> {
    let Query(params) = params.map_err(|_| Error::invalid("limit", "must be a whole number between 1 and 100"))?;
    let limit = page_limit(params.limit)?;
    let before: Option<Uuid> = params.cursor.as_deref().map(decode_cursor).transpose()?.flatten();
    let owner = (!caller.is_admin()).then_some(caller.user_id);
    let mut connection = state.pool().acquire().await?;
    let (orders, next) = store::list(&mut connection, owner, before, limit).await?;
    Ok(Json(Page {
        items: orders.into_iter().map(OrderResponse::from).collect(),
        next_cursor: next.as_ref().map(encode_cursor),
    }))
}

/// One order: your own, or any for an admin.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = OrderResponse),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OrderResponse>, Error> {
    let id = parse_id(&id, "order_not_found")?;
    let mut connection = state.pool().acquire().await?;
    let order = store::by_id(&mut connection, id).await?.ok_or(Error::OrderNotFound)?;
    caller.require_owner_or_admin(order.user_id)?;
    Ok(Json(order.into()))
}

/// Cancel an order: a pending one releases its stock; a confirmed one is refunded.
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = OrderResponse),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "illegal_transition", body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OrderResponse>, Error> {
    let id = parse_id(&id, "order_not_found")?;
    Ok(Json(checkout::cancel(&state, caller, id).await?.into()))
}

/// How an order is shipped.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShipOrder {
    /// The carrier's name: at most 64 characters, not only spaces, no control characters;
    /// stored trimmed.
    #[schema(
        max_length = 64,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    carrier: String,
    /// 1 to 64 of `A-Z a-z 0-9 -` (spaces around are trimmed).
    #[schema(
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[A-Za-z0-9-]{1,64}[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    tracking_number: String,
}

/// Ship a confirmed order (admins only): it becomes `shipped` with its carrier and tracking
/// number, `OrderShipped` is published and the customer is told. 409 from any other state.
#[utoipa::path(post, path = "/v1/orders/{id}/ship", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path)), request_body = ShipOrder,
    responses(
        (status = 200, body = OrderResponse),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "illegal_transition", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn ship(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ShipOrder>,
) -> Result<Json<OrderResponse>, Error> {
    let id = parse_id(&id, "order_not_found")?;
    Ok(Json(fulfilment::ship(&state, &caller, id, &body.carrier, &body.tracking_number).await?.into()))
}

/// Mark a shipped order delivered (admins only); `OrderDelivered` is published. 409 from any
/// other state.
#[utoipa::path(post, path = "/v1/orders/{id}/deliver", tag = "orders", security(("bearer" = [])), params(("id" = Uuid, Path)), responses(
    (status = 200, body = OrderResponse),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "illegal_transition", body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn deliver(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OrderResponse>, Error> {
    let id = parse_id(&id, "order_not_found")?;
    Ok(Json(fulfilment::deliver(&state, &caller, id).await?.into()))
}
