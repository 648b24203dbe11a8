//! Postal addresses: free text over several lines with at least one letter or
//! digit; masked and tokenized letter by letter, punctuation and lines kept.

use super::{invalid, FieldKind, ValueError};
use rand::Rng;

pub(super) const MAX_INPUT_LEN: usize = 1024;

/// An address may span lines.
pub(super) const ALLOWED_CONTROLS: &[char] = &['\n'];

pub(super) fn normalize(value: &str) -> Result<String, ValueError> {
    if !value.chars().any(char::is_alphanumeric) {
        return Err(invalid(
            FieldKind::Address,
            "an address must contain at least one letter or digit",
        ));
    }
    Ok(value.to_owned())
}

/// Every letter and digit as '*', the rest kept.
pub(super) fn mask(normalized: &str) -> String {
    normalized
        .chars()
        .map(|c| if c.is_alphanumeric() { '*' } else { c })
        .collect()
}

/// An address always has a letter or digit, so always a shape.
pub(super) fn candidate(normalized: &str, rng: &mut impl Rng) -> String {
    super::shape::shaped_like(normalized, rng)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{candidate, masked, ok, rejected};
    use super::*;

    #[test]
    fn address_is_free_text_with_at_least_one_letter_or_digit() {
        assert_eq!(
            ok(FieldKind::Address, " 1  Main St,\nApt 2 "),
            "1  Main St,\nApt 2"
        );
        assert_eq!(ok(FieldKind::Address, "Straße 5"), "Straße 5");
        rejected(FieldKind::Address, "-- , --");
    }

    #[test]
    fn address_mask_keeps_only_punctuation_and_lines() {
        assert_eq!(
            masked(FieldKind::Address, "1 Main St,\nApt 2"),
            "* **** **,\n*** *"
        );
        assert_eq!(masked(FieldKind::Address, "é"), "*");
    }

    #[test]
    fn address_tokens_keep_punctuation_and_lines() {
        let token = candidate(FieldKind::Address, "1 Main St,\nApt 2");
        assert_eq!(token.chars().count(), "1 Main St,\nApt 2".chars().count());
        assert_eq!(&token[9..11], ",\n");
    }
}
