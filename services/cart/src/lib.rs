//! The cart service: one cart per user, kept in Redis.
//!
//! A line stores the quantity and a snapshot of the product's name and price taken from
//! the product service (gRPC, with a deadline) when the line was set; totals are computed
//! here in integer minor units. Every write is one Lua script, so two requests changing
//! the same cart at once cannot lose each other's update, and a cart expires after it has
//! been left alone for `CART_IDLE_TTL`.
//!
//! # Layout
//! - [`config`]: environment variables.
//! - [`app`]: state and server.
//! - [`error`]: errors and their problems/statuses.
//! - [`domain`]: the cart and its lines, quantities and totals.
//! - [`http`]: the REST routes under `/v1/cart`.
//! - [`events`]: `OrderPlaced` removes the ordered lines, exactly once.
//! - [`grpc`]: the gRPC adapter, `shop.cart.v1.CartService`, for the order service.
//! - [`store`]: the Redis layout and scripts.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod http;
pub mod store;

/// This service's name: its telemetry, consumer group and server.
pub const SERVICE: &str = "cart-service";
