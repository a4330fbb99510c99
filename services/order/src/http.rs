//! `/v1/orders`: checkout from the cart, list, read, cancel.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{SubsecRound as _, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use shop_kit::{
    api::{Money, Page, decode_cursor, encode_cursor, page_limit},
    auth::{Caller, bearer_token},
    error::{ApiJson, FieldError, Problem, parse_id},
    events::Event,
    grpc::with_bearer,
};
use shop_proto::shop::{
    cart::v1::GetCartRequest,
    events::v1 as events,
    product::v1::{BatchGetProductsRequest, ReleaseStockRequest, ReserveStockRequest, StockLine},
};
use tonic::Code;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::{
    app::AppState,
    domain::{OrderStatus, ShippingAddress, validate_card_token},
    error::Error,
    store::{self, Claim, Order, OrderLine},
};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/orders", post(place).get(list))
        .route("/v1/orders/{id}", get(read))
        .route("/v1/orders/{id}/cancel", post(cancel))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Shop order service", version = "1.0.0", description = "Checkout and orders."),
    paths(place, list, read, cancel),
    components(schemas(Problem, FieldError, Money, ShippingAddress, OrderStatus)),
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
    pub created_at: chrono::DateTime<Utc>,
    pub updated_at: chrono::DateTime<Utc>,
}

impl From<Order> for OrderResponse {
    fn from(order: Order) -> Self {
        let items = order
            .lines
            .into_iter()
            .map(|line| {
                let unit_price = Money { amount: line.unit_price_amount, currency: line.currency };
                let quantity = i64::from(line.quantity);
                OrderItemResponse {
                    product_id: line.product_id,
                    name: line.name,
                    quantity,
                    line_total: unit_price
                        .times(quantity)
                        .unwrap_or(Money { amount: 0, currency: unit_price.currency.clone() }),
                    unit_price,
                }
            })
            .collect();
        Self {
            id: order.id,
            user_id: order.user_id,
            status: order.status,
            items,
            total: Money { amount: order.total_amount, currency: order.currency },
            shipping_address: order.shipping_address,
            failure_reason: order.failure_reason,
            created_at: order.created_at,
            updated_at: order.updated_at,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PaymentDetails {
    /// A payment provider token: tok_visa, tok_chargeDeclined, tok_insufficientFunds, tok_processingError.
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
#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = PlaceOrder,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe")), responses(
    (status = 201, body = OrderResponse),
    (status = 401, body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "cart_empty, out_of_stock, product_unavailable, request_in_progress", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "validation_failed, idempotency_key_reused", body = Problem, content_type = "application/problem+json"),
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
        Some(Ok(key)) if !key.is_empty() && key.len() <= 255 => Some(key.to_owned()),
        Some(_) => {
            errors.push(FieldError::new("Idempotency-Key", "must be 1 to 255 visible ASCII characters"));
            None
        }
    };
    let Some(address) = address.filter(|_| errors.is_empty()) else {
        return Err(Error::Validation(errors));
    };
    let token = bearer_token(&headers)?.to_owned();
    if let Some(key) = &key {
        let hash = Sha256::digest(serde_json::to_vec(&body).map_err(|error| Error::Internal(error.into()))?).to_vec();
        let mut connection = state.pool().acquire().await?;
        match store::claim(&mut connection, caller.user_id, key, &hash).await? {
            Claim::New => {}
            Claim::Replay { status, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                return Ok((status, [("idempotent-replayed", "true")], Json(body)).into_response());
            }
            Claim::Mismatch => return Err(Error::IdempotencyKeyReused),
            Claim::InProgress => return Err(Error::RequestInProgress),
        }
    }
    let placed = checkout(&state, caller, &token, address, &body.payment.card_token, key.as_deref()).await;
    match placed {
        Ok(order) => {
            let location = format!("/v1/orders/{}", order.id);
            Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(order)).into_response())
        }
        Err(error) => {
            if let Some(key) = &key {
                // Only success is remembered: after a refusal the same key may try again.
                let mut connection = state.pool().acquire().await?;
                store::abandon(&mut connection, caller.user_id, key).await?;
            }
            Err(error)
        }
    }
}

fn dependency(service: &'static str, status: &tonic::Status) -> Error {
    tracing::warn!(service, code = ?status.code(), message = status.message(), "dependency call failed");
    Error::DependencyUnavailable { service }
}

/// The checkout itself: cart → current prices → stock hold → order + OrderPlaced.
async fn checkout(
    state: &AppState,
    caller: Caller,
    token: &str,
    address: ShippingAddress,
    card_token: &str,
    idempotency_key: Option<&str>,
) -> Result<OrderResponse, Error> {
    let cart = state
        .cart()
        .get_cart(with_bearer(tonic::Request::new(GetCartRequest { user_id: caller.user_id.to_string() }), token))
        .await
        .map_err(|status| dependency("cart", &status))?
        .into_inner()
        .cart
        .unwrap_or_default();
    if cart.items.is_empty() {
        return Err(Error::CartEmpty);
    }
    let ids: Vec<String> = cart.items.iter().map(|item| item.product_id.clone()).collect();
    let products = state
        .products()
        .batch_get_products(BatchGetProductsRequest { product_ids: ids })
        .await
        .map_err(|status| dependency("product", &status))?
        .into_inner()
        .products;
    let products: HashMap<String, _> = products.into_iter().map(|product| (product.id.clone(), product)).collect();

    let mut lines = Vec::with_capacity(cart.items.len());
    let mut total = 0_i64;
    let mut currency: Option<String> = None;
    for item in &cart.items {
        let unavailable =
            || Error::ProductUnavailable { detail: format!("product {} is no longer for sale", item.product_id) };
        let product = products.get(&item.product_id).filter(|product| product.active).ok_or_else(unavailable)?;
        let price = product.price.clone().ok_or_else(unavailable)?;
        if currency.get_or_insert_with(|| price.currency.clone()) != &price.currency {
            return Err(Error::ProductUnavailable { detail: "the cart mixes currencies".into() });
        }
        let quantity = i32::try_from(item.quantity).map_err(|_| unavailable())?;
        total =
            price.amount.checked_mul(item.quantity).and_then(|line| total.checked_add(line)).ok_or_else(unavailable)?;
        lines.push(OrderLine {
            product_id: Uuid::parse_str(&product.id).map_err(|_| unavailable())?,
            name: product.name.clone(),
            quantity,
            unit_price_amount: price.amount,
            currency: price.currency,
        });
    }
    let currency = currency.unwrap_or_else(|| "USD".into());

    let order_id = Uuid::now_v7();
    let stock: Vec<StockLine> = lines
        .iter()
        .map(|line| StockLine { product_id: line.product_id.to_string(), quantity: i64::from(line.quantity) })
        .collect();
    let reserve = ReserveStockRequest { order_id: order_id.to_string(), items: stock };
    match state.products().reserve_stock(with_bearer(tonic::Request::new(reserve), token)).await {
        Ok(_) => {}
        Err(status) if status.code() == Code::FailedPrecondition => {
            return Err(Error::OutOfStock {
                detail: status.message().split_once(": ").map_or(status.message(), |(_, detail)| detail).to_owned(),
            });
        }
        Err(status) => return Err(dependency("product", &status)),
    }

    let now = Utc::now().trunc_subsecs(6);
    let order = Order {
        id: order_id,
        user_id: caller.user_id,
        status: OrderStatus::PendingPayment,
        total_amount: total,
        currency,
        shipping_address: address,
        failure_reason: None,
        lines,
        created_at: now,
        updated_at: now,
    };
    let response = OrderResponse::from(order.clone());
    match store_order(state, &order, &response, card_token, idempotency_key).await {
        Ok(()) => {
            tracing::info!(order.id = %order.id, total = order.total_amount, "order placed");
            Ok(response)
        }
        Err(error) => {
            // Compensation: the order does not exist, so neither may its hold.
            let release = ReleaseStockRequest { order_id: order_id.to_string() };
            if let Err(status) = state.products().release_stock(with_bearer(tonic::Request::new(release), token)).await
            {
                tracing::warn!(order.id = %order_id, code = ?status.code(), "cannot release the hold; it will expire");
            }
            Err(error)
        }
    }
}

/// The lines of an order as events carry them.
pub(crate) fn event_lines(order: &OrderResponse) -> Vec<events::OrderLine> {
    order
        .items
        .iter()
        .map(|item| events::OrderLine {
            product_id: item.product_id.to_string(),
            name: item.name.clone(),
            quantity: item.quantity,
            unit_price: Some(item.unit_price.clone().into()),
        })
        .collect()
}

/// The order, its OrderPlaced event and the idempotent answer, in one statement.
async fn store_order(
    state: &AppState,
    order: &Order,
    response: &OrderResponse,
    card_token: &str,
    idempotency_key: Option<&str>,
) -> Result<(), Error> {
    let placed = events::OrderPlaced {
        order_id: order.id.to_string(),
        user_id: order.user_id.to_string(),
        lines: event_lines(response),
        total: Some(response.total.clone().into()),
        card_token: card_token.to_owned(),
    };
    let event = Event::new(state.order_topic(), order.id.to_string(), "/shop/order", "OrderPlaced", &placed);
    let body = match idempotency_key {
        Some(_) => Some(serde_json::to_value(response).map_err(|error| Error::Internal(error.into()))?),
        None => None,
    };
    let answer = idempotency_key.zip(body.as_ref()).map(|(key, body)| store::StoredAnswer {
        key,
        status: StatusCode::CREATED.as_u16(),
        body,
    });
    let mut connection = state.pool().acquire().await?;
    store::place(&mut connection, order, answer, &event).await
}

#[derive(Deserialize, IntoParams)]
pub(crate) struct ListParams {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// The caller's orders, newest first (an admin sees everyone's).
#[utoipa::path(get, path = "/v1/orders", tag = "orders", params(ListParams), responses(
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
    let before: Option<Uuid> = params.cursor.as_deref().map(decode_cursor).transpose()?;
    let owner = (!caller.is_admin()).then_some(caller.user_id);
    let mut connection = state.pool().acquire().await?;
    let (orders, next) = store::list(&mut connection, owner, before, limit).await?;
    Ok(Json(Page {
        items: orders.into_iter().map(OrderResponse::from).collect(),
        next_cursor: next.as_ref().map(encode_cursor),
    }))
}

/// One order: your own, or any for an admin.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", params(("id" = Uuid, Path)), responses(
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
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", params(("id" = Uuid, Path)), responses(
    (status = 200, body = OrderResponse),
    (status = 403, body = Problem, content_type = "application/problem+json"),
    (status = 404, body = Problem, content_type = "application/problem+json"),
    (status = 409, description = "illegal_transition", body = Problem, content_type = "application/problem+json"),
))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<OrderResponse>, Error> {
    let id = parse_id(&id, "order_not_found")?;
    let mut transaction = state.pool().begin().await?;
    let owner = store::by_id(&mut transaction, id).await?.ok_or(Error::OrderNotFound)?.user_id;
    caller.require_owner_or_admin(owner)?;
    let before = store::transition(&mut transaction, id, OrderStatus::Cancelled, Some("cancelled by request")).await?;
    let after = store::by_id(&mut transaction, id).await?.ok_or(Error::OrderNotFound)?;
    let response = OrderResponse::from(after);
    let cancelled = events::OrderCancelled {
        order_id: id.to_string(),
        user_id: owner.to_string(),
        lines: event_lines(&response),
        total: Some(response.total.clone().into()),
        reason: "cancelled by request".into(),
        refund: before.status == OrderStatus::Confirmed,
    };
    let event = Event::new(state.order_topic(), id.to_string(), "/shop/order", "OrderCancelled", &cancelled);
    shop_kit::events::enqueue(&mut transaction, &event).await?;
    transaction.commit().await?;
    if before.status == OrderStatus::PendingPayment {
        // Give the stock back now; the product service also does on OrderCancelled.
        let token = bearer_token(&headers)?;
        let release = ReleaseStockRequest { order_id: id.to_string() };
        if let Err(status) = state.products().release_stock(with_bearer(tonic::Request::new(release), token)).await {
            tracing::warn!(order.id = %id, code = ?status.code(), "cannot release the hold now; OrderCancelled will");
        }
    }
    Ok(Json(response))
}
