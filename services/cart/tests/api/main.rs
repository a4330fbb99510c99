//! The cart service's integration tests: the cart service alone in-process, real Redis and
//! broker, tokens from a test issuer's JWKS, products from a stand-in catalog
//! (`shop_testkit::standins::Catalog`). The cart with the real product service behind it is
//! tested in `tests/e2e` (package `shop-e2e`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

mod cart;
mod helpers;
mod stop;
