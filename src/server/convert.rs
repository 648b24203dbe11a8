//! Protobuf <-> domain conversions.

use prost_types::Timestamp;

use crate::pb;
use crate::policy::{LegalBasis, Purpose};
use crate::vault::{
    hex, AuditRecord, ConsentEvent, DeletionReceipt, DetokenizedValue, ErasureState, ExportFormat,
    FieldInput, FieldKind, FieldView, Notice, PolicyVersionRecord, Shown, TokenFormat,
    TokenizeItem, VaultError,
};

use super::status::item_error;

pub fn field_kind(raw: i32) -> Result<FieldKind, VaultError> {
    use pb::FieldKind as P;
    let kind =
        P::try_from(raw).map_err(|_| VaultError::invalid(format!("unknown field kind {raw}")))?;
    Ok(match kind {
        // Stored as generic once, which silently changed disclosure and search.
        P::Unspecified => {
            return Err(VaultError::invalid(
                "field kind is required: name one (FIELD_KIND_GENERIC for free text)",
            ))
        }
        P::Generic => FieldKind::Generic,
        P::Ssn => FieldKind::Ssn,
        P::Email => FieldKind::Email,
        P::Phone => FieldKind::Phone,
        P::Address => FieldKind::Address,
        P::Name => FieldKind::Name,
        P::DateOfBirth => FieldKind::DateOfBirth,
        P::CardNumber => FieldKind::CardNumber,
    })
}

pub fn kind_to_pb(kind: FieldKind) -> pb::FieldKind {
    use pb::FieldKind as P;
    match kind {
        FieldKind::Generic => P::Generic,
        FieldKind::Ssn => P::Ssn,
        FieldKind::Email => P::Email,
        FieldKind::Phone => P::Phone,
        FieldKind::Address => P::Address,
        FieldKind::Name => P::Name,
        FieldKind::DateOfBirth => P::DateOfBirth,
        FieldKind::CardNumber => P::CardNumber,
    }
}

pub fn token_format(raw: i32) -> Result<TokenFormat, VaultError> {
    use pb::TokenFormat as P;
    let format =
        P::try_from(raw).map_err(|_| VaultError::invalid(format!("unknown token format {raw}")))?;
    Ok(match format {
        P::Unspecified | P::Random => TokenFormat::Random,
        P::FormatPreserving => TokenFormat::FormatPreserving,
        P::Deterministic => TokenFormat::Deterministic,
    })
}

fn disclosure(shown: Shown) -> pb::Disclosure {
    match shown {
        Shown::Plaintext => pb::Disclosure::Plaintext,
        Shown::Masked => pb::Disclosure::Masked,
        Shown::TokenOnly => pb::Disclosure::Token,
        Shown::Denied => pb::Disclosure::Denied,
    }
}

pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn field_inputs(fields: Vec<pb::Field>) -> Result<Vec<FieldInput>, VaultError> {
    fields
        .into_iter()
        .map(|field| {
            Ok(FieldInput {
                kind: field_kind(field.kind)?,
                name: field.name,
                value: field.value,
            })
        })
        .collect()
}

pub fn tokenize_items(items: Vec<pb::TokenizeItem>) -> Result<Vec<TokenizeItem>, VaultError> {
    items
        .into_iter()
        .map(|item| {
            Ok(TokenizeItem {
                kind: field_kind(item.kind)?,
                format: token_format(item.format)?,
                value: item.value,
            })
        })
        .collect()
}

pub fn field_value(view: FieldView) -> pb::FieldValue {
    pb::FieldValue {
        name: view.name,
        kind: kind_to_pb(view.kind) as i32,
        value: view.value.unwrap_or_default(),
        token: view.token,
        disclosure: disclosure(view.shown) as i32,
        error: view.error.as_ref().map(item_error),
        updated_at: (view.updated_at_ms > 0).then(|| timestamp(view.updated_at_ms)),
    }
}

pub fn detokenize_result(result: DetokenizedValue) -> pb::DetokenizeResult {
    pb::DetokenizeResult {
        token: result.token,
        customer_id: result.customer_id,
        kind: kind_to_pb(result.kind) as i32,
        value: result.value.unwrap_or_default(),
        disclosure: disclosure(result.shown) as i32,
        error: result.error.as_ref().map(item_error),
    }
}

pub fn receipt(receipt: DeletionReceipt) -> pb::DeletionReceipt {
    pb::DeletionReceipt {
        receipt_id: receipt.receipt_id,
        customer_id: receipt.customer_id,
        deleted_at: Some(timestamp(receipt.deleted_at_ms)),
        fields_erased: receipt.fields_erased,
        tokens_erased: receipt.tokens_erased,
        data_keys_destroyed: receipt.data_keys_destroyed,
        state: match receipt.state {
            ErasureState::Logical => pb::ErasureState::Logical,
            ErasureState::Cryptographic => pb::ErasureState::Cryptographic,
        } as i32,
        cryptographic_erasure_due: receipt.cryptographic_erasure_due_ms.map(timestamp),
        audit_hash: receipt.audit_hash,
    }
}

pub fn legal_basis(basis: LegalBasis) -> pb::LegalBasis {
    match basis {
        LegalBasis::Consent => pb::LegalBasis::Consent,
        LegalBasis::Contract => pb::LegalBasis::Contract,
        LegalBasis::LegalObligation => pb::LegalBasis::LegalObligation,
        LegalBasis::LegitimateInterest => pb::LegalBasis::LegitimateInterest,
    }
}

pub fn purpose(purpose: &Purpose) -> pb::Purpose {
    pb::Purpose {
        name: purpose.name.clone(),
        description: purpose.description.clone(),
        basis: legal_basis(purpose.basis) as i32,
    }
}

pub fn consent_record(customer_id: &str, event: ConsentEvent) -> pb::ConsentRecord {
    pb::ConsentRecord {
        customer_id: customer_id.to_owned(),
        purpose: event.purpose,
        granted: event.granted,
        policy_version: event.policy_version,
        source: event.source,
        recorded_at: Some(timestamp(event.recorded_at_ms)),
    }
}

pub fn export_format(raw: i32) -> Result<ExportFormat, VaultError> {
    match pb::ExportFormat::try_from(raw) {
        Ok(pb::ExportFormat::Unspecified | pb::ExportFormat::Json) => Ok(ExportFormat::Json),
        Ok(pb::ExportFormat::Text) => Ok(ExportFormat::Text),
        Err(_) => Err(VaultError::invalid(format!("unknown export format {raw}"))),
    }
}

pub fn millis(timestamp: &Timestamp) -> i64 {
    timestamp
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(timestamp.nanos / 1_000_000))
}

/// An event as the API shows it: a counted event's outcome is its status
/// code name, its count and first time in fields of their own.
pub fn audit_event(record: AuditRecord) -> pb::AuditEvent {
    let counted = record.counted();
    let outcome = record.outcome_code().to_owned();
    pb::AuditEvent {
        seq: record.seq,
        at: Some(timestamp(record.at_ms)),
        principal: record.principal,
        action: record.action,
        customer_id: record.customer_id,
        fields: record.fields,
        purpose: record.purpose,
        outcome,
        request_id: record.request_id,
        prev_hash: hex(&record.prev_hash),
        hash: hex(&record.hash),
        count: counted.map_or(1, |counted| counted.count),
        first_at: counted.map(|counted| timestamp(counted.since_ms)),
    }
}

pub fn policy_version(version: PolicyVersionRecord) -> pb::PolicyVersion {
    pb::PolicyVersion {
        version: version.version,
        summary: version.summary,
        changed_purposes: version.changed_purposes,
        requires_reconsent: version.requires_reconsent,
        published_at: Some(timestamp(version.published_at_ms)),
    }
}

pub fn notice(notice: Notice) -> pb::Notice {
    pb::Notice {
        published_at: Some(timestamp(notice.version.published_at_ms)),
        policy_version: notice.version.version,
        summary: notice.version.summary,
        purposes_needing_consent: notice.purposes_needing_consent,
    }
}
