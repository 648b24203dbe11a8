//! The sealed-box format shared by data values and wrapped DEKs:
//! `[format u8][key version u32 BE][nonce 12] || AES-256-GCM ciphertext || tag 16`,
//! with the header appended to the caller's associated data so that the key
//! version and nonce are authenticated too.

use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::{AeadInPlace, Aes256Gcm, KeyInit, Nonce, Tag};
use rand::RngCore;

use super::{CryptoError, Key32};

pub(crate) const FORMAT_V1: u8 = 1;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;

pub(crate) fn cipher_for(key: &Key32) -> Aes256Gcm {
    Aes256Gcm::new(GenericArray::from_slice(key.expose()))
}

/// A fresh 96-bit nonce from `rand::rng()`. Random nonces are safe for up to
/// about 2^32 encryptions per key; DEKs are rotated long before that.
pub(crate) fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

/// Appends a u32 big-endian length and the bytes, so that adjacent fields of
/// associated data can never be re-split into a different (customer, field).
pub(crate) fn push_len_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    // Ids, field names and tokens are bounded far below 4 GiB by the request
    // size limit; a longer one is a programming error, not user input.
    let len = u32::try_from(bytes.len()).expect("associated data field under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The key version in a sealed box's header, checking only length and format.
pub(crate) fn key_version(sealed: &[u8]) -> Result<u32, CryptoError> {
    if sealed.len() < HEADER_LEN + TAG_LEN {
        return Err(CryptoError::Malformed("too short"));
    }
    if sealed[0] != FORMAT_V1 {
        return Err(CryptoError::Malformed("unknown format version"));
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&sealed[1..5]);
    Ok(u32::from_be_bytes(version))
}

/// Length of the plaintext inside a sealed box.
pub(crate) fn plaintext_len(sealed: &[u8]) -> Result<usize, CryptoError> {
    key_version(sealed)?;
    Ok(sealed.len() - HEADER_LEN - TAG_LEN)
}

/// Encrypts `plaintext` under `cipher` with the given nonce. The output buffer is
/// allocated at its final size up front, so the plaintext copied into it for
/// in-place encryption is never left behind by a reallocation.
pub(crate) fn seal(
    cipher: &Aes256Gcm,
    key_version: u32,
    nonce: [u8; NONCE_LEN],
    ad_prefix: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    sealed.push(FORMAT_V1);
    sealed.extend_from_slice(&key_version.to_be_bytes());
    sealed.extend_from_slice(&nonce);
    let ad = associated_data(ad_prefix, &sealed);
    sealed.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &ad, &mut sealed[HEADER_LEN..])
        // Fails only past 64 GiB of plaintext; values are bounded by the request limit.
        .expect("plaintext under the AES-GCM length limit");
    sealed.extend_from_slice(&tag);
    sealed
}

/// Checks the header against `expected_version`, then authenticates and decrypts
/// into `out`, which must be exactly `plaintext_len(sealed)` bytes long.
pub(crate) fn open_into(
    cipher: &Aes256Gcm,
    expected_version: u32,
    ad_prefix: &[u8],
    sealed: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let found = key_version(sealed)?;
    if found != expected_version {
        return Err(CryptoError::KeyVersionMismatch {
            expected: expected_version,
            found,
        });
    }
    let (header, rest) = sealed.split_at(HEADER_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    if out.len() != ciphertext.len() {
        return Err(CryptoError::Malformed("unexpected length"));
    }
    out.copy_from_slice(ciphertext);
    let ad = associated_data(ad_prefix, header);
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&header[5..]),
            &ad,
            out,
            Tag::from_slice(tag),
        )
        .map_err(|_| CryptoError::Authentication)
}

fn associated_data(ad_prefix: &[u8], header: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(ad_prefix.len() + header.len());
    ad.extend_from_slice(ad_prefix);
    ad.extend_from_slice(header);
    ad
}
