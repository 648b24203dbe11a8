//! Payment card numbers: stored as 12 to 19 digits that pass the Luhn check,
//! masked to the last four, tokenized into numbers that fail it.

use super::shape::random_digit;
use super::{invalid, stars_then_tail, FieldKind, ValueError};
use rand::Rng;
use std::ops::RangeInclusive;

pub(super) const MAX_INPUT_LEN: usize = 32;

/// Digits in a card number (ISO/IEC 7812).
const DIGITS: RangeInclusive<usize> = 12..=19;

/// Digits a token keeps of the value: those printed on receipts.
const KEPT_TAIL: usize = 4;

pub(super) fn normalize(value: &str) -> Result<String, ValueError> {
    let kind = FieldKind::CardNumber;
    let digits: String = value.chars().filter(|c| *c != ' ' && *c != '-').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            kind,
            "a card number may contain only digits, spaces and dashes",
        ));
    }
    if !DIGITS.contains(&digits.len()) {
        return Err(invalid(kind, "a card number must have 12 to 19 digits"));
    }
    if !is_luhn_valid(&digits) {
        return Err(invalid(kind, "card number fails the Luhn check"));
    }
    Ok(digits)
}

pub(super) fn mask(normalized: &str) -> String {
    stars_then_tail(normalized, KEPT_TAIL)
}

/// Same length and last four digits; forced to fail the Luhn check so that a
/// token can never be taken for (or charged as) a real card.
pub(super) fn candidate(normalized: &str, rng: &mut impl Rng) -> String {
    let length = normalized.len();
    let drawn = length - KEPT_TAIL;
    let mut digits: Vec<u8> = (0..drawn).map(|_| random_digit(rng)).collect();
    digits.extend_from_slice(&normalized.as_bytes()[drawn..]);
    if is_luhn_valid_digits(&digits) {
        // Luhn maps each position's digit through a permutation of 0-9, so
        // changing one digit always changes the checksum.
        let bumped = drawn - 1;
        digits[bumped] = b'0' + (digits[bumped] - b'0' + 1) % 10;
    }
    digits.into_iter().map(char::from).collect()
}

/// Luhn (mod 10) check of a string of ASCII digits; false for anything else,
/// including the empty string.
pub fn is_luhn_valid(digits: &str) -> bool {
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && is_luhn_valid_digits(digits.as_bytes())
}

/// Expects ASCII digits; callers check.
fn is_luhn_valid_digits(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(index, byte)| {
            let digit = u32::from(byte - b'0');
            match index % 2 {
                0 => digit,
                _ if digit * 2 > 9 => digit * 2 - 9,
                _ => digit * 2,
            }
        })
        .sum();
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::super::testing::{candidate, masked, ok, rejected, DRAWS};
    use super::*;

    #[test]
    fn card_numbers_are_stored_as_digits_when_luhn_valid() {
        assert_eq!(
            ok(FieldKind::CardNumber, "4242 4242 4242 4242"),
            "4242424242424242"
        );
        assert_eq!(
            ok(FieldKind::CardNumber, "3782-822463-10005"),
            "378282246310005"
        );
        assert_eq!(ok(FieldKind::CardNumber, "4222222222222"), "4222222222222");
    }

    #[test]
    fn card_numbers_failing_luhn_or_with_wrong_length_are_rejected() {
        assert_eq!(
            rejected(FieldKind::CardNumber, "4242 4242 4242 4241").to_string(),
            "card number fails the Luhn check"
        );
        // 11 and 20 digits, both Luhn-valid, so only the length rejects them.
        for raw in [
            "42424242426",
            "42424242424242424242",
            "4242.4242.4242.4242",
            "4242x4242424242424",
        ] {
            rejected(FieldKind::CardNumber, raw);
        }
    }

    #[test]
    fn card_mask_shows_only_the_last_four_digits() {
        assert_eq!(
            masked(FieldKind::CardNumber, "4242424242424242"),
            "************4242"
        );
        assert_eq!(
            masked(FieldKind::CardNumber, "378282246310005"),
            "***********0005"
        );
    }

    #[test]
    fn card_tokens_keep_length_and_last_four_and_always_fail_luhn() {
        for value in [
            "4242424242424242",
            "378282246310005",
            "4222222222222",
            "6011000990139424",
        ] {
            for _ in 0..DRAWS {
                let token = candidate(FieldKind::CardNumber, value);
                assert_eq!(token.len(), value.len());
                assert_eq!(token[token.len() - 4..], value[value.len() - 4..]);
                assert!(token.bytes().all(|b| b.is_ascii_digit()));
                assert!(!is_luhn_valid(&token), "{token}");
            }
        }
    }

    #[test]
    fn card_tokens_are_made_only_of_normalized_numbers() {
        // What a token once refused as not normalized never normalizes.
        for raw in ["42424242", "4242x"] {
            rejected(FieldKind::CardNumber, raw);
        }
        assert_eq!(
            ok(FieldKind::CardNumber, "4242 4242 4242 4242"),
            "4242424242424242"
        );
    }

    #[test]
    fn luhn_check_matches_known_numbers() {
        assert!(is_luhn_valid("4242424242424242"));
        assert!(is_luhn_valid("79927398713"));
        assert!(!is_luhn_valid("79927398710"));
        assert!(!is_luhn_valid(""));
        assert!(!is_luhn_valid("4242 4242 4242 4242"));
    }
}
