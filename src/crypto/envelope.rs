use std::fmt;

use aes_gcm::Aes256Gcm;
use zeroize::Zeroizing;

use super::sealed::{self, NONCE_LEN};
use super::{CryptoError, Key32};

const VALUE_AD_LABEL: &[u8] = b"piivault.value.v1";

/// A customer's data encryption key. Stored only wrapped under a master key.
#[derive(Debug)]
pub struct Dek(Key32);

impl Dek {
    pub fn generate() -> Dek {
        Dek(Key32::generate())
    }

    pub(crate) fn from_key(key: Key32) -> Dek {
        Dek(key)
    }

    pub(crate) fn key(&self) -> &Key32 {
        &self.0
    }
}

/// Where a ciphertext belongs. It becomes the associated data, so a ciphertext
/// copied to another customer, field, token or record fails to decrypt.
///
/// `Field`, `Token` and `Record` are the first layout, kept to read customers
/// whose record says they were sealed with it (`binding_version` 1). The
/// `Bound*` variants add what drives disclosure: a field's kind and token, a
/// standalone token's kind and format, and the ledger's record revision.
#[derive(Debug, Clone, Copy)]
pub enum Binding<'a> {
    Field {
        customer_id: &'a str,
        field: &'a str,
    },
    Token {
        customer_id: &'a str,
        token: &'a str,
    },
    Record {
        customer_id: &'a str,
        label: &'a str,
    },
    /// A field's value: its kind (which drives disclosure) and the token that
    /// stands for it, so neither can be relabelled or re-pointed.
    BoundField {
        customer_id: &'a str,
        field: &'a str,
        kind: &'a str,
        token: &'a str,
    },
    /// A standalone token's value, with the kind and token format it was issued as.
    BoundToken {
        customer_id: &'a str,
        token: &'a str,
        kind: &'a str,
        format: &'a str,
    },
    /// A customer-level record (the privacy ledger) at one revision of the
    /// customer record, so an older ciphertext put back into a newer record fails.
    BoundRecord {
        customer_id: &'a str,
        label: &'a str,
        revision: u64,
    },
}

impl Binding<'_> {
    /// `label || variant tag || len-prefixed customer || len-prefixed name`,
    /// then for the bound variants (tags 4 to 6): len-prefixed kind and token
    /// (4), len-prefixed kind and format (5), or the revision as u64 BE (6).
    /// The tag keeps a field and a token of the same name apart, and the
    /// first layout apart from the second.
    fn associated_data(&self) -> Vec<u8> {
        let (tag, customer_id, name) = match *self {
            Binding::Field { customer_id, field } => (1u8, customer_id, field),
            Binding::Token { customer_id, token } => (2u8, customer_id, token),
            Binding::Record { customer_id, label } => (3u8, customer_id, label),
            Binding::BoundField {
                customer_id, field, ..
            } => (4u8, customer_id, field),
            Binding::BoundToken {
                customer_id, token, ..
            } => (5u8, customer_id, token),
            Binding::BoundRecord {
                customer_id, label, ..
            } => (6u8, customer_id, label),
        };
        let mut ad = Vec::with_capacity(VALUE_AD_LABEL.len() + 33 + customer_id.len() + name.len());
        ad.extend_from_slice(VALUE_AD_LABEL);
        ad.push(tag);
        sealed::push_len_prefixed(&mut ad, customer_id.as_bytes());
        sealed::push_len_prefixed(&mut ad, name.as_bytes());
        match *self {
            Binding::BoundField { kind, token, .. } => {
                sealed::push_len_prefixed(&mut ad, kind.as_bytes());
                sealed::push_len_prefixed(&mut ad, token.as_bytes());
            }
            Binding::BoundToken { kind, format, .. } => {
                sealed::push_len_prefixed(&mut ad, kind.as_bytes());
                sealed::push_len_prefixed(&mut ad, format.as_bytes());
            }
            Binding::BoundRecord { revision, .. } => ad.extend_from_slice(&revision.to_be_bytes()),
            Binding::Field { .. } | Binding::Token { .. } | Binding::Record { .. } => {}
        }
        ad
    }
}

/// A DEK's AES-256-GCM cipher, expanded once and cached by the caller, with the
/// DEK's version. The AES round keys are wiped on drop (`aes` built with its
/// `zeroize` feature; see the test below).
pub struct DataCipher {
    cipher: Aes256Gcm,
    key_version: u32,
}

impl DataCipher {
    pub fn new(dek: &Dek, key_version: u32) -> DataCipher {
        DataCipher {
            cipher: sealed::cipher_for(dek.key()),
            key_version,
        }
    }

    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    /// `[1][key_version u32 BE][random nonce 12] || ciphertext || tag`.
    pub fn encrypt(&self, binding: &Binding, plaintext: &[u8]) -> Vec<u8> {
        self.encrypt_with_nonce(binding, plaintext, sealed::random_nonce())
    }

    /// Checks length and format (`Malformed`), key version (`KeyVersionMismatch`),
    /// then authenticates (`Authentication`). Never panics on arbitrary bytes.
    pub fn decrypt(
        &self,
        binding: &Binding,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut plaintext = Zeroizing::new(vec![0u8; sealed::plaintext_len(ciphertext)?]);
        sealed::open_into(
            &self.cipher,
            self.key_version,
            &binding.associated_data(),
            ciphertext,
            &mut plaintext,
        )?;
        Ok(plaintext)
    }

    /// The nonce is a parameter only so known-answer tests can fix it.
    fn encrypt_with_nonce(
        &self,
        binding: &Binding,
        plaintext: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Vec<u8> {
        sealed::seal(
            &self.cipher,
            self.key_version,
            nonce,
            &binding.associated_data(),
            plaintext,
        )
    }
}

impl fmt::Debug for DataCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataCipher")
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

/// The DEK version a ciphertext was made with, so the caller can fetch the right
/// DEK before decrypting. Checks only length and format.
pub fn key_version_of(ciphertext: &[u8]) -> Result<u32, CryptoError> {
    sealed::key_version(ciphertext)
}

#[cfg(test)]
mod tests {
    use data_encoding::HEXLOWER;

    use super::*;

    const CUSTOMER: &str = "cust_42";
    const SSN_FIELD: Binding<'static> = Binding::Field {
        customer_id: CUSTOMER,
        field: "ssn",
    };

    fn cipher(version: u32) -> DataCipher {
        DataCipher::new(&Dek::generate(), version)
    }

    fn fixed_cipher() -> DataCipher {
        let bytes: Vec<u8> = (0u8..32).collect();
        let key = Key32::from_slice(&bytes).expect("32 bytes");
        DataCipher::new(&Dek::from_key(key), 7)
    }

    fn fixed_nonce() -> [u8; NONCE_LEN] {
        std::array::from_fn(|i| 0xa0 + i as u8)
    }

    /// Expected bytes computed independently with Python `cryptography` (AESGCM)
    /// from the documented header and associated data layout.
    #[test]
    fn known_answer_for_a_field_value() {
        let sealed = fixed_cipher().encrypt_with_nonce(&SSN_FIELD, b"123-45-6789", fixed_nonce());
        assert_eq!(
            HEXLOWER.encode(&sealed),
            "0100000007a0a1a2a3a4a5a6a7a8a9aaab\
             d72a4f0071fe2f89555dbe\
             7afba7671f8d670e036de1a78668f4f4"
        );
        let opened = fixed_cipher()
            .decrypt(&SSN_FIELD, &sealed)
            .expect("decrypt");
        assert_eq!(&opened[..], b"123-45-6789");
    }

    const SSN_BOUND: Binding<'static> = Binding::BoundField {
        customer_id: CUSTOMER,
        field: "ssn",
        kind: "ssn",
        token: "tok_ssn1",
    };

    fn assert_known_answer(binding: Binding, plaintext: &[u8], expected: &str) {
        let sealed = fixed_cipher().encrypt_with_nonce(&binding, plaintext, fixed_nonce());
        assert_eq!(HEXLOWER.encode(&sealed), expected);
        let opened = fixed_cipher().decrypt(&binding, &sealed).expect("decrypt");
        assert_eq!(&opened[..], plaintext);
    }

    /// The bound layouts, computed independently the same way.
    #[test]
    fn known_answers_for_the_bound_layouts() {
        assert_known_answer(
            SSN_BOUND,
            b"123-45-6789",
            "0100000007a0a1a2a3a4a5a6a7a8a9aaab\
             d72a4f0071fe2f89555dbe\
             d2035d8764f7a6efac87a0cd042ac4d4",
        );
        assert_known_answer(
            Binding::BoundToken {
                customer_id: CUSTOMER,
                token: "tok_abc",
                kind: "card_number",
                format: "random",
            },
            b"4111111111111111",
            "0100000007a0a1a2a3a4a5a6a7a8a9aaab\
             d2294d1c74fa338e5354b6e2364bf1ef\
             6b12c378c2b8052175d8324ceebe1054",
        );
        assert_known_answer(
            Binding::BoundRecord {
                customer_id: CUSTOMER,
                label: "privacy-ledger",
                revision: 9,
            },
            b"ledger",
            "0100000007a0a1a2a3a4a5a6a7a8a9aaab\
             8a7d184a20b9\
             2b78034da61f9f7c0bd146dbe0af5cf4",
        );
    }

    fn assert_bound_fails_under(sealed_with: Binding, opened_with: Binding) {
        let cipher = cipher(1);
        let sealed = cipher.encrypt(&sealed_with, b"4111111111111111");
        assert!(matches!(
            cipher.decrypt(&opened_with, &sealed),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn a_bound_field_relabelled_or_re_tokened_fails_to_decrypt() {
        let card = Binding::BoundField {
            customer_id: CUSTOMER,
            field: "pan",
            kind: "card_number",
            token: "tok_1",
        };
        let relabelled = Binding::BoundField {
            kind: "generic",
            customer_id: CUSTOMER,
            field: "pan",
            token: "tok_1",
        };
        let re_tokened = Binding::BoundField {
            token: "tok_2",
            customer_id: CUSTOMER,
            field: "pan",
            kind: "card_number",
        };
        assert_bound_fails_under(card, relabelled);
        assert_bound_fails_under(card, re_tokened);
        // Neither layout opens what the other sealed.
        let first = Binding::Field {
            customer_id: CUSTOMER,
            field: "pan",
        };
        assert_bound_fails_under(card, first);
        assert_bound_fails_under(first, card);
    }

    #[test]
    fn a_bound_token_relabelled_fails_to_decrypt() {
        let token = Binding::BoundToken {
            customer_id: CUSTOMER,
            token: "tok_1",
            kind: "card_number",
            format: "random",
        };
        let relabel = |kind, format| Binding::BoundToken {
            customer_id: CUSTOMER,
            token: "tok_1",
            kind,
            format,
        };
        assert_bound_fails_under(token, relabel("generic", "random"));
        assert_bound_fails_under(token, relabel("card_number", "deterministic"));
        assert_bound_fails_under(
            token,
            Binding::Token {
                customer_id: CUSTOMER,
                token: "tok_1",
            },
        );
    }

    #[test]
    fn a_ledger_of_another_revision_fails_to_decrypt() {
        let at = |revision| Binding::BoundRecord {
            customer_id: CUSTOMER,
            label: "privacy-ledger",
            revision,
        };
        assert_bound_fails_under(at(4), at(5));
        assert_bound_fails_under(
            at(4),
            Binding::Record {
                customer_id: CUSTOMER,
                label: "privacy-ledger",
            },
        );
    }

    #[test]
    fn value_round_trips_for_every_binding() {
        let cipher = cipher(1);
        let bindings = [
            SSN_FIELD,
            Binding::Token {
                customer_id: CUSTOMER,
                token: "tok_abc",
            },
            Binding::Record {
                customer_id: CUSTOMER,
                label: "consents",
            },
        ];
        for binding in bindings {
            for plaintext in [&b""[..], b"x", &[0xffu8; 5000][..]] {
                let sealed = cipher.encrypt(&binding, plaintext);
                assert_eq!(sealed.len(), plaintext.len() + 33);
                assert_eq!(
                    &cipher.decrypt(&binding, &sealed).expect("decrypt")[..],
                    plaintext
                );
            }
        }
    }

    #[test]
    fn encrypting_twice_gives_different_ciphertexts() {
        let cipher = cipher(1);
        assert_ne!(
            cipher.encrypt(&SSN_FIELD, b"same"),
            cipher.encrypt(&SSN_FIELD, b"same")
        );
    }

    fn assert_fails_under(binding: Binding) {
        let cipher = cipher(1);
        let sealed = cipher.encrypt(&SSN_FIELD, b"123-45-6789");
        assert!(matches!(
            cipher.decrypt(&binding, &sealed),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn ciphertext_moved_to_another_customer_fails_to_decrypt() {
        assert_fails_under(Binding::Field {
            customer_id: "cust_43",
            field: "ssn",
        });
    }

    #[test]
    fn ciphertext_moved_to_another_field_fails_to_decrypt() {
        assert_fails_under(Binding::Field {
            customer_id: CUSTOMER,
            field: "email",
        });
    }

    #[test]
    fn ciphertext_moved_to_a_token_binding_fails_to_decrypt() {
        assert_fails_under(Binding::Token {
            customer_id: CUSTOMER,
            token: "ssn",
        });
    }

    #[test]
    fn ciphertext_moved_to_a_record_binding_fails_to_decrypt() {
        assert_fails_under(Binding::Record {
            customer_id: CUSTOMER,
            label: "ssn",
        });
    }

    #[test]
    fn length_prefixes_keep_customer_and_field_apart() {
        // Without prefixes "ab"+"c" and "a"+"bc" would give the same associated data.
        let cipher = cipher(1);
        let first = Binding::Field {
            customer_id: "ab",
            field: "c",
        };
        let sealed = cipher.encrypt(&first, b"v");
        assert_fails_under_cipher(
            &cipher,
            Binding::Field {
                customer_id: "a",
                field: "bc",
            },
            &sealed,
        );
    }

    fn assert_fails_under_cipher(cipher: &DataCipher, binding: Binding, sealed: &[u8]) {
        assert!(matches!(
            cipher.decrypt(&binding, sealed),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn ciphertext_under_another_dek_fails_to_decrypt() {
        let sealed = cipher(1).encrypt(&SSN_FIELD, b"v");
        assert_fails_under_cipher(&cipher(1), SSN_FIELD, &sealed);
    }

    #[test]
    fn every_tampered_byte_is_detected() {
        let cipher = cipher(1);
        let sealed = cipher.encrypt(&SSN_FIELD, b"123-45-6789");
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert!(cipher.decrypt(&SSN_FIELD, &tampered).is_err(), "byte {i}");
        }
    }

    #[test]
    fn key_version_is_checked_before_authentication() {
        let sealed = cipher(2).encrypt(&SSN_FIELD, b"v");
        assert_eq!(key_version_of(&sealed).expect("version"), 2);
        let err = cipher(3)
            .decrypt(&SSN_FIELD, &sealed)
            .expect_err("mismatch");
        assert!(matches!(
            err,
            CryptoError::KeyVersionMismatch {
                expected: 3,
                found: 2
            }
        ));
    }

    #[test]
    fn truncated_empty_and_garbage_inputs_are_errors_not_panics() {
        let cipher = cipher(1);
        let sealed = cipher.encrypt(&SSN_FIELD, b"123-45-6789");
        for len in 0..sealed.len() {
            assert!(
                cipher.decrypt(&SSN_FIELD, &sealed[..len]).is_err(),
                "len {len}"
            );
            let _ = key_version_of(&sealed[..len]);
        }
        assert!(matches!(
            cipher.decrypt(&SSN_FIELD, &[]),
            Err(CryptoError::Malformed(_))
        ));
        assert!(matches!(
            key_version_of(&[]),
            Err(CryptoError::Malformed(_))
        ));
        let mut wrong_format = sealed.clone();
        wrong_format[0] = 2;
        assert!(matches!(
            cipher.decrypt(&SSN_FIELD, &wrong_format),
            Err(CryptoError::Malformed(_))
        ));
        for seed in 0u8..=255 {
            let garbage: Vec<u8> = (0..seed as usize)
                .map(|i| seed.wrapping_mul(i as u8))
                .collect();
            assert!(cipher.decrypt(&SSN_FIELD, &garbage).is_err());
        }
    }

    #[test]
    fn data_cipher_wipes_its_aes_round_keys_on_drop() {
        // Compiles only when `aes` is built with its `zeroize` feature: aes-gcm's own
        // `zeroize` feature does not enable it.
        fn wipes_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        wipes_on_drop::<aes_gcm::aes::Aes256>();
    }

    #[test]
    fn debug_of_dek_and_cipher_is_redacted() {
        let bytes = [0x3c; 32];
        let dek = Dek::from_key(Key32::from_bytes(bytes));
        let printed = format!("{dek:?} {:?}", DataCipher::new(&dek, 9));
        assert!(printed.contains("redacted"));
        assert!(printed.contains("key_version: 9"));
        assert!(!printed.to_lowercase().contains("3c3c"));
        assert!(!printed.contains("60, 60"));
    }
}
