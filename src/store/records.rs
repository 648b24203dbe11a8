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

/// The format customer records are written in; formats 1 (before token keys),
/// 2 (before `binding_version`) and 3 (before `requests`) are still read. The
/// sled engine tells them apart by key prefix, PostgreSQL by a column; a
/// binary that reads only up to format 3 refuses format 4 records.
pub(super) const CUSTOMER_FORMAT: i16 = 4;

/// `CustomerRecord::binding_version` of ciphertexts whose associated data
/// names only the customer and the field, token or record label.
pub const BINDING_UNBOUND: u8 = 1;
/// `CustomerRecord::binding_version` of ciphertexts whose associated data
/// also binds a field's kind and token, a standalone token's kind and format,
/// and the privacy ledger's record revision.
pub const BINDING_BOUND: u8 = 2;

pub(super) fn decode_customer(format: i16, bytes: &[u8]) -> Result<CustomerRecord, StoreError> {
    match format {
        CUSTOMER_FORMAT => decode(bytes),
        3 => decode::<Format3CustomerRecord>(bytes).map(CustomerRecord::from),
        2 => decode::<Format2CustomerRecord>(bytes).map(CustomerRecord::from),
        1 => decode::<LegacyCustomerRecord>(bytes).map(CustomerRecord::from),
        _ => Err(StoreError::Corrupt("unknown customer record format")),
    }
}

/// A sled error, kept whole as the store error's source.
pub(super) fn engine(error: sled::Error) -> StoreError {
    StoreError::engine("sled", error)
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
    /// The key behind the customer's deterministic tokens, wrapped like the
    /// DEK; `None` for a customer stored before token keys, until first needed.
    pub token_key: Option<WrappedKeyRecord>,
    /// AES-GCM encryptions performed under the current DEK (nonce-reuse bound).
    pub encryptions: u64,
    /// The customer's consents and acknowledged policy notices, encrypted under
    /// their DEK (the domain's `PrivacyLedger`); `None` until the first one.
    pub privacy: Option<Vec<u8>>,
    /// Every master key version that ever wrapped one of this customer's keys
    /// or whose index key indexed one of their values: erasure is
    /// cryptographic once all of them are destroyed.
    pub wrapped_under: BTreeSet<u32>,
    /// Which associated data the customer's ciphertexts are sealed with:
    /// `BINDING_UNBOUND` for customers written before format 3, until the
    /// vault migrates them, then `BINDING_BOUND`. Only that one is accepted.
    pub binding_version: u8,
    /// The Tokenize request ids the customer's last calls carried, oldest
    /// first, so that a retry gets the same tokens (AIP-155).
    pub requests: Vec<RememberedRequest>,
}

/// A Tokenize request id and what it produced. No value: the request is
/// kept as a keyed digest under the customer's token key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RememberedRequest {
    pub request_id: String,
    pub digest: [u8; 32],
    pub tokens: Vec<String>,
}

impl CustomerRecord {
    /// The oldest master version the customer's keys are wrapped under now:
    /// retiring a version is safe once no customer's is below it.
    pub fn oldest_master_version(&self) -> u32 {
        self.token_key
            .as_ref()
            .map_or(self.dek.master_version, |key| {
                key.master_version.min(self.dek.master_version)
            })
    }
}

/// A customer record as stores wrote it before token keys (format 1): a clear
/// salt mixed into deterministic tokens under the keyring's one index key.
#[derive(Deserialize)]
pub(super) struct LegacyCustomerRecord {
    revision: u64,
    created_at_ms: i64,
    dek: WrappedDekRecord,
    encryptions: u64,
    _token_salt: [u8; 16],
    privacy: Option<Vec<u8>>,
    wrapped_under: BTreeSet<u32>,
}

impl From<LegacyCustomerRecord> for CustomerRecord {
    /// The salt is dropped: the customer gets a token key when one is first
    /// needed, and their old deterministic tokens keep resolving as records.
    fn from(legacy: LegacyCustomerRecord) -> CustomerRecord {
        CustomerRecord {
            revision: legacy.revision,
            created_at_ms: legacy.created_at_ms,
            dek: legacy.dek,
            token_key: None,
            encryptions: legacy.encryptions,
            privacy: legacy.privacy,
            wrapped_under: legacy.wrapped_under,
            binding_version: BINDING_UNBOUND,
            requests: Vec::new(),
        }
    }
}

/// A customer record as stores wrote it before `binding_version` (format 2):
/// every ciphertext of theirs is sealed with the first, unbound layout.
#[derive(Deserialize)]
pub(super) struct Format2CustomerRecord {
    revision: u64,
    created_at_ms: i64,
    dek: WrappedDekRecord,
    token_key: Option<WrappedKeyRecord>,
    encryptions: u64,
    privacy: Option<Vec<u8>>,
    wrapped_under: BTreeSet<u32>,
}

/// Format 2 is format 3 before bound layouts: every value unbound.
impl From<Format2CustomerRecord> for Format3CustomerRecord {
    fn from(old: Format2CustomerRecord) -> Format3CustomerRecord {
        Format3CustomerRecord {
            revision: old.revision,
            created_at_ms: old.created_at_ms,
            dek: old.dek,
            token_key: old.token_key,
            encryptions: old.encryptions,
            privacy: old.privacy,
            wrapped_under: old.wrapped_under,
            binding_version: BINDING_UNBOUND,
        }
    }
}

impl From<Format2CustomerRecord> for CustomerRecord {
    fn from(old: Format2CustomerRecord) -> CustomerRecord {
        Format3CustomerRecord::from(old).into()
    }
}

/// A customer record as stores wrote it before `requests` (format 3).
#[derive(Deserialize)]
pub(super) struct Format3CustomerRecord {
    revision: u64,
    created_at_ms: i64,
    dek: WrappedDekRecord,
    token_key: Option<WrappedKeyRecord>,
    encryptions: u64,
    privacy: Option<Vec<u8>>,
    wrapped_under: BTreeSet<u32>,
    binding_version: u8,
}

impl From<Format3CustomerRecord> for CustomerRecord {
    fn from(old: Format3CustomerRecord) -> CustomerRecord {
        CustomerRecord {
            revision: old.revision,
            created_at_ms: old.created_at_ms,
            dek: old.dek,
            token_key: old.token_key,
            encryptions: old.encryptions,
            privacy: old.privacy,
            wrapped_under: old.wrapped_under,
            binding_version: old.binding_version,
            requests: Vec::new(),
        }
    }
}

/// A key wrapped under a master key version (a customer's token key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WrappedKeyRecord {
    pub master_version: u32,
    pub wrapped: Vec<u8>,
}

/// What the store knows of the keyring that serves it, so that a vault
/// refuses a keyring of another store, or one older than the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAnchor {
    pub keyring_id: [u8; 16],
    /// The keyring's next master version when it was last saved.
    pub next_version: u32,
    /// Master versions the keyring has destroyed.
    pub destroyed: BTreeSet<u32>,
    /// Versions being retired: no change may wrap a key under one any more.
    pub retiring: BTreeSet<u32>,
}

impl KeyAnchor {
    /// Whether a change may still wrap keys under `version`.
    pub fn admits(&self, version: u32) -> bool {
        !self.destroyed.contains(&version) && !self.retiring.contains(&version)
    }
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
    /// Tokens drawn new. A format-preserving one must not exist yet (the
    /// commit is refused as `Taken`); a random one is trusted to be new (128
    /// random bits), which an engine may check or not.
    pub new_tokens: Vec<(String, TokenRecord)>,
    /// Tokens written whether or not they exist (re-encryption, deterministic reuse).
    pub put_tokens: Vec<(String, TokenRecord)>,
    pub delete_tokens: Vec<String>,
    pub put_index: Vec<IndexEntry>,
    pub delete_index: Vec<IndexEntry>,
    /// The audit event that records this change, chained in the same commit.
    pub audit: Option<super::AuditEntry>,
}

/// Everything of one customer that an erasure removes: their record, with
/// these fields, tokens and index entries.
#[derive(Clone, Debug, Default)]
pub struct CustomerRemoval {
    pub customer_id: String,
    /// The revision the domain read; `None` when nothing is stored for the
    /// customer any more (only the receipt is recorded).
    pub expected_revision: Option<u64>,
    pub delete_fields: Vec<String>,
    pub delete_tokens: Vec<String>,
    pub delete_index: Vec<IndexEntry>,
}

/// An erasure (`Store::erase`): the removal, the receipt that proves it and
/// the event that records it, in one atomic, durable write.
#[derive(Clone, Debug)]
pub struct Erasure {
    pub removal: CustomerRemoval,
    /// Also marks the customer id as erased. The engine fills in its
    /// `audit_hash` with the hash of `audit`.
    pub receipt: ReceiptRecord,
    pub audit: super::AuditEntry,
}

/// A removal is the change that deletes the customer's record and the rest
/// it names; engines apply it as they apply any change.
impl From<CustomerRemoval> for CustomerChange {
    fn from(removal: CustomerRemoval) -> CustomerChange {
        CustomerChange {
            customer_id: removal.customer_id,
            expected_revision: removal.expected_revision,
            customer: None,
            delete_fields: removal.delete_fields,
            delete_tokens: removal.delete_tokens,
            delete_index: removal.delete_index,
            ..CustomerChange::default()
        }
    }
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
            token_key: Some(super::WrappedKeyRecord {
                master_version: 1,
                wrapped: vec![3; 60],
            }),
            encryptions: 2,
            privacy: None,
            wrapped_under: [1].into(),
            binding_version: super::BINDING_BOUND,
            requests: Vec::new(),
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
