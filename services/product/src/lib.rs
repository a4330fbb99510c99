//! The product service: the catalog, search, categories, inventory and reservations.
//!
//! It owns the Postgres database `shop_product` and keeps a Redis read-through cache of
//! single products. Reads are public; writes need the admin role. Stock is held for orders
//! by `ReserveStock` (gRPC), all or nothing and idempotent by order id, and holds that are
//! not confirmed in time expire on their own.
//!
//! # Layout
//! - [`config`]: environment variables.
//! - [`app`]: state, server, the reservation sweeper.
//! - [`error`]: errors and their problems/statuses.
//! - [`domain`]: validated newtypes (SKU, names, slugs, stock levels) and search terms.
//! - [`http`]: `/v1/products`, `/v1/categories`.
//! - [`events`]: order events: holds sold, released, or returned on hand.
//! - [`grpc`]: the gRPC adapter, `shop.product.v1.ProductService`.
//! - [`store`]: SQL for the catalog and inventory; the product cache.
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
pub const SERVICE: &str = "product-service";

/// The embedded migrations of `shop_product`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
