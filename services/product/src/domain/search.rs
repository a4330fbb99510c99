//! Search terms: what a shopper typed, reduced to words that are safe in a `tsquery`.
//!
//! Every word becomes a prefix match (`lamp:*`), all words must match (`&`), and anything
//! that is not a letter or digit separates words, so no input can inject `tsquery` syntax.

/// At most this many words are searched.
const MAX_WORDS: usize = 8;
/// The longest `q` accepted.
pub(super) const MAX_QUERY_LEN: usize = 200;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchTerms(Vec<String>);

impl SearchTerms {
    /// `None` when `q` has no searchable word; an error when it is too long.
    pub fn parse(q: &str) -> Result<Option<Self>, String> {
        if q.chars().count() > MAX_QUERY_LEN {
            return Err(format!("must be at most {MAX_QUERY_LEN} characters"));
        }
        let words: Vec<String> = q
            .split(|c: char| !c.is_alphanumeric())
            // Lower case can add a mark that is not a letter ("İ" becomes "i" and a combining
            // dot): only letters and digits go on.
            .map(|word| word.to_lowercase().chars().filter(|c| c.is_alphanumeric()).take(50).collect::<String>())
            .filter(|word| !word.is_empty())
            .take(MAX_WORDS)
            .collect();
        Ok((!words.is_empty()).then_some(Self(words)))
    }

    /// The `to_tsquery('english', ...)` text: `word:* & word:*`.
    pub fn to_tsquery(&self) -> String {
        self.0.iter().map(|word| format!("{word}:*")).collect::<Vec<_>>().join(" & ")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn queries_are_sanitised() {
        let cases = [
            ("desk lamp", Some("desk:* & lamp:*")),
            ("  LAMP ", Some("lamp:*")),
            ("lamp') | !(x", Some("lamp:* & x:*")),
            ("!!! & |", None),
            ("İstanbul lamp", Some("istanbul:* & lamp:*")),
            ("\u{307}", None),
            ("", None),
        ];
        for (q, expected) in cases {
            assert_eq!(
                SearchTerms::parse(q).unwrap().map(|terms| terms.to_tsquery()).as_deref(),
                expected,
                "case {q:?}"
            );
        }
        assert!(SearchTerms::parse(&"x".repeat(201)).is_err());
    }

    proptest! {
        #[test]
        fn only_words_reach_the_tsquery(q in ".{0,200}") {
            if let Ok(Some(terms)) = SearchTerms::parse(&q) {
                let text = terms.to_tsquery();
                prop_assert!(text.split(" & ").all(|part| part.ends_with(":*")
                    && part.trim_end_matches(":*").chars().all(char::is_alphanumeric)));
            }
        }
    }
}
