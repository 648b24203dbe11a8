//! Identifiers parsed once at the edge; a parsed id is known good everywhere.

use crate::vault::VaultError;

/// Longest accepted customer id, in bytes.
pub const MAX_CUSTOMER_ID_LEN: usize = 128;

/// A customer's id: 1-128 of `A-Z a-z 0-9 . _ : -`. Ids are opaque keys chosen by
/// the calling services; '@' and spaces are refused so ids cannot be emails or
/// names, and ids holding a number shaped like an SSN, a card number, a phone
/// number or a date are refused (`personal_shape`), since ids are kept in the
/// clear and in the audit log for good.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerId(String);

impl CustomerId {
    /// An id from a request.
    pub fn parse(raw: &str) -> Result<CustomerId, VaultError> {
        let id = CustomerId::from_stored(raw)?;
        if let Some(looks_like) = personal_shape(raw) {
            return Err(VaultError::invalid_field(
                "customer_id",
                format!(
                    "customer_id looks like a {looks_like}: ids are kept in the clear and in the \
                     audit log, so they must be opaque keys, never personal data"
                ),
            ));
        }
        Ok(id)
    }

    /// An id read back from the store or the erasure journal: ids stored before
    /// the shape check keep working (and can be erased).
    pub fn from_stored(raw: &str) -> Result<CustomerId, VaultError> {
        if raw.is_empty() {
            return Err(VaultError::invalid_field(
                "customer_id",
                "customer_id is required",
            ));
        }
        if raw.len() > MAX_CUSTOMER_ID_LEN {
            return Err(VaultError::invalid_field(
                "customer_id",
                format!("customer_id is longer than {MAX_CUSTOMER_ID_LEN} bytes"),
            ));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if !raw.chars().all(allowed) {
            return Err(VaultError::invalid_field(
                "customer_id",
                "customer_id may only contain letters, digits, '.', '_', ':' and '-'",
            ));
        }
        Ok(CustomerId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CustomerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `raw` looks like when it holds a number shaped like personal data.
///
/// The id is split into words at `:` and `_`; in each word, parts joined by
/// `-` or `.` that are all letters are dropped from either end (`cust-`,
/// `.dob`), and what is left, when it is only digits, is judged by its groups
/// of digits: 3-2-4 or nine digits an SSN; a real date as Y-M-D, M-D-Y or D-M-Y
/// (or eight digits), from 1900 to 2099; 13-16 digits that pass the Luhn check
/// a card number; 10-15 digits a phone number. UUIDs and 17-19 digit numeric
/// ids pass: their words mix letters in, or are longer than any of these.
pub fn personal_shape(raw: &str) -> Option<&'static str> {
    raw.split([':', '_']).find_map(|word| {
        let mut parts: Vec<&str> = word.split(['-', '.']).collect();
        let is_letters =
            |part: &&str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphabetic());
        while parts.first().is_some_and(is_letters) {
            parts.remove(0);
        }
        while parts.last().is_some_and(is_letters) {
            parts.pop();
        }
        let numeric = !parts.is_empty()
            && parts
                .iter()
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
        numeric.then(|| digit_shape(&parts)).flatten()
    })
}

fn digit_shape(groups: &[&str]) -> Option<&'static str> {
    let lengths: Vec<usize> = groups.iter().map(|group| group.len()).collect();
    let digits: String = groups.concat();
    if lengths == [3, 2, 4] || lengths == [9] {
        return Some("social security number");
    }
    if is_date(groups) {
        return Some("date");
    }
    if (13..=16).contains(&digits.len()) && crate::vault::kinds::is_luhn_valid(&digits) {
        return Some("card number");
    }
    if (10..=15).contains(&digits.len()) {
        return Some("phone number");
    }
    None
}

/// A real calendar date, year first or last, 1900-2099.
fn is_date(groups: &[&str]) -> bool {
    let number = |text: &str| text.parse::<u32>().ok();
    let (year, a, b) = match groups {
        [whole] if whole.len() == 8 => {
            let ymd = (&whole[..4], &whole[4..6], &whole[6..]);
            let mdy = (&whole[4..], &whole[..2], &whole[2..4]);
            return [ymd, mdy]
                .into_iter()
                .any(|(y, a, b)| real_date(number(y), number(a), number(b)));
        }
        [y, m, d] if y.len() == 4 && m.len() <= 2 && d.len() <= 2 => (*y, *m, *d),
        [a, b, y] if y.len() == 4 && a.len() <= 2 && b.len() <= 2 => (*y, *a, *b),
        _ => return false,
    };
    real_date(number(year), number(a), number(b))
}

/// Year, then month and day in either order (M-D-Y and D-M-Y both occur).
fn real_date(year: Option<u32>, a: Option<u32>, b: Option<u32>) -> bool {
    let (Some(year), Some(a), Some(b)) = (year, a, b) else {
        return false;
    };
    let valid = |month: u32, day: u32| {
        let month = u8::try_from(month)
            .ok()
            .and_then(|month| time::Month::try_from(month).ok());
        let day = u8::try_from(day).ok();
        match (i32::try_from(year), month, day) {
            (Ok(year), Some(month), Some(day)) => {
                time::Date::from_calendar_date(year, month, day).is_ok()
            }
            _ => false,
        }
    };
    (1900..=2099).contains(&year) && (valid(a, b) || valid(b, a))
}

/// A field name: `[a-z][a-z0-9_]{0,63}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldName(String);

impl FieldName {
    pub fn parse(raw: &str) -> Result<FieldName, VaultError> {
        let mut chars = raw.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if starts_with_letter && rest_ok && raw.len() <= 64 {
            Ok(FieldName(raw.to_owned()))
        } else {
            Err(VaultError::invalid(
                "field name must match [a-z][a-z0-9_]{0,63}",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FieldName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_ids_are_opaque_ascii_keys() {
        assert!(CustomerId::parse("cust-42").is_ok());
        assert!(CustomerId::parse("tenant:7.user_9").is_ok());
        assert!(CustomerId::parse("").is_err());
        assert!(CustomerId::parse("jane@example.com").is_err());
        assert!(CustomerId::parse("has space").is_err());
        assert!(CustomerId::parse("nul\0byte").is_err());
        assert!(CustomerId::parse(&"x".repeat(129)).is_err());
        assert!(CustomerId::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn customer_ids_shaped_like_personal_data_are_refused_without_being_echoed() {
        for (id, looks_like) in [
            ("123-45-6789", "social security number"),
            ("123456789", "social security number"),
            ("ssn:123.45.6789", "social security number"),
            ("4242424242424242", "card number"),
            ("cust-4242-4242-4242-4242", "card number"),
            ("378282246310005", "card number"),
            ("555-123-4567", "phone number"),
            ("user_1-555-123-4567", "phone number"),
            ("15551234567", "phone number"),
            ("1985-07-14", "date"),
            ("19850714", "date"),
            ("07-14-1985", "date"),
            ("born.14.07.1985", "date"),
        ] {
            let error = CustomerId::parse(id).expect_err(id).to_string();
            assert!(error.contains(looks_like), "{id}: {error}");
            assert!(!error.contains(id), "{error}");
            assert!(CustomerId::from_stored(id).is_ok(), "{id}");
        }
        for id in [
            "cust-42",
            "tenant:7.user_9",
            "rot-29999",
            "12345678",
            "cust-2024",
            "v1.2.3",
            "550e8400-e29b-41d4-a716-446655440000",
            "1541815603606036480",
            "4242424242424241",
            "tenant:7:user:55512",
        ] {
            assert!(CustomerId::parse(id).is_ok(), "{id} refused");
        }
    }

    #[test]
    fn field_names_are_lower_snake_case() {
        assert!(FieldName::parse("email_home").is_ok());
        assert!(FieldName::parse("a").is_ok());
        for bad in ["", "Email", "1st", "_x", "a-b", "a b"] {
            assert!(FieldName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(FieldName::parse(&"a".repeat(65)).is_err());
    }
}
