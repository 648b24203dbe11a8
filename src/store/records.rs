//! The records an engine keeps. Values arrive encrypted; names, kinds and ids are
//! metadata, never personal values.

use std::collections::BTreeSet;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::StoreError;

/// Records are kept in postcard, a compact serde encoding, by every engine.
pub(super) fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(record).map_err(|_| StoreError::Corrupt("record does not encode"))
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|_| StoreError::Corrupt("record does not decode"))
}

pub(super) fn engine(error: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(error.to_string())
}

/// A hash as lower-case hex, as receipts and audit events show it.
pub fn hex(bytes: &[u8; 32]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerRecord {
    /// Bumped by every change to the customer; commits compare it to detect races.
    pub revision: u64,
    pub created_at_ms: i64,
    pub dek: WrappedDekRecord,
    /// AES-GCM encryptions performed under the current DEK (nonce-reuse bound).
    pub encryptions: u64,
    /// Mixed into deterministic tokens, so that a customer erased and created
    /// again under the same id never gets their old tokens back.
    pub token_salt: [u8; 16],
    /// The customer's consents and acknowledged policy notices, encrypted under
    /// their DEK (the domain's `PrivacyLedger`); `None` until the first one.
    pub privacy: Option<Vec<u8>>,
    /// Every master key version that ever wrapped one of this customer's DEKs:
    /// erasure is cryptographic once all of them are destroyed.
    pub wrapped_under: BTreeSet<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WrappedDekRecord {
    pub version: u32,
    pub master_version: u32,
    pub created_at_ms: i64,
    pub wrapped: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldRecord {
    pub kind: String,
    pub token: String,
    pub ciphertext: Vec<u8>,
    pub updated_at_ms: i64,
    /// Set for searchable kinds, so erasure can find the index entry without decrypting.
    pub blind_index: Option<[u8; 32]>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub customer_id: String,
    pub kind: String,
    pub format: String,
    pub target: TokenTarget,
}

/// A field's token resolves to the field's current value; a standalone token
/// carries its own encrypted value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TokenTarget {
    Field(String),
    Value(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub field_name: String,
    pub blind_index: [u8; 32],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    pub receipt_id: String,
    pub customer_id: String,
    pub deleted_at_ms: i64,
    pub reason: String,
    pub fields_erased: u32,
    pub tokens_erased: u32,
    pub data_keys_destroyed: Vec<String>,
    pub wrapped_under: BTreeSet<u32>,
    pub audit_hash: String,
}

/// Everything one request changes for one customer, applied all or nothing.
#[derive(Clone, Debug, Default)]
pub struct CustomerChange {
    pub customer_id: String,
    /// The revision the domain read; `None` means the customer must not exist yet.
    pub expected_revision: Option<u64>,
    /// The customer's new record; `None` removes the customer.
    pub customer: Option<CustomerRecord>,
    pub put_fields: Vec<(String, FieldRecord)>,
    pub delete_fields: Vec<String>,
    /// Tokens that must not exist yet (random and format-preserving draws).
    pub new_tokens: Vec<(String, TokenRecord)>,
    /// Tokens written whether or not they exist (re-encryption, deterministic reuse).
    pub put_tokens: Vec<(String, TokenRecord)>,
    pub delete_tokens: Vec<String>,
    pub put_index: Vec<IndexEntry>,
    pub delete_index: Vec<IndexEntry>,
    /// An erasure receipt; also marks the customer id as erased. The engine
    /// fills in its `audit_hash` with the hash of `audit`.
    pub receipt: Option<ReceiptRecord>,
    /// The audit event that records this change, chained in the same commit.
    pub audit: Option<super::AuditEntry>,
}

/// A master-key rotation that has made its new version active and not yet
/// finished re-wrapping (and retiring), so that a restart can finish it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationRecord {
    pub target_version: u32,
    pub retire_previous: bool,
    pub started_at_ms: i64,
}

/// A published version of the privacy policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersionRecord {
    /// Publication order, from 1.
    pub seq: u64,
    pub version: String,
    pub summary: String,
    pub changed_purposes: Vec<String>,
    pub requires_reconsent: bool,
    pub published_at_ms: i64,
}

/// Records for the engines' unit tests.
#[cfg(test)]
pub(super) mod fixtures {
    use super::{CustomerRecord, FieldRecord, WrappedDekRecord};

    pub fn customer_record(revision: u64) -> CustomerRecord {
        CustomerRecord {
            revision,
            created_at_ms: 1,
            dek: WrappedDekRecord {
                version: 1,
                master_version: 1,
                created_at_ms: 1,
                wrapped: vec![7; 60],
            },
            encryptions: 2,
            token_salt: [3; 16],
            privacy: None,
            wrapped_under: [1].into(),
        }
    }

    pub fn field_record(token: &str) -> FieldRecord {
        FieldRecord {
            kind: "email".into(),
            token: token.into(),
            ciphertext: vec![9; 40],
            updated_at_ms: 5,
            blind_index: Some([4; 32]),
        }
    }
}
