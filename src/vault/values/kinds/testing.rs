//! Helpers for the kinds' unit tests.

use super::{FieldKind, Normalized, ValueError};
use time::macros::date;
use time::Date;

/// A fixed "today", so that a date of birth's verdict never depends on the clock.
pub const TODAY: Date = date!(2024 - 06 - 15);

pub fn normalized(kind: FieldKind, raw: &str) -> Normalized {
    match kind.normalize(raw, TODAY) {
        Ok(normalized) => normalized,
        Err(error) => panic!("{} rejected a valid value: {error}", kind.name()),
    }
}

/// The stored form of a valid value.
pub fn ok(kind: FieldKind, raw: &str) -> String {
    normalized(kind, raw).as_str().to_owned()
}

pub fn rejected(kind: FieldKind, raw: &str) -> ValueError {
    match kind.normalize(raw, TODAY) {
        Ok(_) => panic!("{} accepted an invalid value: {raw:?}", kind.name()),
        Err(error) => error,
    }
}

/// The mask of a valid value.
pub fn masked(kind: FieldKind, raw: &str) -> String {
    normalized(kind, raw).mask()
}

/// Enough random draws to meet every rare shape of a token.
pub const DRAWS: usize = 5000;

/// One format-preserving candidate for a valid value; every kind but
/// generic always has one.
pub fn candidate(kind: FieldKind, raw: &str) -> String {
    normalized(kind, raw)
        .format_preserving_candidate(&mut rand::rng())
        .unwrap_or_default()
}
