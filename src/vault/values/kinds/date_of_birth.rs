//! Dates of birth: stored as YYYY-MM-DD, from 1900 to today; masked to the
//! year, tokenized into dates before year 1000.

use super::{invalid, FieldKind, ValueError};
use rand::Rng;
use time::{Date, Month};

pub(super) const MAX_INPUT_LEN: usize = 16;

pub(super) fn normalize(value: &str, today: Date) -> Result<String, ValueError> {
    let kind = FieldKind::DateOfBirth;
    let Some((year, month, day)) = parse_iso_date(value) else {
        return Err(invalid(
            kind,
            "a date of birth must be written as YYYY-MM-DD",
        ));
    };
    let date = Month::try_from(month)
        .ok()
        .and_then(|month| Date::from_calendar_date(year, month, day).ok())
        .ok_or_else(|| invalid(kind, "a date of birth must be a real calendar date"))?;
    if year < 1900 {
        return Err(invalid(kind, "a date of birth cannot be before 1900"));
    }
    if date > today {
        return Err(invalid(kind, "a date of birth cannot be in the future"));
    }
    Ok(value.to_owned())
}

/// Splits `YYYY-MM-DD` (ASCII digits only) into numbers, without range checks.
fn parse_iso_date(value: &str) -> Option<(i32, u8, u8)> {
    let bytes = value.as_bytes();
    let shaped = bytes.len() == 10
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            4 | 7 => *byte == b'-',
            _ => byte.is_ascii_digit(),
        });
    if !shaped {
        return None;
    }
    let year = value[0..4].parse().ok()?;
    let month = value[5..7].parse().ok()?;
    let day = value[8..10].parse().ok()?;
    Some((year, month, day))
}

/// `normalized` is YYYY-MM-DD: the year is its first four bytes.
pub(super) fn mask(normalized: &str) -> String {
    let year = &normalized[..4];
    format!("{year}-**-**")
}

/// Years 0100-0999 look like a date but are never a living person's birth date;
/// days stop at 28 so every month is valid.
pub(super) fn candidate(rng: &mut impl Rng) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        rng.random_range(100..=999),
        rng.random_range(1..=12),
        rng.random_range(1..=28)
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::{candidate, masked, ok, rejected, DRAWS};
    use super::*;

    #[test]
    fn date_of_birth_accepts_real_past_dates_including_leap_days() {
        assert_eq!(ok(FieldKind::DateOfBirth, "1985-07-04"), "1985-07-04");
        assert_eq!(ok(FieldKind::DateOfBirth, "2000-02-29"), "2000-02-29");
        assert_eq!(ok(FieldKind::DateOfBirth, "1900-01-01"), "1900-01-01");
        assert_eq!(ok(FieldKind::DateOfBirth, "2024-06-15"), "2024-06-15");
    }

    #[test]
    fn date_of_birth_rejects_impossible_future_early_and_misshaped_dates() {
        for raw in [
            "1900-02-29",
            "2023-02-29",
            "2023-13-01",
            "2023-00-10",
            "2023-04-31",
            "2024-06-16",
            "1899-12-31",
        ] {
            rejected(FieldKind::DateOfBirth, raw);
        }
        for raw in [
            "1985-7-4",
            "04/07/1985",
            "19850704",
            "1985-07-04T00:00",
            "+985-07-04",
            "１９８５-07-04",
        ] {
            rejected(FieldKind::DateOfBirth, raw);
        }
        assert!(rejected(FieldKind::DateOfBirth, "2024-06-16")
            .to_string()
            .contains("future"));
    }

    #[test]
    fn date_of_birth_mask_shows_only_the_year() {
        assert_eq!(masked(FieldKind::DateOfBirth, "1985-07-04"), "1985-**-**");
    }

    #[test]
    fn date_of_birth_tokens_are_real_dates_before_year_1000() {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        for _ in 0..DRAWS {
            let token = candidate(FieldKind::DateOfBirth, "1985-07-04");
            assert_eq!(token.len(), 10);
            let parsed = time::Date::parse(&token, &format);
            assert!(
                parsed.is_ok_and(|date| (100..1000).contains(&date.year())),
                "{token}"
            );
        }
    }
}
