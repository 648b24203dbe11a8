//! Master-key rotation (re-wrap every DEK under a new master version, then
//! optionally destroy the old versions) and customer-key rotation (a new DEK,
//! every value re-encrypted). Both run while the vault keeps serving.

use crate::vault::Call;
use crate::vault::Reason;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedMutexGuard};

use crate::policy::Scope;
use crate::store::{
    AuditEntry, CommitError, CustomerChange, CustomerRecord, FieldRecord, IndexEntry,
    RotationLease, RotationRecord, BINDING_BOUND,
};
use crate::vault::sealing::{advance_revision, Sealing};

use crate::vault::{stored_value, Attempt, CustomerId, FieldKind, Vault, VaultError};

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
    /// How long backups of the keyring and the store are kept: a destroyed
    /// master version lives on in them until then, so an erasure is
    /// cryptographic only this long after its versions were destroyed.
    pub backup_retention: Duration,
}

/// The backup retention assumed unless the operator says otherwise.
pub const DEFAULT_BACKUP_RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            master_interval: Duration::from_secs(24 * 60 * 60),
            dek_max_encryptions: 1 << 28,
            backup_retention: DEFAULT_BACKUP_RETENTION,
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

/// How many customers a running master rotation has re-wrapped, out of how
/// many, under which target version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(in crate::vault) struct RewrapCounts {
    pub target_version: u32,
    pub rewrapped: u64,
    pub total: u64,
}

/// Clears the counts GetKeyStatus shows once the rotation ends, however it
/// ends (an error, or a task cancelled mid-way).
struct CountsShown<'a>(&'a Vault);

impl Drop for CountsShown<'_> {
    fn drop(&mut self) {
        *lock_counts(self.0) = None;
    }
}

/// The counts' lock, whether or not a holder panicked: they are plain numbers.
fn lock_counts(vault: &Vault) -> std::sync::MutexGuard<'_, Option<RewrapCounts>> {
    vault
        .rotation_counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The latest progress of a master rotation, then its outcome; `None` until
/// the first step. A snapshot, not a queue: a reader that falls behind (or
/// never reads) misses steps, never holds the rotation, and still sees how it
/// ended.
pub type ProgressWatch = watch::Receiver<Option<Result<RotationProgress, VaultError>>>;

pub(in crate::vault) type ProgressSender =
    watch::Sender<Option<Result<RotationProgress, VaultError>>>;

/// Replaces the progress shown, whether anyone watches or not.
fn report_progress(progress: &ProgressSender, step: Result<RotationProgress, VaultError>) {
    progress.send_replace(Some(step));
}

/// Held by the one master rotation that may run: this process's lock, and the
/// store's lease, which keeps every other process on the store out.
pub(in crate::vault) struct RotationGuard {
    _local: OwnedMutexGuard<()>,
    lease: RotationLease,
}

impl RotationGuard {
    /// Fails once the lease is lost (its database session ended), since
    /// another replica may have started rotating.
    fn check(&self) -> Result<(), VaultError> {
        if self.lease.is_lost() {
            return Err(VaultError::new(
                Reason::RotationIncomplete,
                "the master key rotation lost its lease (the database connection closed); it resumes later",
            ));
        }
        Ok(())
    }
}

// On the vault itself, not the `Keys` view: the rotation runs on in a task
// of its own, which holds the vault (`Arc`) after the call returns.
impl Vault {
    /// Starts a master rotation in the background and shows its progress. The
    /// rotation finishes even if the caller goes away or stops reading. A second rotation while
    /// one runs, in this process or another on the same store, is refused with
    /// FAILED_PRECONDITION.
    pub async fn start_master_rotation(
        self: &Arc<Self>,
        call: Call<'_>,
        retire_previous: bool,
    ) -> Result<ProgressWatch, VaultError> {
        call.caller.require_scope(Scope::KeysAdmin)?;
        let guard = self.rotation_guard().await?;
        let entry = call.event;
        let (progress, receiver) = watch::channel(None);
        let vault = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = vault
                .rotate_master(guard, retire_previous, &progress, entry)
                .await;
            if let Err(error) = outcome {
                tracing::error!(%error, "master key rotation failed");
                report_progress(&progress, Err(error));
            }
        });
        Ok(receiver)
    }
}

impl Vault {
    /// The master rotation started and not finished, if any (on any process
    /// on the store), with its counts when this process runs it.
    pub(in crate::vault) async fn master_rotation_status(
        &self,
    ) -> Result<Option<crate::vault::MasterRotationStatus>, VaultError> {
        let Some(rotation) = self.store.rotation().await? else {
            return Ok(None);
        };
        let counts =
            (*lock_counts(self)).filter(|counts| counts.target_version == rotation.target_version);
        Ok(Some(crate::vault::MasterRotationStatus {
            target_version: rotation.target_version,
            retire_previous: rotation.retire_previous,
            started_at_ms: rotation.started_at_ms,
            rewrapped: counts.map(|counts| counts.rewrapped),
            total: counts.map(|counts| counts.total),
        }))
    }

    fn show_rewrap_counts(&self, report: &RotationProgress) {
        *lock_counts(self) = Some(RewrapCounts {
            target_version: report.new_master_version,
            rewrapped: report.rewrapped,
            total: report.total,
        });
    }

    /// This process's lock, then the store's lease; either refused is
    /// FAILED_PRECONDITION.
    pub(in crate::vault) async fn rotation_guard(&self) -> Result<RotationGuard, VaultError> {
        let local = Arc::clone(&self.rotation_lock)
            .try_lock_owned()
            .map_err(|_| {
                VaultError::new(
                    Reason::RotationRunning,
                    "a master key rotation is already running",
                )
            })?;
        let lease = self.store.try_rotation_lease().await?.ok_or_else(|| {
            VaultError::new(
                Reason::RotationRunning,
                "a master key rotation is already running (on another replica)",
            )
        })?;
        Ok(RotationGuard {
            _local: local,
            lease,
        })
    }

    pub(in crate::vault) async fn rotate_master(
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
        let target_version = self.keys.add_master_version(self.now_ms()).await?;
        tracing::info!(
            target_version,
            retire_previous,
            "master key rotation started"
        );
        let rotation = RotationRecord {
            target_version,
            retire_previous,
            started_at_ms: self.now_ms(),
        };
        self.store.set_rotation(Some(rotation.clone())).await?;
        // Other replicas keep wrapping new keys under the old version until they
        // notice the new one; re-wrapping starts once they all have.
        tokio::time::sleep(self.keys.propagation_delay().await).await;
        self.finish_rotation(&guard, &rotation, Some(progress))
            .await?;
        self.append_audit(vec![entry]).await
    }

    /// Re-wraps every customer's keys (and recomputes their index entries)
    /// under the rotation's target version, retires the older versions when
    /// asked, and clears the record of the unfinished rotation.
    pub(in crate::vault) async fn finish_rotation(
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
        let _shown = CountsShown(self);
        self.show_rewrap_counts(&report);
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
                return Err(VaultError::new(Reason::RotationIncomplete, format!(
                    "{stragglers} customers kept changing during rotation; old master keys kept, retry"
                )));
            }
            report.retired_versions = self.retire_below(guard, rotation, &mut report).await?;
        }
        // The root of trust destroys what this retirement, or one cut short
        // before it, retired; until it has, the rotation stays unfinished
        // (and is resumed), and erasures covered by those versions logical.
        self.keys.finish_destructions(self.now_ms()).await?;
        // The store learns the new version, and the destroyed ones, either way.
        self.store
            .set_key_anchor(self.keys.anchor(BTreeSet::new()))
            .await?;
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
            report_progress(progress, Ok(report));
        }
        Ok(())
    }

    /// Destroys the versions below the target once nothing is wrapped under
    /// them. The store's anchor first refuses new wraps under them, so a
    /// write built from an older keyring cannot slip in after the check; the
    /// check then re-wraps whatever slipped in before it.
    async fn retire_below(
        &self,
        guard: &RotationGuard,
        rotation: &RotationRecord,
        report: &mut RotationProgress,
    ) -> Result<Vec<u32>, VaultError> {
        let doomed: BTreeSet<u32> = self
            .keys
            .master_versions_below(rotation.target_version)
            .into_iter()
            .collect();
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        self.store
            .set_key_anchor(self.keys.anchor(doomed.clone()))
            .await?;
        let left = self
            .rewrap_pass(guard, rotation.target_version, report, None)
            .await?;
        if left > 0 || guard.check().is_err() {
            // Writes to those customers would be refused until a retry: undo.
            self.store
                .set_key_anchor(self.keys.anchor(BTreeSet::new()))
                .await?;
            guard.check()?;
            return Err(VaultError::new(Reason::RotationIncomplete, format!(
                "{left} customers changed while old master keys were being retired; they are kept, retry"
            )));
        }
        self.keys
            .destroy_master_versions_below(rotation.target_version, self.now_ms())
            .await
    }

    /// One pass over every customer, reporting how many it has seen (wrapped
    /// under the target version, whether by this pass or before); returns how
    /// many still need re-wrapping. A customer whose keys cannot be unwrapped
    /// is reported and passed over: it is unreadable whatever is retired.
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
                .filter(|(_, record)| {
                    record.oldest_master_version() != target_version
                        || record.binding_version != BINDING_BOUND
                })
                .collect();
            let left = self.rewrap_batch(stale).await?;
            stragglers += left;
            report.rewrapped += page_len as u64 - left;
            // Customers created during the rotation count too.
            report.total = report.total.max(report.rewrapped);
            self.show_rewrap_counts(report);
            if let Some(progress) = progress {
                report_progress(progress, Ok(report.clone()));
            }
        }
        Ok(stragglers)
    }

    /// Re-wraps a batch in one commit; when a concurrent write wins the race for
    /// any of them, each is retried alone. Returns how many are left over.
    async fn rewrap_batch(&self, stale: Vec<(String, CustomerRecord)>) -> Result<u64, VaultError> {
        let mut changes = Vec::with_capacity(stale.len());
        let mut raced = false;
        for (id, record) in &stale {
            match self.rewrap_of(id, record).await? {
                Rewrap::Change(change) => changes.push(*change),
                Rewrap::Unreadable => {}
                Rewrap::Changed => raced = true,
            }
        }
        if !raced {
            if changes.is_empty() {
                return Ok(0);
            }
            match self.store.commit_many(changes).await {
                Ok(()) => return Ok(0),
                Err(CommitError::Conflict | CommitError::StaleKeyring) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let mut left = 0;
        for (id, _) in &stale {
            let customer = stored_id(id)?;
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
        if record.oldest_master_version() == self.keys.active_master_version()
            && record.binding_version == BINDING_BOUND
        {
            return Ok(());
        }
        match self.rewrap_of(customer.as_str(), &record).await? {
            Rewrap::Change(change) => {
                self.store.commit(*change).await?;
                Ok(())
            }
            Rewrap::Unreadable => Ok(()),
            Rewrap::Changed => Err(Attempt::Commit(CommitError::Conflict)),
        }
    }

    /// The re-wrapping change of a customer as read in `record`.
    async fn rewrap_of(&self, id: &str, record: &CustomerRecord) -> Result<Rewrap, VaultError> {
        if let Err(error) = self.keys.check_unwrappable(id, record) {
            tracing::error!(
                customer = id,
                %error,
                "a customer's keys cannot be unwrapped; the rotation passes over them"
            );
            return Ok(Rewrap::Unreadable);
        }
        if Sealing::of(record)? == Sealing::Unbound {
            return self.migrate_for_rotation(id).await;
        }
        self.rewrapped_change(id, record).await
    }

    /// Migrates a customer written before the bound layout (a re-key, which
    /// also wraps their new DEK under the active version); they are then read
    /// again and re-wrapped as any other.
    async fn migrate_for_rotation(&self, id: &str) -> Result<Rewrap, VaultError> {
        let customer = stored_id(id)?;
        match self.migrate_binding(&customer).await {
            Ok(_) | Err(Attempt::Commit(_)) => Ok(Rewrap::Changed),
            Err(Attempt::Vault(error)) if error.code_name() == "UNAVAILABLE" => Err(error),
            Err(Attempt::Vault(error)) => {
                tracing::error!(
                    customer = id,
                    %error,
                    "a customer's values could not be migrated to the bound associated data; \
                     the rotation passes over them"
                );
                Ok(Rewrap::Unreadable)
            }
        }
    }

    /// The customer's keys wrapped under the active version, and their index
    /// entries recomputed under its index key (the old entries deleted).
    async fn rewrapped_change(
        &self,
        id: &str,
        record: &CustomerRecord,
    ) -> Result<Rewrap, VaultError> {
        let customer = stored_id(id)?;
        let mut updated = record.clone();
        self.keys.rewrap(&customer, &mut updated)?;
        if updated.privacy.is_some() {
            let cipher = self.keys.cipher(&customer, record).await?;
            advance_revision(id, &mut updated, record.revision + 1, &cipher)?;
        } else {
            updated.revision += 1;
        }
        let mut change = CustomerChange {
            customer_id: id.to_owned(),
            expected_revision: Some(record.revision),
            ..CustomerChange::default()
        };
        if !self.reindex(&customer, record, &mut change).await? {
            return Ok(Rewrap::Changed);
        }
        change.customer = Some(updated);
        Ok(Rewrap::Change(Box::new(change)))
    }

    /// Recomputes each searchable field's index entry under the active index
    /// key. `false` when a field does not open with `record`'s DEK: the
    /// customer was re-keyed since `record` was read.
    async fn reindex(
        &self,
        customer: &CustomerId,
        record: &CustomerRecord,
        change: &mut CustomerChange,
    ) -> Result<bool, VaultError> {
        let id = customer.as_str();
        let indexed: Vec<(String, FieldRecord)> = self
            .store
            .fields(id)
            .await?
            .into_iter()
            .filter(|(_, field)| field.blind_index.is_some())
            .collect();
        if indexed.is_empty() {
            return Ok(true);
        }
        let cipher = self.keys.cipher(customer, record).await?;
        for (name, mut field) in indexed {
            let kind = FieldKind::from_name(&field.kind)
                .ok_or_else(|| VaultError::internal("stored field has an unknown kind"))?;
            let binding = Sealing::of(record)?.field(id, &name, &field.kind, &field.token);
            let Ok(value) = cipher.decrypt(&binding, &field.ciphertext) else {
                return Ok(false);
            };
            let normalized = std::str::from_utf8(&value)
                .map_err(|_| VaultError::internal("stored value is not UTF-8"))?;
            let normalized = stored_value(kind, normalized)?;
            let (_, new_index) = self.keys.blind_index(&name, &normalized);
            if let Some(old_index) = field.blind_index.filter(|old| *old != new_index) {
                change.delete_index.push(IndexEntry {
                    field_name: name.clone(),
                    blind_index: old_index,
                });
                change.put_index.push(IndexEntry {
                    field_name: name.clone(),
                    blind_index: new_index,
                });
                field.blind_index = Some(new_index);
                change.put_fields.push((name, field));
            }
        }
        Ok(true)
    }
}

/// What re-wrapping one customer comes to.
enum Rewrap {
    Change(Box<CustomerChange>),
    /// Their keys no longer unwrap (reported): nothing to re-wrap.
    Unreadable,
    /// Their fields changed keys since their record was read: read again.
    Changed,
}

fn stored_id(id: &str) -> Result<CustomerId, VaultError> {
    CustomerId::from_stored(id).map_err(|_| VaultError::internal("stored customer has a bad id"))
}
