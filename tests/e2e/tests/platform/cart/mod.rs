//! The cart with the real product service behind it: lines priced from the catalog, and the
//! catalog's refusals (unknown, inactive, deleted, other currency) as the cart's problems.
//! The cart's own behaviour is tested in its own package, against a stand-in catalog.

mod helpers;
mod lines;
