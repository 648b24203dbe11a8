//! Storage engines behind one set of role traits (`roles.rs`), summed up as
//! `Store`. The domain hands over whole, already encrypted records; an engine
//! stores them atomically and durably and knows nothing of cryptography or
//! gRPC. What both engines share (the audit chain as a write extends it, the
//! group-commit queue, errors) lives here; only the sled files import sled
//! and only `postgres/` imports tokio-postgres.

mod audit;
mod chain;
mod disk_reserve;
mod erasure_journal;
mod error;
mod group_commit;
mod postgres;
mod records;
mod roles;
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
pub use roles::{AuditLog, Customers, KeyState, KeyringTable, PolicyVersions, Store, Upkeep};
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
