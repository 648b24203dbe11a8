//! The keyring payload, encoded by hand rather than through serde so that every
//! copy of key bytes is one we can see and wipe:
//!
//! ```text
//! index key 32 | active u32 | next_version u32 | last_rotation_ms i64 | count u32
//! count x ( version u32 | created_at_ms i64 | key 32 )      all integers big-endian
//! ```

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::{CryptoError, IndexKey, Key32, Keyring, MasterKey};

const FIXED_LEN: usize = 32 + 4 + 4 + 8 + 4;
const MASTER_LEN: usize = 4 + 8 + 32;

/// The encoded keyring in a buffer sized up front (no reallocation leaves key
/// bytes behind) and wiped on drop.
pub(crate) fn encode(keyring: &Keyring) -> Zeroizing<Vec<u8>> {
    let masters = keyring.masters();
    let mut out = Zeroizing::new(Vec::with_capacity(FIXED_LEN + masters.len() * MASTER_LEN));
    out.extend_from_slice(keyring.index_key().key().expose());
    out.extend_from_slice(&keyring.active().version().to_be_bytes());
    out.extend_from_slice(&keyring.next_version().to_be_bytes());
    out.extend_from_slice(&keyring.last_rotation_ms().to_be_bytes());
    // Bounded by the slot size long before u32: the file refuses oversized payloads.
    out.extend_from_slice(&(masters.len() as u32).to_be_bytes());
    for master in masters {
        out.extend_from_slice(&master.version().to_be_bytes());
        out.extend_from_slice(&master.created_at_ms().to_be_bytes());
        out.extend_from_slice(master.key().expose());
    }
    out
}

pub(crate) fn decode(payload: &[u8]) -> Result<Keyring, CryptoError> {
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
        let master = MasterKey::new(version, reader.key()?, created_at_ms);
        if masters.insert(version, master).is_some() {
            return Err(corrupt("a master version appears twice"));
        }
    }
    if !reader.rest.is_empty() {
        return Err(corrupt("trailing bytes after the keyring"));
    }
    Keyring::from_parts(index_key, masters, active, next_version, last_rotation_ms)
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
        keyring.destroy_version(2).expect("destroy");
        let payload = encode(&keyring);
        assert_eq!(payload.len(), FIXED_LEN + 2 * MASTER_LEN);
        let decoded = decode(&payload).expect("decode");
        assert_eq!(decoded.versions(), vec![1, 3]);
        assert_eq!(decoded.active().version(), 3);
        assert_eq!(decoded.next_version(), 4);
        assert_eq!(decoded.last_rotation_ms(), 300);
        assert_eq!(decoded.get(1).map(MasterKey::created_at_ms), Some(100));
        assert_eq!(
            decoded.index_key().key().expose(),
            keyring.index_key().key().expose()
        );
        for version in [1, 3] {
            let (a, b) = (decoded.get(version), keyring.get(version));
            assert_eq!(a.map(|m| m.key().expose()), b.map(|m| m.key().expose()));
        }
    }

    #[test]
    fn truncated_or_extended_payload_is_corrupt() {
        let payload = encode(&Keyring::generate(0));
        for len in 0..payload.len() {
            assert!(matches!(
                decode(&payload[..len]),
                Err(CryptoError::KeyringCorrupt(_))
            ));
        }
        let mut longer = payload.to_vec();
        longer.push(0);
        assert!(matches!(
            decode(&longer),
            Err(CryptoError::KeyringCorrupt(_))
        ));
    }

    #[test]
    fn payload_breaking_keyring_invariants_is_corrupt() {
        let payload = encode(&Keyring::generate(0));
        let active_at = 32;
        let next_at = 36;
        let mut missing_active = payload.to_vec();
        missing_active[active_at + 3] = 7;
        let mut version_reused = payload.to_vec();
        version_reused[next_at + 3] = 1;
        let mut duplicate = payload.to_vec();
        duplicate[FIXED_LEN - 1] = 2;
        duplicate.extend_from_slice(&payload[FIXED_LEN..]);
        for bad in [missing_active, version_reused, duplicate] {
            assert!(matches!(decode(&bad), Err(CryptoError::KeyringCorrupt(_))));
        }
    }
}
