//! The keyring payload, encoded by hand rather than through serde so that every
//! copy of key bytes is one we can see and wipe. All integers big-endian.
//!
//! Format 2 (written now):
//! ```text
//! id 16 | active u32 | next_version u32 | last_rotation_ms i64 | legacy_index_until u32
//! | count u32 | count x ( version u32 | created_at_ms i64 | key 32 | index key 32 )
//! | destroyed u32 | destroyed x ( version u32 | destroyed_at_ms i64 )
//! ```
//!
//! Format 1 (read only, upgraded on the next save) had one index key for every
//! version and no identity:
//! ```text
//! index key 32 | active u32 | next_version u32 | last_rotation_ms i64 | count u32
//! count x ( version u32 | created_at_ms i64 | key 32 )
//! ```

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::keyring::{legacy_keyring_id, KeyringId, KeyringParts};
use super::{CryptoError, IndexKey, Key32, Keyring, MasterKey};

/// The payload format `encode` writes (the slot header names it).
pub(crate) const FORMAT: u8 = 2;
/// The format of keyrings written before index keys were versioned.
pub(crate) const LEGACY_FORMAT: u8 = 1;

const FIXED_LEN: usize = 16 + 4 + 4 + 8 + 4 + 4 + 4;
const MASTER_LEN: usize = 4 + 8 + 32 + 32;
const DESTROYED_LEN: usize = 4 + 8;

/// The encoded keyring in a buffer sized up front (no reallocation leaves key
/// bytes behind) and wiped on drop.
pub(crate) fn encode(keyring: &Keyring) -> Zeroizing<Vec<u8>> {
    let masters = keyring.masters();
    let destroyed = keyring.destroyed_times();
    let mut out = Zeroizing::new(Vec::with_capacity(
        FIXED_LEN + masters.len() * MASTER_LEN + destroyed.len() * DESTROYED_LEN,
    ));
    out.extend_from_slice(&keyring.id().0);
    out.extend_from_slice(&keyring.active().version().to_be_bytes());
    out.extend_from_slice(&keyring.next_version().to_be_bytes());
    out.extend_from_slice(&keyring.last_rotation_ms().to_be_bytes());
    out.extend_from_slice(&keyring.legacy_index_until().to_be_bytes());
    // Bounded by the slot size long before u32: the file refuses oversized payloads.
    out.extend_from_slice(&(masters.len() as u32).to_be_bytes());
    for master in masters {
        out.extend_from_slice(&master.version().to_be_bytes());
        out.extend_from_slice(&master.created_at_ms().to_be_bytes());
        out.extend_from_slice(master.key().expose());
        out.extend_from_slice(master.index_key().key().expose());
    }
    out.extend_from_slice(&(destroyed.len() as u32).to_be_bytes());
    for (version, at_ms) in destroyed {
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&at_ms.to_be_bytes());
    }
    out
}

/// Decodes a payload of the given format.
pub(crate) fn decode(format: u8, payload: &[u8]) -> Result<Keyring, CryptoError> {
    match format {
        FORMAT => decode_current(payload),
        LEGACY_FORMAT => decode_legacy(payload),
        _ => Err(corrupt("unknown keyring format")),
    }
}

fn decode_current(payload: &[u8]) -> Result<Keyring, CryptoError> {
    let mut reader = Reader { rest: payload };
    let id = KeyringId(*reader.take::<16>()?);
    let active = reader.u32()?;
    let next_version = reader.u32()?;
    let last_rotation_ms = reader.i64()?;
    let legacy_index_until = reader.u32()?;
    let count = reader.u32()?;
    let mut masters = BTreeMap::new();
    for _ in 0..count {
        let version = reader.u32()?;
        let created_at_ms = reader.i64()?;
        let key = reader.key()?;
        let index_key = IndexKey::from_key(reader.key()?);
        let master = MasterKey::new(version, key, index_key, created_at_ms);
        if masters.insert(version, master).is_some() {
            return Err(corrupt("a master version appears twice"));
        }
    }
    let destroyed_count = reader.u32()?;
    let mut destroyed = BTreeMap::new();
    for _ in 0..destroyed_count {
        let version = reader.u32()?;
        if destroyed.insert(version, reader.i64()?).is_some() {
            return Err(corrupt("a destroyed version appears twice"));
        }
    }
    reader.finish()?;
    Keyring::from_parts(KeyringParts {
        id,
        masters,
        active,
        next_version,
        last_rotation_ms,
        destroyed,
        legacy_index_until,
        pending: BTreeMap::new(),
        superseded: Vec::new(),
        file_sealed_until: super::keyring::FileSealedUntil::default(),
    })
}

/// A format 1 keyring: every version gets a copy of the one index key, and
/// `legacy_index_until` remembers that they share it.
fn decode_legacy(payload: &[u8]) -> Result<Keyring, CryptoError> {
    let mut reader = Reader { rest: payload };
    let index_key = IndexKey::from_key(reader.key()?);
    let active = reader.u32()?;
    let next_version = reader.u32()?;
    let last_rotation_ms = reader.i64()?;
    let count = reader.u32()?;
    let mut masters = BTreeMap::new();
    for _ in 0..count {
        let version = reader.u32()?;
        let created_at_ms = reader.i64()?;
        let master = MasterKey::new(version, reader.key()?, index_key.clone(), created_at_ms);
        if masters.insert(version, master).is_some() {
            return Err(corrupt("a master version appears twice"));
        }
    }
    reader.finish()?;
    Keyring::from_parts(KeyringParts {
        id: legacy_keyring_id(&index_key),
        masters,
        active,
        next_version,
        last_rotation_ms,
        destroyed: BTreeMap::new(),
        legacy_index_until: next_version,
        pending: BTreeMap::new(),
        superseded: Vec::new(),
        file_sealed_until: super::keyring::FileSealedUntil::default(),
    })
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<&'a [u8; N], CryptoError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(corrupt("the keyring payload is truncated"))?;
        self.rest = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, CryptoError> {
        self.take::<4>().map(|bytes| u32::from_be_bytes(*bytes))
    }

    fn i64(&mut self) -> Result<i64, CryptoError> {
        self.take::<8>().map(|bytes| i64::from_be_bytes(*bytes))
    }

    /// Copies straight from the payload into a zeroizing key.
    fn key(&mut self) -> Result<Key32, CryptoError> {
        let bytes = self.take::<32>()?;
        Key32::from_slice(bytes).ok_or(corrupt("bad key length"))
    }

    fn finish(&self) -> Result<(), CryptoError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(corrupt("trailing bytes after the keyring"))
        }
    }
}

fn corrupt(reason: &'static str) -> CryptoError {
    CryptoError::KeyringCorrupt(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_round_trips_through_the_payload() {
        let mut keyring = Keyring::generate(100);
        keyring.add_version(200);
        keyring.add_version(300);
        keyring.destroy_version(2, 250).expect("destroy");
        let payload = encode(&keyring);
        assert_eq!(payload.len(), FIXED_LEN + 2 * MASTER_LEN + DESTROYED_LEN);
        let decoded = decode(FORMAT, &payload).expect("decode");
        assert_eq!(decoded.id(), keyring.id());
        assert_eq!(decoded.versions(), vec![1, 3]);
        assert_eq!(decoded.active().version(), 3);
        assert_eq!(decoded.next_version(), 4);
        assert_eq!(decoded.last_rotation_ms(), 300);
        assert_eq!(decoded.destroyed_at_ms(2), Some(250));
        assert_eq!(decoded.get(1).map(MasterKey::created_at_ms), Some(100));
        for version in [1, 3] {
            let (a, b) = (decoded.get(version), keyring.get(version));
            assert_eq!(a.map(|m| m.key().expose()), b.map(|m| m.key().expose()));
            assert_eq!(
                a.map(|m| m.index_key().key().expose()),
                b.map(|m| m.index_key().key().expose())
            );
        }
    }

    /// A format 1 payload, laid out by hand as the previous release wrote it.
    fn legacy_payload(index_key: [u8; 32]) -> Vec<u8> {
        let mut out = index_key.to_vec();
        out.extend_from_slice(&3u32.to_be_bytes()); // active
        out.extend_from_slice(&4u32.to_be_bytes()); // next version
        out.extend_from_slice(&30i64.to_be_bytes());
        out.extend_from_slice(&2u32.to_be_bytes());
        for (version, fill) in [(1u32, 0x11u8), (3, 0x33)] {
            out.extend_from_slice(&version.to_be_bytes());
            out.extend_from_slice(&10i64.to_be_bytes());
            out.extend_from_slice(&[fill; 32]);
        }
        out
    }

    #[test]
    fn a_legacy_keyring_shares_its_index_key_and_keeps_a_stable_identity() {
        let keyring = decode(LEGACY_FORMAT, &legacy_payload([7; 32])).expect("decode");
        assert_eq!(keyring.versions(), vec![1, 3]);
        assert_eq!(keyring.index_keys().len(), 1);
        assert_eq!(keyring.index_keys()[0].key().expose(), &[7; 32]);
        assert_eq!(keyring.get(3).map(|m| *m.key().expose()), Some([0x33; 32]));
        assert_eq!(keyring.legacy_index_until(), 4);
        assert_eq!(keyring.destroyed_at_ms(2), Some(0));
        let again = decode(LEGACY_FORMAT, &legacy_payload([7; 32])).expect("decode");
        assert_eq!(keyring.id(), again.id());
        let other = decode(LEGACY_FORMAT, &legacy_payload([8; 32])).expect("decode");
        assert_ne!(keyring.id(), other.id());
        let upgraded = decode(FORMAT, &encode(&keyring)).expect("re-encoded");
        assert_eq!(upgraded.id(), keyring.id());
        assert_eq!(upgraded.legacy_index_until(), 4);
    }

    #[test]
    fn truncated_or_extended_payload_is_corrupt() {
        let payload = encode(&Keyring::generate(0));
        for len in 0..payload.len() {
            assert!(matches!(
                decode(FORMAT, &payload[..len]),
                Err(CryptoError::KeyringCorrupt(_))
            ));
        }
        let mut longer = payload.to_vec();
        longer.push(0);
        assert!(matches!(
            decode(FORMAT, &longer),
            Err(CryptoError::KeyringCorrupt(_))
        ));
        assert!(matches!(
            decode(9, &payload),
            Err(CryptoError::KeyringCorrupt(_))
        ));
    }

    #[test]
    fn payload_breaking_keyring_invariants_is_corrupt() {
        let payload = encode(&Keyring::generate(0));
        let active_at = 16;
        let next_at = 20;
        let count_at = 36;
        let mut missing_active = payload.to_vec();
        missing_active[active_at + 3] = 7;
        let mut version_reused = payload.to_vec();
        version_reused[next_at + 3] = 1;
        let mut duplicate = payload.to_vec();
        duplicate[count_at + 3] = 2;
        duplicate.splice(
            FIXED_LEN - 4..FIXED_LEN - 4,
            payload[FIXED_LEN - 4..FIXED_LEN - 4 + MASTER_LEN]
                .iter()
                .copied(),
        );
        let mut live_and_destroyed = payload.to_vec();
        let destroyed_at = live_and_destroyed.len() - 4;
        live_and_destroyed[destroyed_at + 3] = 1;
        live_and_destroyed.extend_from_slice(&1u32.to_be_bytes());
        live_and_destroyed.extend_from_slice(&5i64.to_be_bytes());
        for bad in [
            missing_active,
            version_reused,
            duplicate,
            live_and_destroyed,
        ] {
            assert!(matches!(
                decode(FORMAT, &bad),
                Err(CryptoError::KeyringCorrupt(_))
            ));
        }
    }
}
