//! The REST conventions every service shares (docs/architecture.md): money as integer minor
//! units of an ISO 4217 currency, list pages with opaque cursors, and page limits.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::ToSchema;

use crate::error::{FieldError, Problem};

/// `{"amount": 1999, "currency": "USD"}`: integer minor units, never floats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Money {
    /// Minor units (cents for USD).
    pub amount: i64,
    /// ISO 4217, three upper-case letters.
    pub currency: String,
}

impl Money {
    /// Checks an amount a client sent: not negative, at most 10^12 minor units, and a
    /// well-formed currency code. `field` names it in the 422.
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        if !(0..=1_000_000_000_000).contains(&self.amount) {
            return Err(FieldError::new(format!("{field}.amount"), "must be between 0 and 1000000000000 minor units"));
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|byte| byte.is_ascii_uppercase()) {
            return Err(FieldError::new(format!("{field}.currency"), "must be an ISO 4217 code like USD"));
        }
        Ok(())
    }

    /// `self × quantity`, or `None` on overflow.
    pub fn times(&self, quantity: i64) -> Option<Self> {
        Some(Self { amount: self.amount.checked_mul(quantity)?, currency: self.currency.clone() })
    }
}

impl From<Money> for shop_proto::shop::common::v1::Money {
    fn from(money: Money) -> Self {
        Self { amount: money.amount, currency: money.currency }
    }
}

impl From<shop_proto::shop::common::v1::Money> for Money {
    fn from(money: shop_proto::shop::common::v1::Money) -> Self {
        Self { amount: money.amount, currency: money.currency }
    }
}

/// One page of a list.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The default and largest `?limit=`.
pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// A `?limit=` checked against 1..=100 (20 when absent).
pub fn page_limit(limit: Option<i64>) -> Result<u32, Problem> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(limit) if (1..=i64::from(MAX_LIMIT)).contains(&limit) => Ok(u32::try_from(limit).unwrap_or(DEFAULT_LIMIT)),
        Some(_) => {
            Err(Problem::validation(vec![FieldError::new("limit", format!("must be between 1 and {MAX_LIMIT}"))]))
        }
    }
}

/// Encodes a keyset position as an opaque cursor.
pub fn encode_cursor<T: Serialize>(position: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).unwrap_or_default())
}

/// Decodes a cursor made by [`encode_cursor`]; 400 `invalid_cursor` for anything else.
pub fn decode_cursor<T: DeserializeOwned>(cursor: &str) -> Result<T, Problem> {
    let invalid = || Problem::bad_request("invalid_cursor", "the cursor is not one this API returned");
    if cursor.len() > 512 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_rules() {
        let cases = [
            (1999, "USD", true),
            (0, "EUR", true),
            (-1, "USD", false),
            (1, "usd", false),
            (1, "US", false),
            (1, "USDX", false),
            (1_000_000_000_001, "USD", false),
        ];
        for (amount, currency, ok) in cases {
            let money = Money { amount, currency: currency.into() };
            assert_eq!(money.validate("price").is_ok(), ok, "case {amount} {currency}");
        }
        assert_eq!(Money { amount: 250, currency: "USD".into() }.times(3).unwrap().amount, 750);
        assert!(Money { amount: i64::MAX, currency: "USD".into() }.times(2).is_none());
    }

    #[test]
    fn cursors_round_trip_and_reject_tampering() {
        let cursor = encode_cursor(&(0.5_f32, "abc"));
        assert_eq!(decode_cursor::<(f32, String)>(&cursor).unwrap(), (0.5, "abc".to_owned()));
        for bad in ["", "!!!", "bm90IGpzb24", &"A".repeat(600)] {
            assert_eq!(decode_cursor::<(f32, String)>(bad).unwrap_err().code, "invalid_cursor", "case {bad:?}");
        }
        assert_eq!(page_limit(None).unwrap(), 20);
        assert_eq!(page_limit(Some(100)).unwrap(), 100);
        assert!(page_limit(Some(0)).is_err() && page_limit(Some(101)).is_err());
    }
}
