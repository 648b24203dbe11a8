//! Identifiers and tokens as clients send them: customer ids, field names,
//! tokens handed to Detokenize, kind and format names, the Luhn check.

use pii_vault::vault::kinds::{is_luhn_valid, FieldKind};
use pii_vault::vault::tokens::{deterministic_token, Token, TokenFormat};
use pii_vault::vault::{CustomerId, FieldName};

pub fn ids_and_tokens(data: &[u8]) {
    let raw = crate::text(data);
    check_customer_id(&raw);
    check_field_name(&raw);
    check_token(&raw);
    check_names(&raw);
    check_luhn(&raw);
    if let Ok(mac) = <[u8; 16]>::try_from(data) {
        let token = deterministic_token(&mac);
        assert!(
            Token::parse(token.as_str()).as_ref() == Ok(&token),
            "an issued token is refused: {token}"
        );
    }
}

fn check_customer_id(raw: &str) {
    match CustomerId::parse(raw) {
        Ok(id) => {
            assert_eq!(id.as_str(), raw, "a customer id was changed while parsing");
            assert!(
                (1..=128).contains(&raw.len()),
                "accepted {} bytes",
                raw.len()
            );
            assert!(
                raw.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b)),
                "accepted {raw:?}"
            );
        }
        Err(error) => refusal_is_clear(&error.to_string(), raw),
    }
}

fn check_field_name(raw: &str) {
    match FieldName::parse(raw) {
        Ok(name) => {
            assert_eq!(name.as_str(), raw);
            let bytes = raw.as_bytes();
            assert!(
                (1..=64).contains(&bytes.len()),
                "accepted {} bytes",
                bytes.len()
            );
            assert!(bytes[0].is_ascii_lowercase(), "accepted {raw:?}");
            assert!(
                bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_'),
                "accepted {raw:?}"
            );
        }
        Err(error) => refusal_is_clear(&error.to_string(), raw),
    }
}

fn check_token(raw: &str) {
    match Token::parse(raw) {
        Ok(token) => {
            assert_eq!(token.as_str(), raw, "a token was changed while parsing");
            assert!(
                (1..=1024).contains(&raw.len()),
                "accepted {} bytes",
                raw.len()
            );
            assert!(!raw.chars().any(char::is_control), "accepted {raw:?}");
        }
        Err(error) => refusal_is_clear(&error.to_string(), raw),
    }
}

fn check_names(raw: &str) {
    if let Some(kind) = FieldKind::from_name(raw) {
        assert_eq!(kind.name(), raw);
    }
    if let Some(format) = TokenFormat::from_name(raw) {
        assert_eq!(format.name(), raw);
    }
}

/// The Luhn check against an independent one: doubling from the right, by table.
fn check_luhn(raw: &str) {
    const DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let expected = !raw.is_empty()
        && raw.bytes().all(|b| b.is_ascii_digit())
        && raw
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let digit = u32::from(b - b'0');
                if i % 2 == 1 {
                    DOUBLED[digit as usize]
                } else {
                    digit
                }
            })
            .sum::<u32>()
            % 10
            == 0;
    assert_eq!(is_luhn_valid(raw), expected, "Luhn of {raw:?}");
}

#[track_caller]
fn refusal_is_clear(message: &str, raw: &str) {
    crate::assert_clear_message(message);
    assert!(message.is_ascii(), "{message:?}");
    crate::assert_no_echo(message, raw);
}
