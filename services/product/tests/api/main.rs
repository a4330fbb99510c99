//! The product service's integration tests: the real application on an ephemeral port,
//! against real Postgres and Redis, with tokens from a test issuer's JWKS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

mod catalog;
mod helpers;
mod inventory;
mod stop;
