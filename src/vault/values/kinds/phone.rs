//! Phone numbers: stored as E.164 (+ and 8 to 15 digits), masked to the last
//! four digits, tokenized under the unassigned country code +999.

use super::{invalid, stars_then_tail, FieldKind, ValueError};
use rand::Rng;
use std::ops::RangeInclusive;

pub(super) const MAX_INPUT_LEN: usize = 32;

/// Digits in an E.164 number, country code included.
const E164_DIGITS: RangeInclusive<usize> = 8..=15;

/// The country code of every phone token: unassigned, so a token rings nobody.
const TOKEN_COUNTRY_CODE: &str = "999";

pub(super) fn normalize(value: &str) -> Result<String, ValueError> {
    let kind = FieldKind::Phone;
    let (has_plus, body) = match value.strip_prefix('+') {
        Some(body) => (true, body),
        None => (false, value),
    };
    let is_separator = |c: char| matches!(c, ' ' | '-' | '.' | '(' | ')');
    if !body.chars().all(|c| c.is_ascii_digit() || is_separator(c)) {
        return Err(invalid(
            kind,
            "a phone number may contain only digits, spaces, dashes, dots, parentheses and a leading '+'",
        ));
    }
    let digits: String = body.chars().filter(char::is_ascii_digit).collect();
    let e164_digits = if has_plus {
        digits
    } else if digits.len() == 10 {
        format!("1{digits}")
    } else if digits.len() == 11 && digits.starts_with('1') {
        digits
    } else {
        return Err(invalid(
            kind,
            "a phone number that is not a 10-digit US number must be written as +<country code><number>",
        ));
    };
    if !E164_DIGITS.contains(&e164_digits.len()) {
        return Err(invalid(
            kind,
            "a phone number must have 8 to 15 digits including the country code",
        ));
    }
    if e164_digits.starts_with('0') {
        return Err(invalid(
            kind,
            "a phone number's country code cannot start with 0",
        ));
    }
    Ok(format!("+{e164_digits}"))
}

/// The digits of a normalized number, without its '+'.
fn digits(normalized: &str) -> &str {
    normalized.trim_start_matches('+')
}

pub(super) fn mask(normalized: &str) -> String {
    format!("+{}", stars_then_tail(digits(normalized), 4))
}

/// As many digits as the value, so the token has its length.
pub(super) fn candidate(normalized: &str, rng: &mut impl Rng) -> String {
    let subscriber_len = digits(normalized).len() - TOKEN_COUNTRY_CODE.len();
    let subscriber: String = (0..subscriber_len)
        .map(|_| char::from(super::shape::random_digit(rng)))
        .collect();
    format!("+{TOKEN_COUNTRY_CODE}{subscriber}")
}

#[cfg(test)]
mod tests {
    use super::super::testing::{candidate, masked, ok, rejected, DRAWS};
    use super::*;

    #[test]
    fn phone_numbers_in_common_formats_are_stored_as_e164() {
        assert_eq!(ok(FieldKind::Phone, "(555) 123-4567"), "+15551234567");
        assert_eq!(ok(FieldKind::Phone, "555.123.4567"), "+15551234567");
        assert_eq!(ok(FieldKind::Phone, "1-555-123-4567"), "+15551234567");
        assert_eq!(ok(FieldKind::Phone, "+1 555 123 4567"), "+15551234567");
        assert_eq!(ok(FieldKind::Phone, "+44 20 7946 0958"), "+442079460958");
        assert_eq!(ok(FieldKind::Phone, "+49-30-1234567"), "+49301234567");
    }

    #[test]
    fn phone_numbers_without_country_code_or_out_of_range_are_rejected() {
        let error = rejected(FieldKind::Phone, "020 7946 0958");
        assert!(error.to_string().contains("+<country code>"));
        for raw in [
            "2079460958123",
            "12345",
            "+1234567",
            "+1234567890123456",
            "+0441234567",
            "555-123-456x",
            "1+5551234567",
            "++15551234567",
        ] {
            rejected(FieldKind::Phone, raw);
        }
    }

    #[test]
    fn phone_mask_shows_only_the_last_four_digits() {
        assert_eq!(masked(FieldKind::Phone, "+15551234567"), "+*******4567");
        assert_eq!(masked(FieldKind::Phone, "+49301234"), "+****1234");
    }

    #[test]
    fn phone_tokens_use_country_code_999_and_the_same_digit_count() {
        for value in ["+15551234567", "+442079460958", "+49301234"] {
            for _ in 0..DRAWS / 10 {
                let token = candidate(FieldKind::Phone, value);
                assert!(token.starts_with("+999"), "{token}");
                assert_eq!(token.len(), value.len());
                assert!(token[1..].bytes().all(|b| b.is_ascii_digit()));
            }
        }
        // No token for a number without its country code: it never
        // normalizes as one.
        assert_eq!(ok(FieldKind::Phone, "5551234567"), "+15551234567");
    }
}
