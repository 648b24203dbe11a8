//! The keyring sealed version by version (format 3), for a root of trust
//! outside the vault (Transit, an HSM, a KMS): each master version is sealed
//! by material of its own there, so destroying that material leaves every
//! earlier copy of this image unable to open that version.
//!
//! An image is one 64 KiB slot, like format 2's, but not encrypted as a whole:
//! ```text
//! magic "PVKR" | format 3 | generation u64 | payload length u32
//! | SHA-256(what comes before it, and the payload) 32
//! | payload | zeros
//! payload: id 16 | active u32 | next_version u32 | last_rotation_ms i64
//!   | legacy_index_until u32
//!   | count u32 | count x ( version u32 | created_at_ms i64 | handle | sealed )
//!   | destroyed u32 | destroyed x ( version u32 | destroyed_at_ms i64 )
//!   | pending u32 | pending x ( version u32 | handle )
//!   [ | superseded u32 | superseded x ( version u32 | handle )
//!     [ | file_sealed_until_ms i64 | file_sealed_below_version u32 ] ]
//!   | HMAC-SHA256 32 over everything before it
//! handle, sealed: length u16 | bytes
//! ```
//! The superseded section (material a root-of-trust rotation replaced, not
//! yet destroyed) and the time a root key file stopped sealing the keyring
//! are written only when there is something to say (the first, possibly
//! empty, whenever the second is), so images of keyrings that never had
//! either read the same as before they existed.
//! The checksum finds torn writes (the newer of two slots that checks out is
//! used). The HMAC, under a key derived from the active master version,
//! authenticates the rest once the root of trust has unsealed that version:
//! the versions themselves are authenticated by the root of trust, bound to
//! the keyring's id and their version number.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::keyring::{FileSealedUntil, KeyringParts, VersionSeal};
use super::{CryptoError, Keyring, KeyringId, MasterKey};

pub(crate) const MAGIC: &[u8; 4] = b"PVKR";
/// The format byte of a keyring sealed version by version.
pub const FORMAT: u8 = 3;
pub(crate) const SLOT_LEN: usize = 64 * 1024;
const HEADER_LEN: usize = 4 + 1 + 8 + 4 + 32;
const MAX_PAYLOAD_LEN: usize = SLOT_LEN - HEADER_LEN;
const MAC_LEN: usize = 32;
const MAC_LABEL: &[u8] = b"piivault.keyring-mac.v1";

/// A format 3 image as read, before the root of trust has opened its
/// versions: what to unseal, and what to check once they are open.
#[derive(Debug)]
pub struct SealedKeyring {
    pub generation: u64,
    pub id: KeyringId,
    /// Each live version: when it was created, and how it is sealed.
    pub versions: BTreeMap<u32, (i64, VersionSeal)>,
    active: u32,
    next_version: u32,
    last_rotation_ms: i64,
    legacy_index_until: u32,
    destroyed: BTreeMap<u32, i64>,
    pending: BTreeMap<u32, Vec<u8>>,
    superseded: Vec<(u32, Vec<u8>)>,
    file_sealed_until: FileSealedUntil,
    authenticated: Vec<u8>,
    mac: [u8; MAC_LEN],
}

/// Whether an image is a format 3 keyring (and not format 1 or 2, which the
/// root key seals as a whole).
pub fn is_sealed_by_version(image: &[u8]) -> bool {
    image.len() >= 5 && &image[..4] == MAGIC && image[4] == FORMAT
}

/// The image of `keyring`, every live version of which must carry the seal
/// its root of trust made.
pub fn encode_image(keyring: &Keyring, generation: u64) -> Result<Vec<u8>, CryptoError> {
    let payload = encode_payload(keyring)?;
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(CryptoError::KeyringTooLarge {
            payload_len: payload.len(),
            max: MAX_PAYLOAD_LEN,
        });
    }
    let mut image = vec![0u8; SLOT_LEN];
    image[..4].copy_from_slice(MAGIC);
    image[4] = FORMAT;
    image[5..13].copy_from_slice(&generation.to_be_bytes());
    image[13..17].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    let checksum = checksum(&image[..17], &payload);
    image[17..49].copy_from_slice(&checksum);
    image[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(&payload);
    Ok(image)
}

/// Reads an image whose checksum holds; `KeyringCorrupt` otherwise.
pub fn decode_image(image: &[u8]) -> Result<SealedKeyring, CryptoError> {
    if image.len() != SLOT_LEN || !is_sealed_by_version(image) {
        return Err(corrupt("not a keyring sealed version by version"));
    }
    let generation = u64::from_be_bytes(image[5..13].try_into().unwrap_or_default());
    let payload_len = u32::from_be_bytes(image[13..17].try_into().unwrap_or_default()) as usize;
    if !(MAC_LEN..=MAX_PAYLOAD_LEN).contains(&payload_len) {
        return Err(corrupt("impossible payload length"));
    }
    let payload = &image[HEADER_LEN..HEADER_LEN + payload_len];
    if checksum(&image[..17], payload) != image[17..49] {
        return Err(corrupt("the checksum does not match (a torn write?)"));
    }
    decode_payload(generation, payload)
}

fn checksum(header: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(header);
    hash.update(payload);
    hash.finalize().into()
}

impl SealedKeyring {
    /// The keyring, from every live version as its root of trust unsealed it
    /// (`unsealed[v]` is what `MasterKey::sealing_secret` gave). Checks the
    /// HMAC under the active version: a keyring altered anywhere is refused.
    pub fn open(
        self,
        mut unsealed: BTreeMap<u32, Zeroizing<Vec<u8>>>,
    ) -> Result<Keyring, CryptoError> {
        let mut masters = BTreeMap::new();
        for (version, (created_at_ms, seal)) in self.versions {
            let secret = unsealed
                .remove(&version)
                .ok_or(corrupt("a live version was not unsealed"))?;
            let master = MasterKey::from_sealing_secret(version, created_at_ms, &secret, seal)?;
            masters.insert(version, master);
        }
        let active = masters
            .get(&self.active)
            .ok_or(corrupt("the active master version is missing"))?;
        let mut mac = keyring_mac(active);
        mac.update(&self.authenticated);
        mac.verify_slice(&self.mac)
            .map_err(|_| corrupt("the keyring's HMAC does not match: it was altered"))?;
        Keyring::from_parts(KeyringParts {
            id: self.id,
            masters,
            active: self.active,
            next_version: self.next_version,
            last_rotation_ms: self.last_rotation_ms,
            destroyed: self.destroyed,
            legacy_index_until: self.legacy_index_until,
            pending: self.pending,
            superseded: self.superseded,
            file_sealed_until: self.file_sealed_until,
        })
    }
}

/// The HMAC that authenticates a payload, keyed by a key derived from the
/// active master version (never the key itself).
fn keyring_mac(active: &MasterKey) -> Hmac<Sha256> {
    let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(active.key().expose())
        .expect("HMAC takes any key length");
    derive.update(MAC_LABEL);
    let mac_key: Zeroizing<[u8; 32]> = Zeroizing::new(derive.finalize().into_bytes().into());
    <Hmac<Sha256> as Mac>::new_from_slice(&mac_key[..]).expect("HMAC takes any key length")
}

fn encode_payload(keyring: &Keyring) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::new();
    out.extend_from_slice(&keyring.id().0);
    out.extend_from_slice(&keyring.active().version().to_be_bytes());
    out.extend_from_slice(&keyring.next_version().to_be_bytes());
    out.extend_from_slice(&keyring.last_rotation_ms().to_be_bytes());
    out.extend_from_slice(&keyring.legacy_index_until().to_be_bytes());
    out.extend_from_slice(&(keyring.masters().len() as u32).to_be_bytes());
    for master in keyring.masters() {
        let seal = master
            .seal()
            .ok_or(corrupt("a master version has no root-of-trust seal"))?;
        out.extend_from_slice(&master.version().to_be_bytes());
        out.extend_from_slice(&master.created_at_ms().to_be_bytes());
        push_short(&mut out, &seal.handle)?;
        push_short(&mut out, &seal.sealed)?;
    }
    let destroyed = keyring.destroyed_times();
    out.extend_from_slice(&(destroyed.len() as u32).to_be_bytes());
    for (version, at_ms) in destroyed {
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&at_ms.to_be_bytes());
    }
    let pending = keyring.pending_destructions();
    out.extend_from_slice(&(pending.len() as u32).to_be_bytes());
    for (version, handle) in pending {
        out.extend_from_slice(&version.to_be_bytes());
        push_short(&mut out, handle)?;
    }
    let superseded = keyring.superseded();
    let file_sealed_until = keyring.file_sealed_until();
    let file_sealed = file_sealed_until != FileSealedUntil::default();
    if !superseded.is_empty() || file_sealed {
        out.extend_from_slice(&(superseded.len() as u32).to_be_bytes());
        for (version, handle) in superseded {
            out.extend_from_slice(&version.to_be_bytes());
            push_short(&mut out, handle)?;
        }
    }
    if file_sealed {
        out.extend_from_slice(&file_sealed_until.at_ms.to_be_bytes());
        out.extend_from_slice(&file_sealed_until.below_version.to_be_bytes());
    }
    let mut mac = keyring_mac(keyring.active());
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}

fn decode_payload(generation: u64, payload: &[u8]) -> Result<SealedKeyring, CryptoError> {
    let (authenticated, mac) = payload.split_at(payload.len() - MAC_LEN);
    let mut reader = Reader {
        rest: authenticated,
    };
    let id = KeyringId(reader.take::<16>()?);
    let active = reader.u32()?;
    let next_version = reader.u32()?;
    let last_rotation_ms = reader.i64()?;
    let legacy_index_until = reader.u32()?;
    let mut versions = BTreeMap::new();
    for _ in 0..reader.u32()? {
        let version = reader.u32()?;
        let created_at_ms = reader.i64()?;
        let seal = VersionSeal {
            handle: reader.short()?,
            sealed: reader.short()?,
        };
        if versions.insert(version, (created_at_ms, seal)).is_some() {
            return Err(corrupt("a master version appears twice"));
        }
    }
    let mut destroyed = BTreeMap::new();
    for _ in 0..reader.u32()? {
        let version = reader.u32()?;
        destroyed.insert(version, reader.i64()?);
    }
    let mut pending = BTreeMap::new();
    for _ in 0..reader.u32()? {
        let version = reader.u32()?;
        pending.insert(version, reader.short()?);
    }
    let mut superseded = Vec::new();
    if !reader.rest.is_empty() {
        for _ in 0..reader.u32()? {
            let version = reader.u32()?;
            superseded.push((version, reader.short()?));
        }
    }
    let file_sealed_until = if reader.rest.is_empty() {
        FileSealedUntil::default()
    } else {
        FileSealedUntil {
            at_ms: reader.i64()?,
            below_version: reader.u32()?,
        }
    };
    if !reader.rest.is_empty() {
        return Err(corrupt("trailing bytes after the keyring"));
    }
    Ok(SealedKeyring {
        generation,
        id,
        versions,
        active,
        next_version,
        last_rotation_ms,
        legacy_index_until,
        destroyed,
        pending,
        superseded,
        file_sealed_until,
        authenticated: authenticated.to_vec(),
        mac: mac.try_into().unwrap_or([0; MAC_LEN]),
    })
}

fn push_short(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), CryptoError> {
    let len = u16::try_from(bytes.len()).map_err(|_| corrupt("a handle or seal over 64 KiB"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], CryptoError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(corrupt("the keyring payload is truncated"))?;
        self.rest = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, CryptoError> {
        self.take::<4>().map(u32::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, CryptoError> {
        self.take::<8>().map(i64::from_be_bytes)
    }

    fn short(&mut self) -> Result<Vec<u8>, CryptoError> {
        let len = u16::from_be_bytes(self.take::<2>()?) as usize;
        if self.rest.len() < len {
            return Err(corrupt("the keyring payload is truncated"));
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(bytes.to_vec())
    }
}

fn corrupt(reason: &'static str) -> CryptoError {
    CryptoError::KeyringCorrupt(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals every version the way a root of trust would: here by keeping
    /// the secret in the clear inside `sealed`, which is all this codec sees.
    fn sealed_keyring() -> Keyring {
        let mut keyring = Keyring::generate(10);
        keyring.add_version(20);
        for version in keyring.unsealed_versions() {
            let secret = keyring.get(version).expect("live").sealing_secret();
            let seal = VersionSeal {
                handle: format!("handle-{version}").into_bytes(),
                sealed: secret.to_vec(),
            };
            keyring.set_seal(version, seal);
        }
        keyring
    }

    fn unsealed(sealed: &SealedKeyring) -> BTreeMap<u32, Zeroizing<Vec<u8>>> {
        sealed
            .versions
            .iter()
            .map(|(v, (_, seal))| (*v, Zeroizing::new(seal.sealed.clone())))
            .collect()
    }

    #[test]
    fn a_keyring_round_trips_with_its_seals_and_pending_destructions() {
        let mut keyring = sealed_keyring();
        keyring.add_version(30);
        let secret = keyring.get(3).expect("live").sealing_secret();
        keyring.set_seal(
            3,
            VersionSeal {
                handle: b"handle-3".to_vec(),
                sealed: secret.to_vec(),
            },
        );
        keyring.destroy_version(1, 35).expect("retire");
        assert!(keyring.is_retired(1) && !keyring.is_destroyed(1));
        let image = encode_image(&keyring, 9).expect("encode");
        assert_eq!(image.len(), SLOT_LEN);
        let sealed = decode_image(&image).expect("decode");
        assert_eq!(sealed.generation, 9);
        let map = unsealed(&sealed);
        let opened = sealed.open(map).expect("open");
        assert_eq!(opened.versions(), vec![2, 3]);
        assert_eq!(opened.active().version(), 3);
        assert_eq!(
            opened.pending_destructions().get(&1),
            Some(&b"handle-1".to_vec())
        );
        assert_eq!(opened.destroyed_at_ms(1), None);
        assert_eq!(
            opened.get(2).map(|m| m.sealing_secret().to_vec()),
            keyring.get(2).map(|m| m.sealing_secret().to_vec())
        );
        let mut confirmed = opened.clone();
        confirmed.confirm_destroyed(1, 40);
        assert_eq!(confirmed.destroyed_at_ms(1), Some(40));
        assert!(confirmed.pending_destructions().is_empty());
    }

    #[test]
    fn superseded_material_round_trips_and_keeps_its_version_from_counting_as_destroyed() {
        let mut keyring = sealed_keyring();
        let without = encode_image(&keyring, 1).expect("encode");
        keyring.supersede_seal(1);
        let secret = keyring.get(1).expect("live").sealing_secret();
        keyring.set_seal(
            1,
            VersionSeal {
                handle: b"handle-1-anew".to_vec(),
                sealed: secret.to_vec(),
            },
        );
        let image = encode_image(&keyring, 2).expect("encode");
        let sealed = decode_image(&image).expect("decode");
        let map = unsealed(&sealed);
        let mut opened = sealed.open(map).expect("open");
        assert_eq!(opened.superseded(), &[(1, b"handle-1".to_vec())]);
        assert_eq!(
            opened
                .get(1)
                .and_then(|m| m.seal())
                .map(|s| s.handle.clone()),
            Some(b"handle-1-anew".to_vec())
        );
        opened.destroy_version(1, 50).expect("retire");
        opened.confirm_destroyed(1, 60);
        assert!(!opened.is_destroyed(1), "its superseded material remains");
        opened.confirm_superseded_destroyed(b"handle-1");
        assert!(opened.is_destroyed(1));
        // The time a root key file stopped sealing it, and the versions
        // then, round-trip too, with or without superseded material.
        opened.record_file_sealing_ended(70);
        let image = encode_image(&opened, 3).expect("encode");
        let sealed = decode_image(&image).expect("decode");
        let map = unsealed(&sealed);
        let reopened = sealed.open(map).expect("open");
        assert_eq!(reopened.file_sealed_until(), opened.file_sealed_until());
        assert_eq!(reopened.file_sealed_until().below_version, 3);
        assert!(reopened.superseded().is_empty());
        // An image without superseded material is what it was before the
        // section existed, and reads back without any.
        let earlier = decode_image(&without).expect("decode");
        let map = unsealed(&earlier);
        assert!(earlier.open(map).expect("open").superseded().is_empty());
    }

    #[test]
    fn a_version_without_its_seal_is_not_written() {
        let mut keyring = sealed_keyring();
        keyring.add_version(30);
        assert!(matches!(
            encode_image(&keyring, 1),
            Err(CryptoError::KeyringCorrupt(_))
        ));
    }

    #[test]
    fn a_torn_or_altered_image_is_refused() {
        let image = encode_image(&sealed_keyring(), 1).expect("encode");
        for at in [5, 14, 20, HEADER_LEN + 3, HEADER_LEN + 40] {
            let mut torn = image.clone();
            torn[at] ^= 1;
            assert!(decode_image(&torn).is_err(), "byte {at}");
        }
        assert!(decode_image(&image[..100]).is_err());
    }

    #[test]
    fn an_image_altered_with_a_fresh_checksum_fails_its_hmac() {
        let image = encode_image(&sealed_keyring(), 1).expect("encode");
        let payload_len = u32::from_be_bytes(image[13..17].try_into().expect("4")) as usize;
        let mut altered = image.clone();
        // last_rotation_ms, after id 16, active 4 and next_version 4.
        altered[HEADER_LEN + 24 + 7] ^= 1;
        let fresh = checksum(
            &altered[..17],
            &altered[HEADER_LEN..HEADER_LEN + payload_len],
        );
        altered[17..49].copy_from_slice(&fresh);
        let sealed = decode_image(&altered).expect("the checksum holds");
        let map = unsealed(&sealed);
        assert!(matches!(
            sealed.open(map),
            Err(CryptoError::KeyringCorrupt(reason)) if reason.contains("HMAC")
        ));
    }

    #[test]
    fn only_format_3_images_count_as_sealed_by_version() {
        let image = encode_image(&sealed_keyring(), 1).expect("encode");
        assert!(is_sealed_by_version(&image));
        let mut format_2 = image.clone();
        format_2[4] = 2;
        assert!(!is_sealed_by_version(&format_2));
        assert!(!is_sealed_by_version(b"PV"));
    }
}
