//! Every kind's validator and normalizer, its mask, and its format-preserving
//! tokens.

use pii_vault::vault::kinds::{is_luhn_valid, FieldKind, Normalized};
use pii_vault::vault::tokens::{format_preserving_token, TokenError};
use time::macros::date;
use time::Date;

/// A fixed "today", so that a date of birth's verdict never depends on the clock.
const TODAY: Date = date!(2026 - 06 - 15);

/// The first byte picks the kind, the rest is the raw value.
pub fn values(data: &[u8]) {
    let Some((&selector, raw)) = data.split_first() else {
        return;
    };
    let kind = FieldKind::ALL[usize::from(selector) % FieldKind::ALL.len()];
    let raw = crate::text(raw);
    match kind.normalize(&raw, TODAY) {
        Ok(normalized) => check_normalized(&raw, &normalized),
        Err(error) => {
            let message = error.to_string();
            crate::assert_clear_message(&message);
            assert!(message.is_ascii(), "{message:?}");
            crate::assert_no_echo(&message, &raw);
        }
    }
}

fn check_normalized(raw: &str, value: &Normalized) {
    let kind = value.kind();
    let name = kind.name();
    let normalized = value.as_str();
    // The stored form is a fixed point: re-putting a value read back, or
    // searching for it, must give the same form (and the same blind index).
    assert_eq!(
        kind.normalize(normalized, TODAY).as_ref(),
        Ok(value),
        "{name}: normalizing {raw:?} gave {normalized:?}, which does not normalize to itself"
    );
    assert_eq!(
        Normalized::from_stored(kind, normalized, TODAY).as_ref(),
        Some(value),
        "{name}: the stored form {normalized:?} is not taken back"
    );
    assert!(
        !normalized.is_empty(),
        "{name}: {raw:?} normalized to nothing"
    );
    assert!(
        normalized.len() <= kind.max_input_len(),
        "{name}: the stored form of {raw:?} is longer than the kind accepts"
    );
    assert_eq!(
        normalized,
        normalized.trim(),
        "{name}: untrimmed {normalized:?}"
    );
    let allowed_control = |c: char| match kind {
        FieldKind::Address => c == '\n',
        FieldKind::Generic => c == '\n' || c == '\t',
        _ => false,
    };
    assert!(
        normalized
            .chars()
            .all(|c| !c.is_control() || allowed_control(c)),
        "{name}: control character kept in {normalized:?}"
    );
    match kind {
        FieldKind::Ssn => {
            let bytes = normalized.as_bytes();
            assert!(
                bytes.len() == 11 && bytes[3] == b'-' && bytes[6] == b'-',
                "{normalized:?}"
            );
            assert!(!normalized.starts_with('9') && !normalized.starts_with("000"));
        }
        FieldKind::CardNumber => {
            assert!((12..=19).contains(&normalized.len()), "{normalized:?}");
            assert!(is_luhn_valid(normalized), "{normalized:?} fails Luhn");
        }
        FieldKind::Phone => {
            let digits = normalized.strip_prefix('+').unwrap_or_default();
            assert!((8..=15).contains(&digits.len()), "{normalized:?}");
            assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{normalized:?}");
        }
        FieldKind::Email => {
            let (local, domain) = normalized.split_once('@').unwrap_or_default();
            assert!(!local.is_empty() && !domain.is_empty(), "{normalized:?}");
            assert_eq!(domain, domain.to_ascii_lowercase(), "{normalized:?}");
        }
        _ => {}
    }
    check_mask(value);
    check_format_preserving_token(value);
}

fn check_mask(value: &Normalized) {
    let (kind, normalized) = (value.kind(), value.as_str());
    let masked = value.mask();
    match kind {
        // What the masks promise to hide of the documented shapes.
        FieldKind::Ssn => {
            assert_eq!(masked.len(), 11, "{masked:?}");
            assert!(masked.starts_with("***-**-"), "{masked:?}");
        }
        FieldKind::CardNumber | FieldKind::Phone => {
            assert_ne!(
                masked,
                normalized,
                "{} shown whole by its mask",
                kind.name()
            );
            assert_eq!(masked.chars().count(), normalized.chars().count());
        }
        FieldKind::DateOfBirth => assert!(masked.ends_with("-**-**"), "{masked:?}"),
        FieldKind::Address => assert!(
            !masked.chars().any(char::is_alphanumeric),
            "an address mask shows {masked:?}"
        ),
        _ => {}
    }
}

fn check_format_preserving_token(value: &Normalized) {
    let (kind, normalized) = (value.kind(), value.as_str());
    let token = match format_preserving_token(value) {
        Ok(token) => String::from(token),
        // Free text without letters or digits has no shape to keep.
        Err(TokenError::NoShape { .. }) if !normalized.chars().any(char::is_alphanumeric) => return,
        Err(error) => panic!(
            "{}: no token for the stored form {normalized:?}: {error}",
            kind.name()
        ),
    };
    assert_ne!(token, normalized, "a token equals its value");
    match kind {
        FieldKind::Ssn => assert!(
            FieldKind::Ssn.normalize(&token, TODAY).is_err(),
            "SSN token {token:?} is a valid SSN"
        ),
        FieldKind::CardNumber => {
            assert_eq!(token.len(), normalized.len());
            assert_eq!(token[token.len() - 4..], normalized[normalized.len() - 4..]);
            assert!(!is_luhn_valid(&token), "card token {token:?} passes Luhn");
        }
        FieldKind::Phone => {
            assert!(token.starts_with("+999"), "{token:?}");
            assert_eq!(token.len(), normalized.len());
        }
        FieldKind::Email => assert!(token.ends_with("@token.invalid"), "{token:?}"),
        FieldKind::DateOfBirth => assert!(
            FieldKind::DateOfBirth.normalize(&token, TODAY).is_err(),
            "date token {token:?} is a plausible birth date"
        ),
        FieldKind::Name | FieldKind::Address | FieldKind::Generic => {
            assert_eq!(token.chars().count(), normalized.chars().count());
            for (original, shaped) in normalized.chars().zip(token.chars()) {
                if original.is_alphanumeric() {
                    // Letters and digits are drawn anew (ASCII), never kept.
                    assert!(shaped.is_ascii_alphanumeric(), "{original:?} -> {shaped:?}");
                } else {
                    assert_eq!(original, shaped, "punctuation changed");
                }
            }
        }
    }
}
