//! The vault's use of the key hierarchy: creating, unwrapping and re-wrapping
//! customer DEKs and token keys, caching DEK ciphers, changing the keyring (new
//! and destroyed master versions), the keyed hashes behind blind indexes and
//! deterministic tokens, and what the keyring says of an erasure.

pub(super) mod customer_keys;
pub(super) mod keyring_store;
pub(super) mod root_migration;
pub(super) mod root_sealing;
pub(super) mod rotation;
pub(super) mod rotation_schedule;

/// Key administration (`KeyAdminService`): rotations and key status. A view of the vault that
/// offers only this capability's operations.
pub struct Keys<'a> {
    vault: &'a super::Vault,
}

impl<'a> Keys<'a> {
    pub(super) fn of(vault: &'a super::Vault) -> Self {
        Keys { vault }
    }

    /// Whether the root of trust answers now (health follows it).
    pub async fn check_root_of_trust(&self) -> bool {
        self.vault.keys.check_root_of_trust().await
    }
}

impl std::ops::Deref for Keys<'_> {
    type Target = super::Vault;

    fn deref(&self) -> &super::Vault {
        self.vault
    }
}

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::crypto::{CryptoError, DataCipher, Dek, DekCache, Keyring, KeyringId, TokenKey};
use crate::root_of_trust::{RootKind, RootOfTrust};
use crate::store::{CustomerRecord, KeyAnchor, WrappedDekRecord, WrappedKeyRecord};

use super::keyring_store::KeyringStore;
use super::root_sealing::destroy_pending;
use super::{CustomerId, Normalized, VaultError};

pub struct KeyManager {
    keyring: RwLock<Keyring>,
    /// Where the keyring is kept; its lock also serializes keyring changes.
    keyring_store: tokio::sync::Mutex<Box<dyn KeyringStore>>,
    /// What seals the master versions, and destroys them when they retire.
    root: RwLock<Arc<dyn RootOfTrust>>,
    /// The root of trust the vault was started with while the keyring is
    /// still sealed by the root key file: `migrate_root_of_trust` moves it.
    migration_target: RwLock<Option<Arc<dyn RootOfTrust>>>,
    /// Whether the root of trust answered its last check.
    root_reachable: AtomicBool,
    cache: DekCache,
}

impl KeyManager {
    pub fn new(
        keyring: Keyring,
        keyring_store: Box<dyn KeyringStore>,
        root: Arc<dyn RootOfTrust>,
        cache: DekCache,
    ) -> KeyManager {
        KeyManager {
            keyring: RwLock::new(keyring),
            keyring_store: tokio::sync::Mutex::new(keyring_store),
            root: RwLock::new(root),
            migration_target: RwLock::new(None),
            root_reachable: AtomicBool::new(true),
            cache,
        }
    }

    /// Asks the root of trust whether it answers, remembering (and logging
    /// any change in) the answer. Requests never need it: the vault keeps
    /// serving either way; rotations wait for it.
    pub async fn check_root_of_trust(&self) -> bool {
        let root = self.root_of_trust();
        let result = root.check().await;
        let reachable = result.is_ok();
        let was = self.root_reachable.swap(reachable, Ordering::Relaxed);
        match result {
            Err(error) if was => {
                tracing::error!(%error, "the root of trust is out of reach: the vault serves on, but rotations and retirements wait for it")
            }
            Ok(()) if !was => tracing::info!(
                root_of_trust = root.kind().name(),
                "the root of trust answers again"
            ),
            _ => {}
        }
        reachable
    }

    pub fn root_of_trust_reachable(&self) -> bool {
        self.root_reachable.load(Ordering::Relaxed)
    }

    /// What seals the master versions now.
    pub fn root_of_trust(&self) -> Arc<dyn RootOfTrust> {
        Arc::clone(&self.root.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The root of trust to move the keyring to, while it is still sealed
    /// by the root key file.
    pub fn migration_target(&self) -> Option<Arc<dyn RootOfTrust>> {
        self.migration_target
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Names the root of trust the keyring moves to on `migrate_root_of_trust`.
    pub fn set_migration_target(&self, target: Arc<dyn RootOfTrust>) {
        *self
            .migration_target
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(target);
    }

    /// Versions whose material from before a root-of-trust rotation the root
    /// of trust has not destroyed yet.
    pub fn superseded_awaiting_destruction(&self) -> Vec<u32> {
        let mut versions: Vec<u32> = self
            .keyring()
            .superseded()
            .iter()
            .map(|(v, _)| *v)
            .collect();
        versions.sort_unstable();
        versions.dedup();
        versions
    }

    /// Retired versions whose material the root of trust has not destroyed yet.
    pub fn versions_awaiting_destruction(&self) -> Vec<u32> {
        self.keyring()
            .pending_destructions()
            .keys()
            .copied()
            .collect()
    }

    /// Asks the root of trust to destroy the material of every retired
    /// version still waiting for it, and the material a rotation of the root
    /// of trust superseded (either cut short by a crash or an unreachable
    /// root of trust), and saves what it destroyed. Returns the versions
    /// whose material it destroyed; fails, once the rest is saved, if any
    /// remain.
    pub async fn finish_destructions(&self, now_ms: i64) -> Result<Vec<u32>, VaultError> {
        let nothing_waits = {
            let keyring = self.keyring();
            keyring.pending_destructions().is_empty() && keyring.superseded().is_empty()
        };
        if nothing_waits {
            return Ok(Vec::new());
        }
        let (store, mut next) = self.lock_latest_keyring().await?;
        let root = self.root_of_trust();
        let outcome = destroy_pending(root.as_ref(), &mut next, now_ms).await;
        if !outcome.destroyed.is_empty() {
            store.save(&mut next).await?;
            self.replace_keyring(next);
            tracing::info!(versions = ?outcome.destroyed, root_of_trust = root.kind().name(), "material of retired or superseded master versions destroyed in the root of trust");
        }
        match outcome.error {
            Some(error) => Err(error),
            None => Ok(outcome.destroyed),
        }
    }

    /// Locks the keyring's store (which serializes keyring changes), picks
    /// up a keyring another process saved, and returns the lock with a copy
    /// of the keyring in use to change.
    async fn lock_latest_keyring(
        &self,
    ) -> Result<(tokio::sync::MutexGuard<'_, Box<dyn KeyringStore>>, Keyring), VaultError> {
        let store = self.keyring_store.lock().await;
        if let Some(newer) = store.newer().await? {
            self.replace_keyring(newer);
        }
        let next = self.keyring().clone();
        Ok((store, next))
    }

    fn keyring(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn replace_keyring(&self, keyring: Keyring) {
        *self.keyring.write().unwrap_or_else(PoisonError::into_inner) = keyring;
    }

    /// Changes a copy of the keyring, saves it and only then puts it in use, so
    /// memory never runs ahead of what is stored.
    async fn change_keyring<T>(
        &self,
        change: impl FnOnce(&mut Keyring) -> Result<T, VaultError>,
    ) -> Result<T, VaultError> {
        let (store, mut next) = self.lock_latest_keyring().await?;
        let outcome = change(&mut next)?;
        store.save(&mut next).await?;
        self.replace_keyring(next);
        Ok(outcome)
    }

    /// Picks up a keyring another process changed (shared keyrings only).
    pub async fn reload(&self) -> Result<(), VaultError> {
        let store = self.keyring_store.lock().await;
        if let Some(newer) = store.newer().await? {
            self.replace_keyring(newer);
        }
        Ok(())
    }

    /// How long other processes may still use a keyring older than a change.
    pub async fn propagation_delay(&self) -> std::time::Duration {
        self.keyring_store.lock().await.propagation_delay()
    }

    /// Adds a master key version and makes it active for new wraps at once.
    pub async fn add_master_version(&self, now_ms: i64) -> Result<u32, VaultError> {
        self.change_keyring(|keyring| Ok(keyring.add_version(now_ms)))
            .await
    }

    /// Destroys every master version below `keep_from`, with its index key:
    /// overwritten where the keyring is kept. Returns the versions destroyed.
    pub async fn destroy_master_versions_below(
        &self,
        keep_from: u32,
        now_ms: i64,
    ) -> Result<Vec<u32>, VaultError> {
        self.change_keyring(|keyring| {
            let doomed = versions_below(keyring, keep_from);
            for version in &doomed {
                keyring.destroy_version(*version, now_ms)?;
            }
            Ok(doomed)
        })
        .await
    }

    /// The live master versions below `keep_from`.
    pub fn master_versions_below(&self, keep_from: u32) -> Vec<u32> {
        versions_below(&self.keyring(), keep_from)
    }

    pub fn keyring_id(&self) -> KeyringId {
        self.keyring().id()
    }

    /// Why this keyring may not serve a store with `anchor`, if it may not:
    /// another keyring's store, or a keyring older than the store has seen.
    pub fn check_anchor(&self, anchor: &KeyAnchor) -> Result<(), String> {
        let keyring = self.keyring();
        if anchor.keyring_id != keyring.id().0 {
            return Err(format!(
                "the keyring (id {}) does not belong to this store, which was written with keyring {}: \
                 use that store's own keyring",
                keyring.id(),
                KeyringId(anchor.keyring_id)
            ));
        }
        let still_live: Vec<u32> = anchor
            .destroyed
            .iter()
            .copied()
            .filter(|v| !keyring.is_retired(*v))
            .collect();
        if keyring.next_version() < anchor.next_version || !still_live.is_empty() {
            return Err(format!(
                "the keyring is older than the store: the store has seen master versions up to {} \
                 and the destruction of {:?}, the keyring knows versions up to {} and still holds {:?}; \
                 restore the newest keyring, never an older backup of it",
                anchor.next_version.saturating_sub(1),
                anchor.destroyed,
                keyring.next_version().saturating_sub(1),
                still_live
            ));
        }
        Ok(())
    }

    /// The anchor that records the keyring as it is now in its store, with
    /// `retiring` refused for new wraps.
    pub fn anchor(&self, retiring: BTreeSet<u32>) -> KeyAnchor {
        let keyring = self.keyring();
        KeyAnchor {
            keyring_id: keyring.id().0,
            next_version: keyring.next_version(),
            destroyed: (1..keyring.next_version())
                .filter(|v| keyring.is_retired(*v))
                .collect(),
            retiring,
        }
    }

    pub fn active_master_version(&self) -> u32 {
        self.keyring().active().version()
    }

    pub fn last_rotation_ms(&self) -> i64 {
        self.keyring().last_rotation_ms()
    }

    /// The customer's DEK and token key wrapped under the active master
    /// version instead, which joins `wrapped_under`.
    pub fn rewrap(
        &self,
        customer: &CustomerId,
        record: &mut CustomerRecord,
    ) -> Result<(), VaultError> {
        let keyring = self.keyring();
        let id = customer.as_str();
        let dek = &record.dek;
        let plain_dek = keyring.unwrap_dek(&dek.wrapped, id, dek.version)?;
        let master = keyring.active();
        let token_key = match &record.token_key {
            Some(wrapped) => keyring.unwrap_token_key(&wrapped.wrapped, id)?,
            None => TokenKey::generate(),
        };
        record.dek = WrappedDekRecord {
            version: dek.version,
            master_version: master.version(),
            created_at_ms: dek.created_at_ms,
            wrapped: master.wrap_dek(&plain_dek, id, dek.version),
        };
        record.token_key = Some(WrappedKeyRecord {
            master_version: master.version(),
            wrapped: master.wrap_token_key(&token_key, id),
        });
        record.wrapped_under.insert(master.version());
        Ok(())
    }

    /// A fresh DEK of the given version, wrapped under the active master key, and
    /// its cipher (cached at once: a racing writer that wins has other wrapped bytes).
    pub fn new_dek(
        &self,
        customer: &CustomerId,
        dek_version: u32,
        now_ms: i64,
    ) -> (WrappedDekRecord, Arc<DataCipher>) {
        let dek = Dek::generate();
        let keyring = self.keyring();
        let master = keyring.active();
        let wrapped = WrappedDekRecord {
            version: dek_version,
            master_version: master.version(),
            created_at_ms: now_ms,
            wrapped: master.wrap_dek(&dek, customer.as_str(), dek_version),
        };
        let cipher = Arc::new(DataCipher::new(&dek, dek_version));
        self.cache
            .insert(customer.as_str(), &wrapped.wrapped, Arc::clone(&cipher));
        (wrapped, cipher)
    }

    /// Whether the customer's DEK and token key still unwrap: not when a
    /// version that wrapped them was destroyed, or the stored bytes are bad.
    pub fn check_unwrappable(&self, id: &str, record: &CustomerRecord) -> Result<(), CryptoError> {
        let keyring = self.keyring();
        keyring.unwrap_dek(&record.dek.wrapped, id, record.dek.version)?;
        if let Some(token_key) = &record.token_key {
            keyring.unwrap_token_key(&token_key.wrapped, id)?;
        }
        Ok(())
    }

    /// A first customer record with a fresh DEK (version 1) and token key,
    /// and the DEK's cipher.
    pub fn new_customer(
        &self,
        customer: &CustomerId,
        now_ms: i64,
    ) -> Result<(CustomerRecord, Arc<DataCipher>), VaultError> {
        let (dek, cipher) = self.new_dek(customer, 1, now_ms);
        let mut record = CustomerRecord {
            revision: 0,
            created_at_ms: now_ms,
            wrapped_under: BTreeSet::from([dek.master_version]),
            dek,
            token_key: None,
            encryptions: 0,
            privacy: None,
            binding_version: crate::store::BINDING_BOUND,
            requests: Vec::new(),
        };
        self.give_token_key(customer, &mut record);
        Ok((record, cipher))
    }

    /// Gives a customer stored before token keys a token key of their own,
    /// wrapped under the active version (no-op for everyone else).
    pub fn give_token_key(&self, customer: &CustomerId, record: &mut CustomerRecord) {
        if record.token_key.is_some() {
            return;
        }
        let keyring = self.keyring();
        let master = keyring.active();
        record.token_key = Some(WrappedKeyRecord {
            master_version: master.version(),
            wrapped: master.wrap_token_key(&TokenKey::generate(), customer.as_str()),
        });
        record.wrapped_under.insert(master.version());
    }

    /// The customer's token key, unwrapped (cheap: it is not cached).
    pub async fn token_key(
        &self,
        customer: &CustomerId,
        record: &CustomerRecord,
    ) -> Result<TokenKey, VaultError> {
        let wrapped = record
            .token_key
            .as_ref()
            .ok_or_else(|| VaultError::internal("the customer has no token key"))?;
        let unwrap = || {
            self.keyring()
                .unwrap_token_key(&wrapped.wrapped, customer.as_str())
        };
        match unwrap() {
            // Another replica re-wrapped it under a version this one has not loaded.
            Err(CryptoError::UnknownMasterVersion(_)) => {
                self.reload().await?;
                Ok(unwrap()?)
            }
            other => Ok(other?),
        }
    }

    /// The cipher of the customer's current DEK, from the cache or by unwrapping.
    pub async fn cipher(
        &self,
        customer: &CustomerId,
        record: &CustomerRecord,
    ) -> Result<Arc<DataCipher>, VaultError> {
        let id = customer.as_str();
        if let Some(cipher) = self.cache.get(id, &record.dek.wrapped) {
            return Ok(cipher);
        }
        let unwrap = || {
            self.keyring()
                .unwrap_dek(&record.dek.wrapped, id, record.dek.version)
        };
        let first_try = unwrap();
        let dek = match first_try {
            // Another replica re-wrapped it under a version this one has not loaded.
            Err(CryptoError::UnknownMasterVersion(_)) => {
                self.reload().await?;
                unwrap()?
            }
            other => other?,
        };
        let cipher = Arc::new(DataCipher::new(&dek, record.dek.version));
        self.cache
            .insert(id, &record.dek.wrapped, Arc::clone(&cipher));
        Ok(cipher)
    }

    /// Drops every cached cipher of the customer (erasure, re-keying).
    pub fn forget(&self, customer: &CustomerId) {
        self.cache.purge_customer(customer.as_str());
    }

    /// Drops cached ciphers past their TTL, every sweep period, for as long as
    /// it runs (the vault's key work stops it at shutdown).
    pub async fn sweep_cache(&self) {
        let mut sweeps = tokio::time::interval(self.cache.sweep_period());
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            sweeps.tick().await;
            let dropped = self.cache.sweep_expired();
            if dropped > 0 {
                tracing::debug!(dropped, "expired customer keys dropped from the cache");
            }
        }
    }

    /// The blind index of a value under the active version's index key, and
    /// that version (which joins the customer's `wrapped_under`).
    pub fn blind_index(&self, field: &str, normalized: &Normalized) -> (u32, [u8; 32]) {
        let keyring = self.keyring();
        let master = keyring.active();
        let kind = normalized.kind();
        let index = master
            .index_key()
            .blind_index(field, kind.name(), normalized.as_str());
        (master.version(), index)
    }

    /// The blind index of a value under every live index key: during a
    /// rotation a customer's entries are under the old or the new one.
    pub fn blind_indexes(&self, field: &str, normalized: &Normalized) -> Vec<[u8; 32]> {
        let kind = normalized.kind();
        self.keyring()
            .index_keys()
            .into_iter()
            .map(|key| key.blind_index(field, kind.name(), normalized.as_str()))
            .collect()
    }

    /// When an erasure whose keys were wrapped (and values indexed) under
    /// `wrapped_under` became or becomes cryptographic: once the root of
    /// trust has destroyed every covering version (a KMS at the end of its
    /// pending window). With the root key file, which seals every version
    /// and outlives them, backups taken before still open them until
    /// `backup_retention` has passed since; so do backups of a keyring a
    /// root key file sealed before a migration to another root of trust, for
    /// every version that existed then. A version still live is
    /// destroyed at the next scheduled rotation, `next_rotation_ms` at the
    /// earliest; until it is, the erasure is not cryptographic however
    /// overdue that rotation is.
    pub fn cryptographic_erasure(
        &self,
        wrapped_under: &BTreeSet<u32>,
        next_rotation_ms: i64,
        backup_retention: Duration,
    ) -> ErasureDue {
        let retention_ms = i64::try_from(backup_retention.as_millis()).unwrap_or(i64::MAX);
        let keyring = self.keyring();
        let on_file = self.root_of_trust().kind() == RootKind::File;
        let file = keyring.file_sealed_until();
        // When no backup can open version `v`, destroyed at `destroyed_at`:
        // backups sealed by a root key file hold every version that existed
        // while the file sealed the keyring, and are gone `retention` after
        // the last was taken (at the version's destruction, or when the file
        // stopped sealing); a root of trust's own material is gone at once.
        let due = |v: u32, destroyed_at: i64| {
            if on_file {
                destroyed_at.saturating_add(retention_ms)
            } else if v < file.below_version {
                let last_file_backup = destroyed_at.min(file.at_ms);
                destroyed_at.max(last_file_backup.saturating_add(retention_ms))
            } else {
                destroyed_at
            }
        };
        let covering = keyring.covering_versions(wrapped_under);
        let destroyed = covering
            .iter()
            .map(|v| keyring.destroyed_at_ms(*v).map(|at| due(*v, at)))
            .try_fold(0i64, |latest, due| due.map(|due| latest.max(due)));
        match destroyed {
            Some(at_ms) => ErasureDue {
                keys_destroyed: true,
                at_ms,
            },
            None => ErasureDue {
                keys_destroyed: false,
                at_ms: covering
                    .iter()
                    .map(|v| due(*v, next_rotation_ms))
                    .fold(next_rotation_ms, i64::max),
            },
        }
    }

    pub fn next_master_version(&self) -> u32 {
        self.keyring().next_version()
    }

    pub fn cache_hits_and_misses(&self) -> (u64, u64) {
        (self.cache.hits(), self.cache.misses())
    }

    /// Master key versions that still exist.
    pub fn master_versions(&self) -> Vec<u32> {
        self.keyring().versions()
    }
}

/// When an erasure is (or is expected to become) cryptographic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErasureDue {
    /// Every master version that wrapped the customer's keys is destroyed.
    pub keys_destroyed: bool,
    /// Then plus the backup retention; an estimate while keys remain.
    pub at_ms: i64,
}

fn versions_below(keyring: &Keyring, keep_from: u32) -> Vec<u32> {
    keyring
        .versions()
        .into_iter()
        .filter(|v| *v < keep_from)
        .collect()
}
