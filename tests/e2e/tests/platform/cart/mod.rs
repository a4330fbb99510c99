//! The cart with the real product service behind it: lines priced from the catalog, the
//! catalog's refusals (unknown, inactive, deleted, other currency) as the cart's problems,
//! and the cart's gRPC and events with real products in it.

mod helpers;
mod lines;
