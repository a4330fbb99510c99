//! Validated catalog values. Each `parse` says why a value is refused, for a 422.

/// A stock-keeping unit: 1 to 64 of `A-Z 0-9 - _ .`, stored upper-case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sku(String);

impl Sku {
    pub fn parse(input: &str) -> Result<Self, String> {
        let sku = input.trim().to_ascii_uppercase();
        if sku.is_empty() || sku.len() > 64 {
            return Err("must be 1 to 64 characters".into());
        }
        if !sku.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte)) {
            return Err("may contain only letters, digits, '-', '_' and '.'".into());
        }
        Ok(Self(sku))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product's name: at most 200 characters as sent, not only spaces, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    pub fn parse(input: &str) -> Result<Self, String> {
        // The length as sent: the OpenAPI schema's `maxLength` counts what the client sends.
        let name = input.trim();
        if name.is_empty() || input.chars().count() > 200 {
            return Err("must be 1 to 200 characters".into());
        }
        if input.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A description: at most 5000 characters as sent (newlines and tabs allowed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub fn parse(input: &str) -> Result<Self, String> {
        let text = input.trim();
        if input.chars().count() > 5000 {
            return Err("must be at most 5000 characters".into());
        }
        if input.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err("must not contain control characters".into());
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An image address: `http(s)://`, at most 2048 characters as sent, no spaces inside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageUrl(String);

impl ImageUrl {
    pub fn parse(input: &str) -> Result<Self, String> {
        let url = input.trim();
        let host = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        match host {
            Some(rest)
                if !rest.is_empty()
                    && input.chars().count() <= 2048
                    && !url.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                Ok(Self(url.to_owned()))
            }
            _ => Err("must be an http(s) URL of at most 2048 characters".into()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A category slug: 1 to 50 of `a-z 0-9 -`, stored lower-case.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slug(String);

impl Slug {
    pub fn parse(input: &str) -> Result<Self, String> {
        let slug = input.trim().to_ascii_lowercase();
        let valid = !slug.is_empty()
            && slug.len() <= 50
            && !slug.starts_with('-')
            && !slug.ends_with('-')
            && slug.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
        if valid { Ok(Self(slug)) } else { Err("must be 1 to 50 of a-z, 0-9 and '-'".into()) }
    }

    /// A display name: `home-office` → `Home office`.
    pub fn display_name(&self) -> String {
        let spaced = self.0.replace('-', " ");
        let mut chars = spaced.chars();
        chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Units on hand: 0 to 1,000,000.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StockLevel(i32);

impl StockLevel {
    pub const MAX: i64 = 1_000_000;

    pub fn parse(value: i64) -> Result<Self, String> {
        if (0..=Self::MAX).contains(&value) {
            Ok(Self(i32::try_from(value).unwrap_or(0)))
        } else {
            Err(format!("must be between 0 and {}", Self::MAX))
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// Units asked for in one reservation line: 1 to 10,000.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity(i32);

impl Quantity {
    pub fn parse(value: i64) -> Result<Self, String> {
        if (1..=10_000).contains(&value) {
            Ok(Self(i32::try_from(value).unwrap_or(1)))
        } else {
            Err("must be between 1 and 10000".into())
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn cases() {
        assert_eq!(Sku::parse(" ab-12_x.y ").unwrap().as_str(), "AB-12_X.Y");
        for bad in ["", "a b", "ä", &"x".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "sku {bad:?}");
        }
        assert!(ProductName::parse("Desk lamp").is_ok());
        for bad in ["", "  ", "a\u{0}", &"x".repeat(201)] {
            assert!(ProductName::parse(bad).is_err(), "name {bad:?}");
        }
        assert!(Description::parse("two\nlines").is_ok());
        assert!(Description::parse(&"x".repeat(5001)).is_err());
        assert!(ImageUrl::parse("https://img.example.com/a.png").is_ok());
        for bad in ["ftp://x", "https://", "javascript:alert(1)", "https://a b"] {
            assert!(ImageUrl::parse(bad).is_err(), "url {bad:?}");
        }
        assert_eq!(Slug::parse("Home-Office").unwrap().display_name(), "Home office");
        for bad in ["", "-a", "a-", "a_b", "a b"] {
            assert!(Slug::parse(bad).is_err(), "slug {bad:?}");
        }
        assert!(StockLevel::parse(0).is_ok() && StockLevel::parse(1_000_000).is_ok());
        assert!(StockLevel::parse(-1).is_err() && StockLevel::parse(1_000_001).is_err());
        assert!(Quantity::parse(0).is_err() && Quantity::parse(1).is_ok() && Quantity::parse(10_001).is_err());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(input in ".{0,300}", number in any::<i64>()) {
            let _ = (Sku::parse(&input), ProductName::parse(&input), Description::parse(&input),
                ImageUrl::parse(&input), Slug::parse(&input), StockLevel::parse(number), Quantity::parse(number));
        }
    }
}
