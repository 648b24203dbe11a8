use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Key32;

const BLIND_INDEX_LABEL: &[u8] = b"piivault.blind-index.v1";
const DET_TOKEN_LABEL: &[u8] = b"piivault.det-token.v1";
const REQUEST_LABEL: &[u8] = b"piivault.request.v1";

/// The HMAC-SHA256 key behind blind indexes. Each master key version has its
/// own: a rotation recomputes every customer's index entries under the new
/// one, and retiring the old version destroys the old key, so index entries
/// left in old copies of the store can no longer be tested against guesses.
#[derive(Debug, Clone)]
pub struct IndexKey(Key32);

impl IndexKey {
    pub fn generate() -> IndexKey {
        IndexKey(Key32::generate())
    }

    pub(crate) fn from_key(key: Key32) -> IndexKey {
        IndexKey(key)
    }

    pub(crate) fn key(&self) -> &Key32 {
        &self.0
    }

    /// Lets the store find records by value without storing the value: equal
    /// (field, kind, normalized value) give equal indexes, across customers.
    pub fn blind_index(&self, field_name: &str, kind: &str, normalized_value: &str) -> [u8; 32] {
        let mut mac = self.mac(BLIND_INDEX_LABEL);
        for part in [field_name, kind, normalized_value] {
            update_len_prefixed(&mut mac, part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    fn mac(&self, label: &[u8]) -> Hmac<Sha256> {
        labelled_mac(&self.0, label)
    }
}

/// One customer's key behind their `DETERMINISTIC` tokens: random, wrapped
/// under the master key like their DEK, and destroyed with them, so a token
/// left in an old copy of the store cannot be tested against guesses once the
/// customer is erased and the version that wrapped it retired.
#[derive(Debug, Clone)]
pub struct TokenKey(Key32);

impl TokenKey {
    pub fn generate() -> TokenKey {
        TokenKey(Key32::generate())
    }

    pub(crate) fn from_key(key: Key32) -> TokenKey {
        TokenKey(key)
    }

    pub(crate) fn key(&self) -> &Key32 {
        &self.0
    }

    /// The secret behind a `DETERMINISTIC` token: the same customer, scope, kind
    /// and value give the same 128 bits, anything else differs. 128 bits keep
    /// collisions out of reach while the token stays short.
    pub fn deterministic_token(
        &self,
        customer_id: &str,
        scope: &str,
        kind: &str,
        normalized_value: &str,
    ) -> [u8; 16] {
        let mut mac = labelled_mac(&self.0, DET_TOKEN_LABEL);
        for part in [customer_id, scope, kind, normalized_value] {
            update_len_prefixed(&mut mac, part.as_bytes());
        }
        let full = mac.finalize().into_bytes();
        let mut token = [0u8; 16];
        token.copy_from_slice(&full[..16]);
        token
    }

    /// What a request is remembered by, so that a retry can be recognised
    /// without keeping its values: the same customer and parts give the same
    /// digest, and it cannot be tested against guesses once the key is gone.
    pub fn request_digest<'a>(
        &self,
        customer_id: &str,
        parts: impl IntoIterator<Item = &'a str>,
    ) -> [u8; 32] {
        let mut mac = labelled_mac(&self.0, REQUEST_LABEL);
        update_len_prefixed(&mut mac, customer_id.as_bytes());
        for part in parts {
            update_len_prefixed(&mut mac, part.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }
}

/// A MAC already fed the domain label, so that no two uses of keys can ever
/// produce the same output for different inputs.
fn labelled_mac(key: &Key32, label: &[u8]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose())
        .expect("HMAC accepts keys of any length");
    update_len_prefixed(&mut mac, label);
    mac
}

/// Length prefixes make the input encoding injective: ("ab", "c") and ("a", "bc")
/// are different messages.
fn update_len_prefixed(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    // Inputs are field names, kinds and normalized values: far below 4 GiB.
    let len = u32::try_from(bytes.len()).expect("HMAC input part under 4 GiB");
    mac.update(&len.to_be_bytes());
    mac.update(bytes);
}

#[cfg(test)]
mod tests {
    use data_encoding::HEXLOWER;

    use super::*;

    fn fixed_key() -> IndexKey {
        let bytes: Vec<u8> = (0x20u8..0x40).collect();
        IndexKey::from_key(Key32::from_slice(&bytes).expect("32 bytes"))
    }

    /// Expected values computed independently with Python `hmac` + `hashlib`.
    #[test]
    fn known_answer_for_a_blind_index() {
        let index = fixed_key().blind_index("email_home", "email", "alice@example.com");
        assert_eq!(
            HEXLOWER.encode(&index),
            "9593580bd9ad0daa1dd7a11d0134d8d760ca9ba1f8f8d1be6d8b4ef834b6af86"
        );
    }

    #[test]
    fn known_answer_for_a_deterministic_token() {
        let bytes: Vec<u8> = (0x20u8..0x40).collect();
        let key = TokenKey::from_key(Key32::from_slice(&bytes).expect("32 bytes"));
        let token = key.deterministic_token("cust_42", "value", "ssn", "123456789");
        assert_eq!(HEXLOWER.encode(&token), "5f299ac34093ce42507b79e7131cf618");
    }

    #[test]
    fn same_inputs_give_the_same_token_and_others_differ() {
        let key = TokenKey::generate();
        let token = key.deterministic_token("c1", "value", "ssn", "123456789");
        assert_eq!(
            token,
            key.deterministic_token("c1", "value", "ssn", "123456789")
        );
        assert_ne!(
            token,
            key.deterministic_token("c2", "value", "ssn", "123456789")
        );
        assert_ne!(
            token,
            key.deterministic_token("c1", "field:ssn", "ssn", "123456789")
        );
        assert_ne!(
            token,
            key.deterministic_token("c1", "value", "phone", "123456789")
        );
        assert_ne!(
            token,
            key.deterministic_token("c1", "value", "ssn", "123456780")
        );
        assert_ne!(
            token,
            TokenKey::generate().deterministic_token("c1", "value", "ssn", "123456789")
        );
    }

    #[test]
    fn blind_index_depends_on_every_input_and_not_on_where_parts_split() {
        let key = IndexKey::generate();
        let index = key.blind_index("email", "email", "a@b.c");
        assert_eq!(index, key.blind_index("email", "email", "a@b.c"));
        assert_ne!(index, key.blind_index("email_home", "email", "a@b.c"));
        assert_ne!(index, key.blind_index("email", "text", "a@b.c"));
        assert_ne!(
            key.blind_index("ab", "c", "d"),
            key.blind_index("a", "bc", "d")
        );
    }

    #[test]
    fn blind_index_and_token_are_domain_separated() {
        let key = IndexKey::generate();
        let index = key.blind_index("s", "k", "v");
        let token = TokenKey::from_key(key.key().clone()).deterministic_token("s", "k", "v", "");
        assert_ne!(&index[..16], &token[..]);
    }

    #[test]
    fn debug_of_an_index_key_is_redacted() {
        let printed = format!("{:?}", fixed_key());
        assert!(printed.contains("redacted"));
        assert!(!printed.contains("2021"));
    }
}
