//! Token formats: random, deterministic (from a MAC computed elsewhere) and
//! format-preserving candidates. Collision checks belong to the caller; this
//! module only draws candidates and knows what a client may send back.

use crate::vault::kinds::FieldKind;
use data_encoding::BASE32_NOPAD;
use rand::Rng;

/// Longest token a client may send to Detokenize.
const MAX_TOKEN_LEN: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenFormat {
    Random,
    FormatPreserving,
    Deterministic,
}

impl TokenFormat {
    pub fn name(self) -> &'static str {
        match self {
            TokenFormat::Random => "random",
            TokenFormat::FormatPreserving => "format_preserving",
            TokenFormat::Deterministic => "deterministic",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            TokenFormat::Random,
            TokenFormat::FormatPreserving,
            TokenFormat::Deterministic,
        ]
        .into_iter()
        .find(|format| format.name() == name)
    }
}

/// Why a token could not be made or was refused. Messages never contain the
/// value or the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a value of kind {} has no letter or digit to shape a token from", .kind.name())]
    NoShape { kind: FieldKind },
    #[error("value is not in the normalized form of kind {}", .kind.name())]
    NotNormalized { kind: FieldKind },
    #[error("token is empty")]
    Empty,
    #[error("token is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("token contains a control character")]
    ControlCharacter,
}

/// "tok_" + 26 lowercase base32 chars of 128 random bits.
pub fn random_token() -> String {
    random_id("tok")
}

/// `prefix` + "_" + 26 lowercase base32 chars of 128 random bits: tokens, receipt
/// and request ids.
pub fn random_id(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::rng().random();
    format!("{prefix}_{}", lower_base32(&bytes))
}

/// "dtk_" + 26 lowercase base32 chars of `mac`, which already binds the
/// customer, kind and value.
pub fn deterministic_token(mac: &[u8; 16]) -> String {
    format!("dtk_{}", lower_base32(mac))
}

fn lower_base32(bytes: &[u8]) -> String {
    BASE32_NOPAD.encode(bytes).to_ascii_lowercase()
}

/// One random format-preserving candidate for a normalized value; the caller
/// checks it against existing tokens and calls again on a collision.
pub fn format_preserving_token(kind: FieldKind, normalized: &str) -> Result<String, TokenError> {
    let mut rng = rand::rng();
    // Every shape has at least ten possible draws and at most one equals the
    // value, so this ends after a couple of rounds at worst.
    loop {
        let candidate = draw_candidate(kind, normalized, &mut rng)?;
        if candidate != normalized {
            return Ok(candidate);
        }
    }
}

fn draw_candidate(
    kind: FieldKind,
    normalized: &str,
    rng: &mut impl Rng,
) -> Result<String, TokenError> {
    match kind {
        FieldKind::Ssn => Ok(ssn_candidate(rng)),
        FieldKind::CardNumber => card_candidate(normalized, rng),
        FieldKind::Email => email_candidate(normalized, rng),
        FieldKind::Phone => phone_candidate(normalized, rng),
        FieldKind::DateOfBirth => Ok(date_of_birth_candidate(rng)),
        FieldKind::Name | FieldKind::Address | FieldKind::Generic => {
            shape_candidate(kind, normalized, rng)
        }
    }
}

/// Area 900-999 is never issued, so the token cannot be someone's SSN.
fn ssn_candidate(rng: &mut impl Rng) -> String {
    format!(
        "{}-{:02}-{:04}",
        rng.random_range(900..=999),
        rng.random_range(0..=99),
        rng.random_range(0..=9999)
    )
}

/// Same length and last four digits; forced to fail the Luhn check so that a
/// token can never be taken for (or charged as) a real card.
fn card_candidate(normalized: &str, rng: &mut impl Rng) -> Result<String, TokenError> {
    let length = normalized.len();
    if !(12..=19).contains(&length) || !normalized.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::NotNormalized {
            kind: FieldKind::CardNumber,
        });
    }
    let mut digits: Vec<u8> = (0..length - 4).map(|_| random_digit(rng)).collect();
    digits.extend_from_slice(&normalized.as_bytes()[length - 4..]);
    if is_luhn_valid_bytes(&digits) {
        // Luhn maps each position's digit through a permutation of 0-9, so
        // changing one digit always changes the checksum.
        let bumped = length - 5;
        digits[bumped] = b'0' + (digits[bumped] - b'0' + 1) % 10;
    }
    Ok(digits.into_iter().map(char::from).collect())
}

/// ".invalid" is reserved by RFC 2606: mail to a token can never be delivered.
fn email_candidate(normalized: &str, rng: &mut impl Rng) -> Result<String, TokenError> {
    let Some((local, _domain)) = normalized.rsplit_once('@') else {
        return Err(TokenError::NotNormalized {
            kind: FieldKind::Email,
        });
    };
    const ALPHANUMERIC: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let random_local: String = local
        .chars()
        .map(|_| char::from(ALPHANUMERIC[rng.random_range(0..ALPHANUMERIC.len())]))
        .collect();
    if random_local.is_empty() {
        return Err(TokenError::NotNormalized {
            kind: FieldKind::Email,
        });
    }
    Ok(format!("{random_local}@token.invalid"))
}

/// +999 is an unassigned E.164 country code, so the token rings nobody.
fn phone_candidate(normalized: &str, rng: &mut impl Rng) -> Result<String, TokenError> {
    let digits = normalized.strip_prefix('+').unwrap_or_default();
    if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::NotNormalized {
            kind: FieldKind::Phone,
        });
    }
    let subscriber: String = (0..digits.len() - 3)
        .map(|_| char::from(random_digit(rng)))
        .collect();
    Ok(format!("+999{subscriber}"))
}

/// Years 0100-0999 look like a date but are never a living person's birth date;
/// days stop at 28 so every month is valid.
fn date_of_birth_candidate(rng: &mut impl Rng) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        rng.random_range(100..=999),
        rng.random_range(1..=12),
        rng.random_range(1..=28)
    )
}

/// Letters and digits replaced by random ones of the same class, everything else
/// kept, so the token has the value's shape and length in chars.
fn shape_candidate(
    kind: FieldKind,
    normalized: &str,
    rng: &mut impl Rng,
) -> Result<String, TokenError> {
    if !normalized.chars().any(char::is_alphanumeric) {
        return Err(TokenError::NoShape { kind });
    }
    Ok(normalized.chars().map(|c| shape_char(c, rng)).collect())
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

fn random_digit(rng: &mut impl Rng) -> u8 {
    rng.random_range(b'0'..=b'9')
}

/// What a client may send to Detokenize: any token this vault ever issued fits,
/// and nothing that could corrupt a log line or a key does.
pub fn validate_token(token: &str) -> Result<(), TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong { max: MAX_TOKEN_LEN });
    }
    if token.chars().any(char::is_control) {
        return Err(TokenError::ControlCharacter);
    }
    Ok(())
}

/// Luhn (mod 10) check of a string of ASCII digits; false for anything else,
/// including the empty string.
pub fn is_luhn_valid(digits: &str) -> bool {
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && is_luhn_valid_bytes(digits.as_bytes())
}

/// Expects ASCII digits; callers check.
fn is_luhn_valid_bytes(digits: &[u8]) -> bool {
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
    use super::*;
    use time::macros::date;

    const DRAWS: usize = 5000;

    fn token(kind: FieldKind, normalized: &str) -> String {
        match format_preserving_token(kind, normalized) {
            Ok(token) => token,
            Err(error) => panic!("no {} token: {error}", kind.name()),
        }
    }

    fn is_lower_base32(text: &str) -> bool {
        text.bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    }

    #[test]
    fn format_names_round_trip() {
        for format in [
            TokenFormat::Random,
            TokenFormat::FormatPreserving,
            TokenFormat::Deterministic,
        ] {
            assert_eq!(TokenFormat::from_name(format.name()), Some(format));
        }
        assert_eq!(TokenFormat::from_name("Random"), None);
    }

    #[test]
    fn random_tokens_are_tok_and_26_lowercase_base32_chars_and_differ() {
        let first = random_token();
        let body = first.strip_prefix("tok_").unwrap_or_default();
        assert_eq!(body.len(), 26, "{first}");
        assert!(is_lower_base32(body), "{first}");
        assert_ne!(first, random_token());
    }

    #[test]
    fn deterministic_tokens_are_equal_for_equal_macs_only() {
        let mac = [7u8; 16];
        let token = deterministic_token(&mac);
        assert_eq!(token, deterministic_token(&[7u8; 16]));
        assert_ne!(token, deterministic_token(&[8u8; 16]));
        let body = token.strip_prefix("dtk_").unwrap_or_default();
        assert_eq!(body.len(), 26);
        assert!(is_lower_base32(body));
        // Known answer: a format change would break every stored deterministic token.
        assert_eq!(
            deterministic_token(&[0u8; 16]),
            format!("dtk_{}", "a".repeat(26))
        );
    }

    #[test]
    fn ssn_tokens_come_from_the_900_area_and_are_never_valid_ssns() {
        for _ in 0..DRAWS {
            let token = token(FieldKind::Ssn, "123-45-6789");
            assert_eq!(token.len(), 11);
            assert_eq!((&token[3..4], &token[6..7]), ("-", "-"));
            let area: u32 = token[0..3].parse().unwrap_or_default();
            assert!((900..=999).contains(&area), "{token}");
            assert!(FieldKind::Ssn
                .normalize(&token, date!(2024 - 01 - 01))
                .is_err());
        }
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
                let token = token(FieldKind::CardNumber, value);
                assert_eq!(token.len(), value.len());
                assert_eq!(token[token.len() - 4..], value[value.len() - 4..]);
                assert!(token.bytes().all(|b| b.is_ascii_digit()));
                assert!(!is_luhn_valid(&token), "{token}");
            }
        }
    }

    #[test]
    fn card_tokens_refuse_values_that_are_not_normalized() {
        for value in ["4242 4242 4242 4242", "42424242", ""] {
            assert!(matches!(
                format_preserving_token(FieldKind::CardNumber, value),
                Err(TokenError::NotNormalized { .. })
            ));
        }
    }

    #[test]
    fn email_tokens_keep_the_local_length_under_token_invalid() {
        for _ in 0..DRAWS / 10 {
            let token = token(FieldKind::Email, "John.Doe@example.com");
            let (local, domain) = token.split_once('@').unwrap_or_default();
            assert_eq!(domain, "token.invalid");
            assert_eq!(local.len(), "John.Doe".len());
            assert!(local
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        }
        assert_eq!(
            token(FieldKind::Email, "j@x.io").len(),
            "j@token.invalid".len()
        );
        assert!(format_preserving_token(FieldKind::Email, "no-at-sign").is_err());
    }

    #[test]
    fn phone_tokens_use_country_code_999_and_the_same_digit_count() {
        for value in ["+15551234567", "+442079460958", "+49301234"] {
            for _ in 0..DRAWS / 10 {
                let token = token(FieldKind::Phone, value);
                assert!(token.starts_with("+999"), "{token}");
                assert_eq!(token.len(), value.len());
                assert!(token[1..].bytes().all(|b| b.is_ascii_digit()));
            }
        }
        assert!(format_preserving_token(FieldKind::Phone, "5551234567").is_err());
    }

    #[test]
    fn date_of_birth_tokens_are_real_dates_before_year_1000() {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        for _ in 0..DRAWS {
            let token = token(FieldKind::DateOfBirth, "1985-07-04");
            assert_eq!(token.len(), 10);
            let parsed = time::Date::parse(&token, &format);
            assert!(
                parsed.is_ok_and(|date| (100..1000).contains(&date.year())),
                "{token}"
            );
        }
    }

    #[test]
    fn shape_tokens_keep_punctuation_length_and_character_classes() {
        let value = "Jane O'Neil-Smith, Apt 12B\nÉlan 3";
        for kind in [FieldKind::Name, FieldKind::Address, FieldKind::Generic] {
            for _ in 0..DRAWS / 10 {
                let token = token(kind, value);
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
    }

    #[test]
    fn shape_tokens_never_equal_the_value_even_for_one_char() {
        for _ in 0..DRAWS {
            assert_ne!(token(FieldKind::Generic, "7"), "7");
            assert_ne!(token(FieldKind::Name, "a"), "a");
        }
    }

    #[test]
    fn values_without_letters_or_digits_have_no_shape() {
        assert_eq!(
            format_preserving_token(FieldKind::Generic, "-- ,"),
            Err(TokenError::NoShape {
                kind: FieldKind::Generic
            })
        );
    }

    #[test]
    fn token_errors_never_contain_the_value() {
        for (kind, value) in [
            (FieldKind::Generic, "#!#!"),
            (FieldKind::CardNumber, "4242x"),
            (FieldKind::Phone, "5551234"),
        ] {
            let message = format_preserving_token(kind, value)
                .map_err(|e| e.to_string())
                .err()
                .unwrap_or_default();
            assert!(!message.is_empty() && !message.contains(value), "{message}");
        }
    }

    #[test]
    fn validate_token_accepts_issued_tokens_and_refuses_empty_long_or_control() {
        assert_eq!(validate_token(&random_token()), Ok(()));
        assert_eq!(validate_token("123-45-6789"), Ok(()));
        assert_eq!(validate_token(&"x".repeat(1024)), Ok(()));
        assert_eq!(validate_token(""), Err(TokenError::Empty));
        assert_eq!(
            validate_token(&"x".repeat(1025)),
            Err(TokenError::TooLong { max: 1024 })
        );
        assert_eq!(
            validate_token("tok_a\nb"),
            Err(TokenError::ControlCharacter)
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
