//! The vault's use of the key hierarchy: creating and unwrapping customer DEKs,
//! caching their ciphers, and the keyed hashes behind blind indexes and
//! deterministic tokens.

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock};

use crate::crypto::{DataCipher, Dek, DekCache, Keyring};
use crate::store::{CustomerRecord, WrappedDekRecord};

use super::{CustomerId, FieldKind, VaultError};

pub struct KeyManager {
    keyring: RwLock<Keyring>,
    cache: DekCache,
}

impl KeyManager {
    pub fn new(keyring: Keyring, cache_capacity: usize) -> KeyManager {
        KeyManager {
            keyring: RwLock::new(keyring),
            cache: DekCache::new(cache_capacity),
        }
    }

    fn keyring(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A first customer record with a fresh DEK (version 1) wrapped under the
    /// active master key, and that DEK's cipher. The cipher is cached only once
    /// the record is committed (`remember`), since a racing writer may win.
    pub fn new_customer(
        &self,
        customer: &CustomerId,
        now_ms: i64,
    ) -> Result<(CustomerRecord, Arc<DataCipher>), VaultError> {
        let dek = Dek::generate();
        let keyring = self.keyring();
        let master = keyring.active();
        let dek_version = 1;
        let wrapped = master.wrap_dek(&dek, customer.as_str(), dek_version);
        let record = CustomerRecord {
            revision: 0,
            created_at_ms: now_ms,
            dek: WrappedDekRecord {
                version: dek_version,
                master_version: master.version(),
                created_at_ms: now_ms,
                wrapped,
            },
            encryptions: 0,
            wrapped_under: BTreeSet::from([master.version()]),
        };
        Ok((record, Arc::new(DataCipher::new(&dek, dek_version))))
    }

    /// The cipher of the customer's current DEK, from the cache or by unwrapping.
    pub fn cipher(
        &self,
        customer: &CustomerId,
        record: &CustomerRecord,
    ) -> Result<Arc<DataCipher>, VaultError> {
        let id = customer.as_str();
        if let Some(cipher) = self.cache.get(id, record.dek.version) {
            return Ok(cipher);
        }
        let keyring = self.keyring();
        let master = keyring.get(record.dek.master_version).ok_or_else(|| {
            VaultError::Internal(format!(
                "master key version {} is not in the keyring",
                record.dek.master_version
            ))
        })?;
        let dek = master.unwrap_dek(&record.dek.wrapped, id, record.dek.version)?;
        let cipher = Arc::new(DataCipher::new(&dek, record.dek.version));
        self.cache
            .insert(id, record.dek.version, Arc::clone(&cipher));
        Ok(cipher)
    }

    /// Caches a cipher whose customer record is now committed.
    pub fn remember(&self, customer: &CustomerId, cipher: Arc<DataCipher>) {
        self.cache
            .insert(customer.as_str(), cipher.key_version(), cipher);
    }

    /// Drops every cached cipher of the customer (erasure, re-keying).
    pub fn forget(&self, customer: &CustomerId) {
        self.cache.purge_customer(customer.as_str());
    }

    pub fn blind_index(&self, field: &str, kind: FieldKind, normalized: &str) -> [u8; 32] {
        self.keyring()
            .index_key()
            .blind_index(field, kind.name(), normalized)
    }

    pub fn deterministic_token_mac(
        &self,
        customer: &CustomerId,
        scope: &str,
        kind: FieldKind,
        normalized: &str,
    ) -> [u8; 16] {
        self.keyring().index_key().deterministic_token(
            customer.as_str(),
            scope,
            kind.name(),
            normalized,
        )
    }

    /// Master key versions that still exist.
    pub fn master_versions(&self) -> Vec<u32> {
        self.keyring().versions()
    }
}
