//! API keys: making them, hashing them for policy files, and finding the
//! principal a presented key belongs to without leaking which one through timing.

use data_encoding::{BASE32_NOPAD, HEXLOWER};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// sha256 hex of an API key, for writing policy files (used by serve --dev and docs).
pub fn api_key_sha256_hex(api_key: &str) -> String {
    HEXLOWER.encode(&api_key_sha256(api_key))
}

pub(super) fn api_key_sha256(api_key: &str) -> [u8; 32] {
    Sha256::digest(api_key.as_bytes()).into()
}

/// A new random API key: "pv_" + 32 lowercase base32 chars (160 bits).
/// The prefix lets secret scanners recognise a leaked key.
pub fn generate_api_key() -> String {
    let mut key_bytes = [0u8; 20];
    // The thread RNG is a CSPRNG seeded from the OS, documented as fit for keys.
    rand::fill(&mut key_bytes);
    format!(
        "pv_{}",
        BASE32_NOPAD.encode(&key_bytes).to_ascii_lowercase()
    )
}

/// Index of the stored hash equal to `presented`. Every candidate is compared
/// in constant time and the loop never exits early, so the time taken depends
/// only on how many candidates there are, not on which one (if any) matched.
pub(super) fn find_matching_hash<'a>(
    presented: &[u8; 32],
    candidates: impl Iterator<Item = &'a [u8; 32]>,
) -> Option<usize> {
    let mut found = Choice::from(0);
    let mut matched_index = 0u64;
    for (index, candidate) in candidates.enumerate() {
        let is_match = presented.ct_eq(candidate);
        matched_index.conditional_assign(&(index as u64), is_match);
        found |= is_match;
    }
    bool::from(found).then_some(matched_index as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_hash_matches_a_known_sha256() {
        assert_eq!(
            api_key_sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn generated_keys_have_the_prefix_and_160_bits_of_lowercase_base32() {
        let key = generate_api_key();
        let body = key.strip_prefix("pv_").expect("key starts with pv_");
        assert_eq!(body.len(), 32);
        assert!(body
            .chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
        assert_ne!(generate_api_key(), key);
    }

    #[test]
    fn matching_hash_is_found_wherever_it_is() {
        let hashes = [[1u8; 32], [2u8; 32], [3u8; 32]];
        assert_eq!(find_matching_hash(&[1u8; 32], hashes.iter()), Some(0));
        assert_eq!(find_matching_hash(&[3u8; 32], hashes.iter()), Some(2));
        assert_eq!(find_matching_hash(&[4u8; 32], hashes.iter()), None);
        assert_eq!(find_matching_hash(&[1u8; 32], [].iter()), None);
    }
}
