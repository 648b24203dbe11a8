//! Disclosure rules are keyed by field name, kind name or `"*"`, in one
//! namespace: a rule keyed by a kind name (`card_number`) is also the rule of
//! every field of that name, whatever the field's kind. Where that rule shows
//! more than another kind's own rule would, a field named like a kind but
//! holding that other kind is shown more than its kind allows. The policy
//! cannot tell which was meant, so the vault says so when it loads one.

use crate::policy::{Disclosure, Policy};

use crate::vault::FieldKind;

/// How much a rule shows, least first.
fn openness(rule: Disclosure) -> u8 {
    match rule {
        Disclosure::None => 0,
        Disclosure::Token => 1,
        Disclosure::Masked => 2,
        Disclosure::Plaintext => 3,
    }
}

/// One message per principal and kind-named rule that shows some other kind
/// more than that kind's own rule, naming the kinds and both rules.
pub fn kind_named_rule_warnings(policy: &Policy) -> Vec<String> {
    let mut warnings = Vec::new();
    for principal in policy.principals() {
        for named in FieldKind::ALL {
            let loosened: Vec<String> = FieldKind::ALL
                .into_iter()
                .filter(|other| *other != named)
                .filter_map(|other| {
                    let as_field = principal.disclosure_for(Some(named.name()), other.name());
                    let as_kind = principal.disclosure_for(None, other.name());
                    (openness(as_field) > openness(as_kind)).then(|| {
                        format!(
                            "{} ({} instead of {})",
                            other.name(),
                            as_field.name(),
                            as_kind.name()
                        )
                    })
                })
                .collect();
            if !loosened.is_empty() {
                warnings.push(format!(
                    "principal \"{}\": disclosure rule \"{}\" names a kind, and field names share \
                     its namespace: a field named \"{}\" holding another kind of value is shown \
                     by this rule, more than that kind's own: {}. Keep fields named after a kind \
                     to values of that kind",
                    principal.name(),
                    named.name(),
                    named.name(),
                    loosened.join(", ")
                ));
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(disclosure: &str) -> Policy {
        Policy::parse(&format!(
            r#"
[[purposes]]
name = "billing"
description = "Billing."
basis = "contract"

[[principals]]
name = "checkout"
spiffe_id = "spiffe://example.org/checkout"
scopes = ["data:read"]
[principals.disclosure]
{disclosure}
"#
        ))
        .expect("a valid policy")
    }

    #[test]
    fn a_kind_named_rule_that_shows_other_kinds_more_is_reported() {
        let warnings =
            kind_named_rule_warnings(&policy("\"*\" = \"masked\"\ncard_number = \"plaintext\""));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let warning = &warnings[0];
        assert!(
            warning.contains("\"checkout\"")
                && warning.contains("\"card_number\"")
                && warning.contains("ssn (plaintext instead of masked)"),
            "{warning}"
        );
    }

    #[test]
    fn wildcards_field_rules_and_stricter_kind_rules_are_not_reported() {
        for rules in [
            "\"*\" = \"plaintext\"",
            "\"*\" = \"masked\"\nrefund_card = \"plaintext\"",
            "\"*\" = \"masked\"\nssn = \"token\"",
        ] {
            assert_eq!(
                kind_named_rule_warnings(&policy(rules)),
                Vec::<String>::new(),
                "{rules}"
            );
        }
    }
}
