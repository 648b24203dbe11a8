//! The policy `serve --dev` writes. It doubles as the annotated example a
//! newcomer reads first, so its comments explain every part of the format.

use super::model::Scope;

/// The policy `serve --dev` writes: four example purposes and one principal,
/// "dev", holding the given API key hash, every scope, every purpose and
/// plaintext disclosure of everything.
pub fn dev_policy_toml(api_key_sha256_hex: &str) -> String {
    let scopes = Scope::ALL
        .map(|scope| format!("\"{}\"", scope.name()))
        .join(", ");
    format!(
        r##"# pii-vault development policy, written by `pii-vault serve --dev`.
#
# A policy says why personal data may be processed (purposes) and who may call
# the vault with which rights (principals). Anything it does not grant is
# refused. Do not use this file in production: its one key may do everything
# and reads every value in plaintext.

# --- Purposes ---------------------------------------------------------------
# Every read names one purpose. Customers see the descriptions, so write them
# for a customer, not for an engineer.
#   name         1 to 64 lowercase letters, digits or underscores
#   basis        the legal basis the purpose relies on:
#                consent | contract | legal_obligation | legitimate_interest

[[purposes]]
name = "billing"
description = "Charging you for the orders you place."
basis = "contract"

[[purposes]]
name = "marketing"
description = "Sending you offers picked for you."
basis = "consent"

[[purposes]]
name = "support"
description = "Helping you when you contact us."
basis = "legitimate_interest"

[[purposes]]
name = "fraud_prevention"
description = "Keeping your account safe from fraud."
basis = "legal_obligation"

# --- Principals -------------------------------------------------------------
# A principal is a caller. It proves who it is with exactly one of:
#   api_key_sha256 = "<sha256 hex of its bearer key>"  (the key itself is never stored)
#   spiffe_id      = "spiffe://example.org/service"    (mTLS: its certificate's one URI SAN)
#   cert_subject   = "CN=service,O=Example"            (mTLS: its certificate's subject,
#                    RDNs in certificate order, RFC 4514 escapes: 'O=Acme\, Inc.')

[[principals]]
name = "dev"
api_key_sha256 = "{api_key_sha256_hex}"

# Scopes: which operations it may call. privacy:admin also grants consent:write;
# it exports a customer with each value shown as the disclosure rules below
# allow. privacy:export exports every value in plaintext, whatever those say.
scopes = [{scopes}]

# Purposes it may name when it reads; "*" means every purpose declared above.
purposes = ["*"]

# How the values it reads come back: plaintext | masked | token | none.
# A rule's key is matched against the field name first, then the value's kind
# (ssn, email, phone, address, name, date_of_birth, card_number, generic),
# then "*"; a value no rule matches is not disclosed at all (none).
[principals.disclosure]
"*" = "plaintext"
"##
    )
}

#[cfg(test)]
mod tests {
    use super::super::{api_key_sha256_hex, Disclosure, LegalBasis, Policy, Scope};
    use super::*;

    #[test]
    fn dev_policy_parses_and_its_key_has_every_scope_and_purpose() {
        let key = "pv_devkey";
        let policy =
            Policy::parse(&dev_policy_toml(&api_key_sha256_hex(key))).expect("dev policy parses");
        let dev = policy
            .authenticate_api_key(key)
            .expect("dev key authenticates");
        assert_eq!(dev.name(), "dev");
        assert!(Scope::ALL.into_iter().all(|scope| dev.has_scope(scope)));
        assert!(policy
            .purposes()
            .iter()
            .all(|p| dev.may_use_purpose(&p.name)));
        assert_eq!(
            dev.disclosure_for(Some("ssn"), "ssn"),
            Disclosure::Plaintext
        );
        assert_eq!(policy.principals().count(), 1);
    }

    #[test]
    fn dev_policy_declares_the_four_example_purposes() {
        let policy =
            Policy::parse(&dev_policy_toml(&api_key_sha256_hex("k"))).expect("dev policy parses");
        let declared: Vec<(&str, LegalBasis)> = policy
            .purposes()
            .iter()
            .map(|purpose| (purpose.name.as_str(), purpose.basis))
            .collect();
        assert_eq!(
            declared,
            [
                ("billing", LegalBasis::Contract),
                ("marketing", LegalBasis::Consent),
                ("support", LegalBasis::LegitimateInterest),
                ("fraud_prevention", LegalBasis::LegalObligation),
            ]
        );
        let support = policy.purpose("support").expect("support");
        assert_eq!(support.description, "Helping you when you contact us.");
    }
}
