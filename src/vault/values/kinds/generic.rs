//! Generic values: any text, trimmed; masked to the last two chars of a long
//! value, tokenized into random chars of the same shape when it has one.

use super::stars_then_tail;
use rand::Rng;

pub(super) const MAX_INPUT_LEN: usize = 4096;

/// Free text may hold lines and tabs.
pub(super) const ALLOWED_CONTROLS: &[char] = &['\n', '\t'];

/// Shorter values are masked whole: two chars of seven would say too much.
const MIN_LEN_SHOWING_TAIL: usize = 8;

/// Any trimmed text without forbidden control characters is a generic value.
pub(super) fn normalize(value: &str) -> String {
    value.to_owned()
}

pub(super) fn mask(normalized: &str) -> String {
    let length = normalized.chars().count();
    if length >= MIN_LEN_SHOWING_TAIL {
        stars_then_tail(normalized, 2)
    } else {
        "*".repeat(length)
    }
}

/// `None` for text without a letter or digit: it has no shape to keep.
pub(super) fn candidate(normalized: &str, rng: &mut impl Rng) -> Option<String> {
    normalized
        .chars()
        .any(char::is_alphanumeric)
        .then(|| super::shape::shaped_like(normalized, rng))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{masked, normalized};
    use super::super::FieldKind;

    #[test]
    fn generic_mask_shows_two_chars_of_values_of_eight_or_more() {
        assert_eq!(masked(FieldKind::Generic, "secret-value"), "**********ue");
        assert_eq!(masked(FieldKind::Generic, "1234567"), "*******");
        assert_eq!(masked(FieldKind::Generic, "12345678"), "******78");
        assert_eq!(masked(FieldKind::Generic, "ßßßßßßßß"), "******ßß");
        assert_eq!(masked(FieldKind::Generic, "x"), "*");
    }

    #[test]
    fn generic_values_without_letters_or_digits_have_no_token_shape() {
        let mut rng = rand::rng();
        let value = normalized(FieldKind::Generic, "-- ,");
        assert_eq!(value.format_preserving_candidate(&mut rng), None);
        let value = normalized(FieldKind::Generic, "a-1");
        let token = value.format_preserving_candidate(&mut rng);
        assert!(token.is_some_and(|token| token.len() == 3 && &token[1..2] == "-"));
    }
}
