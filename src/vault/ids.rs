//! Identifiers parsed once at the edge; a parsed id is known good everywhere.

use super::VaultError;

/// Longest accepted customer id, in bytes.
pub const MAX_CUSTOMER_ID_LEN: usize = 128;

/// A customer's id: 1-128 of `A-Z a-z 0-9 . _ : -`. Ids are opaque keys chosen by
/// the calling services; '@' and spaces are refused so ids cannot be emails or names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerId(String);

impl CustomerId {
    pub fn parse(raw: &str) -> Result<CustomerId, VaultError> {
        if raw.is_empty() {
            return Err(VaultError::invalid("customer_id is required"));
        }
        if raw.len() > MAX_CUSTOMER_ID_LEN {
            return Err(VaultError::invalid(format!(
                "customer_id is longer than {MAX_CUSTOMER_ID_LEN} bytes"
            )));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
        if !raw.chars().all(allowed) {
            return Err(VaultError::invalid(
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
    fn field_names_are_lower_snake_case() {
        assert!(FieldName::parse("email_home").is_ok());
        assert!(FieldName::parse("a").is_ok());
        for bad in ["", "Email", "1st", "_x", "a-b", "a b"] {
            assert!(FieldName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(FieldName::parse(&"a".repeat(65)).is_err());
    }
}
