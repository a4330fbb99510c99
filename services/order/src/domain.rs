//! Pure rules: the order and its lines, the shipping address, the card token, and the
//! order state machine.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shop_kit::{api::Money, error::FieldError};
use utoipa::ToSchema;
use uuid::Uuid;

/// Where an order goes. Every text is trimmed and bounded; `country` is ISO 3166-1 alpha-2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShippingAddress {
    /// At most 100 characters, not only spaces, no control characters (as `line1`, `city` and
    /// `postal_code`, at their own lengths); stored trimmed.
    #[schema(
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    #[schema(
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub line1: String,
    /// Optional; blank is the same as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub line2: Option<String>,
    #[schema(
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub city: String,
    /// Optional; blank is the same as absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub region: Option<String>,
    #[schema(
        max_length = 20,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 (`US`, `DE`); stored upper-case.
    #[schema(
        pattern = r"^[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*[A-Za-z]{2}[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$"
    )]
    pub country: String,
}

/// A text as typed: at most `max` characters as sent (what the schema's `maxLength` counts), no
/// control characters, not only spaces; trimmed.
fn bounded(value: &str, field: &str, max: usize, errors: &mut Vec<FieldError>) -> String {
    let trimmed = value.trim();
    if trimmed.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        errors.push(FieldError::new(
            format!("shipping_address.{field}"),
            format!("must be 1 to {max} characters, not only spaces, no control characters"),
        ));
    }
    trimmed.to_owned()
}

/// An optional line: absent when blank, else as [`bounded`].
fn optional(value: Option<&str>, field: &str, max: usize, errors: &mut Vec<FieldError>) -> Option<String> {
    let value = value?;
    if value.trim().is_empty() && value.chars().count() <= max && !value.chars().any(char::is_control) {
        return None;
    }
    Some(bounded(value, field, max, errors))
}

impl ShippingAddress {
    /// The cleaned address, or every failing field.
    pub fn validate(&self) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let country = self.country.trim().to_ascii_uppercase();
        if country.len() != 2 || !country.bytes().all(|byte| byte.is_ascii_uppercase()) {
            errors
                .push(FieldError::new("shipping_address.country", "must be an ISO 3166-1 alpha-2 code like US or DE"));
        }
        let clean = Self {
            name: bounded(&self.name, "name", 100, &mut errors),
            line1: bounded(&self.line1, "line1", 200, &mut errors),
            line2: optional(self.line2.as_deref(), "line2", 200, &mut errors),
            city: bounded(&self.city, "city", 100, &mut errors),
            region: optional(self.region.as_deref(), "region", 100, &mut errors),
            postal_code: bounded(&self.postal_code, "postal_code", 20, &mut errors),
            country,
        };
        if errors.is_empty() { Ok(clean) } else { Err(errors) }
    }
}

/// One line of an order, priced when it was placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub name: String,
    pub quantity: i32,
    pub unit_price_amount: i64,
    pub currency: String,
}

/// An order: what was bought, at which prices, by whom, and where it is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    pub total_amount: i64,
    pub currency: String,
    pub shipping_address: ShippingAddress,
    pub failure_reason: Option<String>,
    pub lines: Vec<OrderLine>,
    /// Set once the order is shipped.
    pub shipment: Option<Shipment>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How a shipped order travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Shipment {
    /// The carrier's name, 1 to 64 characters.
    pub carrier: String,
    /// The carrier's tracking number: 1 to 64 of `A-Z a-z 0-9 -`.
    pub tracking_number: String,
    pub shipped_at: DateTime<Utc>,
}

impl Shipment {
    /// Checks what an admin sent (trimmed), naming each bad field.
    pub fn validate(carrier: &str, tracking_number: &str) -> Result<(String, String), Vec<FieldError>> {
        // Lengths and control characters as sent: what the schema's `maxLength` and `pattern` say.
        let raw_carrier = carrier;
        let (carrier, tracking_number) = (carrier.trim(), tracking_number.trim());
        let mut errors = Vec::new();
        if carrier.is_empty() || raw_carrier.chars().count() > 64 || raw_carrier.chars().any(char::is_control) {
            errors
                .push(FieldError::new("carrier", "must be 1 to 64 characters, not only spaces, no control characters"));
        }
        let tracking_ok = !tracking_number.is_empty()
            && tracking_number.len() <= 64
            && tracking_number.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
        if !tracking_ok {
            errors.push(FieldError::new("tracking_number", "must be 1 to 64 of A-Z, a-z, 0-9 and -"));
        }
        if errors.is_empty() { Ok((carrier.to_owned(), tracking_number.to_owned())) } else { Err(errors) }
    }
}

impl OrderLine {
    pub fn unit_price(&self) -> Money {
        Money { amount: self.unit_price_amount, currency: self.currency.clone() }
    }

    /// The unit price times the quantity (checked when the order was placed).
    pub fn line_total(&self) -> Money {
        let unit_price = self.unit_price();
        unit_price.times(i64::from(self.quantity)).unwrap_or(Money { amount: 0, currency: unit_price.currency })
    }
}

impl Order {
    pub fn total(&self) -> Money {
        Money { amount: self.total_amount, currency: self.currency.clone() }
    }
}

/// A payment provider's card token, never a card number: 1 to 100 of `A-Z a-z 0-9 _ -`,
/// and not [a card number](looks_like_card_number). Checked before the request is stored,
/// published or logged anywhere; the error does not repeat the value.
pub fn validate_card_token(token: &str) -> Result<(), FieldError> {
    if looks_like_card_number(token) {
        return Err(FieldError::new(
            "payment.card_token",
            "looks like a card number; send the token your payment provider issued for the card instead",
        ));
    }
    // A letter or `_` somewhere: every provider's token has one, and no card number does.
    let valid = !token.is_empty()
        && token.len() <= 100
        && token.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
        && token.bytes().any(|byte| byte.is_ascii_alphabetic() || byte == b'_');
    if valid { Ok(()) } else { Err(FieldError::new("payment.card_token", "must be a card token such as tok_visa")) }
}

/// 13 to 19 digits, spaces and dashes aside, that pass the Luhn check: what a primary
/// account number looks like (ISO/IEC 7812).
pub fn looks_like_card_number(text: &str) -> bool {
    if !text.bytes().all(|byte| byte.is_ascii_digit() || byte == b' ' || byte == b'-') {
        return false;
    }
    let digits: Vec<u32> = text.bytes().filter(u8::is_ascii_digit).map(|byte| u32::from(byte - b'0')).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    // From the right, every second digit doubled (less 9 when over 9); the sum ends in 0.
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(
            |(index, &digit)| {
                if index % 2 == 1 { if digit * 2 > 9 { digit * 2 - 9 } else { digit * 2 } } else { digit }
            },
        )
        .sum();
    sum.is_multiple_of(10)
}

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Confirmed,
    Cancelled,
    Shipped,
    Delivered,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "pending_payment",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending_payment" => Some(Self::PendingPayment),
            "confirmed" => Some(Self::Confirmed),
            "cancelled" => Some(Self::Cancelled),
            "shipped" => Some(Self::Shipped),
            "delivered" => Some(Self::Delivered),
            _ => None,
        }
    }

    /// The states an order may come from to reach `self`.
    pub fn allowed_from(self) -> &'static [Self] {
        match self {
            Self::PendingPayment => &[],
            Self::Confirmed => &[Self::PendingPayment],
            // Once shipped, an order is no longer cancelled (a return is another process).
            Self::Cancelled => &[Self::PendingPayment, Self::Confirmed],
            Self::Shipped => &[Self::Confirmed],
            Self::Delivered => &[Self::Shipped],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address() -> ShippingAddress {
        ShippingAddress {
            name: " Ada ".into(),
            line1: "1 Main St".into(),
            line2: Some("  ".into()),
            city: "Springfield".into(),
            region: None,
            postal_code: "12345".into(),
            country: "us".into(),
        }
    }

    #[test]
    fn addresses_are_cleaned_and_bounded() {
        let clean = address().validate().unwrap();
        assert_eq!((clean.name.as_str(), clean.country.as_str(), clean.line2), ("Ada", "US", None));
        let cases: Vec<(ShippingAddress, &str)> = vec![
            (ShippingAddress { country: "USA".into(), ..address() }, "shipping_address.country"),
            (ShippingAddress { country: "1A".into(), ..address() }, "shipping_address.country"),
            (ShippingAddress { name: String::new(), ..address() }, "shipping_address.name"),
            (ShippingAddress { postal_code: "x".repeat(21), ..address() }, "shipping_address.postal_code"),
            (ShippingAddress { city: "a\nb".into(), ..address() }, "shipping_address.city"),
        ];
        for (case, field) in cases {
            let errors = case.validate().unwrap_err();
            assert_eq!(errors[0].field, field);
        }
    }

    #[test]
    fn card_numbers_are_recognised_in_any_spelling() {
        let numbers = [
            "4242424242424242",
            "4242 4242 4242 4242",
            "4242-4242-4242-4242",
            "378282246310005",
            "6011 1111 1111 1117",
            "4222222222222",
            "6250941006528599",
            "4000 0566 5566 5556 007",
        ];
        for number in numbers {
            assert!(looks_like_card_number(number), "{number}");
            let refused = validate_card_token(number).unwrap_err();
            assert!(refused.message.contains("card number"), "{number}: {}", refused.message);
            assert!(!refused.message.contains(number), "the error does not repeat the number");
        }
        let not_numbers = [
            "tok_visa",
            "4242424242424241",
            "424242424242",
            "42424242424242424242",
            "4242_4242_4242_4242",
            "tok_4242424242424242",
            "",
        ];
        for text in not_numbers {
            assert!(!looks_like_card_number(text), "{text}");
        }
    }

    #[test]
    fn shipments_are_checked() {
        assert_eq!(
            Shipment::validate(" DHL ", "JD0146-0001").unwrap(),
            (String::from("DHL"), String::from("JD0146-0001"))
        );
        let fields = |carrier: &str, tracking: &str| -> Vec<String> {
            Shipment::validate(carrier, tracking).unwrap_err().into_iter().map(|error| error.field).collect()
        };
        assert_eq!(fields("", "X1"), ["carrier"]);
        assert_eq!(fields(&"c".repeat(65), "X1"), ["carrier"]);
        assert_eq!(fields("UPS", "1Z 999"), ["tracking_number"]);
        assert_eq!(fields(" ", &"9".repeat(65)), ["carrier", "tracking_number"]);
    }

    #[test]
    fn card_tokens_and_transitions() {
        assert!(validate_card_token("tok_visa").is_ok());
        // The schema's pattern: a letter or `_` somewhere, so digits and dashes alone (what a
        // card number is made of) never are a token.
        for bad in ["", "4242 4242 4242 4242", "tok;drop", &"x".repeat(101), "1234", "12-34"] {
            assert!(validate_card_token(bad).is_err(), "token {bad:?}");
        }
        use OrderStatus::*;
        assert!(Confirmed.allowed_from().contains(&PendingPayment));
        assert!(!Confirmed.allowed_from().contains(&Cancelled), "a cancelled order never comes back");
        assert!(Cancelled.allowed_from().contains(&Confirmed), "a confirmed order may be cancelled (refund)");
        assert!(Shipped.allowed_from() == [Confirmed], "only a paid order ships");
        assert!(Delivered.allowed_from() == [Shipped]);
        assert!(!Cancelled.allowed_from().contains(&Shipped), "a shipped order is not cancelled");
        assert!(!Cancelled.allowed_from().contains(&Delivered));
        for status in [PendingPayment, Confirmed, Cancelled, Shipped, Delivered] {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
        }
    }
}
