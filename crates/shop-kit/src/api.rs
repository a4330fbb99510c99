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

/// Reads a whole number that JSON may spell `3` or `3.0`: JSON Schema counts both as an
/// `integer`, so a client generated from the OpenAPI document may send either. `3.5`, and a
/// number outside `i64`, are refused (a 422 naming the field).
/// `#[serde(deserialize_with = "shop_kit::api::whole_number")]`.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct WholeNumber;
    impl serde::de::Visitor<'_> for WholeNumber {
        type Value = i64;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a whole number")
        }

        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<i64, E> {
            Ok(value)
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<i64, E> {
            i64::try_from(value).map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(value), &self))
        }

        fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<i64, E> {
            // 2^63 is exactly representable; below it every whole f64 fits in an i64.
            const LIMIT: f64 = 9_223_372_036_854_775_808.0;
            if value.fract() == 0.0 && (-LIMIT..LIMIT).contains(&value) {
                #[expect(clippy::cast_possible_truncation, reason = "whole and within i64, checked above")]
                return Ok(value as i64);
            }
            Err(E::invalid_value(serde::de::Unexpected::Float(value), &self))
        }
    }
    deserializer.deserialize_any(WholeNumber)
}

/// An amount a client sets (a price): what [`Money::validate`] accepts, in the schema too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MoneyInput {
    /// Minor units (cents for USD), 0 to 10^12.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    #[serde(deserialize_with = "whole_number")]
    pub amount: i64,
    /// ISO 4217, three upper-case letters.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

impl From<MoneyInput> for Money {
    fn from(input: MoneyInput) -> Self {
        Self { amount: input.amount, currency: input.currency }
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

/// Decodes a cursor made by [`encode_cursor`]: `None` for an empty one (`?cursor=` is the
/// first page, as no cursor is), 400 `invalid_cursor` for anything this API did not return.
pub fn decode_cursor<T: DeserializeOwned>(cursor: &str) -> Result<Option<T>, Problem> {
    if cursor.is_empty() {
        return Ok(None);
    }
    let invalid = || Problem::bad_request("invalid_cursor", "the cursor is not one this API returned");
    if cursor.len() > 512 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map(Some).map_err(|_| invalid())
}

/// One page out of `rows`, fetched with `LIMIT limit + 1`: the first `limit` rows, and the
/// key of the last one when there are more (the position the next page continues from).
pub fn take_page<R, K>(mut rows: Vec<R>, limit: u32, key: impl Fn(&R) -> K) -> (Vec<R>, Option<K>) {
    let limit = limit as usize;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more { rows.last().map(key) } else { None };
    (rows, next)
}

/// A gRPC [`PageRequest`](shop_proto::shop::common::v1::PageRequest) checked as REST's
/// `?limit=` and `?cursor=` are (`limit` 0 means the default): the limit, and the position
/// to continue from.
pub fn page_request<T: DeserializeOwned>(
    page: Option<&shop_proto::shop::common::v1::PageRequest>,
) -> Result<(u32, Option<T>), Problem> {
    let Some(page) = page else { return Ok((DEFAULT_LIMIT, None)) };
    let limit = page_limit((page.limit != 0).then_some(i64::from(page.limit)))?;
    let after = decode_cursor(&page.cursor)?;
    Ok((limit, after))
}

/// The gRPC [`PageInfo`](shop_proto::shop::common::v1::PageInfo) of a page whose next one
/// continues from `next` (an empty cursor on the last page).
pub fn page_info<T: Serialize>(next: Option<&T>) -> shop_proto::shop::common::v1::PageInfo {
    shop_proto::shop::common::v1::PageInfo { next_cursor: next.map(encode_cursor).unwrap_or_default() }
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
    fn a_whole_number_may_be_spelled_as_a_float() {
        #[derive(Debug, Deserialize)]
        struct Quantity {
            #[serde(deserialize_with = "whole_number")]
            value: i64,
        }
        let read = |json: &str| serde_json::from_str::<Quantity>(json).map(|quantity| quantity.value);
        for (json, want) in
            [(r#"{"value":3}"#, 3), (r#"{"value":3.0}"#, 3), (r#"{"value":-2.0}"#, -2), (r#"{"value":1e3}"#, 1000)]
        {
            assert_eq!(read(json).unwrap(), want, "{json}");
        }
        for json in [r#"{"value":3.5}"#, r#"{"value":"3"}"#, r#"{"value":1e19}"#, r#"{"value":18446744073709551615}"#] {
            assert!(read(json).is_err(), "{json} must be refused");
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_tampering() {
        let cursor = encode_cursor(&(0.5_f32, "abc"));
        assert_eq!(decode_cursor::<(f32, String)>(&cursor).unwrap(), Some((0.5, "abc".to_owned())));
        assert_eq!(decode_cursor::<(f32, String)>("").unwrap(), None, "an empty cursor is the first page");
        for bad in ["!!!", "bm90IGpzb24", &"A".repeat(600)] {
            assert_eq!(decode_cursor::<(f32, String)>(bad).unwrap_err().code, "invalid_cursor", "case {bad:?}");
        }
        assert_eq!(page_limit(None).unwrap(), 20);
        assert_eq!(page_limit(Some(100)).unwrap(), 100);
        assert!(page_limit(Some(0)).is_err() && page_limit(Some(101)).is_err());
    }

    #[test]
    fn a_page_is_cut_at_its_limit_and_knows_where_the_next_starts() {
        assert_eq!(take_page(vec![5, 4, 3], 2, |row| *row), (vec![5, 4], Some(4)));
        assert_eq!(take_page(vec![5, 4], 2, |row| *row), (vec![5, 4], None));
        assert_eq!(take_page(Vec::<i32>::new(), 2, |row| *row), (vec![], None));
        let (limit, after) = page_request::<u32>(None).unwrap();
        assert_eq!((limit, after), (DEFAULT_LIMIT, None));
        let page = shop_proto::shop::common::v1::PageRequest { limit: 0, cursor: encode_cursor(&7_u32) };
        assert_eq!(page_request::<u32>(Some(&page)).unwrap(), (DEFAULT_LIMIT, Some(7)));
        let too_many = shop_proto::shop::common::v1::PageRequest { limit: 101, cursor: String::new() };
        assert_eq!(page_request::<u32>(Some(&too_many)).unwrap_err().status, 422);
        let garbage = shop_proto::shop::common::v1::PageRequest { limit: 5, cursor: "x!".into() };
        assert_eq!(page_request::<u32>(Some(&garbage)).unwrap_err().code, "invalid_cursor");
        assert_eq!(page_info(Some(&7_u32)).next_cursor, encode_cursor(&7_u32));
        assert!(page_info::<u32>(None).next_cursor.is_empty());
    }
}
