//! Pure rules of the catalog: validated newtypes and search terms.

mod catalog;
mod search;

pub use catalog::{Description, ImageUrl, ProductName, Quantity, Sku, Slug, StockLevel};
pub use search::SearchTerms;
