//! Value kinds: what a value of each kind must look like, the form it is stored
//! in, how it is shown masked, and the shape of its format-preserving token.
//! Each kind's rules are in its own file; this one holds what all kinds share.
//!
//! Error messages name the problem and never contain the value or any part of
//! it: rejected values end up in logs and client error strings, and a rejected
//! SSN is still an SSN. `ValueError::Invalid` only takes `&'static str` reasons so
//! that a value cannot be formatted into one by accident.

mod address;
mod card_number;
mod date_of_birth;
mod email;
mod generic;
mod name;
mod phone;
mod shape;
mod ssn;
#[cfg(test)]
mod testing;

pub use card_number::is_luhn_valid;

use rand::Rng;
use time::Date;

/// The kind of a value; decides validation, normalization, masking and the shape
/// of a format-preserving token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldKind {
    Generic,
    Ssn,
    Email,
    Phone,
    Address,
    Name,
    DateOfBirth,
    CardNumber,
}

/// Why a raw value was rejected. Messages never contain the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("value is empty for kind {}", .kind.name())]
    Empty { kind: FieldKind },
    #[error("value is longer than {max} bytes for kind {}", .kind.name())]
    TooLong { kind: FieldKind, max: usize },
    #[error("value contains a control character, which kind {} does not allow", .kind.name())]
    ControlCharacter { kind: FieldKind },
    #[error("{reason}")]
    Invalid {
        kind: FieldKind,
        reason: &'static str,
    },
}

impl FieldKind {
    pub const ALL: [FieldKind; 8] = [
        FieldKind::Generic,
        FieldKind::Ssn,
        FieldKind::Email,
        FieldKind::Phone,
        FieldKind::Address,
        FieldKind::Name,
        FieldKind::DateOfBirth,
        FieldKind::CardNumber,
    ];

    /// The name used in policy files and messages.
    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Generic => "generic",
            FieldKind::Ssn => "ssn",
            FieldKind::Email => "email",
            FieldKind::Phone => "phone",
            FieldKind::Address => "address",
            FieldKind::Name => "name",
            FieldKind::DateOfBirth => "date_of_birth",
            FieldKind::CardNumber => "card_number",
        }
    }

    pub fn from_name(name: &str) -> Option<FieldKind> {
        FieldKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Kinds that get a blind index, so customers can be found by them.
    pub fn is_searchable(self) -> bool {
        matches!(self, FieldKind::Email | FieldKind::Phone | FieldKind::Ssn)
    }

    /// Bytes accepted before normalization; checked first so that a huge value
    /// costs nothing to reject.
    pub fn max_input_len(self) -> usize {
        match self {
            FieldKind::Generic => generic::MAX_INPUT_LEN,
            FieldKind::Ssn => ssn::MAX_INPUT_LEN,
            FieldKind::Email => email::MAX_INPUT_LEN,
            FieldKind::Phone => phone::MAX_INPUT_LEN,
            FieldKind::Address => address::MAX_INPUT_LEN,
            FieldKind::Name => name::MAX_INPUT_LEN,
            FieldKind::DateOfBirth => date_of_birth::MAX_INPUT_LEN,
            FieldKind::CardNumber => card_number::MAX_INPUT_LEN,
        }
    }

    /// Validates `raw` and returns its stored form. `today` bounds dates of birth.
    pub fn normalize(self, raw: &str, today: Date) -> Result<Normalized, ValueError> {
        let value = self.trimmed_input(raw)?;
        let value = match self {
            FieldKind::Generic => generic::normalize(value),
            FieldKind::Ssn => ssn::normalize(value)?,
            FieldKind::Email => email::normalize(value)?,
            FieldKind::Phone => phone::normalize(value)?,
            FieldKind::Address => address::normalize(value)?,
            FieldKind::Name => name::normalize(value)?,
            FieldKind::DateOfBirth => date_of_birth::normalize(value, today)?,
            FieldKind::CardNumber => card_number::normalize(value)?,
        };
        Ok(Normalized { kind: self, value })
    }

    /// `raw` trimmed, after the checks every kind makes first.
    fn trimmed_input(self, raw: &str) -> Result<&str, ValueError> {
        let max = self.max_input_len();
        if raw.len() > max {
            return Err(ValueError::TooLong { kind: self, max });
        }
        // Trim before looking for control characters: a trailing newline pasted
        // along with an SSN is harmless and should not reject it.
        let value = raw.trim();
        if value.is_empty() {
            return Err(ValueError::Empty { kind: self });
        }
        if value
            .chars()
            .any(|c| c.is_control() && !self.allowed_controls().contains(&c))
        {
            return Err(ValueError::ControlCharacter { kind: self });
        }
        Ok(value)
    }

    fn allowed_controls(self) -> &'static [char] {
        match self {
            FieldKind::Address => address::ALLOWED_CONTROLS,
            FieldKind::Generic => generic::ALLOWED_CONTROLS,
            _ => &[],
        }
    }
}

/// A value in the stored form of its kind. Only `FieldKind::normalize` makes
/// one, so whatever takes a `Normalized` (masks, tokens, blind indexes) knows
/// its shape and need not check it again. `Debug` shows the kind, never the
/// value.
#[derive(Clone, PartialEq, Eq)]
pub struct Normalized {
    kind: FieldKind,
    value: String,
}

impl Normalized {
    /// A value read back from the store, if it is in the stored form of
    /// `kind`, which is one that normalizing leaves as it is. Every value was
    /// normalized before it was stored, so `None` means a corrupt record.
    pub fn from_stored(kind: FieldKind, stored: &str, today: Date) -> Option<Normalized> {
        kind.normalize(stored, today)
            .ok()
            .filter(|normalized| normalized.value == stored)
    }

    pub fn kind(&self) -> FieldKind {
        self.kind
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The value masked for display.
    pub fn mask(&self) -> String {
        let value = self.as_str();
        match self.kind {
            FieldKind::Generic => generic::mask(value),
            FieldKind::Ssn => ssn::mask(value),
            FieldKind::Email => email::mask(value),
            FieldKind::Phone => phone::mask(value),
            FieldKind::Address => address::mask(value),
            FieldKind::Name => name::mask(value),
            FieldKind::DateOfBirth => date_of_birth::mask(value),
            FieldKind::CardNumber => card_number::mask(value),
        }
    }

    /// One random format-preserving token candidate of the value's kind; it
    /// may equal the value. `None` when the value has no letter or digit to
    /// shape a token from.
    pub(in crate::vault::values) fn format_preserving_candidate(
        &self,
        rng: &mut impl Rng,
    ) -> Option<String> {
        let value = self.as_str();
        match self.kind {
            FieldKind::Generic => generic::candidate(value, rng),
            FieldKind::Ssn => Some(ssn::candidate(rng)),
            FieldKind::Email => Some(email::candidate(value, rng)),
            FieldKind::Phone => Some(phone::candidate(value, rng)),
            FieldKind::Address => Some(address::candidate(value, rng)),
            FieldKind::Name => Some(name::candidate(value, rng)),
            FieldKind::DateOfBirth => Some(date_of_birth::candidate(rng)),
            FieldKind::CardNumber => Some(card_number::candidate(value, rng)),
        }
    }
}

impl std::fmt::Debug for Normalized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Normalized")
            .field("kind", &self.kind)
            .field("value", &"[redacted]")
            .finish()
    }
}

fn invalid(kind: FieldKind, reason: &'static str) -> ValueError {
    ValueError::Invalid { kind, reason }
}

/// Every char but the last `count` as '*', length preserved; all stars when the
/// value is no longer than `count`.
fn stars_then_tail(value: &str, count: usize) -> String {
    let length = value.chars().count();
    let hidden = if length > count {
        length - count
    } else {
        length
    };
    value
        .chars()
        .enumerate()
        .map(|(index, c)| if index < hidden { '*' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::testing::{normalized, ok, rejected};
    use super::*;

    #[test]
    fn names_round_trip_for_every_kind() {
        for kind in FieldKind::ALL {
            assert_eq!(FieldKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(FieldKind::from_name("SSN"), None);
        assert_eq!(FieldKind::from_name(""), None);
    }

    #[test]
    fn only_email_phone_and_ssn_are_searchable() {
        let searchable: Vec<_> = FieldKind::ALL
            .into_iter()
            .filter(|k| k.is_searchable())
            .collect();
        assert_eq!(
            searchable,
            [FieldKind::Ssn, FieldKind::Email, FieldKind::Phone]
        );
    }

    #[test]
    fn empty_and_blank_values_are_rejected_for_every_kind() {
        for kind in FieldKind::ALL {
            assert_eq!(rejected(kind, ""), ValueError::Empty { kind });
            assert_eq!(rejected(kind, "  \t\n "), ValueError::Empty { kind });
        }
    }

    #[test]
    fn values_longer_than_the_kind_limit_are_rejected_before_trimming() {
        for kind in FieldKind::ALL {
            let max = kind.max_input_len();
            let long = format!("{}a", " ".repeat(max));
            assert_eq!(rejected(kind, &long), ValueError::TooLong { kind, max });
        }
        assert_eq!(
            rejected(FieldKind::Ssn, &"1".repeat(33)).to_string(),
            "value is longer than 32 bytes for kind ssn"
        );
    }

    #[test]
    fn control_characters_are_rejected_except_newline_in_address_and_tab_in_generic() {
        for kind in FieldKind::ALL {
            let error = rejected(kind, "a\u{7}b");
            assert_eq!(error, ValueError::ControlCharacter { kind });
        }
        assert_eq!(
            ok(FieldKind::Address, "1 Main St\nSpringfield"),
            "1 Main St\nSpringfield"
        );
        assert_eq!(ok(FieldKind::Generic, "a\tb\nc"), "a\tb\nc");
        assert!(matches!(
            rejected(FieldKind::Address, "a\tb"),
            ValueError::ControlCharacter { .. }
        ));
        assert!(matches!(
            rejected(FieldKind::Name, "Jane\nDoe"),
            ValueError::ControlCharacter { .. }
        ));
        assert!(matches!(
            rejected(FieldKind::Generic, "a\u{0}b"),
            ValueError::ControlCharacter { .. }
        ));
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        assert_eq!(ok(FieldKind::Ssn, " 123-45-6789\n"), "123-45-6789");
        assert_eq!(ok(FieldKind::Generic, "  hello  "), "hello");
    }

    #[test]
    fn a_normalized_value_carries_its_kind_and_hides_its_value_in_debug() {
        let ssn = normalized(FieldKind::Ssn, "123456789");
        assert_eq!(ssn.kind(), FieldKind::Ssn);
        assert_eq!(ssn.as_str(), "123-45-6789");
        let debug = format!("{ssn:?}");
        assert!(!debug.contains("6789") && debug.contains("Ssn"), "{debug}");
    }

    #[test]
    fn stored_values_are_taken_back_only_in_their_normalized_form() {
        let today = testing::TODAY;
        let stored = Normalized::from_stored(FieldKind::Ssn, "123-45-6789", today);
        assert_eq!(stored, Some(normalized(FieldKind::Ssn, "123-45-6789")));
        for (kind, stored) in [
            (FieldKind::Ssn, "123456789"),
            (FieldKind::Phone, "(555) 123-4567"),
            (FieldKind::Email, "a@EXAMPLE.com"),
            (FieldKind::Generic, " padded "),
            (FieldKind::CardNumber, "42"),
        ] {
            assert_eq!(Normalized::from_stored(kind, stored, today), None);
        }
    }

    #[test]
    fn no_rejection_message_contains_the_rejected_value() {
        let cases = [
            (FieldKind::Ssn, "987-42-9137"),
            (FieldKind::Ssn, "981427913"),
            (FieldKind::Ssn, "4271-3-9137"),
            (FieldKind::Email, "zorblax.quux@@example.com"),
            (FieldKind::Email, "zorblax@QUUXDOMAIN"),
            (FieldKind::Phone, "0779 134 2871"),
            (FieldKind::Address, "#!@ ~~ ^^"),
            (FieldKind::Name, "Zorblax9 Quux"),
            (FieldKind::DateOfBirth, "2031-03-17"),
            (FieldKind::DateOfBirth, "1873-03-17"),
            (FieldKind::CardNumber, "4111 9137 4271 0000"),
            (FieldKind::Generic, "zorblax\u{1b}quux"),
            (FieldKind::Ssn, "91374271391374271391374271391374271"),
        ];
        for (kind, raw) in cases {
            let message = rejected(kind, raw).to_string();
            assert!(!message.contains(raw.trim()), "{message}");
            for part in raw
                .split(|c: char| !c.is_alphanumeric())
                .filter(|part| part.len() >= 3)
            {
                assert!(
                    !message.contains(part),
                    "message {message:?} leaks a part of the value"
                );
            }
        }
    }

    #[test]
    fn masking_short_values_never_reveals_them_whole() {
        // Masks take only normalized values, so these are the short ones
        // each kind accepts.
        for (kind, raw) in [
            (FieldKind::Generic, "x"),
            (FieldKind::Generic, "1234"),
            (FieldKind::Address, "é"),
            (FieldKind::Address, "1234"),
        ] {
            let masked = normalized(kind, raw).mask();
            assert!(!masked.contains(raw), "{} mask of {raw:?}", kind.name());
        }
    }

    #[test]
    fn stars_then_tail_keeps_the_length_and_hides_values_no_longer_than_the_tail() {
        assert_eq!(stars_then_tail("12345678", 2), "******78");
        assert_eq!(stars_then_tail("ßßßß", 2), "**ßß");
        assert_eq!(stars_then_tail("42", 4), "**");
        assert_eq!(stars_then_tail("", 4), "");
    }
}
