//! What one checkout can contain: the cart enforces it when lines are set, and the product
//! service refuses a stock hold beyond it (a hold is only ever a checkout's).

/// The most units of one product a cart line (and so a checkout) holds.
pub const MAX_LINE_QUANTITY: i64 = 99;

/// The most distinct products one cart (and so one checkout, and one stock hold) holds; also
/// the most ids a `BatchGetProducts` call carries, so a full cart's prices come in one call.
pub const MAX_CHECKOUT_LINES: usize = 100;
