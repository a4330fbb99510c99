//! The order service's integration tests: the real order, cart and product services
//! in-process, real Postgres, Redis and broker, tokens from a test issuer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

mod checkout;
mod e2e;
mod fault;
mod helpers;
mod saga;
