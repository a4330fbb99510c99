//! The cart: lines with a price snapshot, quantities, totals in integer minor units.

use serde::{Deserialize, Serialize};
use shop_kit::api::Money;
use uuid::Uuid;

/// How many of one product a line holds: 1 to 99 ([`shop_proto::limits::MAX_LINE_QUANTITY`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity(i64);

impl Quantity {
    pub const MAX: i64 = shop_proto::limits::MAX_LINE_QUANTITY;

    pub fn parse(value: i64) -> Result<Self, String> {
        if (1..=Self::MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!("must be between 1 and {}", Self::MAX))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// One stored line: the quantity and the product as it was when the line was set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub product_id: Uuid,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
    /// When the buyer set it (Unix ms; 0 for lines stored before this existed), so a late
    /// `OrderPlaced` leaves lines set after the order alone.
    #[serde(default)]
    pub set_at_ms: i64,
}

/// A cart as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CartView {
    pub items: Vec<CartItem>,
    /// The sum of the lines; zero in the cart's currency (USD when empty).
    pub total: Money,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CartItem {
    pub product_id: Uuid,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
    pub line_total: Money,
}

/// The currency of an empty cart's zero total.
const DEFAULT_CURRENCY: &str = "USD";

impl CartView {
    /// Prices the lines; `None` if a total overflows (it cannot with the limits in force).
    pub fn from_lines(mut lines: Vec<Line>) -> Option<Self> {
        lines.sort_by_key(|line| line.product_id);
        let currency = lines.first().map_or(DEFAULT_CURRENCY.to_owned(), |line| line.unit_price.currency.clone());
        let mut total = 0_i64;
        let mut items = Vec::with_capacity(lines.len());
        for line in lines {
            let line_total = line.unit_price.times(line.quantity)?;
            total = total.checked_add(line_total.amount)?;
            items.push(CartItem {
                product_id: line.product_id,
                name: line.name,
                quantity: line.quantity,
                unit_price: line.unit_price,
                line_total,
            });
        }
        Some(Self { items, total: Money { amount: total, currency } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(price: i64, quantity: i64) -> Line {
        Line {
            product_id: Uuid::now_v7(),
            name: "x".into(),
            quantity,
            unit_price: Money { amount: price, currency: "EUR".into() },
            set_at_ms: 0,
        }
    }

    #[test]
    fn totals_are_exact_in_minor_units() {
        let cart = CartView::from_lines(vec![line(1999, 3), line(1, 99), line(0, 1)]).unwrap();
        assert_eq!(cart.total, Money { amount: 1999 * 3 + 99, currency: "EUR".into() });
        assert_eq!(cart.items.iter().map(|item| item.line_total.amount).sum::<i64>(), cart.total.amount);
        let empty = CartView::from_lines(Vec::new()).unwrap();
        assert_eq!(empty.total, Money { amount: 0, currency: "USD".into() });
        assert!(CartView::from_lines(vec![line(i64::MAX, 2)]).is_none());
        assert!(
            Quantity::parse(0).is_err()
                && Quantity::parse(1).is_ok()
                && Quantity::parse(99).is_ok()
                && Quantity::parse(100).is_err()
        );
    }
}
