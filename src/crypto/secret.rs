use std::fmt;

use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

/// 32 secret key bytes.
///
/// The bytes live behind a `Box` so that moving a `Key32` (into a map, out of a
/// function) moves only the pointer and never leaves a stale copy of the key in
/// the old stack slot; `Zeroizing` wipes the heap copy on drop.
pub struct Key32(Box<Zeroizing<[u8; 32]>>);

impl Key32 {
    /// A fresh key from `rand::rng()`, a CSPRNG reseeded from the OS.
    pub fn generate() -> Key32 {
        let mut key = Key32::zeroed();
        rand::rng().fill_bytes(&mut key.0[..]);
        key
    }

    /// Takes the bytes and wipes the caller's copy that was moved in here; any
    /// other copy the caller made is the caller's to wipe.
    pub fn from_bytes(mut bytes: [u8; 32]) -> Key32 {
        let mut key = Key32::zeroed();
        key.0.copy_from_slice(&bytes);
        bytes.zeroize();
        key
    }

    /// Copies a 32-byte slice straight into the zeroizing box, so decoders need no
    /// intermediate array. `None` when the slice is not 32 bytes long.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Key32> {
        if bytes.len() != 32 {
            return None;
        }
        let mut key = Key32::zeroed();
        key.0.copy_from_slice(bytes);
        Some(key)
    }

    /// The raw bytes, for the cipher and MAC constructors and the keyring encoder
    /// inside this module only: key bytes must never leave the crypto layer.
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    fn zeroed() -> Key32 {
        Key32(Box::new(Zeroizing::new([0u8; 32])))
    }
}

impl Clone for Key32 {
    /// Another zeroizing copy (the keyring is copied, changed and saved before
    /// it replaces the one in use).
    fn clone(&self) -> Key32 {
        let mut key = Key32::zeroed();
        key.0.copy_from_slice(&self.0[..]);
        key
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_differ() {
        assert_ne!(Key32::generate().expose(), Key32::generate().expose());
    }

    #[test]
    fn from_bytes_keeps_the_bytes() {
        assert_eq!(Key32::from_bytes([7u8; 32]).expose(), &[7u8; 32]);
    }

    #[test]
    fn from_slice_refuses_a_wrong_length() {
        assert!(Key32::from_slice(&[1u8; 31]).is_none());
        assert!(Key32::from_slice(&[1u8; 33]).is_none());
        assert_eq!(
            Key32::from_slice(&[1u8; 32]).map(|k| *k.expose()),
            Some([1u8; 32])
        );
    }

    #[test]
    fn debug_of_a_key_is_redacted() {
        let key = Key32::from_bytes([0xab; 32]);
        let printed = format!("{key:?}");
        assert_eq!(printed, "Key32([redacted])");
        assert!(!printed.to_lowercase().contains("abab"));
    }
}
