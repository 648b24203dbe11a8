//! Moving a running vault to another root of trust, or rotating the one in
//! use (MigrateRootOfTrust): every live master version sealed anew, with
//! material of its own, and the keyring saved only once all are.

use std::sync::{Arc, PoisonError};

use tokio::sync::watch;

use crate::policy::Scope;
use crate::root_of_trust::{RootKind, RootOfTrust};
use crate::vault::{Call, Reason};
use crate::vault::{Vault, VaultError};

use super::root_sealing::{seal_anew, EarlierSeal};
use super::KeyManager;

/// What a MigrateRootOfTrust call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrationAim {
    /// Moves the keyring off the root key file to the root of trust the
    /// vault was started with.
    MoveToConfigured,
    /// Rotates the root of trust in use: new material for every live
    /// version, and the material it replaces destroyed.
    RenewMaterial,
}

/// How far a migration got: master versions sealed under the new root of
/// trust (or new material), out of the live ones.
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
    /// with, or rotating the one in use. Requests are served throughout; a
    /// master rotation cannot run at the same time. Cut short before the
    /// keyring is saved, nothing is saved and it can run again.
    pub async fn start_root_migration(
        self: &Arc<Self>,
        call: Call<'_>,
        aim: MigrationAim,
    ) -> Result<MigrationWatch, VaultError> {
        call.caller.require_scope(Scope::KeysAdmin)?;
        let to = self.keys.migration_root(aim)?.kind().name();
        let guard = self.rotation_guard().await?;
        let entry = call.event;
        let (progress, receiver) = watch::channel(None);
        let vault = Arc::clone(self);
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
            let now_ms = vault.now_ms();
            let migrated = match aim {
                MigrationAim::MoveToConfigured => {
                    vault.keys.migrate_root_of_trust(step, now_ms).await
                }
                MigrationAim::RenewMaterial => vault.keys.renew_root_material(step, now_ms).await,
            };
            let outcome = match migrated {
                Ok(()) => vault.append_audit(vec![entry]).await,
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
                    tracing::error!(%error, ?aim, "the root-of-trust migration failed");
                    Err(error)
                }
            };
            progress.send_replace(Some(last));
        });
        Ok(receiver)
    }
}

impl KeyManager {
    /// The root of trust a migration with `aim` seals under; refuses one
    /// that has nothing to do.
    fn migration_root(&self, aim: MigrationAim) -> Result<Arc<dyn RootOfTrust>, VaultError> {
        match (aim, self.migration_target()) {
            (MigrationAim::MoveToConfigured, Some(target)) => Ok(target),
            (MigrationAim::MoveToConfigured, None) => Err(VaultError::new(
                Reason::InvalidArgument,
                "nothing to migrate: the keyring is sealed by the root of trust the vault was \
                 started with (start it with the new --root-of-trust and the one that seals the \
                 keyring now as --previous-root-key-file or --previous-root-of-trust; to \
                 rotate the root of trust in use, ask for new material)",
            )),
            (MigrationAim::RenewMaterial, Some(_)) => Err(VaultError::new(
                Reason::InvalidArgument,
                "the keyring is still sealed by the previous root of trust: migrate it to the \
                 one the vault was started with first",
            )),
            (MigrationAim::RenewMaterial, None) => {
                let root = self.root_of_trust();
                if root.kind() == RootKind::File {
                    return Err(VaultError::new(
                        Reason::InvalidArgument,
                        "the root key file is one key and has no material to renew: to replace \
                         it, start the vault with --root-key-file set to a new file and \
                         --previous-root-key-file set to the old one, then migrate",
                    ));
                }
                Ok(root)
            }
        }
    }

    /// Seals every live master version under the migration target, with
    /// material of its own there (or, for a new root key file, the keyring
    /// as a whole under it), then saves the keyring and puts the target in
    /// use. `progress(sealed, total)` follows each version. Nothing is saved
    /// until every version is sealed: cut short, the keyring stays as it was
    /// (sealed by the previous root) and the migration can run again.
    pub async fn migrate_root_of_trust(
        &self,
        progress: impl Fn(u32, u32),
        now_ms: i64,
    ) -> Result<(), VaultError> {
        let target = self.migration_root(MigrationAim::MoveToConfigured)?;
        // Material the root of trust in use was to destroy (retired or
        // superseded versions') is named by handles only it knows: destroyed
        // before the keyring moves, never carried over to another.
        self.finish_destructions(now_ms).await?;
        let previous = self.root_of_trust();
        let (store, mut next) = self.lock_latest_keyring().await?;
        if let Some(root_key) = target.as_root_key_file() {
            progress(0, next.versions().len() as u32);
            store.seal_by_new_root_key(root_key.clone());
        } else {
            seal_anew(target.as_ref(), &mut next, EarlierSeal::Forget, progress).await?;
            if previous.as_root_key_file().is_some() {
                // Versions destroyed until now stay in backups of the
                // keyring sealed by the file: their erasures keep waiting
                // for the backup retention.
                next.record_file_sealing_ended(now_ms);
            }
            store.seal_by(Arc::clone(&target));
        }
        if let Err(error) = store.save(&mut next).await {
            store.seal_as_before();
            return Err(error);
        }
        self.replace_keyring(next);
        *self.root.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&target);
        *self
            .migration_target
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
        tracing::info!(
            root_of_trust = target.kind().name(),
            location = %target.location(),
            previous = previous.kind().name(),
            previous_location = %previous.location(),
            "the keyring is now sealed by the root of trust: start without the previous one, and destroy its material (the root key file and its copies, the Transit key, the HSM key objects or the KMS keys)"
        );
        Ok(())
    }

    /// Rotates the root of trust in use: seals every live master version
    /// anew under new material of its own, saves the keyring (the replaced
    /// material recorded as superseded), then destroys the replaced
    /// material and saves again. Cut short before the first save, nothing
    /// changes; after it, what is left to destroy is destroyed by the next
    /// start or rotation, and the keyring opens either way.
    pub async fn renew_root_material(
        &self,
        progress: impl Fn(u32, u32),
        now_ms: i64,
    ) -> Result<(), VaultError> {
        let root = self.migration_root(MigrationAim::RenewMaterial)?;
        let (store, mut next) = self.lock_latest_keyring().await?;
        seal_anew(root.as_ref(), &mut next, EarlierSeal::Supersede, progress).await?;
        store.save(&mut next).await?;
        self.replace_keyring(next);
        drop(store);
        if let Err(error) = self.finish_destructions(now_ms).await {
            return Err(VaultError::new(
                error.reason(),
                format!(
                    "every master version is sealed under new material, but the material it \
                     replaces is not all destroyed yet (the next start or rotation retries): \
                     {error}"
                ),
            ));
        }
        tracing::info!(
            root_of_trust = root.kind().name(),
            location = %root.location(),
            "the root of trust is rotated: every master version is sealed under new material, and the material it replaced is destroyed"
        );
        Ok(())
    }
}
