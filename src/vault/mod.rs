//! The domain: every vault operation, the policy decisions it makes, and the
//! records it hands to the store. It takes and returns plain Rust types and
//! `VaultError`; it knows nothing of gRPC.

// By capability; each directory's mod.rs says what it holds.
mod audit;
mod common;
mod data;
mod keys;
mod privacy;
mod reload;
#[cfg(test)]
pub(crate) mod testing;
mod values;

// The operations' modules by their own names, so each names the others
// without knowing the directory they live in.
use audit::{action, refusals, trim as audit_trim};
use common::{abuse, caller, clock, error, ids, limits, rule_names, sealing, stats};
use data::{detokenize, fields, request_ids, search, tokenize};
use keys::{customer_keys, keyring_store, root_migration, root_sealing, rotation};
use privacy::{consent, erasure, export, notices};
use reload::{policy_reload, tls_reload};
pub use values::{kinds, tokens};

use std::sync::Arc;

use crate::policy::{Disclosure, Policy, Purpose};
use crate::store::{CommitError, CustomerRecord, Store};

pub use crate::store::PolicyVersionRecord;
pub use crate::store::{hex, AuditRecord};
pub use action::Action;
pub use audit::call::{AuditedAnswer, AuditedCall, Call, CallNames};
pub use audit::Audit;
pub use audit::{AuditFilter, AuditPage, ChainVerification, VerifyFrom};
pub use audit_trim::{TrimRequest, TrimmedLog, DEFAULT_AUDIT_MIN_RETENTION};
pub use caller::Caller;
pub use clock::{Clock, ManualClock, SystemClock};
pub use consent::{Acknowledgement, ConsentEvent, ConsentRequest, PrivacyLedger};
pub use customer_keys::{CustomerKeyStatus, KeyStatus, MasterRotationStatus, RootOfTrustStatus};
pub use data::Data;
pub use detokenize::DetokenizedValue;
pub use erasure::{DeletionReceipt, ErasureState};
pub use error::{Reason, VaultError};
pub use export::{AccessHistoryRequest, ExportDocument, ExportFormat};
pub use fields::{FieldInput, FieldView, FieldsRead, FieldsWritten};
pub use ids::{personal_shape, CustomerId, FieldName};
pub use keyring_store::{FileKeyring, KeyringStore, Sealing, TableKeyring, KEYRING_POLL};
pub use keys::KeyManager;
pub use keys::Keys;
pub use kinds::{FieldKind, Normalized};
pub use limits::{Limits, RefusalBudget, RefusalLimits};
pub use notices::{Notice, PolicyChange};
pub use policy_reload::ReloadTrigger;
pub use privacy::Privacy;
pub use root_migration::{MigrationAim, MigrationProgress, MigrationWatch};
pub use root_sealing::{open_keyring, seal_new_versions};
pub use rotation::{ProgressWatch, RotationPolicy, RotationProgress};
pub use rule_names::kind_named_rule_warnings;
pub use search::{SearchPage, SearchRequest};
pub use stats::StatsSnapshot;
pub use tls_reload::TlsReload;
pub use tokenize::TokenizeItem;
pub use tokens::TokenFormat;

/// What `Debug` shows of a value: whether there is one, never what it is.
fn redacted(value: &Option<String>) -> Option<&'static str> {
    value.as_ref().map(|_| "[redacted]")
}

/// What a caller was shown of one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    Plaintext,
    Masked,
    TokenOnly,
    Denied,
}

impl Shown {
    /// The name an export uses for it.
    pub fn name(self) -> &'static str {
        match self {
            Shown::Plaintext => "plaintext",
            Shown::Masked => "masked",
            Shown::TokenOnly => "token",
            Shown::Denied => "denied",
        }
    }
}

/// How many times a change is retried when a concurrent request changed the same
/// customer first, or a freshly drawn token turned out to be taken. Sixteen
/// was too few on a loaded 2-core machine: six writers on three customers
/// across two PostgreSQL replicas saw one write lose every race (CI,
/// `postgres_sessions::database_defaults_do_not_change_the_isolation_level_or_durability`).
/// With the pause capped at 64 ms, 24 tries give up within about a second.
const COMMIT_ATTEMPTS: usize = 24;

/// The pause before retry `retry` (from 0) of a commit that lost a race: a
/// random time up to 1 ms doubled each retry, at most 64 ms.
fn commit_backoff(retry: usize) -> std::time::Duration {
    use rand::Rng;
    let cap_us = 1_000u64 << retry.min(6);
    std::time::Duration::from_micros(rand::rng().random_range(0..=cap_us))
}

pub struct Vault {
    store: Arc<dyn Store>,
    keys: KeyManager,
    /// The policy in force; a reload swaps the whole of it at once.
    policy: std::sync::RwLock<Arc<Policy>>,
    limits: Limits,
    rotation_policy: RotationPolicy,
    /// Held by the one master rotation that may run at a time.
    rotation_lock: Arc<tokio::sync::Mutex<()>>,
    /// How far the master rotation this process runs got, for GetKeyStatus.
    rotation_counts: std::sync::Mutex<Option<rotation::RewrapCounts>>,
    stats: stats::VaultStats,
    abuse: abuse::AbuseGuard,
    /// Which refusals are recorded at once and which are counted for later.
    refusals: refusals::RefusalGate,
    /// Where erasures are journaled outside the store (none in some tests).
    erasure_journal: Option<Arc<crate::store::ErasureJournal>>,
    /// How old an audit event must be before TrimAuditLog may delete it.
    audit_min_retention: std::time::Duration,
    /// Held by the one trim of the audit log this process runs at a time.
    audit_trim_lock: tokio::sync::Mutex<()>,
    /// Where every timestamp the vault records comes from.
    clock: Arc<dyn Clock>,
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
            policy: std::sync::RwLock::new(policy),
            refusals: refusals::RefusalGate::new(limits.refusals.clone()),
            limits,
            rotation_policy,
            rotation_lock: Arc::new(tokio::sync::Mutex::new(())),
            rotation_counts: std::sync::Mutex::new(None),
            stats: stats::VaultStats::default(),
            abuse: abuse::AbuseGuard::default(),
            erasure_journal: None,
            audit_min_retention: audit_trim::DEFAULT_AUDIT_MIN_RETENTION,
            audit_trim_lock: tokio::sync::Mutex::new(()),
            clock: Arc::new(SystemClock),
        }
    }

    /// Takes the time from `clock` instead of the system's (tests).
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn today(&self) -> time::Date {
        self.clock.today()
    }

    /// Events younger than `retention` are never trimmed from the audit log
    /// (`--audit-min-retention`).
    pub fn set_audit_min_retention(&mut self, retention: std::time::Duration) {
        self.audit_min_retention = retention;
    }

    /// The policy in force now: a call takes it once and keeps it.
    /// The customer's record, or NOT_FOUND: no such customer, or erased.
    async fn existing_customer(&self, id: &str) -> Result<CustomerRecord, VaultError> {
        self.store
            .customer(id)
            .await?
            .ok_or_else(VaultError::customer_not_found)
    }

    /// The data plane: fields, tokens and search.
    pub fn data(&self) -> Data<'_> {
        Data::of(self)
    }

    /// Consent, notices, export and erasure.
    pub fn privacy(&self) -> Privacy<'_> {
        Privacy::of(self)
    }

    /// Rotations and key status.
    pub fn keys(&self) -> Keys<'_> {
        Keys::of(self)
    }

    /// Listing, verifying and trimming the audit log.
    pub fn audit(&self) -> Audit<'_> {
        Audit::of(self)
    }

    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(
            &self
                .policy
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Puts `policy` in force for every call that starts from now on.
    pub fn replace_policy(&self, policy: Arc<Policy>) {
        *self
            .policy
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = policy;
    }

    /// Whether the store can take writes now (readiness).
    pub async fn store_health(&self) -> crate::store::StoreHealth {
        self.store.health().await
    }

    /// Flushes the store (graceful shutdown).
    pub async fn flush(&self) -> Result<(), VaultError> {
        Ok(self.store.flush().await?)
    }

    /// The purpose a request names, if it exists and the caller may claim it.
    fn check_purpose<'c>(
        &self,
        caller: &'c Caller,
        purpose: &str,
    ) -> Result<&'c Purpose, VaultError> {
        if purpose.is_empty() {
            return Err(VaultError::invalid_field("purpose", "purpose is required"));
        }
        let known = caller
            .policy
            .purpose(purpose)
            .ok_or_else(|| unknown_purpose(purpose))?;
        if !caller.principal.may_use_purpose(purpose) {
            let refusal = VaultError::new(
                Reason::PurposeNotAllowed,
                format!(
                    "principal \"{}\" may not use the purpose \"{purpose}\"",
                    caller.name()
                ),
            );
            return Err(refusal.with("purpose", purpose));
        }
        Ok(known)
    }

    /// Runs `attempt` until it commits, retrying on a lost race after a
    /// growing, jittered pause (so that racing writers stop colliding);
    /// ABORTED once every try lost.
    async fn retry_commit<T, F, Fut>(&self, mut attempt: F) -> Result<T, VaultError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        for retry in 0..COMMIT_ATTEMPTS - 1 {
            match attempt().await {
                Err(Attempt::Commit(CommitError::Conflict | CommitError::Taken)) => {}
                Err(Attempt::Commit(CommitError::StaleKeyring)) => self.keys.reload().await?,
                other => return other.map_err(VaultError::from),
            }
            tokio::time::sleep(commit_backoff(retry)).await;
        }
        attempt().await.map_err(VaultError::from)
    }
}

/// A customer about to be changed: their record (new, if they did not exist),
/// their DEK's cipher, their token key, and the revision the change must find.
struct Writable {
    record: crate::store::CustomerRecord,
    cipher: Arc<crate::crypto::DataCipher>,
    token_key: crate::crypto::TokenKey,
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

    /// Puts the customer's next record into `change` (its ledger re-sealed
    /// for the new revision).
    fn finish(mut self, change: &mut crate::store::CustomerChange) -> Result<(), VaultError> {
        let revision = self.expected_revision.map_or(1, |revision| revision + 1);
        sealing::advance_revision(
            &change.customer_id,
            &mut self.record,
            revision,
            &self.cipher,
        )?;
        change.customer = Some(self.record);
        Ok(())
    }
}

impl Vault {
    /// Loads a customer for a write, creating them (with a fresh DEK) if absent.
    async fn customer_for_write(
        &self,
        customer: &CustomerId,
        now_ms: i64,
    ) -> Result<Writable, Attempt> {
        let (record, cipher, expected_revision) =
            match self.store.customer(customer.as_str()).await? {
                Some(mut record) => {
                    if sealing::Sealing::of(&record)? == sealing::Sealing::Unbound {
                        // Written before the bound layout: migrated before any change.
                        record = self.migrate_binding(customer).await?;
                    }
                    // A customer stored before token keys gets one with this write.
                    self.keys.give_token_key(customer, &mut record);
                    let cipher = self.keys.cipher(customer, &record).await?;
                    let revision = record.revision;
                    (record, cipher, Some(revision))
                }
                None => {
                    let (record, cipher) = self.keys.new_customer(customer, now_ms)?;
                    (record, cipher, None)
                }
            };
        Ok(Writable {
            token_key: self.keys.token_key(customer, &record).await?,
            record,
            cipher,
            expected_revision,
        })
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
        VaultError::new(
            Reason::PurposeUnknown,
            format!("unknown purpose \"{purpose}\""),
        )
    } else {
        VaultError::new(
            Reason::PurposeUnknown,
            "unknown purpose: purpose names are 1 to 64 lowercase letters, digits or underscores",
        )
    }
    .in_field("purpose")
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
fn reveal(shown: Shown, kind: FieldKind, plaintext: &str) -> Result<Option<String>, VaultError> {
    Ok(match shown {
        Shown::Plaintext => Some(plaintext.to_owned()),
        Shown::Masked => Some(stored_value(kind, plaintext)?.mask()),
        Shown::TokenOnly | Shown::Denied => None,
    })
}

/// A stored kind name back into the kind; unknown names mean a corrupt record.
fn stored_kind(name: &str) -> Result<FieldKind, VaultError> {
    FieldKind::from_name(name)
        .ok_or_else(|| VaultError::internal("stored record has an unknown kind"))
}

/// A decrypted value back into its normalized form; values are normalized
/// before they are stored, so one that is not means a corrupt record. A
/// stored date of birth was checked against the day it was stored; it is
/// not checked against any later "today" (hence `Date::MAX`).
fn stored_value(kind: FieldKind, plaintext: &str) -> Result<Normalized, VaultError> {
    Normalized::from_stored(kind, plaintext, time::Date::MAX)
        .ok_or_else(|| VaultError::internal("stored value is not in its kind's normalized form"))
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn commit_backoff_grows_with_each_retry_and_stays_under_64_ms() {
        for retry in 0..COMMIT_ATTEMPTS {
            let cap = std::time::Duration::from_micros(1_000 << retry.min(6));
            for _ in 0..100 {
                assert!(commit_backoff(retry) <= cap);
            }
        }
        // Randomised: a hundred draws are not all the same.
        let draws: std::collections::HashSet<_> = (0..100).map(|_| commit_backoff(6)).collect();
        assert!(draws.len() > 1);
    }
}
