//! Personal names in any script: stored with whitespace collapsed, masked to
//! initials, tokenized into random letters of the same shape.

use super::{invalid, FieldKind, ValueError};
use rand::Rng;

pub(super) const MAX_INPUT_LEN: usize = 256;

pub(super) fn normalize(value: &str) -> Result<String, ValueError> {
    let kind = FieldKind::Name;
    // U+2019 is the apostrophe most keyboards and phones produce in "O’Brien".
    let is_name_punctuation = |c: char| matches!(c, '\'' | '\u{2019}' | '-' | '.' | ',');
    if !value
        .chars()
        .all(|c| c.is_alphabetic() || c.is_whitespace() || is_name_punctuation(c))
    {
        return Err(invalid(
            kind,
            "a name may contain only letters, spaces, apostrophes, hyphens, periods and commas",
        ));
    }
    if !value.chars().any(char::is_alphabetic) {
        return Err(invalid(kind, "a name must contain at least one letter"));
    }
    Ok(value.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Each word's first char, then three stars whatever the word's length.
pub(super) fn mask(normalized: &str) -> String {
    normalized
        .split_whitespace()
        .filter_map(|word| word.chars().next())
        .map(|initial| format!("{initial}***"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A name always has a letter, so always a shape.
pub(super) fn candidate(normalized: &str, rng: &mut impl Rng) -> String {
    super::shape::shaped_like(normalized, rng)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{candidate, masked, ok, rejected, DRAWS};
    use super::*;

    #[test]
    fn names_in_any_script_are_accepted_with_whitespace_collapsed() {
        assert_eq!(
            ok(FieldKind::Name, "  Jane   Q.  O'Neil-Smith, Jr. "),
            "Jane Q. O'Neil-Smith, Jr."
        );
        assert_eq!(ok(FieldKind::Name, "José Ñúñez"), "José Ñúñez");
        assert_eq!(ok(FieldKind::Name, "山田 太郎"), "山田 太郎");
        assert_eq!(ok(FieldKind::Name, "Seán O’Brien"), "Seán O’Brien");
    }

    #[test]
    fn names_with_digits_symbols_or_no_letters_are_rejected() {
        for raw in ["Jane2", "Jane_Doe", "Jane <Doe>", "-.,", "'"] {
            rejected(FieldKind::Name, raw);
        }
    }

    #[test]
    fn name_mask_shows_only_initials() {
        assert_eq!(masked(FieldKind::Name, "John Doe"), "J*** D***");
        assert_eq!(masked(FieldKind::Name, "Éric Ñúñez"), "É*** Ñ***");
        assert_eq!(masked(FieldKind::Name, "J"), "J***");
    }

    #[test]
    fn name_tokens_keep_the_shape_of_the_name() {
        for _ in 0..DRAWS / 10 {
            let token = candidate(FieldKind::Name, "Jane O'Neil-Smith");
            let (first, rest) = token.split_once(' ').unwrap_or_default();
            assert!(first.len() == 4 && first.starts_with(|c: char| c.is_ascii_uppercase()));
            assert_eq!(rest.len(), "O'Neil-Smith".len());
            assert_eq!((&rest[1..2], &rest[6..7]), ("'", "-"));
        }
    }
}
