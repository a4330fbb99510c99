//! The user service: accounts, credentials, tokens and roles.
//!
//! It owns the Postgres database `shop_user`, issues EdDSA access tokens that every other
//! service verifies through its JWKS (`GET /.well-known/jwks.json`), and rotates refresh
//! tokens with reuse detection: presenting a refresh token a second time revokes its
//! whole family, so a stolen token is good for at most one use. A registration publishes
//! `UserRegistered` on `shop.user.v1` through the transactional outbox.
//!
//! # Layout
//! - [`config`]: every environment variable, parsed and checked before anything binds.
//! - [`app`]: builds the state, binds the port, runs until shutdown.
//! - [`error`]: the service's errors and the one place they become problems/statuses.
//! - [`domain`]: pure rules: [`domain::Email`], [`domain::Password`], [`domain::UserName`],
//!   password hashing, refresh-token secrets.
//! - [`events`]: the events it publishes (`UserRegistered`), built from the domain user.
//! - [`http`]: the REST routes, one module per resource.
//! - [`grpc`]: `shop.user.v1.UserService`, a thin adapter over the store.
//! - [`store`]: SQL (users, refresh tokens) and the Redis login limiter.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod grpc;
pub mod http;
pub mod store;

/// This service's name: its telemetry and server.
pub const SERVICE: &str = "user-service";

/// The embedded migrations of `shop_user`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
