//! The order service: checkout from the cart, orders and their state machine.
//!
//! `POST /v1/orders` reads the caller's cart (cart service, the caller's token forwarded),
//! re-prices every line from the product service (the authority on what is charged), holds
//! the stock (`ReserveStock`, idempotent by order id), then stores the order and its
//! `OrderPlaced` event in one transaction; if that fails, the hold is released. An
//! `Idempotency-Key` makes retries safe: the first answer is stored and replayed.
//!
//! # Layout
//! - [`config`]: environment variables.
//! - [`app`]: state, clients of the cart and product services, server, outbox relay.
//! - [`error`]: errors and their problems/statuses.
//! - [`domain`]: addresses, card tokens, the order state machine.
//! - [`events`]: what payment events do to orders (confirm, cancel, refund a late payment).
//! - [`http`]: the REST routes under `/v1/orders`.
//! - [`grpc`]: the gRPC adapter, `shop.order.v1.OrderService`.
//! - [`store`]: SQL for orders, lines and idempotency keys.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod http;
pub mod store;

/// The topic of order events, key = order id.
pub const ORDER_TOPIC: &str = "shop.order.v1";

/// The topic of payment events, which this service consumes.
pub const PAYMENT_TOPIC: &str = "shop.payment.v1";

/// The embedded migrations of `shop_order`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
