//! ExportCustomer: everything the vault holds about a customer and who used it
//! for what, as versioned JSON for portability or a plain-English report.

use serde::Serialize;

use crate::crypto::{Binding, DataCipher};
use crate::policy::{LegalBasis, Scope};
use crate::store::{AuditQuery, AuditRecord, TokenTarget};

use super::{
    stored_kind, Caller, ConsentEvent, CustomerId, FieldKind, PrivacyLedger, Vault, VaultError,
};

mod report;

/// The `format` and `version` every JSON export carries.
pub const EXPORT_FORMAT_NAME: &str = "pii-vault.customer-export";
pub const EXPORT_VERSION: u32 = 1;
/// Most access events an export lists.
const MAX_ACCESS_EVENTS: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Json,
    Text,
}

pub struct ExportDocument {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

/// The JSON export (documented in the README; `version` changes with its shape).
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
    pub access_history: Vec<ExportedAccess>,
}

#[derive(Serialize)]
pub struct ExportedField {
    pub name: String,
    pub kind: &'static str,
    pub value: String,
    pub token: String,
    pub updated_at: String,
}

#[derive(Serialize)]
pub struct ExportedToken {
    pub token: String,
    pub kind: &'static str,
    pub format: String,
    /// The field whose value the token stands for, or none for a standalone value.
    pub field: Option<String>,
    pub value: String,
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

#[derive(Serialize)]
pub struct ExportedAccess {
    pub at: String,
    pub principal: String,
    pub action: String,
    pub fields: Vec<String>,
    pub purpose: String,
    pub outcome: String,
}

impl Vault {
    pub async fn export_customer(
        &self,
        caller: &Caller,
        customer_id: &str,
        format: ExportFormat,
    ) -> Result<ExportDocument, VaultError> {
        let entry = self.audit_entry(caller, "ExportCustomer", customer_id, &[], "");
        let result = async {
            caller.require_scope(Scope::PrivacyAdmin)?;
            self.abuse.read(caller)?;
            let customer = CustomerId::parse(customer_id)?;
            let export = self.collect_export(&customer).await?;
            render(&export, format)
        }
        .await;
        self.audit_outcome(entry, result).await
    }

    async fn collect_export(&self, customer: &CustomerId) -> Result<CustomerExport, VaultError> {
        let id = customer.as_str();
        let record = self
            .store
            .customer(id)
            .await?
            .ok_or_else(|| VaultError::not_found("customer not found"))?;
        let cipher = self.keys.cipher(customer, &record).await?;
        let ledger = PrivacyLedger::open(customer, &record, &cipher)?;
        let fields = self.exported_fields(customer, &cipher).await?;
        let tokens = self.exported_tokens(customer, &cipher, &fields).await?;
        let versions = self.store.policy_versions().await?;
        let notices =
            super::notices::pending_notices(&ledger, record.created_at_ms, &versions, &self.policy);
        let access = self
            .store
            .audit_events(&AuditQuery {
                customer_id: Some(id.to_owned()),
                limit: MAX_ACCESS_EVENTS,
                ..AuditQuery::default()
            })
            .await?;
        Ok(CustomerExport {
            format: EXPORT_FORMAT_NAME,
            version: EXPORT_VERSION,
            customer_id: id.to_owned(),
            exported_at: rfc3339(super::now_ms()),
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
            purposes: self
                .policy
                .purposes()
                .iter()
                .map(|purpose| ExportedPurpose {
                    name: purpose.name.clone(),
                    description: purpose.description.clone(),
                    basis: purpose.basis.name(),
                })
                .collect(),
            access_history: this_incarnation(access)
                .into_iter()
                .map(exported_access)
                .collect(),
        })
    }

    async fn exported_fields(
        &self,
        customer: &CustomerId,
        cipher: &DataCipher,
    ) -> Result<Vec<ExportedField>, VaultError> {
        let mut exported = Vec::new();
        for (name, field) in self.store.fields(customer.as_str()).await? {
            let binding = Binding::Field {
                customer_id: customer.as_str(),
                field: &name,
            };
            exported.push(ExportedField {
                kind: stored_kind(&field.kind)?.name(),
                value: utf8(cipher.decrypt(&binding, &field.ciphertext)?)?,
                token: field.token,
                updated_at: rfc3339(field.updated_at_ms),
                name,
            });
        }
        Ok(exported)
    }

    async fn exported_tokens(
        &self,
        customer: &CustomerId,
        cipher: &DataCipher,
        fields: &[ExportedField],
    ) -> Result<Vec<ExportedToken>, VaultError> {
        let mut exported = Vec::new();
        for token in self.store.customer_tokens(customer.as_str()).await? {
            let Some(record) = self.store.token(&token).await? else {
                continue;
            };
            let (field, value) = match &record.target {
                TokenTarget::Field(name) => {
                    let value = fields
                        .iter()
                        .find(|f| &f.name == name)
                        .map(|f| f.value.clone());
                    (Some(name.clone()), value.unwrap_or_default())
                }
                TokenTarget::Value(ciphertext) => {
                    let binding = Binding::Token {
                        customer_id: customer.as_str(),
                        token: &token,
                    };
                    (None, utf8(cipher.decrypt(&binding, ciphertext)?)?)
                }
            };
            exported.push(ExportedToken {
                kind: stored_kind(&record.kind)?.name(),
                format: record.format,
                field,
                value,
                token,
            });
        }
        Ok(exported)
    }
}

fn render(export: &CustomerExport, format: ExportFormat) -> Result<ExportDocument, VaultError> {
    match format {
        ExportFormat::Json => Ok(ExportDocument {
            bytes: serde_json::to_vec_pretty(export)
                .map_err(|_| VaultError::Internal("export does not serialize".into()))?,
            content_type: "application/json",
        }),
        ExportFormat::Text => Ok(ExportDocument {
            bytes: report::plain_english(export).into_bytes(),
            content_type: "text/plain; charset=utf-8",
        }),
    }
}

/// The events since the customer id was last erased: a customer created again
/// under the same id is a new person to the vault.
fn this_incarnation(mut events: Vec<AuditRecord>) -> Vec<AuditRecord> {
    let last_erasure = events
        .iter()
        .rposition(|event| event.action == "DeleteCustomer" && event.outcome == "ok");
    match last_erasure {
        Some(position) => events.split_off(position + 1),
        None => events,
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

fn exported_access(record: AuditRecord) -> ExportedAccess {
    ExportedAccess {
        at: rfc3339(record.at_ms),
        principal: record.principal,
        action: record.action,
        fields: record.fields,
        purpose: record.purpose,
        outcome: record.outcome,
    }
}

fn utf8(plaintext: zeroize::Zeroizing<Vec<u8>>) -> Result<String, VaultError> {
    String::from_utf8(plaintext.to_vec())
        .map_err(|_| VaultError::Internal("stored value is not UTF-8".into()))
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
