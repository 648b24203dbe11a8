//! Where the keyring is kept: its own file (one vault process, sled), or a
//! table shared by every replica (PostgreSQL), sealed by the root key in both.

use crate::vault::Reason;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::crypto::{open_sealed_keyring, seal_keyring, Keyring, KeyringFile, RootKey};
use crate::store::{CommitError, KeyringTable};

use crate::vault::VaultError;

#[async_trait::async_trait]
pub trait KeyringStore: Send + Sync {
    /// Persists `keyring`, replacing the stored one.
    async fn save(&self, keyring: &Keyring) -> Result<(), VaultError>;
    /// The stored keyring, when another process has changed it since this one
    /// last loaded or saved it.
    async fn newer(&self) -> Result<Option<Keyring>, VaultError>;
    /// How long other processes may go on using a keyring older than a save.
    fn propagation_delay(&self) -> Duration;
}

/// The keyring file: written in place and fsync'd; one process owns it.
pub struct FileKeyring(Mutex<KeyringFile>);

impl FileKeyring {
    pub fn new(file: KeyringFile) -> FileKeyring {
        FileKeyring(Mutex::new(file))
    }
}

#[async_trait::async_trait]
impl KeyringStore for FileKeyring {
    async fn save(&self, keyring: &Keyring) -> Result<(), VaultError> {
        let mut file = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(file.save(keyring)?)
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
    root: RootKey,
    /// The generation of the row this process last loaded or saved.
    generation: Mutex<Option<i64>>,
}

impl TableKeyring {
    /// Loads the shared keyring, creating it from `fresh` when there is none.
    pub async fn open(
        store: Arc<impl KeyringTable + 'static>,
        root: RootKey,
        fresh: Keyring,
    ) -> Result<(TableKeyring, Keyring), VaultError> {
        let table = TableKeyring {
            store: store as Arc<dyn KeyringTable>,
            root,
            generation: Mutex::new(None),
        };
        if let Some(keyring) = table.newer().await? {
            return Ok((table, keyring));
        }
        match table.save(&fresh).await {
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

    fn generation(&self) -> Option<i64> {
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl KeyringStore for TableKeyring {
    async fn save(&self, keyring: &Keyring) -> Result<(), VaultError> {
        let expected = self.generation();
        let next = expected.unwrap_or(0) + 1;
        let sealed = seal_keyring(&self.root, keyring, next as u64)?;
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
        let (_, keyring) = open_sealed_keyring(&self.root, &sealed)?;
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
}
