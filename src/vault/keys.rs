//! The vault's use of the key hierarchy: creating, unwrapping and re-wrapping
//! customer DEKs, caching their ciphers, changing the keyring (new and destroyed
//! master versions), and the keyed hashes behind blind indexes and deterministic
//! tokens.

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};

use crate::crypto::{CryptoError, DataCipher, Dek, DekCache, Keyring};
use crate::store::{CustomerRecord, WrappedDekRecord};

use super::keyring_store::KeyringStore;
use super::{CustomerId, FieldKind, VaultError};

pub struct KeyManager {
    keyring: RwLock<Keyring>,
    /// Where the keyring is kept; its lock also serializes keyring changes.
    keyring_store: tokio::sync::Mutex<Box<dyn KeyringStore>>,
    cache: DekCache,
}

impl KeyManager {
    pub fn new(
        keyring: Keyring,
        keyring_store: Box<dyn KeyringStore>,
        cache: DekCache,
    ) -> KeyManager {
        KeyManager {
            keyring: RwLock::new(keyring),
            keyring_store: tokio::sync::Mutex::new(keyring_store),
            cache,
        }
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
        let store = self.keyring_store.lock().await;
        if let Some(newer) = store.newer().await? {
            self.replace_keyring(newer);
        }
        let mut next = self.keyring().clone();
        let outcome = change(&mut next)?;
        store.save(&next).await?;
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

    /// Destroys every master version below `keep_from`: overwritten where the
    /// keyring is kept. Returns the versions destroyed.
    pub async fn destroy_master_versions_below(
        &self,
        keep_from: u32,
    ) -> Result<Vec<u32>, VaultError> {
        self.change_keyring(|keyring| {
            let doomed: Vec<u32> = keyring
                .versions()
                .into_iter()
                .filter(|v| *v < keep_from)
                .collect();
            for version in &doomed {
                keyring.destroy_version(*version)?;
            }
            Ok(doomed)
        })
        .await
    }

    pub fn active_master_version(&self) -> u32 {
        self.keyring().active().version()
    }

    pub fn last_rotation_ms(&self) -> i64 {
        self.keyring().last_rotation_ms()
    }

    /// The same DEK wrapped under the active master version, and that version.
    pub fn rewrap(
        &self,
        customer: &CustomerId,
        dek: &WrappedDekRecord,
    ) -> Result<WrappedDekRecord, VaultError> {
        let keyring = self.keyring();
        let plain_dek = keyring.unwrap_dek(&dek.wrapped, customer.as_str(), dek.version)?;
        let master = keyring.active();
        Ok(WrappedDekRecord {
            version: dek.version,
            master_version: master.version(),
            created_at_ms: dek.created_at_ms,
            wrapped: master.wrap_dek(&plain_dek, customer.as_str(), dek.version),
        })
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

    /// A first customer record with a fresh DEK (version 1), and its cipher.
    pub fn new_customer(
        &self,
        customer: &CustomerId,
        now_ms: i64,
    ) -> Result<(CustomerRecord, Arc<DataCipher>), VaultError> {
        let (dek, cipher) = self.new_dek(customer, 1, now_ms);
        let record = CustomerRecord {
            revision: 0,
            created_at_ms: now_ms,
            wrapped_under: BTreeSet::from([dek.master_version]),
            dek,
            encryptions: 0,
            token_salt: rand::random(),
            privacy: None,
        };
        Ok((record, cipher))
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

    pub fn blind_index(&self, field: &str, kind: FieldKind, normalized: &str) -> [u8; 32] {
        self.keyring()
            .index_key()
            .blind_index(field, kind.name(), normalized)
    }

    /// The MAC behind a deterministic token; `token_salt` is the customer's.
    pub fn deterministic_token_mac(
        &self,
        customer: &CustomerId,
        token_salt: &[u8; 16],
        scope: &str,
        kind: FieldKind,
        normalized: &str,
    ) -> [u8; 16] {
        // The salt joins the scope: it changes with every incarnation of the id.
        let salted_scope = format!("{scope}@{}", data_encoding::HEXLOWER.encode(token_salt));
        self.keyring().index_key().deterministic_token(
            customer.as_str(),
            &salted_scope,
            kind.name(),
            normalized,
        )
    }

    pub fn cache_hits_and_misses(&self) -> (u64, u64) {
        (self.cache.hits(), self.cache.misses())
    }

    /// Master key versions that still exist.
    pub fn master_versions(&self) -> Vec<u32> {
        self.keyring().versions()
    }
}
