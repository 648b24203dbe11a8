//! Where the keyring is kept: its own file (one vault process, sled), or a
//! table shared by every replica (PostgreSQL); sealed in both either as a
//! whole by the root key file, or version by version by a root of trust.

use crate::vault::Reason;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::crypto::{
    decode_image, encode_image, is_sealed_by_version, open_sealed_keyring, seal_keyring, Keyring,
    KeyringFile, RootKey,
};
use crate::root_of_trust::RootOfTrust;
use crate::store::{CommitError, KeyringTable};

use super::root_sealing::{open_keyring, seal_new_versions};
use crate::vault::VaultError;

/// How a keyring is sealed where it is kept.
#[derive(Clone)]
pub enum Sealing {
    /// As a whole, by the root key file.
    Whole(RootKey),
    /// Version by version, each by material of its own in a root of trust.
    ByVersion(Arc<dyn RootOfTrust>),
}

#[async_trait::async_trait]
pub trait KeyringStore: Send + Sync {
    /// Persists `keyring`, replacing the stored one; first seals, in the
    /// root of trust, the versions it holds that have no seal yet.
    async fn save(&self, keyring: &mut Keyring) -> Result<(), VaultError>;
    /// The stored keyring, when another process has changed it since this one
    /// last loaded or saved it.
    async fn newer(&self) -> Result<Option<Keyring>, VaultError>;
    /// How long other processes may go on using a keyring older than a save.
    fn propagation_delay(&self) -> Duration;
    /// From the next save on, seals the keyring version by version under
    /// `root` (a migration off the root key file).
    fn seal_by(&self, root: Arc<dyn RootOfTrust>);
    /// From the next save on, seals the keyring as a whole by `root_key` (a
    /// new root key file replacing the one that seals it).
    fn seal_by_new_root_key(&self, root_key: RootKey);
    /// Undoes `seal_by` or `seal_by_new_root_key` after a save that failed.
    fn seal_as_before(&self);
}

/// The keyring file: written in place and fsync'd; one process owns it.
pub struct FileKeyring {
    file: Mutex<KeyringFile>,
    /// The root of trust sealing it version by version; `None` when the
    /// file is sealed as a whole by the root key the `KeyringFile` holds.
    root: Mutex<Option<Arc<dyn RootOfTrust>>>,
    /// `root` before a migration, for `seal_as_before`.
    replaced_root: Mutex<Option<Arc<dyn RootOfTrust>>>,
}

impl FileKeyring {
    /// Seals version by version under `next` (or as a whole: `None`) from
    /// now on, keeping the root of trust it replaces for `seal_as_before`.
    fn replace_root(&self, next: Option<Arc<dyn RootOfTrust>>) {
        let replaced = std::mem::replace(
            &mut *self.root.lock().unwrap_or_else(PoisonError::into_inner),
            next,
        );
        *self
            .replaced_root
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = replaced;
    }

    /// A keyring file sealed as a whole by the root key.
    pub fn new(file: KeyringFile) -> FileKeyring {
        FileKeyring {
            file: Mutex::new(file),
            root: Mutex::new(None),
            replaced_root: Mutex::new(None),
        }
    }

    /// A keyring file sealed version by version by `root`.
    pub fn sealed_by(file: KeyringFile, root: Arc<dyn RootOfTrust>) -> FileKeyring {
        FileKeyring {
            file: Mutex::new(file),
            root: Mutex::new(Some(root)),
            replaced_root: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl KeyringStore for FileKeyring {
    async fn save(&self, keyring: &mut Keyring) -> Result<(), VaultError> {
        let root = self
            .root
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(root) = root {
            seal_new_versions(root.as_ref(), keyring).await?;
        }
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(file.save(keyring)?)
    }

    fn seal_by(&self, root: Arc<dyn RootOfTrust>) {
        self.replace_root(Some(root));
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .seal_by_version_from_now_on();
    }

    fn seal_by_new_root_key(&self, root_key: RootKey) {
        self.replace_root(None);
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .seal_by_root_key_from_now_on(&root_key);
    }

    fn seal_as_before(&self) {
        let replaced = self
            .replaced_root
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        *self.root.lock().unwrap_or_else(PoisonError::into_inner) = replaced;
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .seal_as_before();
    }

    async fn newer(&self) -> Result<Option<Keyring>, VaultError> {
        Ok(None)
    }

    fn propagation_delay(&self) -> Duration {
        Duration::ZERO
    }
}

/// How often replicas look for a keyring changed by another replica.
pub const KEYRING_POLL: Duration = Duration::from_secs(1);

/// The keyring in the database, shared by every replica. A destroyed master
/// version is overwritten in the table, but PostgreSQL keeps old row versions
/// until VACUUM and in its WAL and backups: those copies stay sealed by the
/// root key (see docs/keys-and-erasure.md on what that means for erasure).
pub struct TableKeyring {
    store: Arc<dyn KeyringTable>,
    sealing: Mutex<Sealing>,
    /// How the row was sealed before a migration, for `seal_as_before`.
    replaced_sealing: Mutex<Option<Sealing>>,
    /// The generation of the row this process last loaded or saved.
    generation: Mutex<Option<i64>>,
}

impl TableKeyring {
    /// Loads the shared keyring, creating it from `fresh` when there is none.
    pub async fn open(
        store: Arc<impl KeyringTable + 'static>,
        sealing: Sealing,
        mut fresh: Keyring,
    ) -> Result<(TableKeyring, Keyring), VaultError> {
        let table = TableKeyring {
            store: store as Arc<dyn KeyringTable>,
            sealing: Mutex::new(sealing),
            replaced_sealing: Mutex::new(None),
            generation: Mutex::new(None),
        };
        if let Some(keyring) = table.newer().await? {
            return Ok((table, keyring));
        }
        match table.save(&mut fresh).await {
            Ok(()) => Ok((table, fresh)),
            // Another replica created it first: use theirs.
            Err(_) => {
                let keyring = table.newer().await?.ok_or_else(|| {
                    VaultError::new(Reason::StoreUnavailable, "the keyring table is empty")
                })?;
                Ok((table, keyring))
            }
        }
    }

    /// How the row is sealed now (a copy: saves and loads run unlocked).
    fn sealing(&self) -> Sealing {
        self.sealing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Seals by `next` from now on, keeping the sealing it replaces for
    /// `seal_as_before`.
    fn replace_sealing(&self, next: Sealing) {
        let mut sealing = self.sealing.lock().unwrap_or_else(PoisonError::into_inner);
        let replaced = std::mem::replace(&mut *sealing, next);
        *self
            .replaced_sealing
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(replaced);
    }

    fn generation(&self) -> Option<i64> {
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl KeyringStore for TableKeyring {
    async fn save(&self, keyring: &mut Keyring) -> Result<(), VaultError> {
        let expected = self.generation();
        let next = expected.unwrap_or(0) + 1;
        let sealed = match self.sealing() {
            Sealing::Whole(root_key) => seal_keyring(&root_key, keyring, next as u64)?,
            Sealing::ByVersion(root) => {
                seal_new_versions(root.as_ref(), keyring).await?;
                encode_image(keyring, next as u64)?
            }
        };
        let lowest_live = keyring.versions().first().copied().unwrap_or(0);
        self.store
            .save_keyring_row(expected, next, lowest_live as i32, &sealed)
            .await
            .map_err(|error| match error {
                CommitError::Conflict => VaultError::new(
                    Reason::RotationIncomplete,
                    "the keyring changed elsewhere, or keys are still wrapped under a version being retired; retry",
                ),
                other => other.into(),
            })?;
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(next);
        Ok(())
    }

    async fn newer(&self) -> Result<Option<Keyring>, VaultError> {
        let Some((generation, _, sealed)) = self.store.keyring_row().await? else {
            return Ok(None);
        };
        if Some(generation) == self.generation() {
            return Ok(None);
        }
        let keyring =
            match (self.sealing(), is_sealed_by_version(&sealed)) {
                (Sealing::Whole(root_key), false) => open_sealed_keyring(&root_key, &sealed)?.1,
                (Sealing::ByVersion(root), true) => {
                    open_keyring(root.as_ref(), decode_image(&sealed)?).await?
                }
                (Sealing::Whole(_), true) => return Err(VaultError::internal(
                    "the keyring row is sealed version by version by a root of trust: start with \
                     the --root-of-trust that sealed it",
                )),
                (Sealing::ByVersion(_), false) => {
                    return Err(VaultError::internal(
                        "the keyring row is still sealed by a root key file: give that file with \
                         --root-key-file as well, then move the keyring with `pii-vault keys \
                         migrate-root-of-trust` (or start with --root-of-trust file)",
                    ))
                }
            };
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(generation);
        Ok(Some(keyring))
    }

    fn propagation_delay(&self) -> Duration {
        // Every replica polls at this pace; twice covers a poll in progress.
        KEYRING_POLL * 2
    }

    fn seal_by(&self, root: Arc<dyn RootOfTrust>) {
        self.replace_sealing(Sealing::ByVersion(root));
    }

    fn seal_by_new_root_key(&self, root_key: RootKey) {
        self.replace_sealing(Sealing::Whole(root_key));
    }

    fn seal_as_before(&self) {
        let replaced = self
            .replaced_sealing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(sealing) = replaced {
            *self.sealing.lock().unwrap_or_else(PoisonError::into_inner) = sealing;
        }
    }
}
