//! Random draws shared by the kinds' format-preserving tokens.

use rand::Rng;

/// Letters and digits replaced by random ones of the same class, everything else
/// kept, so the token has the value's shape and length in chars: the token of
/// names, addresses and generic values.
pub(super) fn shaped_like(value: &str, rng: &mut impl Rng) -> String {
    value.chars().map(|c| shape_char(c, rng)).collect()
}

fn shape_char(c: char, rng: &mut impl Rng) -> char {
    if c.is_ascii_uppercase() {
        char::from(rng.random_range(b'A'..=b'Z'))
    } else if c.is_ascii_lowercase() {
        char::from(rng.random_range(b'a'..=b'z'))
    } else if c.is_ascii_digit() {
        char::from(random_digit(rng))
    } else if c.is_alphabetic() {
        char::from(rng.random_range(b'a'..=b'z'))
    } else if c.is_numeric() {
        // Non-ASCII digits (e.g. Arabic-Indic) would otherwise be kept as is
        // and leak part of the value.
        char::from(random_digit(rng))
    } else {
        c
    }
}

/// An ASCII digit.
pub(super) fn random_digit(rng: &mut impl Rng) -> u8 {
    rng.random_range(b'0'..=b'9')
}

#[cfg(test)]
mod tests {
    use super::super::testing::DRAWS;
    use super::*;

    #[test]
    fn shape_tokens_keep_punctuation_length_and_character_classes() {
        let value = "Jane O'Neil-Smith, Apt 12B\nÉlan 3";
        for _ in 0..DRAWS / 10 {
            let token = shaped_like(value, &mut rand::rng());
            assert_eq!(token.chars().count(), value.chars().count());
            for (original, shaped) in value.chars().zip(token.chars()) {
                match original {
                    'A'..='Z' => assert!(shaped.is_ascii_uppercase()),
                    'a'..='z' | 'É' => assert!(shaped.is_ascii_lowercase()),
                    '0'..='9' => assert!(shaped.is_ascii_digit()),
                    _ => assert_eq!(shaped, original),
                }
            }
        }
    }

    #[test]
    fn non_ascii_digits_are_drawn_anew_as_ascii_digits() {
        let token = shaped_like("٣٤", &mut rand::rng());
        assert!(token.bytes().all(|b| b.is_ascii_digit()), "{token}");
    }
}
