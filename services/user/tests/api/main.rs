//! The user service's integration tests: the real application on an ephemeral port,
//! against real Postgres and Redis, one fresh database and key prefix per test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

mod auth;
mod events;
mod grpc;
mod helpers;
mod platform;
mod stop;
mod users;
