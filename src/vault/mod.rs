//! The domain: every vault operation, the policy decisions it makes, and the
//! records it hands to the store. It takes and returns plain Rust types and
//! `VaultError`; it knows nothing of gRPC.

mod abuse;
mod audit;
mod caller;
mod consent;
mod customer_keys;
mod detokenize;
mod erasure;
mod error;
mod export;
mod fields;
mod ids;
mod keyring_store;
mod keys;
pub mod kinds;
mod limits;
mod notices;
mod rotation;
mod rotation_schedule;
mod search;
mod stats;
mod tokenize;
pub mod tokens;

use std::sync::Arc;

use crate::policy::{Disclosure, Policy, Purpose};
use crate::store::{CommitError, Store};

pub use crate::store::PolicyVersionRecord;
pub use crate::store::{hex, AuditRecord};
pub use audit::{AuditFilter, ChainVerification};
pub use caller::Caller;
pub use consent::{Acknowledgement, ConsentEvent, ConsentRequest, PrivacyLedger};
pub use customer_keys::{CustomerKeyStatus, KeyStatus};
pub use detokenize::DetokenizedValue;
pub use erasure::{DeletionReceipt, ErasureState};
pub use error::VaultError;
pub use export::{ExportDocument, ExportFormat};
pub use fields::{FieldInput, FieldView};
pub use ids::{CustomerId, FieldName};
pub use keyring_store::{FileKeyring, KeyringStore, TableKeyring, KEYRING_POLL};
pub use keys::KeyManager;
pub use kinds::FieldKind;
pub use limits::Limits;
pub use notices::{Notice, PolicyChange};
pub use rotation::{RotationPolicy, RotationProgress};
pub use stats::StatsSnapshot;
pub use tokenize::TokenizeItem;
pub use tokens::TokenFormat;

/// What a caller was shown of one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    Plaintext,
    Masked,
    TokenOnly,
    Denied,
}

/// How many times a change is retried when a concurrent request changed the same
/// customer first, or a freshly drawn token turned out to be taken.
const COMMIT_ATTEMPTS: usize = 16;

pub struct Vault {
    store: Arc<dyn Store>,
    keys: KeyManager,
    policy: Arc<Policy>,
    limits: Limits,
    rotation_policy: RotationPolicy,
    /// Held by the one master rotation that may run at a time.
    rotation_lock: Arc<tokio::sync::Mutex<()>>,
    stats: stats::VaultStats,
    abuse: abuse::AbuseGuard,
}

impl Vault {
    pub fn new(
        store: Arc<dyn Store>,
        keys: KeyManager,
        policy: Arc<Policy>,
        limits: Limits,
        rotation_policy: RotationPolicy,
    ) -> Vault {
        Vault {
            store,
            keys,
            policy,
            limits,
            rotation_policy,
            rotation_lock: Arc::new(tokio::sync::Mutex::new(())),
            stats: stats::VaultStats::default(),
            abuse: abuse::AbuseGuard::default(),
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Flushes the store (graceful shutdown).
    pub async fn flush(&self) -> Result<(), VaultError> {
        Ok(self.store.flush().await?)
    }

    /// The purpose a request names, if it exists and the caller may claim it.
    fn check_purpose(&self, caller: &Caller, purpose: &str) -> Result<&Purpose, VaultError> {
        if purpose.is_empty() {
            return Err(VaultError::invalid("purpose is required"));
        }
        let known = self
            .policy
            .purpose(purpose)
            .ok_or_else(|| unknown_purpose(purpose))?;
        if !caller.principal.may_use_purpose(purpose) {
            return Err(VaultError::denied(format!(
                "principal \"{}\" may not use the purpose \"{purpose}\"",
                caller.name()
            )));
        }
        Ok(known)
    }

    /// Runs `attempt` until it commits, retrying on a lost race.
    async fn retry_commit<T, F, Fut>(&self, mut attempt: F) -> Result<T, VaultError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        for _ in 1..COMMIT_ATTEMPTS {
            match attempt().await {
                Err(Attempt::Commit(CommitError::Conflict | CommitError::Taken)) => continue,
                Err(Attempt::Commit(CommitError::StaleKeyring)) => {
                    self.keys.reload().await?;
                    continue;
                }
                other => return other.map_err(VaultError::from),
            }
        }
        attempt().await.map_err(VaultError::from)
    }
}

/// A customer about to be changed: their record (new, if they did not exist),
/// their DEK's cipher, and the revision the change must find.
struct Writable {
    record: crate::store::CustomerRecord,
    cipher: Arc<crate::crypto::DataCipher>,
    expected_revision: Option<u64>,
}

impl Writable {
    /// A change to this customer that commits only if nobody changed them since.
    fn change(&self, customer: &CustomerId) -> crate::store::CustomerChange {
        crate::store::CustomerChange {
            customer_id: customer.as_str().to_owned(),
            expected_revision: self.expected_revision,
            ..Default::default()
        }
    }

    /// Puts the customer's next record into `change`.
    fn finish(mut self, change: &mut crate::store::CustomerChange) {
        self.record.revision = self.expected_revision.map_or(1, |revision| revision + 1);
        change.customer = Some(self.record);
    }
}

impl Vault {
    /// Loads a customer for a write, creating them (with a fresh DEK) if absent.
    async fn customer_for_write(
        &self,
        customer: &CustomerId,
        now_ms: i64,
    ) -> Result<Writable, Attempt> {
        match self.store.customer(customer.as_str()).await? {
            Some(record) => Ok(Writable {
                cipher: self.keys.cipher(customer, &record).await?,
                expected_revision: Some(record.revision),
                record,
            }),
            None => {
                let (record, cipher) = self.keys.new_customer(customer, now_ms)?;
                Ok(Writable {
                    record,
                    cipher,
                    expected_revision: None,
                })
            }
        }
    }
}

/// The outcome of one try at a change: a vault error, or a commit that may be retried.
enum Attempt {
    Vault(VaultError),
    Commit(CommitError),
}

impl From<VaultError> for Attempt {
    fn from(error: VaultError) -> Self {
        Attempt::Vault(error)
    }
}

impl From<CommitError> for Attempt {
    fn from(error: CommitError) -> Self {
        Attempt::Commit(error)
    }
}

impl From<crate::store::StoreError> for Attempt {
    fn from(error: crate::store::StoreError) -> Self {
        Attempt::Vault(error.into())
    }
}

impl From<Attempt> for VaultError {
    fn from(attempt: Attempt) -> Self {
        match attempt {
            Attempt::Vault(error) => error,
            Attempt::Commit(error) => error.into(),
        }
    }
}

/// The refusal of a purpose the policy does not declare. The name is repeated
/// only when it could be a purpose name: anything else (64 KiB of text, control
/// or look-alike characters) would make the message itself hostile.
fn unknown_purpose(purpose: &str) -> VaultError {
    let mut chars = purpose.chars();
    let plausible = purpose.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plausible {
        VaultError::invalid(format!("unknown purpose \"{purpose}\""))
    } else {
        VaultError::invalid(
            "unknown purpose: purpose names are 1 to 64 lowercase letters, digits or underscores",
        )
    }
}

/// The disclosure rule for one value, as what the caller will be shown.
fn shown_for(caller: &Caller, field: Option<&str>, kind: FieldKind) -> Shown {
    match caller.principal.disclosure_for(field, kind.name()) {
        Disclosure::Plaintext => Shown::Plaintext,
        Disclosure::Masked => Shown::Masked,
        Disclosure::Token => Shown::TokenOnly,
        Disclosure::None => Shown::Denied,
    }
}

/// The value as shown: plaintext, masked, or nothing.
fn reveal(shown: Shown, kind: FieldKind, plaintext: &str) -> Option<String> {
    match shown {
        Shown::Plaintext => Some(plaintext.to_owned()),
        Shown::Masked => Some(kind.mask(plaintext)),
        Shown::TokenOnly | Shown::Denied => None,
    }
}

fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

fn today() -> time::Date {
    time::OffsetDateTime::now_utc().date()
}

/// A stored kind name back into the kind; unknown names mean a corrupt record.
fn stored_kind(name: &str) -> Result<FieldKind, VaultError> {
    FieldKind::from_name(name)
        .ok_or_else(|| VaultError::Internal("stored record has an unknown kind".into()))
}
