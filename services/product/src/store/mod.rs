//! Storage: SQL for the catalog and inventory (functions take a connection, so callers
//! decide the transaction), and the Redis cache of single products.

pub mod cache;
pub mod inventory;
pub mod products;

pub use cache::ProductCache;
pub use products::{Listing, NewProduct, Product, ProductChanges};
