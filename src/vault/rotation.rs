//! Master-key rotation (re-wrap every DEK under a new master version, then
//! optionally destroy the old versions) and customer-key rotation (a new DEK,
//! every value re-encrypted). Both run while the vault keeps serving.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedMutexGuard};

use crate::policy::Scope;
use crate::store::{
    AuditEntry, CommitError, CustomerChange, CustomerRecord, RotationLease, RotationRecord,
};

use super::{now_ms, Attempt, Caller, CustomerId, Vault, VaultError};

/// Customers re-wrapped per transaction: large enough to amortize the disk
/// sync, small enough to keep each commit short for concurrent writers.
const REWRAP_BATCH: usize = 256;
/// Passes over the customers before retirement gives up on stragglers that
/// concurrent writes keep changing (each pass re-wraps what it finds).
const MAX_PASSES: usize = 5;

/// When keys rotate by themselves.
#[derive(Clone, Debug)]
pub struct RotationPolicy {
    /// A master rotation with retirement runs this long after the last one.
    pub master_interval: Duration,
    /// A customer's DEK is replaced once this many encryptions used it (far
    /// below the 2^32 random-nonce bound of NIST SP 800-38D).
    pub dek_max_encryptions: u64,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            master_interval: Duration::from_secs(24 * 60 * 60),
            dek_max_encryptions: 1 << 28,
        }
    }
}

impl RotationPolicy {
    /// The interval in milliseconds, saturating for absurdly long intervals.
    pub fn master_interval_ms(&self) -> i64 {
        i64::try_from(self.master_interval.as_millis()).unwrap_or(i64::MAX)
    }
}

/// How far a master rotation got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationProgress {
    pub new_master_version: u32,
    pub rewrapped: u64,
    pub total: u64,
    pub done: bool,
    pub retired_versions: Vec<u32>,
}

pub(super) type ProgressSender = mpsc::Sender<Result<RotationProgress, VaultError>>;

/// Held by the one master rotation that may run: this process's lock, and the
/// store's lease, which keeps every other process on the store out.
pub(super) struct RotationGuard {
    _local: OwnedMutexGuard<()>,
    lease: RotationLease,
}

impl RotationGuard {
    /// Fails once the lease is lost (its database session ended), since
    /// another replica may have started rotating.
    fn check(&self) -> Result<(), VaultError> {
        if self.lease.is_lost() {
            return Err(VaultError::Unavailable(
                "the master key rotation lost its lease (the database connection closed); it resumes later".into(),
            ));
        }
        Ok(())
    }
}

impl Vault {
    /// Starts a master rotation in the background and streams its progress. The
    /// rotation finishes even if the caller goes away. A second rotation while
    /// one runs, in this process or another on the same store, is refused with
    /// FAILED_PRECONDITION.
    pub async fn start_master_rotation(
        self: &Arc<Self>,
        caller: &Caller,
        retire_previous: bool,
    ) -> Result<mpsc::Receiver<Result<RotationProgress, VaultError>>, VaultError> {
        let entry = self.audit_entry(caller, "RotateMasterKey", "", &[], "");
        let guard = match caller.require_scope(Scope::KeysAdmin) {
            Ok(()) => self.rotation_guard().await,
            Err(refusal) => Err(refusal),
        };
        let guard = self.audit_refusal(entry.clone(), guard).await?;
        let (progress, receiver) = mpsc::channel(64);
        let vault = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = vault
                .rotate_master(guard, retire_previous, &progress, entry)
                .await;
            if let Err(error) = outcome {
                tracing::error!(%error, "master key rotation failed");
                let _ = progress.send(Err(error)).await;
            }
        });
        Ok(receiver)
    }

    /// This process's lock, then the store's lease; either refused is
    /// FAILED_PRECONDITION.
    pub(super) async fn rotation_guard(&self) -> Result<RotationGuard, VaultError> {
        let local = Arc::clone(&self.rotation_lock)
            .try_lock_owned()
            .map_err(|_| {
                VaultError::FailedPrecondition("a master key rotation is already running".into())
            })?;
        let lease = self.store.try_rotation_lease().await?.ok_or_else(|| {
            VaultError::FailedPrecondition(
                "a master key rotation is already running (on another replica)".into(),
            )
        })?;
        Ok(RotationGuard {
            _local: local,
            lease,
        })
    }

    pub(super) async fn rotate_master(
        &self,
        guard: RotationGuard,
        retire_previous: bool,
        progress: &ProgressSender,
        entry: AuditEntry,
    ) -> Result<(), VaultError> {
        // A rotation a crash cut short, not yet resumed, is superseded by this
        // one (which re-wraps every DEK too): it keeps the promise to retire.
        let retire_previous = retire_previous
            || self
                .store
                .rotation()
                .await?
                .is_some_and(|unfinished| unfinished.retire_previous);
        let target_version = self.keys.add_master_version(now_ms()).await?;
        tracing::info!(
            target_version,
            retire_previous,
            "master key rotation started"
        );
        let rotation = RotationRecord {
            target_version,
            retire_previous,
            started_at_ms: now_ms(),
        };
        self.store.set_rotation(Some(rotation.clone())).await?;
        // Other replicas keep wrapping new keys under the old version until they
        // notice the new one; re-wrapping starts once they all have.
        tokio::time::sleep(self.keys.propagation_delay().await).await;
        self.finish_rotation(&guard, &rotation, Some(progress))
            .await?;
        self.append_audit(vec![entry]).await
    }

    /// Re-wraps every DEK under the rotation's target version, retires the older
    /// versions when asked, and clears the record of the unfinished rotation.
    pub(super) async fn finish_rotation(
        &self,
        guard: &RotationGuard,
        rotation: &RotationRecord,
        progress: Option<&ProgressSender>,
    ) -> Result<(), VaultError> {
        let mut report = RotationProgress {
            new_master_version: rotation.target_version,
            total: self.store.customer_count().await?,
            ..RotationProgress::default()
        };
        let mut stragglers = u64::MAX;
        for _ in 0..MAX_PASSES {
            stragglers = self
                .rewrap_pass(guard, rotation.target_version, &mut report, progress)
                .await?;
            if stragglers == 0 {
                break;
            }
        }
        guard.check()?;
        if rotation.retire_previous {
            if stragglers > 0 {
                return Err(VaultError::Unavailable(format!(
                    "{stragglers} customers kept changing during rotation; old master keys kept, retry"
                )));
            }
            report.retired_versions = self
                .keys
                .destroy_master_versions_below(rotation.target_version)
                .await?;
        }
        self.store.set_rotation(None).await?;
        self.stats.master_rotated();
        report.done = true;
        tracing::info!(
            target_version = rotation.target_version,
            rewrapped = report.rewrapped,
            retired = ?report.retired_versions,
            "master key rotation finished"
        );
        if let Some(progress) = progress {
            let _ = progress.send(Ok(report)).await;
        }
        Ok(())
    }

    /// One pass over every customer, reporting how many it has seen (wrapped
    /// under the target version, whether by this pass or before); returns how
    /// many still need re-wrapping.
    async fn rewrap_pass(
        &self,
        guard: &RotationGuard,
        target_version: u32,
        report: &mut RotationProgress,
        progress: Option<&ProgressSender>,
    ) -> Result<u64, VaultError> {
        let mut after: Option<String> = None;
        let mut stragglers = 0;
        report.rewrapped = 0;
        loop {
            guard.check()?;
            let page = self
                .store
                .customers_after(after.as_deref(), REWRAP_BATCH)
                .await?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(last.clone());
            let page_len = page.len();
            let stale: Vec<(String, CustomerRecord)> = page
                .into_iter()
                .filter(|(_, record)| record.dek.master_version != target_version)
                .collect();
            let left = self.rewrap_batch(stale).await?;
            stragglers += left;
            report.rewrapped += page_len as u64 - left;
            // Customers created during the rotation count too.
            report.total = report.total.max(report.rewrapped);
            if let Some(progress) = progress {
                let _ = progress.send(Ok(report.clone())).await;
            }
        }
        Ok(stragglers)
    }

    /// Re-wraps a batch in one commit; when a concurrent write wins the race for
    /// any of them, each is retried alone. Returns how many are left over.
    async fn rewrap_batch(&self, stale: Vec<(String, CustomerRecord)>) -> Result<u64, VaultError> {
        if stale.is_empty() {
            return Ok(0);
        }
        let changes = stale
            .iter()
            .map(|(id, record)| self.rewrapped_change(id, record))
            .collect::<Result<Vec<_>, _>>()?;
        match self.store.commit_many(changes).await {
            Ok(()) => return Ok(0),
            Err(CommitError::Conflict) => {}
            Err(error) => return Err(error.into()),
        }
        let mut left = 0;
        for (id, _) in &stale {
            let customer = CustomerId::parse(id)
                .map_err(|_| VaultError::Internal("stored customer has a bad id".into()))?;
            let outcome = self.retry_commit(|| self.try_rewrap_one(&customer)).await;
            if outcome.is_err() {
                left += 1;
            }
        }
        Ok(left)
    }

    async fn try_rewrap_one(&self, customer: &CustomerId) -> Result<(), Attempt> {
        let Some(record) = self.store.customer(customer.as_str()).await? else {
            return Ok(()); // erased meanwhile
        };
        if record.dek.master_version == self.keys.active_master_version() {
            return Ok(());
        }
        let change = self.rewrapped_change(customer.as_str(), &record)?;
        self.store.commit(change).await?;
        Ok(())
    }

    fn rewrapped_change(
        &self,
        id: &str,
        record: &CustomerRecord,
    ) -> Result<CustomerChange, VaultError> {
        let customer = CustomerId::parse(id)
            .map_err(|_| VaultError::Internal("stored customer has a bad id".into()))?;
        let dek = self.keys.rewrap(&customer, &record.dek)?;
        let mut updated = record.clone();
        updated.wrapped_under.insert(dek.master_version);
        updated.dek = dek;
        updated.revision += 1;
        Ok(CustomerChange {
            customer_id: id.to_owned(),
            expected_revision: Some(record.revision),
            customer: Some(updated),
            ..CustomerChange::default()
        })
    }
}
