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
    /// active master key, and that DEK's cipher. Caching it before the record is
    /// committed is safe: a racing writer that wins has other wrapped bytes.
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
            token_salt: rand::random(),
            privacy: None,
            wrapped_under: BTreeSet::from([master.version()]),
        };
        let cipher = Arc::new(DataCipher::new(&dek, dek_version));
        self.cache
            .insert(customer.as_str(), &record.dek.wrapped, Arc::clone(&cipher));
        Ok((record, cipher))
    }

    /// The cipher of the customer's current DEK, from the cache or by unwrapping.
    pub fn cipher(
        &self,
        customer: &CustomerId,
        record: &CustomerRecord,
    ) -> Result<Arc<DataCipher>, VaultError> {
        let id = customer.as_str();
        if let Some(cipher) = self.cache.get(id, &record.dek.wrapped) {
            return Ok(cipher);
        }
        let dek = self
            .keyring()
            .unwrap_dek(&record.dek.wrapped, id, record.dek.version)?;
        let cipher = Arc::new(DataCipher::new(&dek, record.dek.version));
        self.cache
            .insert(id, &record.dek.wrapped, Arc::clone(&cipher));
        Ok(cipher)
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

    /// Master key versions that still exist.
    pub fn master_versions(&self) -> Vec<u32> {
        self.keyring().versions()
    }
}
