//! The runtime side of a policy: scopes, purposes, disclosure rules and the
//! principals they are granted to. Everything here is already validated; the
//! parser in `parse.rs` is the only way to build a `Principal`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::subject::DistinguishedName;

/// A right to call a group of vault operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    DataWrite,
    DataRead,
    TokensDetokenize,
    ConsentWrite,
    PrivacyAdmin,
    /// ExportCustomer with every value in plaintext, whatever the principal's
    /// disclosure rules say; privacy:admin alone exports only what they allow.
    PrivacyExport,
    KeysAdmin,
    AuditRead,
}

impl Scope {
    /// Every scope, in the order the documentation lists them.
    pub const ALL: [Scope; 8] = [
        Scope::DataWrite,
        Scope::DataRead,
        Scope::TokensDetokenize,
        Scope::ConsentWrite,
        Scope::PrivacyAdmin,
        Scope::PrivacyExport,
        Scope::KeysAdmin,
        Scope::AuditRead,
    ];

    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Scope::DataWrite => "data:write",
            Scope::DataRead => "data:read",
            Scope::TokensDetokenize => "tokens:detokenize",
            Scope::ConsentWrite => "consent:write",
            Scope::PrivacyAdmin => "privacy:admin",
            Scope::PrivacyExport => "privacy:export",
            Scope::KeysAdmin => "keys:admin",
            Scope::AuditRead => "audit:read",
        }
    }

    pub fn from_name(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.name() == name)
    }
}

/// The GDPR article 6 ground a purpose relies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegalBasis {
    Consent,
    Contract,
    LegalObligation,
    LegitimateInterest,
}

impl LegalBasis {
    pub const ALL: [LegalBasis; 4] = [
        LegalBasis::Consent,
        LegalBasis::Contract,
        LegalBasis::LegalObligation,
        LegalBasis::LegitimateInterest,
    ];

    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            LegalBasis::Consent => "consent",
            LegalBasis::Contract => "contract",
            LegalBasis::LegalObligation => "legal_obligation",
            LegalBasis::LegitimateInterest => "legitimate_interest",
        }
    }

    pub fn from_name(name: &str) -> Option<LegalBasis> {
        LegalBasis::ALL
            .into_iter()
            .find(|basis| basis.name() == name)
    }
}

/// A reason the vault may process personal data for, as customers will read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purpose {
    pub name: String,
    pub description: String,
    pub basis: LegalBasis,
}

/// What a principal gets back when it reads a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disclosure {
    Plaintext,
    Masked,
    Token,
    None,
}

impl Disclosure {
    pub const ALL: [Disclosure; 4] = [
        Disclosure::Plaintext,
        Disclosure::Masked,
        Disclosure::Token,
        Disclosure::None,
    ];

    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Disclosure::Plaintext => "plaintext",
            Disclosure::Masked => "masked",
            Disclosure::Token => "token",
            Disclosure::None => "none",
        }
    }

    pub fn from_name(name: &str) -> Option<Disclosure> {
        Disclosure::ALL.into_iter().find(|rule| rule.name() == name)
    }
}

/// How a principal proves who it is.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    ApiKeySha256([u8; 32]),
    SpiffeId(String),
    CertSubject(DistinguishedName),
}

impl fmt::Debug for Credential {
    // A key hash is not the key, but printing it whole would still let anyone
    // holding logs test guessed keys offline; 4 bytes are enough to tell keys apart.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::ApiKeySha256(hash) => {
                let prefix = data_encoding::HEXLOWER.encode(&hash[..4]);
                write!(f, "api key (sha256 {prefix}…)")
            }
            Credential::SpiffeId(id) => write!(f, "spiffe id {id:?}"),
            Credential::CertSubject(subject) => write!(f, "cert subject {:?}", subject.to_string()),
        }
    }
}

/// A caller of the vault and everything the policy grants it.
#[derive(Debug)]
pub struct Principal {
    pub(super) name: String,
    pub(super) credential: Credential,
    pub(super) scopes: BTreeSet<Scope>,
    /// Already expanded: `"*"` in the file becomes every declared purpose, so a
    /// purpose that is not in the policy is never granted.
    pub(super) purposes: BTreeSet<String>,
    /// Keyed by field name, kind name or `"*"`; they share one namespace in the file.
    pub(super) disclosure: BTreeMap<String, Disclosure>,
    pub(super) rate_limits: RateLimits,
}

/// How fast a principal may read (`[principals.rate_limits]`); none means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RateLimits {
    /// Values resolved by Detokenize, per second.
    pub detokenize_per_second: Option<f64>,
    /// GetFields, FindCustomers and ExportCustomer calls, per second.
    pub reads_per_second: Option<f64>,
}

impl Principal {
    pub fn rate_limits(&self) -> RateLimits {
        self.rate_limits
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// privacy:admin implies consent:write: whoever may erase a customer may
    /// also record what they agreed to.
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
            || (scope == Scope::ConsentWrite && self.scopes.contains(&Scope::PrivacyAdmin))
    }

    pub fn may_use_purpose(&self, purpose: &str) -> bool {
        self.purposes.contains(purpose)
    }

    /// The rule for one value: the field name's rule, else the kind's, else
    /// `"*"`, else `None`. The most specific rule wins so a policy can say
    /// "mask everything except card_number".
    pub fn disclosure_for(&self, field_name: Option<&str>, kind_name: &str) -> Disclosure {
        field_name
            .and_then(|field| self.disclosure.get(field))
            .or_else(|| self.disclosure.get(kind_name))
            .or_else(|| self.disclosure.get("*"))
            .copied()
            .unwrap_or(Disclosure::None)
    }

    pub fn credential(&self) -> &Credential {
        &self.credential
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal_with_disclosure(rules: &[(&str, Disclosure)]) -> Principal {
        Principal {
            name: "test".to_owned(),
            credential: Credential::SpiffeId("spiffe://example.org/test".to_owned()),
            scopes: BTreeSet::new(),
            purposes: BTreeSet::new(),
            disclosure: rules
                .iter()
                .map(|(key, rule)| ((*key).to_owned(), *rule))
                .collect(),
            rate_limits: RateLimits::default(),
        }
    }

    #[test]
    fn every_scope_name_round_trips() {
        for scope in Scope::ALL {
            assert_eq!(Scope::from_name(scope.name()), Some(scope));
        }
        assert_eq!(Scope::from_name("data:wrte"), None);
    }

    #[test]
    fn every_legal_basis_and_disclosure_name_round_trips() {
        for basis in LegalBasis::ALL {
            assert_eq!(LegalBasis::from_name(basis.name()), Some(basis));
        }
        for rule in Disclosure::ALL {
            assert_eq!(Disclosure::from_name(rule.name()), Some(rule));
        }
    }

    #[test]
    fn field_name_rule_wins_over_kind_and_wildcard() {
        let principal = principal_with_disclosure(&[
            ("*", Disclosure::Masked),
            ("card_number", Disclosure::Token),
            ("billing_card", Disclosure::Plaintext),
        ]);
        assert_eq!(
            principal.disclosure_for(Some("billing_card"), "card_number"),
            Disclosure::Plaintext
        );
    }

    #[test]
    fn kind_rule_applies_when_the_field_has_none() {
        let principal = principal_with_disclosure(&[
            ("*", Disclosure::Masked),
            ("card_number", Disclosure::Token),
        ]);
        assert_eq!(
            principal.disclosure_for(Some("spare_card"), "card_number"),
            Disclosure::Token
        );
        assert_eq!(
            principal.disclosure_for(None, "card_number"),
            Disclosure::Token
        );
    }

    #[test]
    fn wildcard_rule_applies_when_neither_field_nor_kind_match() {
        let principal = principal_with_disclosure(&[("*", Disclosure::Masked)]);
        assert_eq!(
            principal.disclosure_for(Some("home"), "address"),
            Disclosure::Masked
        );
    }

    #[test]
    fn no_matching_rule_discloses_nothing() {
        let principal = principal_with_disclosure(&[("email", Disclosure::Plaintext)]);
        assert_eq!(
            principal.disclosure_for(Some("ssn"), "ssn"),
            Disclosure::None
        );
        let no_rules = principal_with_disclosure(&[]);
        assert_eq!(no_rules.disclosure_for(None, "email"), Disclosure::None);
    }

    #[test]
    fn api_key_credential_debug_shows_only_a_hash_prefix() {
        let mut hash = [0xab; 32];
        hash[..4].copy_from_slice(&[0x1a, 0x2b, 0x3c, 0x4d]);
        let printed = format!("{:?}", Credential::ApiKeySha256(hash));
        assert_eq!(printed, "api key (sha256 1a2b3c4d…)");
    }
}
