//! The cart service's integration tests: the real cart and product services in-process,
//! real Postgres and Redis, tokens from a test issuer's JWKS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

mod cart;
mod helpers;
