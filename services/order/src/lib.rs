//! The order service: checkout from the cart, orders and their state machine
//! (`pending_payment → confirmed → shipped → delivered`, `cancelled` before shipping).
//!
//! `POST /v1/orders` reads the caller's cart (cart service, the caller's token forwarded),
//! re-prices every line from the product service (the authority on what is charged), holds
//! the stock (`ReserveStock`, idempotent by order id), then stores the order and its
//! `OrderPlaced` event in one transaction; if that fails, the hold is released. An
//! `Idempotency-Key` makes retries safe: the first answer is stored and replayed.
//!
//! # Layout
//! - [`config`]: environment variables.
//! - [`app`]: state, clients of the cart and product services, the start-up.
//! - [`error`]: errors and their problems/statuses.
//! - [`domain`]: the order and its lines, addresses, card tokens, the state machine.
//! - [`checkout`]: placing and cancelling an order, whatever the transport.
//! - [`fulfilment`]: shipping and delivering a confirmed order (admins only).
//! - [`events`]: every order event, built from the domain order; what payment events do to
//!   orders (confirm, cancel, refund a late payment).
//! - [`http`]: the REST routes under `/v1/orders`, a thin adapter over [`checkout`].
//! - [`grpc`]: the gRPC adapter, `shop.order.v1.OrderService`.
//! - [`store`]: SQL for orders, lines and idempotency keys.
#![forbid(unsafe_code)]

pub mod app;
pub mod checkout;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod fulfilment;
pub mod grpc;
pub mod http;
pub mod store;

/// This service's name: its telemetry, consumer group and server.
pub const SERVICE: &str = "order-service";

/// The embedded migrations of `shop_order`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
