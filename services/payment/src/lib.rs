//! The payment service: takes the payment of every placed order, once, and refunds
//! cancelled paid orders.
//!
//! It consumes `OrderPlaced` and `OrderCancelled` from `shop.order.v1` and publishes
//! `PaymentSucceeded`, `PaymentFailed` and `PaymentRefunded` on `shop.payment.v1` (key =
//! order id) through the outbox. Payments take two steps: the consumer records what is to
//! be done (a `pending` charge, a `refund_pending` refund) and commits; the [`worker`] calls
//! the provider outside any transaction and records the outcome. Charges go through a
//! [`provider::PaymentProvider`]: the built-in [`provider::TestProvider`] understands the
//! test card tokens, [`provider::RemoteProvider`] speaks to one over HTTP.
//!
//! # Layout
//! - [`config`]: environment variables.
//! - [`app`]: state, server, outbox relay, the order-event consumer.
//! - [`error`]: the service's errors and the one place they become problems.
//! - [`domain`]: the payment and its status ([`domain::PaymentStatus`]).
//! - [`provider`]: the provider trait, the test provider and the HTTP one.
//! - [`events`]: what each order event records (a pending charge, a pending refund).
//! - [`worker`]: the provider calls, their leases, lookups and retries, and the payment events.
//! - [`http`]: `GET /v1/payments`, a thin adapter over [`store`].
//! - [`grpc`]: `shop.payment.v1.PaymentService`, payments by order and by user.
//! - [`store`]: SQL for payments.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod http;
pub mod provider;
pub mod store;
pub mod worker;

/// This service's name: its telemetry, consumer group and server.
pub const SERVICE: &str = "payment-service";

/// The embedded migrations of `shop_payment`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
