//! Policy file parsing: TOML into raw structs that keep every value's span,
//! then validation into the runtime types, so that every mistake is reported
//! with the line it is on and the item it belongs to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;

use data_encoding::HEXLOWER_PERMISSIVE;
use serde::Deserialize;
use toml::Spanned;

use super::keys::api_key_sha256;
use super::model::{Credential, Disclosure, LegalBasis, Principal, Purpose, RateLimits, Scope};
use super::subject::DistinguishedName;
use super::{Policy, PolicyError};

// `deny_unknown_fields` everywhere: in a policy a misspelt key would silently
// grant or withhold access, so it must be an error, never ignored.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    purposes: Option<Spanned<Vec<RawPurpose>>>,
    #[serde(default)]
    principals: Vec<RawPrincipal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    name: Spanned<String>,
    description: Spanned<String>,
    basis: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    name: Spanned<String>,
    api_key_sha256: Option<Spanned<String>>,
    spiffe_id: Option<Spanned<String>>,
    cert_subject: Option<Spanned<String>>,
    scopes: Vec<Spanned<String>>,
    #[serde(default)]
    purposes: Vec<Spanned<String>>,
    #[serde(default)]
    disclosure: BTreeMap<Spanned<String>, Spanned<String>>,
    rate_limits: Option<Spanned<RawRateLimits>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimits {
    detokenize_per_second: Option<f64>,
    reads_per_second: Option<f64>,
}

/// Rates must be positive, finite numbers.
fn rate_limits(raw: Option<Spanned<RawRateLimits>>) -> Result<RateLimits, (Range<usize>, String)> {
    let Some(raw) = raw else {
        return Ok(RateLimits::default());
    };
    let span = raw.span();
    let raw = raw.into_inner();
    for (name, rate) in [
        ("detokenize_per_second", raw.detokenize_per_second),
        ("reads_per_second", raw.reads_per_second),
    ] {
        if rate.is_some_and(|rate| !(rate.is_finite() && rate > 0.0)) {
            return Err((
                span,
                format!("rate_limits.{name} must be a positive number"),
            ));
        }
    }
    Ok(RateLimits {
        detokenize_per_second: raw.detokenize_per_second,
        reads_per_second: raw.reads_per_second,
    })
}

/// Parses and validates a whole policy; the first problem found is returned.
pub(super) fn parse_policy(text: &str) -> Result<Policy, PolicyError> {
    let source = Source { text };
    let raw: RawPolicy = toml::from_str(text).map_err(|err| source.syntax_error(&err))?;
    let purposes = validate_purposes(&source, raw.purposes)?;
    let principals = validate_principals(&source, raw.principals, &purposes)?;
    Ok(Policy {
        purposes,
        principals: principals.into_iter().map(Arc::new).collect(),
    })
}

/// The policy text, to turn byte spans into line numbers.
struct Source<'a> {
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count()
            + 1
    }

    fn invalid(&self, span: &Range<usize>, message: String) -> PolicyError {
        PolicyError::Invalid {
            line: Some(self.line(span)),
            message,
        }
    }

    fn syntax_error(&self, err: &toml::de::Error) -> PolicyError {
        let mut message = err.message().trim().to_owned();
        match err.span() {
            Some(span) => {
                // toml says only "duplicate key"; name the key when the span
                // is one (never a value: people paste secrets into values).
                let key = self.text.get(span.clone()).filter(|key| is_bare_key(key));
                if let (true, Some(key)) = (message == "duplicate key", key) {
                    message = format!("duplicate key `{key}`");
                }
                PolicyError::Syntax {
                    line: self.line(&span),
                    message,
                }
            }
            None => PolicyError::Invalid {
                line: None,
                message,
            },
        }
    }
}

/// A TOML bare key, short enough to repeat in a message.
fn is_bare_key(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Purpose names and disclosure keys end up in audit records, consent records
/// and field names, so they are kept to a plain, unambiguous alphabet.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    starts_with_letter
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

const IDENTIFIER_RULE: &str =
    "1 to 64 lowercase letters, digits or underscores, starting with a letter";

fn validate_purposes(
    source: &Source,
    raw: Option<Spanned<Vec<RawPurpose>>>,
) -> Result<Vec<Purpose>, PolicyError> {
    const NONE_DECLARED: &str = "at least one purpose is required: add a [[purposes]] table";
    let Some(raw) = raw else {
        return Err(PolicyError::Invalid {
            line: None,
            message: NONE_DECLARED.to_owned(),
        });
    };
    if raw.get_ref().is_empty() {
        return Err(source.invalid(&raw.span(), NONE_DECLARED.to_owned()));
    }
    let mut first_line_by_name = HashMap::new();
    let mut purposes = Vec::new();
    for raw_purpose in raw.into_inner() {
        let purpose = validate_purpose(source, raw_purpose, &mut first_line_by_name)?;
        purposes.push(purpose);
    }
    Ok(purposes)
}

fn validate_purpose(
    source: &Source,
    raw: RawPurpose,
    first_line_by_name: &mut HashMap<String, usize>,
) -> Result<Purpose, PolicyError> {
    let name = raw.name.get_ref();
    let name_span = raw.name.span();
    if !is_identifier(name) {
        let message = format!("purpose name {name:?} is not valid: use {IDENTIFIER_RULE}");
        return Err(source.invalid(&name_span, message));
    }
    if let Some(first_line) = first_line_by_name.insert(name.clone(), source.line(&name_span)) {
        let message = format!("purpose {name:?} is declared twice (first on line {first_line})");
        return Err(source.invalid(&name_span, message));
    }
    if raw.description.get_ref().trim().is_empty() {
        let message = format!("purpose {name:?}: description is empty; customers read it");
        return Err(source.invalid(&raw.description.span(), message));
    }
    let Some(basis) = LegalBasis::from_name(raw.basis.get_ref()) else {
        let valid = LegalBasis::ALL.map(LegalBasis::name).join(", ");
        let message = format!(
            "purpose {name:?}: unknown legal basis {:?} (valid: {valid})",
            raw.basis.get_ref()
        );
        return Err(source.invalid(&raw.basis.span(), message));
    };
    Ok(Purpose {
        name: raw.name.into_inner(),
        description: raw.description.into_inner(),
        basis,
    })
}

fn validate_principals(
    source: &Source,
    raw_principals: Vec<RawPrincipal>,
    purposes: &[Purpose],
) -> Result<Vec<Principal>, PolicyError> {
    let mut first_line_by_name = HashMap::new();
    // Two principals sharing a credential would make authentication ambiguous.
    let mut owner_by_credential: HashMap<Credential, String> = HashMap::new();
    let mut principals = Vec::new();
    for raw in raw_principals {
        let context = PrincipalContext::new(source, &raw.name, &mut first_line_by_name)?;
        let (credential, credential_span) = context.credential(&raw)?;
        if let Some(owner) = owner_by_credential.get(&credential) {
            let message = format!(
                "{} is already used by principal {owner:?}",
                describe(&credential)
            );
            return Err(context.error(&credential_span, message));
        }
        owner_by_credential.insert(credential.clone(), context.name.to_owned());
        principals.push(Principal {
            name: context.name.to_owned(),
            credential,
            scopes: context.scopes(&raw.scopes)?,
            purposes: context.purposes(&raw.purposes, purposes)?,
            disclosure: context.disclosure(raw.disclosure)?,
            rate_limits: rate_limits(raw.rate_limits)
                .map_err(|(span, message)| context.error(&span, message))?,
        });
    }
    Ok(principals)
}

/// Names a credential in an error without printing a key hash.
fn describe(credential: &Credential) -> String {
    match credential {
        Credential::ApiKeySha256(_) => "api_key_sha256".to_owned(),
        Credential::SpiffeId(id) => format!("spiffe_id {id:?}"),
        Credential::CertSubject(subject) => format!("cert_subject {:?}", subject.to_string()),
    }
}

/// Validation of one principal; every error names the principal.
struct PrincipalContext<'a> {
    source: &'a Source<'a>,
    name: &'a str,
}

impl<'a> PrincipalContext<'a> {
    fn new(
        source: &'a Source<'a>,
        name: &'a Spanned<String>,
        first_line_by_name: &mut HashMap<String, usize>,
    ) -> Result<Self, PolicyError> {
        let span = name.span();
        if name.get_ref().trim().is_empty() {
            return Err(source.invalid(&span, "principal name is empty".to_owned()));
        }
        let line = source.line(&span);
        if let Some(first_line) = first_line_by_name.insert(name.get_ref().clone(), line) {
            let message = format!(
                "principal {:?} is declared twice (first on line {first_line})",
                name.get_ref()
            );
            return Err(source.invalid(&span, message));
        }
        Ok(PrincipalContext {
            source,
            name: name.get_ref(),
        })
    }

    fn error(&self, span: &Range<usize>, problem: String) -> PolicyError {
        let message = format!("principal {:?}: {problem}", self.name);
        self.source.invalid(span, message)
    }

    /// Exactly one credential, so that how a principal authenticates is never
    /// a matter of which field the server happens to check first.
    fn credential(&self, raw: &RawPrincipal) -> Result<(Credential, Range<usize>), PolicyError> {
        const FIELDS: &str = "api_key_sha256, spiffe_id or cert_subject";
        let candidates: [(&str, &Option<Spanned<String>>, CredentialParser); 3] = [
            ("api_key_sha256", &raw.api_key_sha256, parse_api_key_hash),
            ("spiffe_id", &raw.spiffe_id, parse_spiffe_id),
            ("cert_subject", &raw.cert_subject, parse_cert_subject),
        ];
        let present: Vec<_> = candidates
            .into_iter()
            .filter_map(|(field, value, parser)| Some((field, value.as_ref()?, parser)))
            .collect();
        match present.as_slice() {
            [(_, value, parser)] => parser(value.get_ref())
                .map(|credential| (credential, value.span()))
                .map_err(|problem| self.error(&value.span(), problem)),
            [] => Err(self.error(
                &raw.name.span(),
                format!("needs one of {FIELDS}; it has none"),
            )),
            [(first, _, _), (second, value, _), ..] => Err(self.error(
                &value.span(),
                format!("needs exactly one of {FIELDS}; it has {first} and {second}"),
            )),
        }
    }

    fn scopes(&self, raw: &[Spanned<String>]) -> Result<BTreeSet<Scope>, PolicyError> {
        raw.iter()
            .map(|scope| {
                Scope::from_name(scope.get_ref()).ok_or_else(|| {
                    let valid = Scope::ALL.map(Scope::name).join(", ");
                    let problem = format!("unknown scope {:?} (valid: {valid})", scope.get_ref());
                    self.error(&scope.span(), problem)
                })
            })
            .collect()
    }

    /// `"*"` is expanded here, so it grants exactly the purposes declared.
    fn purposes(
        &self,
        raw: &[Spanned<String>],
        declared: &[Purpose],
    ) -> Result<BTreeSet<String>, PolicyError> {
        let mut granted = BTreeSet::new();
        for purpose in raw {
            let name = purpose.get_ref();
            if name == "*" {
                granted.extend(declared.iter().map(|declared| declared.name.clone()));
            } else if declared.iter().any(|declared| &declared.name == name) {
                granted.insert(name.clone());
            } else {
                let names: Vec<&str> = declared
                    .iter()
                    .map(|declared| declared.name.as_str())
                    .collect();
                let problem = format!(
                    "unknown purpose {name:?} (declared: {}; \"*\" grants all)",
                    names.join(", ")
                );
                return Err(self.error(&purpose.span(), problem));
            }
        }
        Ok(granted)
    }

    fn disclosure(
        &self,
        raw: BTreeMap<Spanned<String>, Spanned<String>>,
    ) -> Result<BTreeMap<String, Disclosure>, PolicyError> {
        // Report problems in file order, not in the map's alphabetical order.
        let mut rules: Vec<_> = raw.into_iter().collect();
        rules.sort_by_key(|(key, _)| key.span().start);
        let mut disclosure = BTreeMap::new();
        for (key, value) in rules {
            if key.get_ref() != "*" && !is_identifier(key.get_ref()) {
                let problem = format!(
                    "disclosure key {:?} is not \"*\", a kind or a field name ({IDENTIFIER_RULE})",
                    key.get_ref()
                );
                return Err(self.error(&key.span(), problem));
            }
            let Some(rule) = Disclosure::from_name(value.get_ref()) else {
                let problem = format!(
                    "disclosure for {:?} is {:?}; expected plaintext, masked, token or none",
                    key.get_ref(),
                    value.get_ref()
                );
                return Err(self.error(&value.span(), problem));
            };
            disclosure.insert(key.into_inner(), rule);
        }
        Ok(disclosure)
    }
}

/// Turns one credential field's text into a credential, or says what is wrong.
type CredentialParser = fn(&str) -> Result<Credential, String>;

fn parse_api_key_hash(text: &str) -> Result<Credential, String> {
    // Never echo the value in the error: people paste the key itself here by mistake.
    let hash: [u8; 32] = HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or("api_key_sha256 must be 64 hex characters (the sha256 of the key, not the key)")?;
    // The hash of "" would let in a request that sends an empty bearer key.
    if hash == api_key_sha256("") {
        return Err("api_key_sha256 is the hash of an empty key".to_owned());
    }
    Ok(Credential::ApiKeySha256(hash))
}

fn parse_spiffe_id(text: &str) -> Result<Credential, String> {
    match text.strip_prefix("spiffe://") {
        Some(rest) if !rest.is_empty() => Ok(Credential::SpiffeId(text.to_owned())),
        _ => Err("spiffe_id must start with \"spiffe://\" and name a trust domain".to_owned()),
    }
}

/// Parsed here, once, so that matching a certificate compares names, never text.
fn parse_cert_subject(text: &str) -> Result<Credential, String> {
    DistinguishedName::parse(text).map(Credential::CertSubject)
}
