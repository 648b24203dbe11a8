//! Storage engines behind one trait. The domain hands over whole, already encrypted
//! records; an engine stores them atomically and durably and knows nothing of
//! cryptography or gRPC. Only `sled_engine.rs` imports sled.

mod audit;
mod chain;
mod disk_reserve;
mod erasure_journal;
mod error;
mod group_commit;
mod postgres;
mod records;
mod sled_engine;
mod sled_keys;
mod sled_upgrade;
mod sled_writer;

pub use audit::{AuditEntry, AuditHead, AuditQuery, AuditRecord, AuditTrim, Counted, GENESIS_HASH};
pub use disk_reserve::DiskReserve;
pub use erasure_journal::ErasureJournal;
pub use error::{with_causes, CommitError, EngineError, StoreError};
pub use postgres::{PgStore, SessionSettings as PgSessionSettings};
pub use records::{hex, BINDING_BOUND, BINDING_UNBOUND};
pub use records::{
    CustomerChange, CustomerRecord, CustomerRemoval, Erasure, FieldRecord, IndexEntry, KeyAnchor,
    PolicyVersionRecord, ReceiptRecord, RememberedRequest, RotationRecord, TokenRecord,
    TokenTarget, WrappedDekRecord, WrappedKeyRecord,
};
pub use sled_engine::SledStore;

/// How loaded the store is now, for metrics: read without waiting on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorePressure {
    /// Writes waiting for the sled writer.
    pub queued_writes: Option<u64>,
    /// PostgreSQL's pool: connections open, idle, and calls waiting for one.
    pub pool: Option<PoolState>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolState {
    pub size: u64,
    pub idle: u64,
    pub waiting: u64,
}

/// Whether the store can serve, for readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    Serving,
    /// Not now; it recovers by itself (a full disk freed, a database back).
    Degraded(String),
    /// Not until the process restarts (a sync to disk failed).
    Failed(String),
}

/// The hash of an erasure's one audit event, the first its write returned.
fn erasure_hash(hashes: &[[u8; 32]]) -> Result<[u8; 32], CommitError> {
    hashes.first().copied().ok_or_else(|| {
        StoreError::engine_refused("an erasure was written without its audit event").into()
    })
}

/// The right to run the one master-key rotation among every process on the
/// store, until dropped. An engine that one process owns grants it always
/// (the vault's own lock covers that process).
pub struct RotationLease {
    held: Option<Box<dyn HeldLease>>,
}

/// What an engine keeps while its lease is held.
pub trait HeldLease: Send + Sync {
    /// Whether the lease was lost while held (its database session ended).
    fn is_lost(&self) -> bool;
}

impl RotationLease {
    /// The lease of a store that one process owns: nothing to hold.
    pub fn single_process() -> RotationLease {
        RotationLease { held: None }
    }

    pub fn held(lease: impl HeldLease + 'static) -> RotationLease {
        RotationLease {
            held: Some(Box::new(lease)),
        }
    }

    /// Whether another process may have taken the lease since it was granted.
    pub fn is_lost(&self) -> bool {
        self.held.as_ref().is_some_and(|held| held.is_lost())
    }
}

/// What the domain needs of a storage engine. Reads see committed state; `commit`
/// applies one customer's change atomically and returns only once it is on stable
/// storage.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
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
    /// The unfinished master-key rotation, if any.
    async fn rotation(&self) -> Result<Option<RotationRecord>, StoreError>;
    /// Records (or with `None`, clears) the unfinished rotation; durable.
    async fn set_rotation(&self, rotation: Option<RotationRecord>) -> Result<(), StoreError>;
    /// The rotation lease, or `None` while another process holds it.
    async fn try_rotation_lease(&self) -> Result<Option<RotationLease>, StoreError> {
        Ok(Some(RotationLease::single_process()))
    }
    /// Stores a new policy version (its `seq` and `version` both new) with its
    /// audit event; `Taken` when either exists.
    async fn publish_policy_version(
        &self,
        version: PolicyVersionRecord,
        audit: AuditEntry,
    ) -> Result<(), CommitError>;
    /// Every published policy version, oldest first.
    async fn policy_versions(&self) -> Result<Vec<PolicyVersionRecord>, StoreError>;
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
    /// What the store knows of its keyring; `None` before the first start
    /// that recorded it.
    async fn key_anchor(&self) -> Result<Option<KeyAnchor>, StoreError>;
    /// Records the anchor, durably. From then on a commit whose customer has a
    /// key wrapped under a version the anchor no longer admits is refused
    /// with `StaleKeyring`.
    async fn set_key_anchor(&self, anchor: KeyAnchor) -> Result<(), StoreError>;
    /// Whether the store holds anything at all (customers, erasures or audit
    /// events): a store that does must never get a new keyring.
    async fn holds_data(&self) -> Result<bool, StoreError> {
        Ok(self.customer_count().await? > 0 || self.audit_head().await?.0 > 0)
    }
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
