use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::sealed::{self, NONCE_LEN};
use super::{CryptoError, Dek, IndexKey, Key32};

const DEK_AD_LABEL: &[u8] = b"piivault.dek.v1";

/// One version of the master key: wraps customers' DEKs.
#[derive(Debug, Clone)]
pub struct MasterKey {
    version: u32,
    key: Key32,
    created_at_ms: i64,
}

impl MasterKey {
    pub(crate) fn new(version: u32, key: Key32, created_at_ms: i64) -> MasterKey {
        MasterKey {
            version,
            key,
            created_at_ms,
        }
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }

    pub(crate) fn key(&self) -> &Key32 {
        &self.key
    }

    /// `[1][master version u32 BE][nonce 12] || AES-256-GCM(DEK) || tag`, bound to
    /// the customer and the DEK version so a wrapped DEK cannot be swapped between
    /// customers or versions.
    pub fn wrap_dek(&self, dek: &Dek, customer_id: &str, dek_version: u32) -> Vec<u8> {
        self.wrap_dek_with_nonce(dek, customer_id, dek_version, sealed::random_nonce())
    }

    /// A header naming another master version gives `KeyVersionMismatch`; a wrong
    /// customer, DEK version or key gives `Authentication`.
    pub fn unwrap_dek(
        &self,
        wrapped: &[u8],
        customer_id: &str,
        dek_version: u32,
    ) -> Result<Dek, CryptoError> {
        let mut dek_bytes = Zeroizing::new([0u8; 32]);
        sealed::open_into(
            &sealed::cipher_for(&self.key),
            self.version,
            &dek_associated_data(customer_id, dek_version),
            wrapped,
            &mut dek_bytes[..],
        )?;
        Key32::from_slice(&dek_bytes[..])
            .map(Dek::from_key)
            .ok_or(CryptoError::Malformed("wrapped DEK has the wrong length"))
    }

    /// The nonce is a parameter only so known-answer tests can fix it.
    fn wrap_dek_with_nonce(
        &self,
        dek: &Dek,
        customer_id: &str,
        dek_version: u32,
        nonce: [u8; NONCE_LEN],
    ) -> Vec<u8> {
        sealed::seal(
            &sealed::cipher_for(&self.key),
            self.version,
            nonce,
            &dek_associated_data(customer_id, dek_version),
            dek.key().expose(),
        )
    }
}

fn dek_associated_data(customer_id: &str, dek_version: u32) -> Vec<u8> {
    let mut ad = Vec::with_capacity(DEK_AD_LABEL.len() + 8 + customer_id.len());
    ad.extend_from_slice(DEK_AD_LABEL);
    sealed::push_len_prefixed(&mut ad, customer_id.as_bytes());
    ad.extend_from_slice(&dek_version.to_be_bytes());
    ad
}

/// The master version that wrapped a DEK, read from its header, so the caller
/// can pick the master key (and find DEKs still wrapped under an old version).
pub fn master_version_of_wrapped(wrapped: &[u8]) -> Result<u32, CryptoError> {
    sealed::key_version(wrapped)
}

/// The keyring in memory: the index key and the live master key versions.
/// `Debug` shows versions and times; every key prints as `[redacted]`.
/// `Clone` lets a changed keyring be built and saved before it replaces the
/// one in use; every copy of a key is zeroizing.
#[derive(Debug, Clone)]
pub struct Keyring {
    index_key: IndexKey,
    masters: BTreeMap<u32, MasterKey>,
    active: u32,
    /// Never reused, even after a version is destroyed, so a wrapped DEK's header
    /// can never come to name a different key than the one that wrapped it.
    next_version: u32,
    last_rotation_ms: i64,
}

impl Keyring {
    /// A new keyring: a fresh index key and master version 1, active.
    pub fn generate(now_ms: i64) -> Keyring {
        let mut masters = BTreeMap::new();
        masters.insert(1, MasterKey::new(1, Key32::generate(), now_ms));
        Keyring {
            index_key: IndexKey::generate(),
            masters,
            active: 1,
            next_version: 2,
            last_rotation_ms: now_ms,
        }
    }

    /// Rebuilds a decoded keyring, refusing states this type never produces.
    pub(crate) fn from_parts(
        index_key: IndexKey,
        masters: BTreeMap<u32, MasterKey>,
        active: u32,
        next_version: u32,
        last_rotation_ms: i64,
    ) -> Result<Keyring, CryptoError> {
        if !masters.contains_key(&active) {
            return Err(CryptoError::KeyringCorrupt(
                "the active master version is missing",
            ));
        }
        if masters
            .keys()
            .any(|&version| version == 0 || version >= next_version)
        {
            return Err(CryptoError::KeyringCorrupt(
                "a master version is out of range",
            ));
        }
        Ok(Keyring {
            index_key,
            masters,
            active,
            next_version,
            last_rotation_ms,
        })
    }

    pub fn active(&self) -> &MasterKey {
        // Every constructor and mutator keeps the active version in the map.
        &self.masters[&self.active]
    }

    pub fn get(&self, version: u32) -> Option<&MasterKey> {
        self.masters.get(&version)
    }

    pub fn versions(&self) -> Vec<u32> {
        self.masters.keys().copied().collect()
    }

    pub fn index_key(&self) -> &IndexKey {
        &self.index_key
    }

    pub fn last_rotation_ms(&self) -> i64 {
        self.last_rotation_ms
    }

    pub(crate) fn next_version(&self) -> u32 {
        self.next_version
    }

    pub(crate) fn masters(&self) -> impl ExactSizeIterator<Item = &MasterKey> {
        self.masters.values()
    }

    /// Adds a new random master version and makes it active. Older versions stay
    /// until destroyed, so DEKs wrapped under them can still be unwrapped.
    pub fn add_version(&mut self, now_ms: i64) -> u32 {
        let version = self.next_version;
        // Four billion rotations will not happen; reusing a number must not either.
        self.next_version = version
            .checked_add(1)
            .expect("master key version numbers exhausted");
        self.masters
            .insert(version, MasterKey::new(version, Key32::generate(), now_ms));
        self.active = version;
        self.last_rotation_ms = now_ms;
        version
    }

    /// Drops a master version from memory (its bytes are wiped). It is gone from
    /// disk once the keyring file is saved. The active version cannot be destroyed.
    pub fn destroy_version(&mut self, version: u32) -> Result<(), CryptoError> {
        if version == self.active {
            return Err(CryptoError::ActiveMasterVersion(version));
        }
        self.masters
            .remove(&version)
            .map(drop)
            .ok_or(CryptoError::UnknownMasterVersion(version))
    }

    /// Unwraps with whichever master version the header names:
    /// `UnknownMasterVersion` when that version was destroyed or never existed.
    pub fn unwrap_dek(
        &self,
        wrapped: &[u8],
        customer_id: &str,
        dek_version: u32,
    ) -> Result<Dek, CryptoError> {
        let master_version = master_version_of_wrapped(wrapped)?;
        self.get(master_version)
            .ok_or(CryptoError::UnknownMasterVersion(master_version))?
            .unwrap_dek(wrapped, customer_id, dek_version)
    }
}

#[cfg(test)]
mod tests {
    use data_encoding::HEXLOWER;

    use super::*;

    fn fixed_master() -> MasterKey {
        let bytes: Vec<u8> = (0x40u8..0x60).collect();
        MasterKey::new(3, Key32::from_slice(&bytes).expect("32 bytes"), 0)
    }

    fn fixed_dek() -> Dek {
        let bytes: Vec<u8> = (0x80u8..0xa0).collect();
        Dek::from_key(Key32::from_slice(&bytes).expect("32 bytes"))
    }

    /// Expected bytes computed independently with Python `cryptography` (AESGCM)
    /// from the documented header and associated data layout.
    #[test]
    fn known_answer_for_a_wrapped_dek() {
        let nonce = std::array::from_fn(|i| 0xc0 + i as u8);
        let wrapped = fixed_master().wrap_dek_with_nonce(&fixed_dek(), "cust_42", 2, nonce);
        assert_eq!(
            HEXLOWER.encode(&wrapped),
            "0100000003c0c1c2c3c4c5c6c7c8c9cacb\
             dfc5b24dfe1fbb6cfc30aebd272e2c420f64ccc24abbb89f642aa9f7b4e7e4d9\
             265366727e7dd79a0ecea4494036bf34"
        );
        let dek = fixed_master()
            .unwrap_dek(&wrapped, "cust_42", 2)
            .expect("unwrap");
        assert_eq!(dek.key().expose(), fixed_dek().key().expose());
    }

    #[test]
    fn wrapped_dek_round_trips_and_names_its_master_version() {
        let master = fixed_master();
        let dek = Dek::generate();
        let wrapped = master.wrap_dek(&dek, "c1", 1);
        assert_eq!(master_version_of_wrapped(&wrapped).expect("version"), 3);
        let unwrapped = master.unwrap_dek(&wrapped, "c1", 1).expect("unwrap");
        assert_eq!(unwrapped.key().expose(), dek.key().expose());
    }

    #[test]
    fn wrapped_dek_unwrap_with_wrong_customer_dek_version_or_key_fails() {
        let master = fixed_master();
        let wrapped = master.wrap_dek(&Dek::generate(), "c1", 1);
        let other_key = MasterKey::new(3, Key32::generate(), 0);
        for result in [
            master.unwrap_dek(&wrapped, "c2", 1),
            master.unwrap_dek(&wrapped, "c1", 2),
            other_key.unwrap_dek(&wrapped, "c1", 1),
        ] {
            assert!(matches!(result, Err(CryptoError::Authentication)));
        }
        let other_version = MasterKey::new(4, Key32::generate(), 0);
        assert!(matches!(
            other_version.unwrap_dek(&wrapped, "c1", 1),
            Err(CryptoError::KeyVersionMismatch {
                expected: 4,
                found: 3
            })
        ));
    }

    #[test]
    fn tampered_truncated_or_garbage_wrapped_dek_is_an_error_not_a_panic() {
        let master = fixed_master();
        let wrapped = master.wrap_dek(&Dek::generate(), "c1", 1);
        for i in 0..wrapped.len() {
            let mut tampered = wrapped.clone();
            tampered[i] ^= 0x80;
            assert!(master.unwrap_dek(&tampered, "c1", 1).is_err(), "byte {i}");
        }
        for len in 0..wrapped.len() {
            assert!(
                master.unwrap_dek(&wrapped[..len], "c1", 1).is_err(),
                "len {len}"
            );
        }
        let mut longer = wrapped.clone();
        longer.push(0);
        assert!(master.unwrap_dek(&longer, "c1", 1).is_err());
        assert!(master_version_of_wrapped(&[1, 2, 3]).is_err());
    }

    #[test]
    fn rotation_activates_a_new_version_and_never_reuses_numbers() {
        let mut keyring = Keyring::generate(10);
        assert_eq!(
            (keyring.active().version(), keyring.versions()),
            (1, vec![1])
        );
        assert_eq!(keyring.add_version(20), 2);
        assert_eq!(keyring.add_version(30), 3);
        keyring.destroy_version(2).expect("destroy");
        assert_eq!(keyring.add_version(40), 4);
        assert_eq!(keyring.versions(), vec![1, 3, 4]);
        assert_eq!(keyring.active().version(), 4);
        assert_eq!(keyring.active().created_at_ms(), 40);
        assert_eq!(keyring.last_rotation_ms(), 40);
        assert!(keyring.get(2).is_none());
    }

    #[test]
    fn active_version_cannot_be_destroyed_and_unknown_ones_are_reported() {
        let mut keyring = Keyring::generate(0);
        assert!(matches!(
            keyring.destroy_version(1),
            Err(CryptoError::ActiveMasterVersion(1))
        ));
        assert!(matches!(
            keyring.destroy_version(9),
            Err(CryptoError::UnknownMasterVersion(9))
        ));
        assert_eq!(keyring.versions(), vec![1]);
    }

    #[test]
    fn rotation_keeps_the_index_key() {
        let mut keyring = Keyring::generate(0);
        let before = *keyring.index_key().key().expose();
        keyring.add_version(1);
        keyring.destroy_version(1).expect("destroy");
        assert_eq!(keyring.index_key().key().expose(), &before);
    }

    #[test]
    fn keyring_unwraps_with_the_version_in_the_header_until_it_is_destroyed() {
        let mut keyring = Keyring::generate(0);
        let dek = Dek::generate();
        let wrapped = keyring.active().wrap_dek(&dek, "c1", 5);
        keyring.add_version(1);
        let unwrapped = keyring.unwrap_dek(&wrapped, "c1", 5).expect("old version");
        assert_eq!(unwrapped.key().expose(), dek.key().expose());
        keyring.destroy_version(1).expect("destroy");
        assert!(matches!(
            keyring.unwrap_dek(&wrapped, "c1", 5),
            Err(CryptoError::UnknownMasterVersion(1))
        ));
    }

    #[test]
    fn debug_of_master_key_and_keyring_is_redacted() {
        let keyring = Keyring::generate(0);
        let master = fixed_master();
        let printed = format!("{keyring:?} {master:?}");
        assert!(printed.contains("redacted"));
        for key in [
            keyring.active().key(),
            keyring.index_key().key(),
            master.key(),
        ] {
            let hex = HEXLOWER.encode(key.expose());
            assert!(!printed.to_lowercase().contains(&hex[..8]));
            assert!(!printed.contains(&format!("{:?}", &key.expose()[..4])));
        }
    }
}
