//! ExportCustomer: everything the vault holds about a customer and who used it
//! for what, as versioned JSON for portability or a plain-English report. A
//! principal with privacy:export gets every value in plaintext; one with
//! privacy:admin alone gets each value as its disclosure rules allow, as a read
//! would. Either way the export is audited as an access of what it disclosed.

use crate::vault::Reason;
use crate::vault::{AuditedAnswer, Call};
use serde::Serialize;

use crate::crypto::DataCipher;

use crate::policy::{LegalBasis, Scope};
use crate::store::{AuditEntry, TokenTarget};
use crate::vault::fields::integrity_failure;
use crate::vault::sealing::Sealing;

use crate::vault::{
    reveal, shown_for, stored_kind, Caller, ConsentEvent, CustomerId, FieldKind, PrivacyLedger,
    Shown, Vault, VaultError,
};

mod access;
mod report;

pub use access::{AccessHistoryPage, AccessHistoryRequest, ExportedAccess};
use access::{Incarnation, NON_EMPTY_ARRAY_COST};

/// The `format` and `version` every JSON export carries.
pub const EXPORT_FORMAT_NAME: &str = "pii-vault.customer-export";
/// 2: values and tokens may be withheld (`disclosure`, null `value`/`token`);
/// the access history is newest first, by pages (`access_history_page`).
pub const EXPORT_VERSION: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Json,
    Text,
}

pub struct ExportDocument {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    /// For the page of older access events, when this document left them out.
    pub next_page_token: Option<String>,
    /// Audit events up to this seq were trimmed into the archive (0: none).
    pub audit_trimmed_through_seq: u64,
    /// The fields whose values it holds, for the audit event.
    pub disclosed_fields: Vec<String>,
}

/// The JSON export (documented in docs/privacy.md; `version` changes with its shape).
#[derive(Serialize)]
pub struct CustomerExport {
    pub format: &'static str,
    pub version: u32,
    pub customer_id: String,
    pub exported_at: String,
    pub customer_since: String,
    pub fields: Vec<ExportedField>,
    pub tokens: Vec<ExportedToken>,
    pub consents: ExportedConsents,
    pub policy_acknowledgements: Vec<ExportedAcknowledgement>,
    /// Policy changes the customer has not acknowledged yet.
    pub pending_notices: Vec<ExportedNotice>,
    pub purposes: Vec<ExportedPurpose>,
    /// Newest first; `access_history_page` says which part of it this is.
    pub access_history: Vec<ExportedAccess>,
    pub access_history_page: AccessHistoryPage,
}

#[derive(Serialize)]
pub struct ExportedField {
    pub name: String,
    pub kind: &'static str,
    /// What the exporting principal may see: plaintext, masked, token or denied.
    pub disclosure: &'static str,
    /// The value, plaintext or masked; none when only the token or nothing is shown.
    pub value: Option<String>,
    /// None when the value is denied.
    pub token: Option<String>,
    pub updated_at: String,
}

#[derive(Serialize)]
pub struct ExportedToken {
    /// None when the value it stands for is denied.
    pub token: Option<String>,
    pub kind: &'static str,
    pub format: String,
    /// The field whose value the token stands for, or none for a standalone value.
    pub field: Option<String>,
    pub disclosure: &'static str,
    pub value: Option<String>,
}

/// One value as the exporting principal may see it.
struct Disclosed {
    shown: Shown,
    value: Option<String>,
    token: Option<String>,
}

#[derive(Serialize)]
pub struct ExportedConsents {
    pub current: Vec<ExportedConsent>,
    pub history: Vec<ExportedConsent>,
}

#[derive(Serialize)]
pub struct ExportedConsent {
    pub purpose: String,
    pub granted: bool,
    pub policy_version: String,
    pub source: String,
    pub recorded_at: String,
}

#[derive(Serialize)]
pub struct ExportedAcknowledgement {
    pub policy_version: String,
    pub acknowledged_at: String,
}

#[derive(Serialize)]
pub struct ExportedNotice {
    pub policy_version: String,
    pub summary: String,
    pub published_at: String,
    pub purposes_needing_consent: Vec<String>,
}

#[derive(Serialize)]
pub struct ExportedPurpose {
    pub name: String,
    pub description: String,
    pub basis: &'static str,
}

impl crate::vault::Privacy<'_> {
    pub async fn export_customer(
        &self,
        call: &Call<'_>,
        customer: &CustomerId,
        format: ExportFormat,
        access: &AccessHistoryRequest,
    ) -> Result<ExportDocument, VaultError> {
        let caller = call.caller;
        let plaintext = check_export_scope(caller)?;
        self.abuse.read(caller)?;
        let (mut export, created_at_ms) = self.collect_export(caller, plaintext, customer).await?;
        let incarnation = Incarnation {
            customer,
            created_at_ms,
        };
        let budget = match format {
            ExportFormat::Json => self.access_history_budget(&mut export, incarnation)?,
            // The report counts events; it does not list them.
            ExportFormat::Text => usize::MAX,
        };
        let page = self.access_page(incarnation, access, budget).await?;
        export.access_history = page.events;
        export.access_history_page = page.page;
        export.access_history_page.audit_trimmed_through_seq = self.audit_trimmed_through().await?;
        let document = render(&export, format)?;
        if format == ExportFormat::Json && document.bytes.len() > self.limits.max_export_bytes {
            return Err(VaultError::internal(
                "an export outgrew the size it was budgeted",
            ));
        }
        Ok(document)
    }
}

/// Like an "all fields" GetFields, an export names in its event the fields
/// it disclosed.
impl AuditedAnswer for ExportDocument {
    fn note_in(&self, event: &mut AuditEntry) {
        event.fields = self.disclosed_fields.clone();
    }
}

impl Vault {
    /// Bytes the access history may take in the JSON document: what is left of
    /// `max_export_bytes` once everything else, and the longest page
    /// description, is counted.
    fn access_history_budget(
        &self,
        export: &mut CustomerExport,
        incarnation: Incarnation<'_>,
    ) -> Result<usize, VaultError> {
        // The longest description a page can have.
        export.access_history_page =
            AccessHistoryPage::new(false, false, Some(incarnation.longest_token()));
        export.access_history_page.audit_trimmed_through_seq = u64::MAX;
        let without_history =
            render(export, ExportFormat::Json)?.bytes.len() + NON_EMPTY_ARRAY_COST;
        let max = self.limits.max_export_bytes;
        max.checked_sub(without_history).ok_or_else(|| {
            VaultError::new(
                Reason::ExportTooLarge,
                format!(
                    "this customer's export takes {without_history} bytes before its access \
                 history, more than the {max} bytes an export may take"
                ),
            )
        })
    }

    /// Everything but the access history, and when the customer was created.
    async fn collect_export(
        &self,
        caller: &Caller,
        plaintext: bool,
        customer: &CustomerId,
    ) -> Result<(CustomerExport, i64), VaultError> {
        let id = customer.as_str();
        let record = self.existing_customer(id).await?;
        let cipher = self.keys.cipher(customer, &record).await?;
        let ledger = PrivacyLedger::open(customer, &record, &cipher)?;
        let shown = |field: Option<&str>, kind: FieldKind| {
            if plaintext {
                Shown::Plaintext
            } else {
                shown_for(caller, field, kind)
            }
        };
        let sealing = Sealing::of(&record)?;
        let fields = self
            .exported_fields(customer, (&cipher, sealing), &shown)
            .await?;
        let tokens = self
            .exported_tokens(customer, (&cipher, sealing), &fields, &shown)
            .await?;
        let versions = self.store.policy_versions().await?;
        let notices = crate::vault::notices::pending_notices(
            &ledger,
            record.created_at_ms,
            &versions,
            &caller.policy,
        );
        let export = CustomerExport {
            format: EXPORT_FORMAT_NAME,
            version: EXPORT_VERSION,
            customer_id: id.to_owned(),
            exported_at: rfc3339(self.now_ms()),
            customer_since: rfc3339(record.created_at_ms),
            fields,
            tokens,
            consents: ExportedConsents {
                current: ledger.current().into_iter().map(exported_consent).collect(),
                history: ledger.consents.iter().map(exported_consent).collect(),
            },
            policy_acknowledgements: ledger
                .acknowledged
                .iter()
                .map(|ack| ExportedAcknowledgement {
                    policy_version: ack.policy_version.clone(),
                    acknowledged_at: rfc3339(ack.at_ms),
                })
                .collect(),
            pending_notices: notices
                .into_iter()
                .map(|notice| ExportedNotice {
                    published_at: rfc3339(notice.version.published_at_ms),
                    policy_version: notice.version.version,
                    summary: notice.version.summary,
                    purposes_needing_consent: notice.purposes_needing_consent,
                })
                .collect(),
            purposes: caller
                .policy
                .purposes()
                .iter()
                .map(|purpose| ExportedPurpose {
                    name: purpose.name.clone(),
                    description: purpose.description.clone(),
                    basis: purpose.basis.name(),
                })
                .collect(),
            access_history: Vec::new(),
            access_history_page: AccessHistoryPage::new(true, true, None),
        };
        Ok((export, record.created_at_ms))
    }

    async fn exported_fields(
        &self,
        customer: &CustomerId,
        (cipher, sealing): (&DataCipher, Sealing),
        shown: &impl Fn(Option<&str>, FieldKind) -> Shown,
    ) -> Result<Vec<ExportedField>, VaultError> {
        let mut exported = Vec::new();
        for (name, field) in self.store.fields(customer.as_str()).await? {
            let kind = stored_kind(&field.kind)?;
            let binding = sealing.field(customer.as_str(), &name, &field.kind, &field.token);
            let disclosed = disclose(shown(Some(&name), kind), kind, field.token.clone(), || {
                cipher
                    .decrypt(&binding, &field.ciphertext)
                    .map_err(|error| integrity_failure(&name, error))
            })?;
            exported.push(ExportedField {
                kind: kind.name(),
                disclosure: disclosed.shown.name(),
                value: disclosed.value,
                token: disclosed.token,
                updated_at: rfc3339(field.updated_at_ms),
                name,
            });
        }
        Ok(exported)
    }

    async fn exported_tokens(
        &self,
        customer: &CustomerId,
        (cipher, sealing): (&DataCipher, Sealing),
        fields: &[ExportedField],
        shown: &impl Fn(Option<&str>, FieldKind) -> Shown,
    ) -> Result<Vec<ExportedToken>, VaultError> {
        let mut exported = Vec::new();
        for token in self.store.customer_tokens(customer.as_str()).await? {
            let Some(record) = self.store.token(&token).await? else {
                continue;
            };
            let kind = stored_kind(&record.kind)?;
            let (field, disclosed) = match &record.target {
                // A field's token is shown as its field is.
                TokenTarget::Field(name) => {
                    let shown = shown(Some(name), kind);
                    let value = fields
                        .iter()
                        .find(|field| &field.name == name)
                        .and_then(|field| field.value.clone());
                    let disclosed = Disclosed {
                        shown,
                        value,
                        token: (shown != Shown::Denied).then(|| token.clone()),
                    };
                    (Some(name.clone()), disclosed)
                }
                TokenTarget::Value(ciphertext) => {
                    let binding =
                        sealing.token(customer.as_str(), &token, &record.kind, &record.format);
                    let disclosed = disclose(shown(None, kind), kind, token.clone(), || {
                        cipher
                            .decrypt(&binding, ciphertext)
                            .map_err(|error| integrity_failure(kind.name(), error))
                    })?;
                    (None, disclosed)
                }
            };
            exported.push(ExportedToken {
                kind: kind.name(),
                format: record.format,
                field,
                disclosure: disclosed.shown.name(),
                value: disclosed.value,
                token: disclosed.token,
            });
        }
        Ok(exported)
    }
}

/// privacy:export exports in plaintext (true); privacy:admin as the caller's
/// disclosure rules allow (false); anything else is refused.
fn check_export_scope(caller: &Caller) -> Result<bool, VaultError> {
    if caller.principal.has_scope(Scope::PrivacyExport) {
        return Ok(true);
    }
    if caller.principal.has_scope(Scope::PrivacyAdmin) {
        return Ok(false);
    }
    let refusal = VaultError::new(
        Reason::ScopeMissing,
        format!(
            "principal \"{}\" lacks the scope {} (or {}, for an export as its disclosure rules allow)",
            caller.name(),
            Scope::PrivacyExport.name(),
            Scope::PrivacyAdmin.name()
        ),
    );
    Err(refusal.with("scope", Scope::PrivacyExport.name()))
}

/// A value as `shown`: decrypted only when some of it is shown, its token
/// kept unless it is denied.
fn disclose(
    shown: Shown,
    kind: FieldKind,
    token: String,
    decrypt: impl FnOnce() -> Result<zeroize::Zeroizing<Vec<u8>>, VaultError>,
) -> Result<Disclosed, VaultError> {
    let value = match shown {
        Shown::Plaintext | Shown::Masked => reveal(shown, kind, &utf8(decrypt()?)?)?,
        Shown::TokenOnly | Shown::Denied => None,
    };
    Ok(Disclosed {
        shown,
        value,
        token: (shown != Shown::Denied).then_some(token),
    })
}

impl CustomerExport {
    /// The fields whose value or token the export holds, and the kinds of the
    /// standalone values it holds, as Detokenize records them.
    fn disclosed_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let fields = self
            .fields
            .iter()
            .filter(|field| field.token.is_some())
            .map(|field| field.name.as_str());
        let standalone = self
            .tokens
            .iter()
            .filter(|token| token.field.is_none() && token.token.is_some())
            .map(|token| token.kind);
        for name in fields.chain(standalone) {
            if !names.iter().any(|known| known == name) {
                names.push(name.to_owned());
            }
        }
        names
    }
}

fn render(export: &CustomerExport, format: ExportFormat) -> Result<ExportDocument, VaultError> {
    match format {
        ExportFormat::Json => Ok(ExportDocument {
            bytes: serde_json::to_vec_pretty(export)
                .map_err(|_| VaultError::internal("export does not serialize"))?,
            content_type: "application/json",
            next_page_token: export.access_history_page.next_page_token.clone(),
            audit_trimmed_through_seq: export.access_history_page.audit_trimmed_through_seq,
            disclosed_fields: export.disclosed_names(),
        }),
        ExportFormat::Text => Ok(ExportDocument {
            bytes: report::plain_english(export).into_bytes(),
            content_type: "text/plain; charset=utf-8",
            next_page_token: export.access_history_page.next_page_token.clone(),
            audit_trimmed_through_seq: export.access_history_page.audit_trimmed_through_seq,
            disclosed_fields: export.disclosed_names(),
        }),
    }
}

fn exported_consent(event: &ConsentEvent) -> ExportedConsent {
    ExportedConsent {
        purpose: event.purpose.clone(),
        granted: event.granted,
        policy_version: event.policy_version.clone(),
        source: event.source.clone(),
        recorded_at: rfc3339(event.recorded_at_ms),
    }
}

fn utf8(plaintext: zeroize::Zeroizing<Vec<u8>>) -> Result<String, VaultError> {
    String::from_utf8(plaintext.to_vec())
        .map_err(|_| VaultError::internal("stored value is not UTF-8"))
}

/// Milliseconds since the epoch as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// How the report names a kind of value.
fn kind_in_words(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Ssn => "your social security number",
        FieldKind::Email => "your email address",
        FieldKind::Phone => "your phone number",
        FieldKind::Address => "your postal address",
        FieldKind::Name => "your name",
        FieldKind::DateOfBirth => "your date of birth",
        FieldKind::CardNumber => "a payment card number",
        FieldKind::Generic => "other information you gave us",
    }
}

/// How the report explains a legal basis.
fn basis_in_words(basis: LegalBasis) -> &'static str {
    match basis {
        LegalBasis::Consent => "only with your consent",
        LegalBasis::Contract => "needed to provide what you asked us for",
        LegalBasis::LegalObligation => "required by law",
        LegalBasis::LegitimateInterest => "in our legitimate interest, which you may object to",
    }
}
