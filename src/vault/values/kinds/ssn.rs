//! US social security numbers: stored as ddd-dd-dddd, masked to the last four
//! digits, tokenized into the never-issued 900-999 area.

use super::{invalid, FieldKind, ValueError};
use rand::Rng;

pub(super) const MAX_INPUT_LEN: usize = 32;

pub(super) fn normalize(value: &str) -> Result<String, ValueError> {
    let kind = FieldKind::Ssn;
    if !value
        .chars()
        .all(|c| c.is_ascii_digit() || c == '-' || c == ' ')
    {
        return Err(invalid(
            kind,
            "an SSN may contain only digits, dashes and spaces",
        ));
    }
    if value.contains('-') && !is_dashed(value) {
        return Err(invalid(
            kind,
            "an SSN with dashes must be written as ddd-dd-dddd",
        ));
    }
    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
    if digits.len() != 9 {
        return Err(invalid(kind, "an SSN must have exactly 9 digits"));
    }
    let (area, rest) = digits.split_at(3);
    let (group, serial) = rest.split_at(2);
    if area == "000" || area == "666" || area.starts_with('9') {
        return Err(invalid(
            kind,
            "an SSN's area number cannot be 000, 666 or 900-999",
        ));
    }
    if group == "00" {
        return Err(invalid(kind, "an SSN's group number cannot be 00"));
    }
    if serial == "0000" {
        return Err(invalid(kind, "an SSN's serial number cannot be 0000"));
    }
    Ok(format!("{area}-{group}-{serial}"))
}

fn is_dashed(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 11
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            3 | 6 => *byte == b'-',
            _ => byte.is_ascii_digit(),
        })
}

/// `normalized` is ddd-dd-dddd: the serial is its last four bytes.
pub(super) fn mask(normalized: &str) -> String {
    let serial = &normalized[normalized.len() - 4..];
    format!("***-**-{serial}")
}

/// Area 900-999 is never issued, so the token cannot be someone's SSN.
pub(super) fn candidate(rng: &mut impl Rng) -> String {
    format!(
        "{}-{:02}-{:04}",
        rng.random_range(900..=999),
        rng.random_range(0..=99),
        rng.random_range(0..=9999)
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::{candidate, masked, ok, rejected, DRAWS, TODAY};
    use super::*;

    #[test]
    fn ssn_is_accepted_dashed_bare_or_spaced_and_stored_dashed() {
        assert_eq!(ok(FieldKind::Ssn, "123-45-6789"), "123-45-6789");
        assert_eq!(ok(FieldKind::Ssn, "123456789"), "123-45-6789");
        assert_eq!(ok(FieldKind::Ssn, "123 45 6789"), "123-45-6789");
        assert_eq!(ok(FieldKind::Ssn, "899-99-9999"), "899-99-9999");
    }

    #[test]
    fn ssn_with_a_reserved_area_group_or_serial_is_rejected() {
        for raw in ["000-12-3456", "666-12-3456", "900-12-3456", "999-12-3456"] {
            assert_eq!(
                rejected(FieldKind::Ssn, raw).to_string(),
                "an SSN's area number cannot be 000, 666 or 900-999"
            );
        }
        assert!(rejected(FieldKind::Ssn, "123-00-4567")
            .to_string()
            .contains("group"));
        assert!(rejected(FieldKind::Ssn, "123-45-0000")
            .to_string()
            .contains("serial"));
    }

    #[test]
    fn ssn_with_the_wrong_length_or_layout_is_rejected() {
        for raw in [
            "12345678",
            "1234567890",
            "123-45-678",
            "12-345-6789",
            "123-45-67890",
            "123a45678",
            "+123456789",
        ] {
            rejected(FieldKind::Ssn, raw);
        }
    }

    #[test]
    fn ssn_mask_shows_only_the_serial() {
        assert_eq!(masked(FieldKind::Ssn, "123-45-6789"), "***-**-6789");
        assert_eq!(masked(FieldKind::Ssn, "899 99 9999"), "***-**-9999");
    }

    #[test]
    fn ssn_tokens_come_from_the_900_area_and_are_never_valid_ssns() {
        for _ in 0..DRAWS {
            let token = candidate(FieldKind::Ssn, "123-45-6789");
            assert_eq!(token.len(), 11);
            assert_eq!((&token[3..4], &token[6..7]), ("-", "-"));
            let area: u32 = token[0..3].parse().unwrap_or_default();
            assert!((900..=999).contains(&area), "{token}");
            assert!(FieldKind::Ssn.normalize(&token, TODAY).is_err());
        }
    }
}
