//! Placing and cancelling an order: the checkout saga's first step, whatever the transport.
//!
//! [`place`] claims the idempotency key (if any), reads the caller's cart (cart service),
//! re-prices every line from the product service (the authority
//! on what is charged), holds the stock (`ReserveStock`, idempotent by order id), then
//! stores the order, its `OrderPlaced` event and the idempotent answer in one statement; if
//! that fails, the hold is released (compensation) and the key is freed for a retry.
//! [`cancel`] moves an order to `cancelled` with its `OrderCancelled` event and gives a
//! pending order's stock back at once.
//!
//! The calls to cart and product carry this service's own token (ADR 0012) and name the
//! customer they are made for (`shop-acting-for`), never the customer's token.

use std::collections::HashMap;

use chrono::{SubsecRound as _, Utc};
use shop_kit::{auth::Caller, events::enqueue, grpc::acting_for};
use shop_proto::shop::{
    cart::v1::GetCartRequest,
    product::v1::{BatchGetProductsRequest, ReleaseStockRequest, ReserveStockRequest, StockLine},
};
use tonic::Code;
use uuid::Uuid;

use crate::{
    app::AppState,
    domain::{Order, OrderLine, OrderStatus, ShippingAddress},
    error::Error,
    events,
    store::{self, Claim},
};

/// What the caller asked for (already validated).
pub struct NewOrder<'a> {
    pub shipping_address: ShippingAddress,
    pub card_token: &'a str,
    /// The `Idempotency-Key` and a hash of the request it came with.
    pub idempotency: Option<Idempotency<'a>>,
}

pub struct Idempotency<'a> {
    pub key: &'a str,
    pub request_hash: Vec<u8>,
}

/// How a transport renders a placed order for the idempotent replays of its key (the REST
/// response body, say): stored with the order, replayed as it was.
pub type RenderAnswer = fn(&Order) -> Result<serde_json::Value, Error>;

/// The outcome of [`place`].
pub enum Placed {
    /// A new order in `pending_payment`.
    Created(Box<Order>),
    /// The key was used before with the same request: its first answer.
    Replayed { status: u16, body: serde_json::Value },
}

/// The status stored with a new order's answer.
const CREATED: u16 = 201;

/// Places an order from `caller`'s cart.
pub async fn place(
    state: &AppState,
    caller: Caller,
    request: NewOrder<'_>,
    render: RenderAnswer,
) -> Result<Placed, Error> {
    if let Some(idempotency) = &request.idempotency {
        let mut connection = state.pool().acquire().await?;
        match store::claim(
            &mut connection,
            caller.user_id,
            idempotency.key,
            &idempotency.request_hash,
            state.idempotency_lease(),
        )
        .await?
        {
            Claim::New => {}
            Claim::Replay { status, body } => return Ok(Placed::Replayed { status, body }),
            Claim::Mismatch => return Err(Error::IdempotencyKeyReused),
            Claim::InProgress => return Err(Error::RequestInProgress),
        }
    }
    let key = request.idempotency.as_ref().map(|idempotency| idempotency.key);
    match checkout(state, caller, request.shipping_address, request.card_token, key, render).await {
        Ok(order) => Ok(Placed::Created(Box::new(order))),
        Err(error) => {
            if let Some(key) = key {
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

/// `RATE_LIMIT_CHECKOUT`: at most `count` orders by one customer in any `period`, counted
/// from the orders themselves, so every replica agrees without another store. Two checkouts
/// racing past the count together can exceed it by the number racing; the hold and the
/// charge each order makes are what the limit bounds.
async fn within_checkout_rate(state: &AppState, user_id: Uuid) -> Result<(), Error> {
    let rate = state.checkout_rate();
    let now = Utc::now();
    let period = chrono::Duration::from_std(rate.period).unwrap_or(chrono::Duration::MAX);
    let start = now.checked_sub_signed(period).unwrap_or(now);
    let start_ms = u64::try_from(start.timestamp_millis()).unwrap_or(0);
    let since = uuid::Builder::from_unix_timestamp_millis(start_ms, &[0; 10]).into_uuid();
    let mut connection = state.pool().acquire().await?;
    let (placed, oldest) = store::placed_since(&mut connection, user_id, since).await?;
    if placed < i64::from(rate.count.get()) {
        return Ok(());
    }
    // The next order is possible when the oldest one in the window leaves it.
    let oldest_ms = oldest.and_then(|id| id.get_timestamp()).map_or(start_ms, |stamp| {
        let (secs, nanos) = stamp.to_unix();
        secs.saturating_mul(1000).saturating_add(u64::from(nanos / 1_000_000))
    });
    let free_at = oldest_ms.saturating_add(u64::try_from(rate.period.as_millis()).unwrap_or(u64::MAX));
    let wait =
        std::time::Duration::from_millis(free_at.saturating_sub(u64::try_from(now.timestamp_millis()).unwrap_or(0)));
    shop_kit::ratelimit::count_refusal("checkout");
    Err(Error::Problem(shop_kit::error::Problem::rate_limited(shop_kit::ratelimit::Decision::retry_after_secs(wait))))
}

/// The checkout itself: cart → current prices → stock hold → order + OrderPlaced.
async fn checkout(
    state: &AppState,
    caller: Caller,
    address: ShippingAddress,
    card_token: &str,
    idempotency_key: Option<&str>,
    render: RenderAnswer,
) -> Result<Order, Error> {
    within_checkout_rate(state, caller.user_id).await?;
    let cart = state
        .cart()
        .get_cart(acting_for(
            tonic::Request::new(GetCartRequest { user_id: caller.user_id.to_string() }),
            caller.user_id,
        ))
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
        .batch_get_products(acting_for(
            tonic::Request::new(BatchGetProductsRequest { product_ids: ids }),
            caller.user_id,
        ))
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
    match state.products().reserve_stock(acting_for(tonic::Request::new(reserve), caller.user_id)).await {
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
        shipment: None,
        delivered_at: None,
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
    match store_order(state, &order, card_token, idempotency_key, render).await {
        Ok(()) => {
            tracing::info!(order.id = %order.id, total = order.total_amount, "order placed");
            Ok(order)
        }
        Err(error) => {
            // Compensation: the order does not exist, so neither may its hold.
            release_hold(state, order_id, caller.user_id).await;
            Err(error)
        }
    }
}

/// The order, its OrderPlaced event and the idempotent answer, in one statement.
async fn store_order(
    state: &AppState,
    order: &Order,
    card_token: &str,
    idempotency_key: Option<&str>,
    render: RenderAnswer,
) -> Result<(), Error> {
    let event = state.topics().event(order.id.to_string(), &events::placed(order, card_token));
    let body = match idempotency_key {
        Some(_) => Some(render(order)?),
        None => None,
    };
    let answer =
        idempotency_key.zip(body.as_ref()).map(|(key, body)| store::StoredAnswer { key, status: CREATED, body });
    let mut connection = state.pool().acquire().await?;
    store::place(&mut connection, order, answer, &event).await
}

/// Gives an order's stock back now; if the product service cannot be reached, the hold
/// expires by itself (and `OrderCancelled` releases it too).
async fn release_hold(state: &AppState, order_id: Uuid, for_user: Uuid) {
    let release = ReleaseStockRequest { order_id: order_id.to_string() };
    if let Err(status) = state.products().release_stock(acting_for(tonic::Request::new(release), for_user)).await {
        tracing::warn!(order.id = %order_id, code = ?status.code(), "cannot release the hold now; it will expire");
    }
}

/// Cancels order `id` for `caller` (its owner or an admin): a pending order releases its
/// stock, a confirmed one is refunded (`OrderCancelled{refund}`). Returns the order after.
pub async fn cancel(state: &AppState, caller: Caller, id: Uuid) -> Result<Order, Error> {
    const REASON: &str = "cancelled by request";
    let mut transaction = state.pool().begin().await?;
    let owner = store::by_id(&mut transaction, id).await?.ok_or(Error::OrderNotFound)?.user_id;
    caller.require_owner_or_admin(owner)?;
    let before = store::transition(&mut transaction, id, OrderStatus::Cancelled, Some(REASON)).await?;
    let after = store::by_id(&mut transaction, id).await?.ok_or(Error::OrderNotFound)?;
    let refund = before.status == OrderStatus::Confirmed;
    let event = state.topics().event(id.to_string(), &events::cancelled(&after, REASON, refund));
    enqueue(&mut transaction, &event).await?;
    transaction.commit().await?;
    if before.status == OrderStatus::PendingPayment {
        // Give the stock back now; the product service also does on OrderCancelled.
        release_hold(state, id, caller.user_id).await;
    }
    Ok(after)
}
