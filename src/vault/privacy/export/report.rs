//! The plain-English export: what a customer can read in a minute.

use crate::vault::Action;
use std::collections::BTreeMap;
use std::fmt::Write;

use crate::policy::LegalBasis;
use crate::vault::FieldKind;

use super::{basis_in_words, kind_in_words, CustomerExport, ExportedConsent};

/// How far back the report counts uses of the customer's information.
const REPORT_DAYS: i64 = 90;
/// Actions that read a customer's values.
const READ_ACTIONS: [&str; 2] = [Action::GetFields.name(), Action::Detokenize.name()];

pub fn plain_english(export: &CustomerExport) -> String {
    let mut text = String::new();
    let _ = write_report(&mut text, export);
    text
}

fn write_report(text: &mut String, export: &CustomerExport) -> std::fmt::Result {
    writeln!(text, "What we hold about you")?;
    writeln!(text, "======================")?;
    writeln!(
        text,
        "Customer {} - report made {} - with us since {}.",
        export.customer_id,
        day(&export.exported_at),
        day(&export.customer_since)
    )?;
    writeln!(text)?;
    write_holdings(text, export)?;
    writeln!(text)?;
    write_purposes(text, export)?;
    writeln!(text)?;
    write_uses(text, export)?;
    writeln!(text)?;
    write_policy_changes(text, export)?;
    writeln!(text, "Your choices")?;
    writeln!(
        text,
        "You can withdraw any consent at any time, ask for a copy of your information \
         (like this report), or ask us to erase it. Erasing destroys the key that protects \
         your information, so it cannot be recovered afterwards."
    )
}

fn write_holdings(text: &mut String, export: &CustomerExport) -> std::fmt::Result {
    let kinds: Vec<&str> = export
        .fields
        .iter()
        .map(|field| FieldKind::from_name(field.kind).map_or("other information", kind_in_words))
        .collect();
    match kinds.len() {
        0 => writeln!(text, "We hold no profile information about you.")?,
        1 => writeln!(
            text,
            "We hold 1 piece of information about you: {}.",
            kinds[0]
        )?,
        n => writeln!(
            text,
            "We hold {n} pieces of information about you: {}.",
            join_words(&kinds)
        )?,
    }
    let standalone = export
        .tokens
        .iter()
        .filter(|token| token.field.is_none())
        .count();
    if standalone > 0 {
        writeln!(
            text,
            "We also keep {standalone} value(s) you gave us for a single use, such as a \
             payment, each locked away behind a reference number."
        )?;
    }
    Ok(())
}

fn write_purposes(text: &mut String, export: &CustomerExport) -> std::fmt::Result {
    writeln!(text, "Why we use your information")?;
    for purpose in &export.purposes {
        let basis = LegalBasis::from_name(purpose.basis).unwrap_or(LegalBasis::Consent);
        let consent = (basis == LegalBasis::Consent)
            .then(|| consent_status(&export.consents.current, &purpose.name));
        writeln!(
            text,
            "- {} ({}: {}{})",
            purpose.description,
            purpose.name,
            basis_in_words(basis),
            consent
                .map(|status| format!("; {status}"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

fn consent_status(current: &[ExportedConsent], purpose: &str) -> String {
    match current.iter().find(|consent| consent.purpose == purpose) {
        Some(consent) if consent.granted => format!("you agreed on {}", day(&consent.recorded_at)),
        Some(consent) => format!(
            "you said no on {}, so we do not use it for this",
            day(&consent.recorded_at)
        ),
        None => "you have not agreed, so we do not use it for this".to_owned(),
    }
}

fn write_uses(text: &mut String, export: &CustomerExport) -> std::fmt::Result {
    // The window ends when the export was made (the vault's clock).
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let since = time::OffsetDateTime::parse(&export.exported_at, rfc3339)
        .ok()
        .and_then(|exported_at| {
            (exported_at - time::Duration::days(REPORT_DAYS))
                .format(rfc3339)
                .ok()
        })
        .unwrap_or_default();
    // (principal, purpose) -> reads, in the order first seen.
    let mut uses: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for access in &export.access_history {
        if access.outcome == "ok"
            && READ_ACTIONS.contains(&access.action.as_str())
            && access.at >= since
        {
            *uses
                .entry((access.principal.as_str(), access.purpose.as_str()))
                .or_default() += 1;
        }
    }
    // Every read of the period is counted when the page starts at the newest
    // event and reaches the oldest, or an event from before the period.
    let page = &export.access_history_page;
    // Events trimmed into the audit archive are not in the live log.
    let whole_period = page.first_page
        && ((page.last_page && page.audit_trimmed_through_seq == 0)
            || export
                .access_history
                .last()
                .is_some_and(|oldest| oldest.at < since));
    let total: usize = uses.values().sum();
    if total == 0 && whole_period {
        writeln!(
            text,
            "In the last {REPORT_DAYS} days nobody read your information."
        )?;
    } else if total == 0 {
        writeln!(
            text,
            "In the records this report looked at, nobody read your information in the \
             last {REPORT_DAYS} days."
        )?;
    } else {
        writeln!(
            text,
            "In the last {REPORT_DAYS} days your information was read {}{}:",
            if whole_period { "" } else { "at least " },
            times(total)
        )?;
    }
    for ((principal, purpose), count) in uses {
        let why = export
            .purposes
            .iter()
            .find(|known| known.name == purpose)
            .map_or_else(
                || purpose.to_owned(),
                |known| lowercase_sentence(&known.description),
            );
        writeln!(text, "- {} by {principal}, for {why}", times(count))?;
    }
    if !whole_period {
        write_left_out(text, export)?;
    }
    if page.audit_trimmed_through_seq > 0 {
        writeln!(
            text,
            "Older records of how your information was used were moved to our audit \
             archive; ask us if you want them too."
        )?;
    }
    Ok(())
}

/// Says which records of use the report looked at, when it could not look at
/// all of them: never a count that is silently short.
fn write_left_out(text: &mut String, export: &CustomerExport) -> std::fmt::Result {
    let page = &export.access_history_page;
    let (Some(newest), Some(oldest)) =
        (export.access_history.first(), export.access_history.last())
    else {
        return writeln!(
            text,
            "This report looked at none of the records of how your information was used."
        );
    };
    let count = export.access_history.len();
    let (which, left_out) = match (page.first_page, page.last_page) {
        (true, _) => (format!("the {count} most recent"), "older ones were"),
        (false, true) => (format!("the {count} oldest"), "newer ones were"),
        (false, false) => (count.to_string(), "newer and older ones were"),
    };
    writeln!(
        text,
        "This report looked only at {which} records of how your information was used, from \
         {} to {}; {left_out} left out of it.",
        day(&oldest.at),
        day(&newest.at)
    )
}

fn write_policy_changes(text: &mut String, export: &CustomerExport) -> std::fmt::Result {
    if export.pending_notices.is_empty() && export.policy_acknowledgements.is_empty() {
        return Ok(());
    }
    writeln!(text, "Changes to our privacy policy")?;
    for ack in &export.policy_acknowledgements {
        writeln!(
            text,
            "- You confirmed on {} that you saw version {}.",
            day(&ack.acknowledged_at),
            ack.policy_version
        )?;
    }
    for notice in &export.pending_notices {
        writeln!(
            text,
            "- On {} we published version {}: {} You have not confirmed seeing it yet.",
            day(&notice.published_at),
            notice.policy_version,
            notice.summary.trim()
        )?;
        if !notice.purposes_needing_consent.is_empty() {
            writeln!(
                text,
                "  We will not use your information for {} until you agree again.",
                join_words(
                    &notice
                        .purposes_needing_consent
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                )
            )?;
        }
    }
    writeln!(text)
}

fn times(count: usize) -> String {
    if count == 1 {
        "once".to_owned()
    } else {
        format!("{count} times")
    }
}

/// "Charging you for orders." -> "charging you for orders."
fn lowercase_sentence(sentence: &str) -> String {
    let mut chars = sentence.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The date part of an RFC 3339 timestamp.
fn day(timestamp: &str) -> &str {
    timestamp.get(..10).unwrap_or(timestamp)
}

/// "a, b and c".
fn join_words(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_joined_as_in_a_sentence() {
        assert_eq!(join_words(&["a"]), "a");
        assert_eq!(join_words(&["a", "b"]), "a and b");
        assert_eq!(join_words(&["a", "b", "c"]), "a, b and c");
    }

    #[test]
    fn counts_read_as_words() {
        assert_eq!(times(1), "once");
        assert_eq!(times(3), "3 times");
        assert_eq!(lowercase_sentence("Charging you."), "charging you.");
    }
}
