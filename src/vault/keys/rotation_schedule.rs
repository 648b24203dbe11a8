//! The vault's own key work, for as long as it serves: finishing a master
//! rotation whose process died, rotating on the policy's schedule, following
//! keyring changes other replicas make, and dropping expired cached keys.

use crate::vault::Action;
use crate::vault::Reason;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::vault::{Vault, VaultError};

/// How long the schedule waits after another rotation held the lease, or after
/// a failure, before it tries again.
const ROTATION_RETRY: Duration = Duration::from_secs(60);
/// The schedule looks at least this often: another replica may have rotated.
const SCHEDULE_CHECK: Duration = Duration::from_secs(60);

impl Vault {
    /// The vault's own key work, for as long as it serves: finishes a master
    /// rotation that a crash interrupted, rotates on the policy's schedule,
    /// follows keyring changes and drops expired cached keys.
    pub async fn maintain_keys(self: Arc<Self>) {
        tokio::join!(
            Arc::clone(&self).run_rotation_schedule(),
            self.follow_keyring(),
            self.keys.sweep_cache()
        );
    }

    /// Picks up keyring changes other replicas make (a no-op for a keyring file).
    async fn follow_keyring(&self) {
        loop {
            tokio::time::sleep(crate::vault::KEYRING_POLL).await;
            if let Err(error) = self.keys.reload().await {
                tracing::warn!(%error, "could not check the shared keyring for changes");
            }
        }
    }

    /// Runs the key work that falls due, for the life of the vault.
    async fn run_rotation_schedule(self: Arc<Self>) {
        loop {
            let pause = match self.scheduled_rotation().await {
                Ok(pause) => pause,
                Err(error) => {
                    tracing::error!(%error, "scheduled master key rotation failed");
                    self.stats.rotation_failed();
                    ROTATION_RETRY
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Finishes a master rotation whose process died (this one, before a
    /// restart, or another replica), or runs a rotation with retirement when
    /// the policy's interval has passed since the last one. Returns how long
    /// to wait before looking again.
    async fn scheduled_rotation(&self) -> Result<Duration, VaultError> {
        if self.store.rotation().await?.is_none() && !self.until_rotation_due().is_zero() {
            return Ok(self.until_rotation_due().min(SCHEDULE_CHECK));
        }
        let guard = match self.rotation_guard().await {
            Ok(guard) => guard,
            // Another rotation runs, here or on another replica: it does the work.
            Err(error) if error.reason() == Reason::RotationRunning => return Ok(ROTATION_RETRY),
            Err(error) => return Err(error),
        };
        // The rotation that held the lease until now may have done the work.
        self.keys.reload().await?;
        if let Some(rotation) = self.store.rotation().await? {
            // Its lease is free: the process that started it is gone.
            tracing::info!(
                target_version = rotation.target_version,
                "resuming master key rotation"
            );
            self.finish_rotation(&guard, &rotation, None).await?;
        } else if self.until_rotation_due().is_zero() {
            let (progress, _) = watch::channel(None);
            let entry = self.system_entry(Action::RotateMasterKey, "", "scheduled");
            self.rotate_master(guard, true, &progress, entry).await?;
        }
        Ok(Duration::ZERO)
    }

    fn until_rotation_due(&self) -> Duration {
        let due_ms = self
            .keys
            .last_rotation_ms()
            .saturating_add(self.rotation_policy.master_interval_ms());
        Duration::from_millis(due_ms.saturating_sub(self.now_ms()).max(0) as u64)
    }
}
