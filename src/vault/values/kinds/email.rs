//! Email addresses: the local part kept as written, the domain lower-cased;
//! masked to the local part's first char, tokenized under ".invalid".

use super::{invalid, FieldKind, ValueError};
use rand::Rng;

pub(super) const MAX_INPUT_LEN: usize = 254;

pub(super) fn normalize(value: &str) -> Result<String, ValueError> {
    let kind = FieldKind::Email;
    let Some((local, domain)) = value.split_once('@') else {
        return Err(invalid(kind, "an email address must contain an '@'"));
    };
    if domain.contains('@') {
        return Err(invalid(
            kind,
            "an email address must contain exactly one '@'",
        ));
    }
    if local.is_empty() || local.len() > 64 {
        return Err(invalid(kind, "an email's local part must be 1 to 64 bytes"));
    }
    if local.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(kind, "an email's local part cannot contain spaces"));
    }
    let domain = domain.to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(invalid(
            kind,
            "an email's domain must have at least two labels, as in example.com",
        ));
    }
    if !labels.iter().all(|label| is_domain_label(label)) {
        return Err(invalid(
            kind,
            "an email's domain labels must be 1 to 63 letters, digits or hyphens, not starting or ending with a hyphen",
        ));
    }
    // Trimming cannot lengthen a value, but the limit is part of the rule, not
    // only of the input guard.
    let normalized = format!("{local}@{domain}");
    if normalized.len() > 254 {
        return Err(invalid(kind, "an email address must be at most 254 bytes"));
    }
    Ok(normalized)
}

fn is_domain_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// The local part and the domain of a normalized address, which has exactly
/// one '@'.
fn parts(normalized: &str) -> (&str, &str) {
    normalized.split_once('@').unwrap_or_default()
}

pub(super) fn mask(normalized: &str) -> String {
    let (local, domain) = parts(normalized);
    let first: String = local.chars().take(1).collect();
    format!("{first}***@{domain}")
}

/// ".invalid" is reserved by RFC 2606: mail to a token can never be delivered.
pub(super) fn candidate(normalized: &str, rng: &mut impl Rng) -> String {
    const ALPHANUMERIC: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let (local, _domain) = parts(normalized);
    let random_local: String = local
        .chars()
        .map(|_| char::from(ALPHANUMERIC[rng.random_range(0..ALPHANUMERIC.len())]))
        .collect();
    format!("{random_local}@token.invalid")
}

#[cfg(test)]
mod tests {
    use super::super::testing::{candidate, masked, ok, rejected, DRAWS};
    use super::*;

    #[test]
    fn email_keeps_the_local_part_case_and_lower_cases_the_domain() {
        assert_eq!(
            ok(FieldKind::Email, "John.Doe@Example.COM"),
            "John.Doe@example.com"
        );
        assert_eq!(
            ok(FieldKind::Email, "a+tag@mail.example-1.co.uk"),
            "a+tag@mail.example-1.co.uk"
        );
    }

    #[test]
    fn malformed_email_is_rejected() {
        let local_65 = format!("{}@example.com", "a".repeat(65));
        let label_64 = format!("a@{}.com", "b".repeat(64));
        for raw in [
            "john.example.com",
            "a@b@example.com",
            "@example.com",
            "john doe@example.com",
            "john@localhost",
            "john@example..com",
            "john@-example.com",
            "john@example-.com",
            "john@exa_mple.com",
            "john@exämple.com",
            "john@example.com.",
            local_65.as_str(),
            label_64.as_str(),
        ] {
            rejected(FieldKind::Email, raw);
        }
        assert!(rejected(FieldKind::Email, "a@b@example.com")
            .to_string()
            .contains("exactly one"));
    }

    #[test]
    fn email_mask_shows_the_first_char_and_the_domain() {
        assert_eq!(
            masked(FieldKind::Email, "john@example.com"),
            "j***@example.com"
        );
        assert_eq!(masked(FieldKind::Email, "a@b.co"), "a***@b.co");
        assert_eq!(masked(FieldKind::Email, "Éa@B.co"), "É***@b.co");
    }

    #[test]
    fn email_tokens_keep_the_local_length_under_token_invalid() {
        for _ in 0..DRAWS / 10 {
            let token = candidate(FieldKind::Email, "John.Doe@example.com");
            let (local, domain) = token.split_once('@').unwrap_or_default();
            assert_eq!(domain, "token.invalid");
            assert_eq!(local.len(), "John.Doe".len());
            assert!(local
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        }
        assert_eq!(
            candidate(FieldKind::Email, "j@x.io").len(),
            "j@token.invalid".len()
        );
        // No token without an '@': such a value never normalizes.
        rejected(FieldKind::Email, "no-at-sign");
    }
}
