//! The access policy: which purposes personal data may be processed for, who
//! may call the vault, with which scopes, for which purposes, and how the
//! values they read are disclosed. Loaded from a TOML file (see
//! docs/policy.md); anything the policy does not grant is refused.
//!
//! This module knows nothing of storage, crypto internals or protobuf.

mod dev;
mod keys;
mod model;
mod parse;
#[cfg(test)]
mod parse_tests;
mod subject;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use dev::dev_policy_toml;
pub use keys::{api_key_sha256_hex, generate_api_key};
pub use model::{Credential, Disclosure, LegalBasis, Principal, Purpose, RateLimits, Scope};
pub use subject::{Attribute, AttributeType, DistinguishedName};

/// Why a policy could not be loaded. Line numbers are 1-based.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("{}", with_line(*line, message))]
    Invalid {
        line: Option<usize>,
        message: String,
    },
}

fn with_line(line: Option<usize>, message: &str) -> String {
    match line {
        Some(line) => format!("policy line {line}: {message}"),
        None => format!("policy: {message}"),
    }
}

/// A validated policy. Principals are shared behind `Arc` so a request can
/// keep the principal it authenticated as while the policy is replaced.
#[derive(Debug)]
pub struct Policy {
    purposes: Vec<Purpose>,
    principals: Vec<Arc<Principal>>,
}

/// A policy file's text as read, and its sha256 (hex), which names that
/// version of the file in logs and the audit log.
pub struct PolicyText {
    pub text: String,
    pub sha256: String,
}

impl PolicyText {
    pub fn read(path: &Path) -> Result<PolicyText, PolicyError> {
        use sha2::Digest;
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.to_owned(),
            source,
        })?;
        let sha256 = data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(text.as_bytes()));
        Ok(PolicyText { text, sha256 })
    }
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        Policy::parse(&PolicyText::read(path)?.text)
    }

    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        parse::parse_policy(text)
    }

    /// In the order the file declares them.
    pub fn purposes(&self) -> &[Purpose] {
        &self.purposes
    }

    pub fn purpose(&self, name: &str) -> Option<&Purpose> {
        self.purposes.iter().find(|purpose| purpose.name == name)
    }

    /// The sha256 of the presented key is compared with every principal's
    /// api_key_sha256 in constant time, with no early exit, so timing says
    /// nothing about which principal matched.
    pub fn authenticate_api_key(&self, presented_key: &str) -> Option<Arc<Principal>> {
        // Rejecting an empty key up front leaks nothing: it is never valid.
        if presented_key.is_empty() {
            return None;
        }
        let presented_hash = keys::api_key_sha256(presented_key);
        let api_key_principals: Vec<(&Arc<Principal>, &[u8; 32])> = self
            .principals
            .iter()
            .filter_map(|principal| match principal.credential() {
                Credential::ApiKeySha256(hash) => Some((principal, hash)),
                _ => None,
            })
            .collect();
        let index = keys::find_matching_hash(
            &presented_hash,
            api_key_principals.iter().map(|(_, hash)| *hash),
        )?;
        Some(Arc::clone(api_key_principals[index].0))
    }

    /// mTLS: the principal whose spiffe_id is the certificate's URI SAN, or
    /// whose cert_subject is the certificate's subject (`None` when it has a
    /// value that is not a string). A certificate with several URI SANs matches
    /// no spiffe_id: an X.509-SVID has exactly one, and picking one of several
    /// would let whoever chose them choose the principal. A certificate that
    /// matches two different principals is refused rather than guessed at.
    pub fn authenticate_certificate(
        &self,
        subject: Option<&DistinguishedName>,
        uri_sans: &[String],
    ) -> Option<Arc<Principal>> {
        let spiffe_id = match uri_sans {
            [only] => Some(only),
            _ => None,
        };
        let mut matches = self
            .principals
            .iter()
            .filter(|principal| match principal.credential() {
                Credential::SpiffeId(id) => spiffe_id == Some(id),
                Credential::CertSubject(expected) => subject == Some(expected),
                Credential::ApiKeySha256(_) => false,
            });
        let first = matches.next()?;
        match matches.next() {
            None => Some(Arc::clone(first)),
            Some(_) => None,
        }
    }

    pub fn principals(&self) -> impl Iterator<Item = &Principal> {
        self.principals.iter().map(|principal| principal.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_with_principals(principals: &str) -> Policy {
        let text = format!(
            r#"
[[purposes]]
name = "billing"
description = "Charging you."
basis = "contract"

[[purposes]]
name = "marketing"
description = "Offers."
basis = "consent"
{principals}"#
        );
        Policy::parse(&text).expect("test policy parses")
    }

    fn key_principal(name: &str, key: &str, extra: &str) -> String {
        format!(
            "[[principals]]\nname = \"{name}\"\napi_key_sha256 = \"{}\"\n{extra}\n",
            api_key_sha256_hex(key)
        )
    }

    fn three_key_policy() -> Policy {
        policy_with_principals(&[
            key_principal("first", "key-one", "scopes = []"),
            key_principal("second", "key-two", "scopes = []"),
            "[[principals]]\nname = \"mesh\"\nspiffe_id = \"spiffe://example.org/x\"\nscopes = []\n".to_owned(),
            key_principal("third", "key-three", "scopes = []"),
        ]
        .concat())
    }

    #[test]
    fn right_api_key_authenticates_its_own_principal() {
        let policy = three_key_policy();
        for (key, name) in [
            ("key-one", "first"),
            ("key-two", "second"),
            ("key-three", "third"),
        ] {
            let principal = policy.authenticate_api_key(key).expect("key is known");
            assert_eq!(principal.name(), name);
        }
    }

    #[test]
    fn wrong_or_empty_api_key_authenticates_nobody() {
        let policy = three_key_policy();
        assert!(policy.authenticate_api_key("key-four").is_none());
        assert!(policy.authenticate_api_key("key-one ").is_none());
        assert!(policy.authenticate_api_key("").is_none());
    }

    #[test]
    fn privacy_admin_implies_consent_write_but_not_the_reverse() {
        let policy = policy_with_principals(
            &[
                key_principal("admin", "a", r#"scopes = ["privacy:admin"]"#),
                key_principal("consent", "b", r#"scopes = ["consent:write"]"#),
            ]
            .concat(),
        );
        let admin = policy.authenticate_api_key("a").expect("admin");
        assert!(admin.has_scope(Scope::PrivacyAdmin));
        assert!(admin.has_scope(Scope::ConsentWrite));
        assert!(!admin.has_scope(Scope::DataRead));
        // A plaintext export is a scope of its own, never implied.
        assert!(!admin.has_scope(Scope::PrivacyExport));
        let consent = policy.authenticate_api_key("b").expect("consent");
        assert!(consent.has_scope(Scope::ConsentWrite));
        assert!(!consent.has_scope(Scope::PrivacyAdmin));
    }

    #[test]
    fn only_the_listed_scopes_are_granted() {
        let policy = policy_with_principals(&key_principal(
            "checkout",
            "k",
            r#"scopes = ["data:write", "data:read"]"#,
        ));
        let checkout = policy.authenticate_api_key("k").expect("checkout");
        let granted: Vec<Scope> = Scope::ALL
            .into_iter()
            .filter(|s| checkout.has_scope(*s))
            .collect();
        assert_eq!(granted, [Scope::DataWrite, Scope::DataRead]);
    }

    #[test]
    fn wildcard_purpose_grants_every_declared_purpose_and_nothing_else() {
        let policy = policy_with_principals(&key_principal(
            "all",
            "k",
            "scopes = []\npurposes = [\"*\"]",
        ));
        let all = policy.authenticate_api_key("k").expect("all");
        assert!(all.may_use_purpose("billing"));
        assert!(all.may_use_purpose("marketing"));
        assert!(!all.may_use_purpose("support"));
        assert!(!all.may_use_purpose("*"));
    }

    #[test]
    fn explicit_purpose_list_grants_only_those_purposes() {
        let policy = policy_with_principals(
            &[
                key_principal("billing", "a", "scopes = []\npurposes = [\"billing\"]"),
                key_principal("nothing", "b", "scopes = []"),
            ]
            .concat(),
        );
        let billing = policy.authenticate_api_key("a").expect("billing");
        assert!(billing.may_use_purpose("billing"));
        assert!(!billing.may_use_purpose("marketing"));
        let nothing = policy.authenticate_api_key("b").expect("nothing");
        assert!(!nothing.may_use_purpose("billing"));
    }

    #[test]
    fn missing_disclosure_table_discloses_nothing() {
        let policy = policy_with_principals(&key_principal("k", "k", "scopes = [\"data:read\"]"));
        let principal = policy.authenticate_api_key("k").expect("principal");
        assert_eq!(
            principal.disclosure_for(Some("email"), "email"),
            Disclosure::None
        );
    }

    #[test]
    fn disclosure_rules_from_the_file_follow_field_kind_wildcard_precedence() {
        let policy = policy_with_principals(&key_principal(
            "k",
            "k",
            "scopes = []\n[principals.disclosure]\n\"*\" = \"masked\"\ncard_number = \"token\"\nrefund_card = \"plaintext\"",
        ));
        let principal = policy.authenticate_api_key("k").expect("principal");
        assert_eq!(
            principal.disclosure_for(Some("refund_card"), "card_number"),
            Disclosure::Plaintext
        );
        assert_eq!(
            principal.disclosure_for(Some("main_card"), "card_number"),
            Disclosure::Token
        );
        assert_eq!(
            principal.disclosure_for(Some("home"), "address"),
            Disclosure::Masked
        );
    }

    fn certificate_policy() -> Policy {
        policy_with_principals(
            r#"
[[principals]]
name = "mesh"
spiffe_id = "spiffe://example.org/checkout"
scopes = []

[[principals]]
name = "legacy"
cert_subject = "CN=legacy,O=Example"
scopes = []
"#,
        )
    }

    fn subject(text: &str) -> DistinguishedName {
        DistinguishedName::parse(text).expect("test subject parses")
    }

    #[test]
    fn certificate_matches_a_principal_by_its_one_uri_san() {
        let policy = certificate_policy();
        let uris = ["spiffe://example.org/checkout".to_owned()];
        let principal = policy
            .authenticate_certificate(Some(&subject("CN=other")), &uris)
            .expect("mesh");
        assert_eq!(principal.name(), "mesh");
    }

    #[test]
    fn certificate_with_several_uri_sans_matches_no_spiffe_id() {
        let policy = certificate_policy();
        for uris in [
            ["https://x", "spiffe://example.org/checkout"],
            [
                "spiffe://example.org/checkout",
                "spiffe://example.org/checkout",
            ],
        ] {
            let uris = uris.map(str::to_owned);
            assert!(policy.authenticate_certificate(None, &uris).is_none());
        }
    }

    #[test]
    fn certificate_matches_a_principal_by_subject() {
        let policy = certificate_policy();
        let principal = policy
            .authenticate_certificate(Some(&subject("CN=legacy,O=Example")), &[])
            .expect("legacy");
        assert_eq!(principal.name(), "legacy");
    }

    #[test]
    fn subject_spelling_another_in_one_value_matches_nobody() {
        let policy = certificate_policy();
        let spoof = subject("CN=legacy\\,O=Example");
        assert!(policy.authenticate_certificate(Some(&spoof), &[]).is_none());
    }

    #[test]
    fn unknown_certificate_authenticates_nobody() {
        let policy = certificate_policy();
        let uris = ["spiffe://example.org/other".to_owned()];
        assert!(policy
            .authenticate_certificate(Some(&subject("CN=legacy")), &uris)
            .is_none());
        assert!(policy.authenticate_certificate(None, &[]).is_none());
    }

    #[test]
    fn certificate_matching_two_principals_is_refused() {
        let policy = certificate_policy();
        let uris = ["spiffe://example.org/checkout".to_owned()];
        assert!(policy
            .authenticate_certificate(Some(&subject("CN=legacy,O=Example")), &uris)
            .is_none());
    }

    #[test]
    fn api_keys_never_authenticate_certificates() {
        let policy = three_key_policy();
        assert!(policy
            .authenticate_certificate(Some(&subject("CN=key-one")), &[])
            .is_none());
    }

    #[test]
    fn load_reports_the_path_of_a_missing_file() {
        let path = Path::new("/nonexistent/pii-vault/policy.toml");
        let err = Policy::load(path).expect_err("file is missing");
        assert!(matches!(err, PolicyError::Io { .. }));
        assert!(err
            .to_string()
            .contains("/nonexistent/pii-vault/policy.toml"));
    }

    #[test]
    fn load_reads_a_policy_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, dev_policy_toml(&api_key_sha256_hex("k"))).expect("write");
        let policy = Policy::load(&path).expect("dev policy loads");
        assert_eq!(policy.purposes().len(), 4);
    }

    #[test]
    fn purposes_keep_file_order_and_are_found_by_name() {
        let policy = policy_with_principals("");
        let names: Vec<&str> = policy.purposes().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["billing", "marketing"]);
        assert_eq!(
            policy.purpose("marketing").map(|p| p.basis),
            Some(LegalBasis::Consent)
        );
        assert!(policy.purpose("support").is_none());
        assert_eq!(policy.principals().count(), 0);
    }
}
