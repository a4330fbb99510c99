//! A person's display name.

/// The longest name accepted, in characters.
pub(super) const MAX_LEN: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    /// At most 100 characters as sent (the OpenAPI schema's `maxLength` counts those),
    /// no control characters, not only spaces; stored trimmed.
    pub fn parse(input: &str) -> Result<Self, String> {
        if input.chars().count() > MAX_LEN {
            return Err(format!("must be at most {MAX_LEN} characters"));
        }
        let name = input.trim();
        if name.is_empty() {
            return Err("must not be empty".into());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        let hundred = "é".repeat(100);
        let cases = [
            ("Ada Lovelace", true),
            ("  Ada ", true),
            (hundred.as_str(), true),
            ("", false),
            ("   ", false),
            ("Ada\u{0}", false),
            ("Ada\nLovelace", false),
        ];
        for (input, ok) in cases {
            assert_eq!(UserName::parse(input).is_ok(), ok, "case {input:?}");
        }
        assert!(UserName::parse(&"x".repeat(101)).is_err());
    }
}
