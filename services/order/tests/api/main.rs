//! The order service's integration tests: the order service alone in-process, real
//! Postgres and broker, tokens from a test issuer, and stand-ins for the cart and product
//! services (`shop_testkit::standins::{Carts, Catalog}`). Payment events are published to the
//! topic directly. The order service with the real cart, product and payment services (the
//! checkout saga, the fault tests) is tested in `tests/e2e` (package `shop-e2e`).
#![expect(clippy::unwrap_used, reason = "tests fail loudly on purpose")]

mod checkout;
mod fulfilment;
mod helpers;
mod payments;
mod stop;
