//! Moving a running vault off its root key file: every live master version
//! sealed anew, with material of its own, by the root of trust the vault was
//! started with (MigrateRootOfTrust).

use std::sync::Arc;

use tokio::sync::watch;

use crate::policy::Scope;
use crate::vault::Call;
use crate::vault::{Vault, VaultError};

/// How far a migration got: master versions sealed under the new root of
/// trust, out of the live ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationProgress {
    /// `transit`, `pkcs11`, `aws-kms` or `file`.
    pub to: &'static str,
    pub sealed: u32,
    pub total: u32,
    pub done: bool,
}

/// The latest step of a migration, then its outcome; `None` until the first.
pub type MigrationWatch = watch::Receiver<Option<Result<MigrationProgress, VaultError>>>;

impl Vault {
    /// Starts moving the keyring to the root of trust the vault was started
    /// with. Requests are served throughout; a master rotation cannot run
    /// at the same time. Cut short, nothing is saved and it can run again.
    pub async fn start_root_migration(
        self: &Arc<Self>,
        call: Call<'_>,
    ) -> Result<MigrationWatch, VaultError> {
        call.caller.require_scope(Scope::KeysAdmin)?;
        let target = self.keys.migration_target().ok_or_else(|| {
            VaultError::new(
                crate::vault::Reason::InvalidArgument,
                "nothing to migrate: the keyring is already sealed by the root of trust the \
                 vault was started with",
            )
        })?;
        let guard = self.rotation_guard().await?;
        let entry = call.event;
        let (progress, receiver) = watch::channel(None);
        let vault = Arc::clone(self);
        let to = target.kind().name();
        tokio::spawn(async move {
            let _guard = guard;
            let step = |sealed, total| {
                progress.send_replace(Some(Ok(MigrationProgress {
                    to,
                    sealed,
                    total,
                    done: false,
                })));
            };
            let outcome = match vault.keys.migrate_root_of_trust(step).await {
                Ok(_) => vault.append_audit(vec![entry]).await,
                Err(error) => Err(error),
            };
            let last = match outcome {
                Ok(()) => {
                    let total = vault.keys.master_versions().len() as u32;
                    Ok(MigrationProgress {
                        to,
                        sealed: total,
                        total,
                        done: true,
                    })
                }
                Err(error) => {
                    tracing::error!(%error, "the root-of-trust migration failed; nothing was saved");
                    Err(error)
                }
            };
            progress.send_replace(Some(last));
        });
        Ok(receiver)
    }
}
