//! What the domain needs of a storage engine, one trait per role, and
//! `Store`, their sum: what the vault holds (`Arc<dyn Store>`). An engine,
//! or a wrapper of one in tests, implements each role; `Store` follows.

use super::audit::{AuditEntry, AuditHead, AuditQuery, AuditRecord, AuditTrim};
use super::{
    CommitError, CustomerChange, CustomerRecord, Erasure, FieldRecord, KeyAnchor,
    PolicyVersionRecord, ReceiptRecord, RotationLease, RotationRecord, StoreError, StoreHealth,
    StorePressure, TokenRecord,
};

/// Customers and what they own: records, fields, tokens, the blind index,
/// erasures. Reads see committed state; a commit applies one customer's
/// change atomically, with its audit event, and returns only once it is on
/// stable storage.
#[async_trait::async_trait]
pub trait Customers: Send + Sync {
    async fn customer(&self, customer_id: &str) -> Result<Option<CustomerRecord>, StoreError>;
    /// Every field of the customer, ordered by field name.
    async fn fields(&self, customer_id: &str) -> Result<Vec<(String, FieldRecord)>, StoreError>;
    async fn field(
        &self,
        customer_id: &str,
        field_name: &str,
    ) -> Result<Option<FieldRecord>, StoreError>;
    async fn token(&self, token: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Every token (field tokens and standalone ones) of the customer.
    async fn customer_tokens(&self, customer_id: &str) -> Result<Vec<String>, StoreError>;
    /// Customers whose field `field_name` has this blind index, in byte order
    /// of their ids, only those after `after` ("" for the first), at most `limit`.
    async fn find_by_index(
        &self,
        field_name: &str,
        blind_index: &[u8; 32],
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// The receipt id of the customer's last erasure, if they were erased.
    async fn erasure_of(&self, customer_id: &str) -> Result<Option<String>, StoreError>;
    async fn receipt(&self, receipt_id: &str) -> Result<Option<ReceiptRecord>, StoreError>;
    /// Applies a change, with its audit event, if the customer is still at
    /// `change.expected_revision` and every new token is free; durable before it
    /// returns. Returns the hash of the change's audit event.
    async fn commit(&self, change: CustomerChange) -> Result<Option<[u8; 32]>, CommitError>;
    /// Applies several customers' changes in one transaction: all or none (a
    /// conflict on any of them fails the whole batch).
    async fn commit_many(&self, changes: Vec<CustomerChange>) -> Result<(), CommitError>;
    /// Removes the customer if still at `removal.expected_revision`, stores
    /// the receipt (stamped with the event's hash), marks the customer id as
    /// erased and chains the event, all at once; durable before it returns.
    /// Returns the hash of the erasure's audit event.
    async fn erase(&self, erasure: Erasure) -> Result<[u8; 32], CommitError>;
    /// Customers ordered by id, starting after `after`, at most `limit`.
    async fn customers_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, CustomerRecord)>, StoreError>;
    async fn customer_count(&self) -> Result<u64, StoreError>;
}

/// The audit log: one hash chain of events (`chain.rs`), appended to by
/// every write and trimmed from its oldest end.
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends events that record no change (reads, refusals); durable before it returns.
    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError>;
    /// Audit events in sequence order, filtered by `query`.
    async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;
    /// A customer's audit events with a sequence number below `before_seq`,
    /// newest first, at most `limit` (an export's access history, by pages).
    async fn customer_audit_events_before(
        &self,
        customer_id: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// The last event's sequence number and hash (0 and the genesis hash when empty).
    async fn audit_head(&self) -> Result<(u64, [u8; 32]), StoreError>;
    /// Where the held audit log starts: the last event trimmed from it, whose
    /// hash the first held event's `prev_hash` must equal (seq 0 and the
    /// genesis hash before any trim).
    async fn audit_anchor(&self) -> Result<AuditHead, StoreError>;
    /// Under the chain's lock, in one atomic, durable write: if the anchor is
    /// still `trim.expected_anchor`, the event `trim.through.seq` is held with
    /// the hash `trim.through.hash` and a newer event exists, deletes every
    /// event up to it (with their index entries), records it as the anchor
    /// and chains `trim.event`. Otherwise `CommitError::Conflict`, and nothing
    /// changes. Returns how many events were deleted. The caller verified the
    /// chain up to `through` beforehand: held events never change, and the
    /// anchor check makes sure no other trim came in between.
    async fn trim_audit(&self, trim: AuditTrim) -> Result<u64, CommitError>;
}

/// What the store keeps of the keys that serve it: the key anchor, an
/// unfinished master-key rotation and the lease to run one.
#[async_trait::async_trait]
pub trait KeyState: Send + Sync {
    /// The unfinished master-key rotation, if any.
    async fn rotation(&self) -> Result<Option<RotationRecord>, StoreError>;
    /// Records (or with `None`, clears) the unfinished rotation; durable.
    async fn set_rotation(&self, rotation: Option<RotationRecord>) -> Result<(), StoreError>;
    /// The rotation lease, or `None` while another process holds it.
    async fn try_rotation_lease(&self) -> Result<Option<RotationLease>, StoreError> {
        Ok(Some(RotationLease::single_process()))
    }
    /// What the store knows of its keyring; `None` before the first start
    /// that recorded it.
    async fn key_anchor(&self) -> Result<Option<KeyAnchor>, StoreError>;
    /// Records the anchor, durably. From then on a commit whose customer has a
    /// key wrapped under a version the anchor no longer admits is refused
    /// with `StaleKeyring`.
    async fn set_key_anchor(&self, anchor: KeyAnchor) -> Result<(), StoreError>;
}

/// The published versions of the privacy policy.
#[async_trait::async_trait]
pub trait PolicyVersions: Send + Sync {
    /// Stores a new policy version (its `seq` and `version` both new) with its
    /// audit event; `Taken` when either exists.
    async fn publish_policy_version(
        &self,
        version: PolicyVersionRecord,
        audit: AuditEntry,
    ) -> Result<(), CommitError>;
    /// Every published policy version, oldest first.
    async fn policy_versions(&self) -> Result<Vec<PolicyVersionRecord>, StoreError>;
}

/// The engine itself: its size, flushing, health and load.
#[async_trait::async_trait]
pub trait Upkeep: Send + Sync {
    /// Bytes the store takes on disk.
    async fn size_on_disk(&self) -> Result<u64, StoreError>;
    /// Flushes everything to stable storage (used at shutdown).
    async fn flush(&self) -> Result<(), StoreError>;
    /// Whether the store can take writes now.
    async fn health(&self) -> StoreHealth {
        StoreHealth::Serving
    }
    /// How loaded the store is, at once.
    fn pressure(&self) -> StorePressure {
        StorePressure::default()
    }
}

/// Every role an engine plays. Implemented for whatever plays them all.
#[async_trait::async_trait]
pub trait Store: Customers + AuditLog + KeyState + PolicyVersions + Upkeep + 'static {
    /// Whether the store holds anything at all (customers, erasures or audit
    /// events): a store that does must never get a new keyring.
    async fn holds_data(&self) -> Result<bool, StoreError> {
        Ok(self.customer_count().await? > 0 || self.audit_head().await?.0 > 0)
    }
}

impl<Engine> Store for Engine where
    Engine: Customers + AuditLog + KeyState + PolicyVersions + Upkeep + 'static
{
}

/// The keyring table of a store shared by several processes (PostgreSQL):
/// one row holding the keyring sealed by the root key.
#[async_trait::async_trait]
pub trait KeyringTable: Send + Sync {
    /// The keyring row: its generation, the lowest master version still live,
    /// and the keyring sealed by the root key.
    async fn keyring_row(&self) -> Result<Option<(i64, i32, Vec<u8>)>, StoreError>;
    /// Replaces the keyring row if it is still at `expected_generation` (`None`:
    /// no row yet). Raising `retired_below` succeeds only when no customer is
    /// still wrapped under a version below it; commits that would wrap under
    /// one are held off by the row lock and then refused (`StaleKeyring`).
    async fn save_keyring_row(
        &self,
        expected_generation: Option<i64>,
        generation: i64,
        retired_below: i32,
        sealed: &[u8],
    ) -> Result<(), CommitError>;
}
