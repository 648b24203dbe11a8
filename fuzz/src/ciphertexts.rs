//! Ciphertexts and key material from arbitrary bytes: sealed values, wrapped
//! DEKs, sealed keyring images, root key files, and the privacy ledger's
//! encoding. Nothing forged may decrypt; nothing malformed may panic.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::OnceLock;

use pii_vault::crypto::{
    key_version_of, master_version_of_wrapped, open_sealed_keyring, seal_keyring, Binding,
    CryptoError, DataCipher, Dek, Keyring, RootKey,
};
use pii_vault::vault::PrivacyLedger;

/// Where a sealed keyring's header ends (magic, format, generation, nonce,
/// payload length) and the length of one image.
const KEYRING_HEADER_LEN: usize = 29;
const KEYRING_IMAGE_LEN: usize = 64 * 1024;
const TAG_LEN: usize = 16;

struct Keys {
    cipher: DataCipher,
    keyring: Keyring,
    root: RootKey,
    sealed_keyring: Vec<u8>,
    /// Holds the root key file and the files root keys are read from.
    dir: tempfile::TempDir,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = crate::scratch_dir("keys");
        let root_file = dir.path().join("root.key");
        RootKey::generate_file(&root_file).expect("root key");
        let root = RootKey::load(&root_file).expect("root key loads");
        let mut keyring = Keyring::generate(0);
        keyring.add_version(1);
        let sealed_keyring = seal_keyring(&root, &keyring, 7).expect("sealed keyring");
        Keys {
            cipher: DataCipher::new(&Dek::generate(), 3),
            keyring,
            root,
            sealed_keyring,
            dir,
        }
    })
}

pub fn ciphertexts(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 7 {
        0 => forged_value(rest),
        1 => tampered_value(rest),
        2 => moved_value(rest),
        3 => forged_wrapped_dek(rest),
        4 => sealed_keyring_image(rest),
        5 => root_key_file(rest),
        _ => privacy_ledger(rest),
    }
}

/// Arbitrary bytes never decrypt, and the header checks agree with decryption.
fn forged_value(bytes: &[u8]) {
    let binding = Binding::Field {
        customer_id: "cust-1",
        field: "ssn",
    };
    let result = keys().cipher.decrypt(&binding, bytes);
    match key_version_of(bytes) {
        Err(_) => assert!(
            matches!(result, Err(CryptoError::Malformed(_))),
            "{result:?}"
        ),
        Ok(3) => assert!(
            matches!(result, Err(CryptoError::Authentication)),
            "forged bytes: {result:?}"
        ),
        Ok(other) => assert!(
            matches!(result, Err(CryptoError::KeyVersionMismatch { found, .. }) if found == other),
            "{result:?}"
        ),
    }
}

/// A real ciphertext with one byte changed never decrypts.
fn tampered_value(rest: &[u8]) {
    let Some((&position, plaintext)) = rest.split_first() else {
        return;
    };
    let binding = Binding::Token {
        customer_id: "cust-1",
        token: "tok_x",
    };
    let cipher = &keys().cipher;
    let mut sealed = cipher.encrypt(&binding, plaintext);
    let opened = cipher
        .decrypt(&binding, &sealed)
        .expect("own ciphertext opens");
    assert_eq!(&opened[..], plaintext);
    let index = usize::from(position) * 7 % sealed.len();
    sealed[index] ^= 1 << (position % 8);
    assert!(
        cipher.decrypt(&binding, &sealed).is_err(),
        "byte {index} of {} changed and still decrypts",
        sealed.len()
    );
}

/// A ciphertext moved to another customer, field, token or record fails.
fn moved_value(rest: &[u8]) {
    let mut parts = rest.splitn(3, |b| *b == 0);
    let customer = crate::text(parts.next().unwrap_or_default());
    let name = crate::text(parts.next().unwrap_or_default());
    let plaintext = parts.next().unwrap_or_default();
    let cipher = &keys().cipher;
    let home = Binding::Field {
        customer_id: &customer,
        field: &name,
    };
    let sealed = cipher.encrypt(&home, plaintext);
    assert!(cipher.decrypt(&home, &sealed).is_ok());
    let shifted_customer = format!("{customer}{}", name.chars().next().unwrap_or('x'));
    let shifted_name: String = name.chars().skip(1).collect();
    let elsewhere = [
        Binding::Token {
            customer_id: &customer,
            token: &name,
        },
        Binding::Record {
            customer_id: &customer,
            label: &name,
        },
        Binding::Field {
            customer_id: &shifted_customer,
            field: &shifted_name,
        },
        Binding::Field {
            customer_id: &name,
            field: &customer,
        },
    ];
    for (index, binding) in elsewhere.iter().enumerate() {
        if index == 3 && customer == name {
            continue;
        }
        assert!(
            matches!(
                cipher.decrypt(binding, &sealed),
                Err(CryptoError::Authentication)
            ),
            "a ciphertext moved to {binding:?} decrypts"
        );
    }
}

fn forged_wrapped_dek(bytes: &[u8]) {
    let _ = master_version_of_wrapped(bytes);
    assert!(
        keys().keyring.unwrap_dek(bytes, "cust-1", 1).is_err(),
        "forged wrapped DEK unwraps"
    );
}

/// Arbitrary images, and a real one with a byte changed, never open; the
/// zero padding after the tag is the one part that is not authenticated.
fn sealed_keyring_image(rest: &[u8]) {
    let keys = keys();
    let mut image = rest.to_vec();
    assert!(open_sealed_keyring(&keys.root, &image).is_err());
    image.resize(KEYRING_IMAGE_LEN, 0);
    if rest.first().is_some_and(|b| b % 2 == 0) {
        image[..5].copy_from_slice(b"PVKR\x01");
    }
    assert!(
        open_sealed_keyring(&keys.root, &image).is_err(),
        "a forged keyring opens"
    );

    let real = &keys.sealed_keyring;
    let (generation, keyring) = open_sealed_keyring(&keys.root, real).expect("real image");
    assert_eq!((generation, keyring.versions()), (7, vec![1, 2]));
    let Some(position) = rest.get(..3) else {
        return;
    };
    let index = (usize::from(position[0]) << 8 | usize::from(position[1])) % KEYRING_IMAGE_LEN;
    let mut tampered = real.clone();
    tampered[index] ^= 1 << (position[2] % 8);
    let payload_len = u32::from_be_bytes([real[25], real[26], real[27], real[28]]) as usize;
    let authenticated = index < KEYRING_HEADER_LEN + payload_len + TAG_LEN;
    assert_eq!(
        open_sealed_keyring(&keys.root, &tampered).is_err(),
        authenticated,
        "byte {index} of the sealed keyring changed"
    );
}

/// A root key file loads only as 64 hex characters (either case), optionally
/// followed by one newline: `pii-vault keygen`'s format and nothing else.
fn root_key_file(contents: &[u8]) {
    let keys = keys();
    let path = keys.dir.path().join("candidate.key");
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("candidate key file");
    file.write_all(contents).expect("write candidate key");
    drop(file);
    let loaded = RootKey::load(&path);
    let hex = contents.strip_suffix(b"\n").unwrap_or(contents);
    let well_formed = hex.len() == 64 && hex.iter().all(u8::is_ascii_hexdigit);
    match loaded {
        Ok(_) => assert!(well_formed, "loaded a root key from {contents:?}"),
        Err(error) => {
            assert!(!well_formed, "refused a good key file: {error}");
            let message = error.to_string();
            crate::assert_clear_message(&message);
            assert!(!message.contains("0x") && message.is_ascii(), "{message:?}");
        }
    }
}

/// The ledger's encoding never panics, and what decodes round-trips.
fn privacy_ledger(bytes: &[u8]) {
    if let Ok(ledger) = postcard::from_bytes::<PrivacyLedger>(bytes) {
        let encoded = postcard::to_stdvec(&ledger).expect("encodes");
        let again: PrivacyLedger = postcard::from_bytes(&encoded).expect("decodes");
        assert_eq!(again, ledger);
    }
}
