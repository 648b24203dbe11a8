use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::sealed::{self, NONCE_LEN};
use super::{CryptoError, Dek, IndexKey, Key32, TokenKey};

const DEK_AD_LABEL: &[u8] = b"piivault.dek.v1";
const TOKEN_KEY_AD_LABEL: &[u8] = b"piivault.token-key.v1";
const LEGACY_ID_LABEL: &[u8] = b"piivault.keyring-id.v1";
/// Destruction times kept for the newest destroyed versions; an older one
/// counts as destroyed long ago (its backups have expired by any retention).
const DESTROYED_KEPT: usize = 1000;

/// One version of the master key: wraps customers' DEKs and token keys, and
/// owns the index key that blind indexes are computed under while it lives.
/// Destroying the version destroys both.
#[derive(Debug, Clone)]
pub struct MasterKey {
    version: u32,
    key: Key32,
    index_key: IndexKey,
    created_at_ms: i64,
    /// How a root of trust outside the vault sealed this version; `None`
    /// while the root key file seals the keyring as a whole.
    seal: Option<VersionSeal>,
}

/// A master version sealed by its own material in a root of trust: the
/// handle naming that material, and the sealed key and index key. Neither is
/// secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSeal {
    pub handle: Vec<u8>,
    pub sealed: Vec<u8>,
}

/// The length of what a root of trust seals for one version: key and index key.
pub const SEALING_SECRET_LEN: usize = 64;

impl MasterKey {
    pub(crate) fn new(
        version: u32,
        key: Key32,
        index_key: IndexKey,
        created_at_ms: i64,
    ) -> MasterKey {
        MasterKey {
            version,
            key,
            index_key,
            created_at_ms,
            seal: None,
        }
    }

    /// Rebuilds a version from what its root of trust unsealed: the key and
    /// the index key, as `sealing_secret` gave them.
    pub fn from_sealing_secret(
        version: u32,
        created_at_ms: i64,
        secret: &[u8],
        seal: VersionSeal,
    ) -> Result<MasterKey, CryptoError> {
        if secret.len() != SEALING_SECRET_LEN {
            return Err(CryptoError::KeyringCorrupt(
                "an unsealed master version has the wrong length",
            ));
        }
        let key = Key32::from_slice(&secret[..32]).ok_or(CryptoError::Malformed("key length"))?;
        let index_key = IndexKey::from_key(
            Key32::from_slice(&secret[32..]).ok_or(CryptoError::Malformed("key length"))?,
        );
        let mut master = MasterKey::new(version, key, index_key, created_at_ms);
        master.seal = Some(seal);
        Ok(master)
    }

    /// The key and the index key, for a root of trust to seal: the one place
    /// master key bytes leave this module, into a buffer wiped on drop.
    pub fn sealing_secret(&self) -> Zeroizing<Vec<u8>> {
        let mut secret = Zeroizing::new(Vec::with_capacity(SEALING_SECRET_LEN));
        secret.extend_from_slice(self.key.expose());
        secret.extend_from_slice(self.index_key.key().expose());
        secret
    }

    pub fn seal(&self) -> Option<&VersionSeal> {
        self.seal.as_ref()
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

    /// The key of the blind indexes computed under this version.
    pub fn index_key(&self) -> &IndexKey {
        &self.index_key
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
        let key = self.unwrap_key(wrapped, &dek_associated_data(customer_id, dek_version))?;
        Ok(Dek::from_key(key))
    }

    /// The customer's token key, sealed like a DEK but under its own label, so
    /// a wrapped DEK can never be opened as a token key or the reverse.
    pub fn wrap_token_key(&self, token_key: &TokenKey, customer_id: &str) -> Vec<u8> {
        sealed::seal(
            &sealed::cipher_for(&self.key),
            self.version,
            sealed::random_nonce(),
            &token_key_associated_data(customer_id),
            token_key.key().expose(),
        )
    }

    pub fn unwrap_token_key(
        &self,
        wrapped: &[u8],
        customer_id: &str,
    ) -> Result<TokenKey, CryptoError> {
        let key = self.unwrap_key(wrapped, &token_key_associated_data(customer_id))?;
        Ok(TokenKey::from_key(key))
    }

    fn unwrap_key(&self, wrapped: &[u8], associated_data: &[u8]) -> Result<Key32, CryptoError> {
        let mut key_bytes = Zeroizing::new([0u8; 32]);
        sealed::open_into(
            &sealed::cipher_for(&self.key),
            self.version,
            associated_data,
            wrapped,
            &mut key_bytes[..],
        )?;
        Key32::from_slice(&key_bytes[..])
            .ok_or(CryptoError::Malformed("wrapped key has the wrong length"))
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

fn token_key_associated_data(customer_id: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(TOKEN_KEY_AD_LABEL.len() + 4 + customer_id.len());
    ad.extend_from_slice(TOKEN_KEY_AD_LABEL);
    sealed::push_len_prefixed(&mut ad, customer_id.as_bytes());
    ad
}

/// The master version that wrapped a DEK or token key, read from its header,
/// so the caller can pick the master key (and find keys still wrapped under an
/// old version).
pub fn master_version_of_wrapped(wrapped: &[u8]) -> Result<u32, CryptoError> {
    sealed::key_version(wrapped)
}

/// Which keyring this is: fixed at creation, recorded by the store it serves,
/// so a keyring is never used with another vault's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyringId(pub [u8; 16]);

impl std::fmt::Display for KeyringId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

/// The keyring in memory: the live master key versions (each with its index
/// key), and when each destroyed version was destroyed.
/// `Debug` shows versions and times; every key prints as `[redacted]`.
/// `Clone` lets a changed keyring be built and saved before it replaces the
/// one in use; every copy of a key is zeroizing.
#[derive(Debug, Clone)]
pub struct Keyring {
    id: KeyringId,
    masters: BTreeMap<u32, MasterKey>,
    active: u32,
    /// Never reused, even after a version is destroyed, so a wrapped key's header
    /// can never come to name a different key than the one that wrapped it.
    next_version: u32,
    last_rotation_ms: i64,
    /// Destroyed versions and when (the newest `DESTROYED_KEPT`); every other
    /// version below `next_version` that is not live was destroyed long ago.
    destroyed: BTreeMap<u32, i64>,
    /// Keyrings written before index keys were versioned had one index key for
    /// every version: the versions below this one all hold a copy of it, and it
    /// is gone only once all of them are destroyed. 0 when there was none.
    legacy_index_until: u32,
    /// Retired versions whose material in the root of trust is not yet
    /// destroyed, with the handles naming it: not destroyed until confirmed.
    pending: BTreeMap<u32, Vec<u8>>,
    /// Material that sealed a version before the version was sealed anew (a
    /// root-of-trust rotation), with that version: earlier copies of the
    /// keyring still open with it until the root of trust destroys it.
    superseded: Vec<(u32, Vec<u8>)>,
    /// Until when a root key file sealed the keyring (0: never, or still),
    /// and the versions that existed then (those below the second): backups
    /// of the keyring sealed by that file hold them, so erasures they
    /// covered wait for the backup retention.
    file_sealed_until: FileSealedUntil,
}

/// When a root key file stopped sealing a keyring, and the versions that
/// existed then: all below `below_version`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileSealedUntil {
    pub at_ms: i64,
    pub below_version: u32,
}

/// A keyring as decoded, before its invariants are checked.
pub(crate) struct KeyringParts {
    pub id: KeyringId,
    pub masters: BTreeMap<u32, MasterKey>,
    pub active: u32,
    pub next_version: u32,
    pub last_rotation_ms: i64,
    pub destroyed: BTreeMap<u32, i64>,
    pub legacy_index_until: u32,
    pub pending: BTreeMap<u32, Vec<u8>>,
    pub superseded: Vec<(u32, Vec<u8>)>,
    pub file_sealed_until: FileSealedUntil,
}

/// The identity of a keyring written before keyrings had one: derived from
/// its (single, legacy) index key, so it is the same every time it is read.
pub(crate) fn legacy_keyring_id(index_key: &IndexKey) -> KeyringId {
    let mut hash = Sha256::new();
    hash.update(LEGACY_ID_LABEL);
    hash.update(index_key.key().expose());
    let digest = hash.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    KeyringId(id)
}

impl Keyring {
    /// A new keyring: a fresh identity and master version 1, active.
    pub fn generate(now_ms: i64) -> Keyring {
        let mut masters = BTreeMap::new();
        masters.insert(
            1,
            MasterKey::new(1, Key32::generate(), IndexKey::generate(), now_ms),
        );
        Keyring {
            id: KeyringId(rand::random()),
            masters,
            active: 1,
            next_version: 2,
            last_rotation_ms: now_ms,
            destroyed: BTreeMap::new(),
            legacy_index_until: 0,
            pending: BTreeMap::new(),
            superseded: Vec::new(),
            file_sealed_until: FileSealedUntil::default(),
        }
    }

    /// Rebuilds a decoded keyring, refusing states this type never produces.
    pub(crate) fn from_parts(parts: KeyringParts) -> Result<Keyring, CryptoError> {
        if !parts.masters.contains_key(&parts.active) {
            return Err(CryptoError::KeyringCorrupt(
                "the active master version is missing",
            ));
        }
        let out_of_range = |version: &u32| *version == 0 || *version >= parts.next_version;
        if parts.masters.keys().any(out_of_range) || parts.destroyed.keys().any(out_of_range) {
            return Err(CryptoError::KeyringCorrupt(
                "a master version is out of range",
            ));
        }
        if parts.pending.keys().any(out_of_range)
            || parts
                .destroyed
                .keys()
                .chain(parts.pending.keys())
                .any(|v| parts.masters.contains_key(v))
            || parts
                .pending
                .keys()
                .any(|v| parts.destroyed.contains_key(v))
        {
            return Err(CryptoError::KeyringCorrupt(
                "a master version is both live and destroyed",
            ));
        }
        if parts.superseded.iter().any(|(v, _)| out_of_range(v)) {
            return Err(CryptoError::KeyringCorrupt(
                "superseded material names a master version out of range",
            ));
        }
        Ok(Keyring {
            id: parts.id,
            masters: parts.masters,
            active: parts.active,
            next_version: parts.next_version,
            last_rotation_ms: parts.last_rotation_ms,
            destroyed: parts.destroyed,
            legacy_index_until: parts.legacy_index_until,
            pending: parts.pending,
            superseded: parts.superseded,
            file_sealed_until: parts.file_sealed_until,
        })
    }

    pub fn id(&self) -> KeyringId {
        self.id
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

    pub fn last_rotation_ms(&self) -> i64 {
        self.last_rotation_ms
    }

    pub fn next_version(&self) -> u32 {
        self.next_version
    }

    pub(crate) fn masters(&self) -> impl ExactSizeIterator<Item = &MasterKey> {
        self.masters.values()
    }

    pub(crate) fn destroyed_times(&self) -> &BTreeMap<u32, i64> {
        &self.destroyed
    }

    pub(crate) fn legacy_index_until(&self) -> u32 {
        self.legacy_index_until
    }

    /// Whether `version` was created and is destroyed: retired, and its
    /// material in the root of trust destroyed (or never of its own).
    pub fn is_destroyed(&self, version: u32) -> bool {
        self.is_retired(version)
            && !self.pending.contains_key(&version)
            && !self.superseded.iter().any(|(v, _)| *v == version)
    }

    /// Whether `version` was created and is no longer in use: destroyed, or
    /// waiting for its root of trust to destroy it.
    pub fn is_retired(&self, version: u32) -> bool {
        version > 0 && version < self.next_version && !self.masters.contains_key(&version)
    }

    /// Retired versions whose material in the root of trust is not yet
    /// destroyed, and the handles naming it.
    pub fn pending_destructions(&self) -> &BTreeMap<u32, Vec<u8>> {
        &self.pending
    }

    /// Records that the root of trust destroyed the material of a retired
    /// version, for good as of `at_ms` (a KMS deletes at the end of a window).
    pub fn confirm_destroyed(&mut self, version: u32, at_ms: i64) {
        if self.pending.remove(&version).is_some() {
            self.record_destroyed(version, at_ms);
        }
    }

    /// Material that sealed versions before they were sealed anew, not yet
    /// destroyed: each with the version it sealed and the handle naming it.
    pub fn superseded(&self) -> &[(u32, Vec<u8>)] {
        &self.superseded
    }

    /// When a root key file stopped sealing the keyring, and the versions
    /// that existed then; the default when none ever did before the root of
    /// trust in use.
    pub fn file_sealed_until(&self) -> FileSealedUntil {
        self.file_sealed_until
    }

    /// Records that a root key file stops sealing the keyring at `now_ms`
    /// (a migration to another root of trust).
    pub fn record_file_sealing_ended(&mut self, now_ms: i64) {
        self.file_sealed_until = FileSealedUntil {
            at_ms: now_ms,
            below_version: self.next_version,
        };
    }

    /// Records that the root of trust destroyed superseded material.
    pub fn confirm_superseded_destroyed(&mut self, handle: &[u8]) {
        self.superseded.retain(|(_, held)| held != handle);
    }

    /// Seals a live version was missing, as its root of trust sealed it.
    pub fn set_seal(&mut self, version: u32, seal: VersionSeal) {
        if let Some(master) = self.masters.get_mut(&version) {
            master.seal = Some(seal);
        }
    }

    /// Forgets how a live version was sealed, so that it is sealed anew
    /// (under another root of trust).
    pub fn clear_seal(&mut self, version: u32) {
        if let Some(master) = self.masters.get_mut(&version) {
            master.seal = None;
        }
    }

    /// Forgets how a live version was sealed, so that it is sealed anew under
    /// new material of the same root of trust, and keeps the material it
    /// replaces as superseded, to be destroyed.
    pub fn supersede_seal(&mut self, version: u32) {
        if let Some(master) = self.masters.get_mut(&version) {
            if let Some(seal) = master.seal.take() {
                self.superseded.push((version, seal.handle));
            }
        }
    }

    /// Live versions no root of trust has sealed yet.
    pub fn unsealed_versions(&self) -> Vec<u32> {
        self.masters
            .values()
            .filter(|m| m.seal.is_none())
            .map(MasterKey::version)
            .collect()
    }

    /// When `version` was destroyed: `Some(0)` for one destroyed so long ago
    /// that its time was dropped, `None` while it lives (or never existed).
    pub fn destroyed_at_ms(&self, version: u32) -> Option<i64> {
        self.is_destroyed(version)
            .then(|| self.destroyed.get(&version).copied().unwrap_or(0))
    }

    /// The master versions whose keys covered anything of a customer whose
    /// keys were wrapped (and values indexed) under `versions`: those versions,
    /// and every version that shared the legacy index key with one of them.
    pub fn covering_versions(
        &self,
        versions: &std::collections::BTreeSet<u32>,
    ) -> std::collections::BTreeSet<u32> {
        let mut covering = versions.clone();
        if versions.iter().any(|v| *v < self.legacy_index_until) {
            covering.extend(1..self.legacy_index_until);
        }
        covering
    }

    /// Adds a new random master version (with its own index key) and makes it
    /// active. Older versions stay until destroyed, so keys wrapped under them
    /// can still be unwrapped and their index entries still found.
    pub fn add_version(&mut self, now_ms: i64) -> u32 {
        let version = self.next_version;
        // Four billion rotations will not happen; reusing a number must not either.
        self.next_version = version
            .checked_add(1)
            .expect("master key version numbers exhausted");
        self.masters.insert(
            version,
            MasterKey::new(version, Key32::generate(), IndexKey::generate(), now_ms),
        );
        self.active = version;
        self.last_rotation_ms = now_ms;
        version
    }

    /// Drops a master version and its index key from memory (their bytes are
    /// wiped) and records when. They are gone from disk once the keyring is
    /// saved. The active version cannot be destroyed.
    pub fn destroy_version(&mut self, version: u32, now_ms: i64) -> Result<(), CryptoError> {
        if version == self.active {
            return Err(CryptoError::ActiveMasterVersion(version));
        }
        let master = self
            .masters
            .remove(&version)
            .ok_or(CryptoError::UnknownMasterVersion(version))?;
        match master.seal {
            // Its own material in the root of trust still opens old copies of
            // the keyring until the root of trust destroys it.
            Some(seal) => {
                self.pending.insert(version, seal.handle);
            }
            None => self.record_destroyed(version, now_ms),
        }
        Ok(())
    }

    fn record_destroyed(&mut self, version: u32, at_ms: i64) {
        self.destroyed.insert(version, at_ms);
        while self.destroyed.len() > DESTROYED_KEPT {
            self.destroyed.pop_first();
        }
    }

    /// Unwraps with whichever master version the header names:
    /// `UnknownMasterVersion` when that version was destroyed or never existed.
    pub fn unwrap_dek(
        &self,
        wrapped: &[u8],
        customer_id: &str,
        dek_version: u32,
    ) -> Result<Dek, CryptoError> {
        self.master_of(wrapped)?
            .unwrap_dek(wrapped, customer_id, dek_version)
    }

    pub fn unwrap_token_key(
        &self,
        wrapped: &[u8],
        customer_id: &str,
    ) -> Result<TokenKey, CryptoError> {
        self.master_of(wrapped)?
            .unwrap_token_key(wrapped, customer_id)
    }

    fn master_of(&self, wrapped: &[u8]) -> Result<&MasterKey, CryptoError> {
        let master_version = master_version_of_wrapped(wrapped)?;
        self.get(master_version)
            .ok_or(CryptoError::UnknownMasterVersion(master_version))
    }

    /// The index key of every live version, newest first, each once (legacy
    /// versions share one): a search looks under each.
    pub fn index_keys(&self) -> Vec<&IndexKey> {
        let mut keys: Vec<&IndexKey> = Vec::new();
        for master in self.masters.values().rev() {
            let key = master.index_key();
            if !keys
                .iter()
                .any(|seen| seen.key().expose() == key.key().expose())
            {
                keys.push(key);
            }
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use data_encoding::HEXLOWER;

    use super::*;

    fn fixed_master() -> MasterKey {
        let bytes: Vec<u8> = (0x40u8..0x60).collect();
        MasterKey::new(
            3,
            Key32::from_slice(&bytes).expect("32 bytes"),
            IndexKey::generate(),
            0,
        )
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
        let other_key = MasterKey::new(3, Key32::generate(), IndexKey::generate(), 0);
        for result in [
            master.unwrap_dek(&wrapped, "c2", 1),
            master.unwrap_dek(&wrapped, "c1", 2),
            other_key.unwrap_dek(&wrapped, "c1", 1),
        ] {
            assert!(matches!(result, Err(CryptoError::Authentication)));
        }
        let other_version = MasterKey::new(4, Key32::generate(), IndexKey::generate(), 0);
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
        keyring.destroy_version(2, 35).expect("destroy");
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
            keyring.destroy_version(1, 0),
            Err(CryptoError::ActiveMasterVersion(1))
        ));
        assert!(matches!(
            keyring.destroy_version(9, 0),
            Err(CryptoError::UnknownMasterVersion(9))
        ));
        assert_eq!(keyring.versions(), vec![1]);
    }

    #[test]
    fn each_version_has_its_own_index_key_destroyed_with_it() {
        let mut keyring = Keyring::generate(0);
        let first = *keyring.active().index_key().key().expose();
        keyring.add_version(1);
        let second = *keyring.active().index_key().key().expose();
        assert_ne!(first, second);
        assert_eq!(keyring.index_keys().len(), 2);
        keyring.destroy_version(1, 7).expect("destroy");
        let left: Vec<[u8; 32]> = keyring
            .index_keys()
            .iter()
            .map(|key| *key.key().expose())
            .collect();
        assert_eq!(left, vec![second]);
        assert_eq!(keyring.destroyed_at_ms(1), Some(7));
        assert_eq!(keyring.destroyed_at_ms(2), None);
        assert!(keyring.is_destroyed(1) && !keyring.is_destroyed(2) && !keyring.is_destroyed(3));
    }

    #[test]
    fn token_keys_round_trip_and_never_open_as_a_dek() {
        let keyring = Keyring::generate(0);
        let token_key = TokenKey::generate();
        let wrapped = keyring.active().wrap_token_key(&token_key, "c1");
        let opened = keyring.unwrap_token_key(&wrapped, "c1").expect("unwrap");
        assert_eq!(opened.key().expose(), token_key.key().expose());
        assert!(keyring.unwrap_token_key(&wrapped, "c2").is_err());
        assert!(keyring.unwrap_dek(&wrapped, "c1", 1).is_err());
        let dek = keyring.active().wrap_dek(&Dek::generate(), "c1", 1);
        assert!(keyring.unwrap_token_key(&dek, "c1").is_err());
    }

    #[test]
    fn legacy_versions_cover_each_other() {
        let keyring = Keyring::from_parts(KeyringParts {
            id: KeyringId([1; 16]),
            masters: [1, 3, 4]
                .into_iter()
                .map(|v| {
                    (
                        v,
                        MasterKey::new(v, Key32::generate(), IndexKey::generate(), 0),
                    )
                })
                .collect(),
            active: 4,
            next_version: 5,
            last_rotation_ms: 0,
            destroyed: BTreeMap::new(),
            legacy_index_until: 4,
            pending: BTreeMap::new(),
            superseded: Vec::new(),
            file_sealed_until: FileSealedUntil::default(),
        })
        .expect("keyring");
        assert_eq!(keyring.covering_versions(&[3].into()), [1, 2, 3].into());
        assert_eq!(keyring.covering_versions(&[4].into()), [4].into());
        assert_eq!(keyring.destroyed_at_ms(2), Some(0));
    }

    #[test]
    fn keyring_unwraps_with_the_version_in_the_header_until_it_is_destroyed() {
        let mut keyring = Keyring::generate(0);
        let dek = Dek::generate();
        let wrapped = keyring.active().wrap_dek(&dek, "c1", 5);
        keyring.add_version(1);
        let unwrapped = keyring.unwrap_dek(&wrapped, "c1", 5).expect("old version");
        assert_eq!(unwrapped.key().expose(), dek.key().expose());
        keyring.destroy_version(1, 2).expect("destroy");
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
            keyring.active().index_key().key(),
            master.key(),
        ] {
            let hex = HEXLOWER.encode(key.expose());
            assert!(!printed.to_lowercase().contains(&hex[..8]));
            assert!(!printed.contains(&format!("{:?}", &key.expose()[..4])));
        }
    }
}
