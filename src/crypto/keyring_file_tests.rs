//! Tests of the keyring file, kept apart from `keyring_file.rs` only for length.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::crypto::Key32;

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    root: RootKey,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keyring.bin");
    Fixture {
        _dir: dir,
        path,
        root: RootKey::from_key(Key32::generate()),
    }
}

fn open(fx: &Fixture) -> Result<(KeyringFile, Keyring), CryptoError> {
    KeyringFile::open_or_create(&fx.path, &fx.root, 1_000)
}

fn key_bytes(keyring: &Keyring, version: u32) -> [u8; 32] {
    *keyring.get(version).expect("version").key().expose()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Both slots decrypted with the root key: what an attacker holding the root key
/// could read from the file.
fn decrypted_slots(fx: &Fixture) -> Vec<Zeroizing<Vec<u8>>> {
    let contents = fs::read(&fx.path).expect("read");
    let cipher = sealed::cipher_for(fx.root.key());
    contents
        .chunks_exact(SLOT_LEN)
        .filter_map(|slot| match open_slot(&cipher, slot) {
            Slot::Valid { payload, .. } => Some(payload),
            _ => None,
        })
        .collect()
}

fn corrupt_slot(fx: &Fixture, slot: usize) {
    let mut contents = fs::read(&fx.path).expect("read");
    for byte in &mut contents[slot * SLOT_LEN + 40..slot * SLOT_LEN + 60] {
        *byte ^= 0xff;
    }
    fs::write(&fx.path, contents).expect("write");
}

#[test]
fn created_keyring_reopens_with_the_same_keys() {
    let fx = fixture();
    let (_, created) = open(&fx).expect("create");
    assert_eq!(created.versions(), vec![1]);
    assert_eq!(created.last_rotation_ms(), 1_000);
    let (_, reopened) = open(&fx).expect("reopen");
    assert_eq!(reopened.versions(), vec![1]);
    assert_eq!(key_bytes(&reopened, 1), key_bytes(&created, 1));
    assert_eq!(reopened.id(), created.id());
    assert_eq!(
        reopened.active().index_key().key().expose(),
        created.active().index_key().key().expose()
    );
}

#[test]
fn keyring_file_is_128_kib_and_owner_only() {
    let fx = fixture();
    open(&fx).expect("create");
    let metadata = fs::metadata(&fx.path).expect("stat");
    assert_eq!(metadata.len(), 128 * 1024);
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
}

#[test]
fn saved_rotation_survives_reopening() {
    let fx = fixture();
    let (mut file, mut keyring) = open(&fx).expect("create");
    keyring.add_version(2_000);
    file.save(&keyring).expect("save");
    keyring.add_version(3_000);
    file.save(&keyring).expect("save again");
    let (_, reopened) = open(&fx).expect("reopen");
    assert_eq!(reopened.versions(), vec![1, 2, 3]);
    assert_eq!(reopened.active().version(), 3);
    assert_eq!(key_bytes(&reopened, 3), key_bytes(&keyring, 3));
}

#[test]
fn wrong_root_key_is_reported_as_such() {
    let fx = fixture();
    open(&fx).expect("create");
    let other = RootKey::from_key(Key32::generate());
    let err = KeyringFile::open_or_create(&fx.path, &other, 0).expect_err("wrong key");
    assert!(matches!(err, CryptoError::WrongRootKey), "{err}");
}

#[test]
fn destroyed_master_key_is_in_no_slot_after_save() {
    let fx = fixture();
    let (mut file, mut keyring) = open(&fx).expect("create");
    keyring.add_version(2_000);
    file.save(&keyring).expect("save");
    let destroyed = key_bytes(&keyring, 1);
    assert!(decrypted_slots(&fx)
        .iter()
        .all(|slot| contains(slot, &destroyed)));

    keyring.destroy_version(1, 3_000).expect("destroy");
    file.save(&keyring).expect("save");
    let raw = fs::read(&fx.path).expect("read");
    assert!(!contains(&raw, &destroyed));
    let slots = decrypted_slots(&fx);
    assert_eq!(slots.len(), 2);
    assert!(slots.iter().all(|slot| !contains(slot, &destroyed)));
    assert!(slots
        .iter()
        .all(|slot| contains(slot, &key_bytes(&keyring, 2))));
}

#[test]
fn a_corrupted_slot_still_opens_from_the_other() {
    for slot in [0, 1] {
        let fx = fixture();
        let (mut file, mut keyring) = open(&fx).expect("create");
        keyring.add_version(2_000);
        file.save(&keyring).expect("save");
        corrupt_slot(&fx, slot);
        let (mut file, reopened) = open(&fx).expect("opens from the other slot");
        assert_eq!(reopened.versions(), vec![1, 2]);
        // The next save repairs the damaged slot.
        file.save(&reopened).expect("save");
        assert_eq!(decrypted_slots(&fx).len(), 2);
    }
}

#[test]
fn both_slots_corrupted_is_an_error() {
    let fx = fixture();
    open(&fx).expect("create");
    corrupt_slot(&fx, 0);
    corrupt_slot(&fx, 1);
    assert!(matches!(open(&fx), Err(CryptoError::WrongRootKey)));
    fs::write(&fx.path, vec![0x55u8; FILE_LEN]).expect("garbage");
    assert!(matches!(open(&fx), Err(CryptoError::KeyringCorrupt(_))));
}

#[test]
fn crash_after_the_first_slot_write_opens_the_new_state() {
    let fx = fixture();
    let (file, mut keyring) = open(&fx).expect("create");
    keyring.add_version(2_000);
    let payload = keyring_codec::encode(&keyring);
    let older = 1 - file.newest_slot;
    let FileSealing::RootKey(cipher) = &file.sealing else {
        panic!("a file keyring is sealed by its root key");
    };
    let image = seal_slot(cipher, file.generation + 1, &payload).expect("image");
    file.write_slot(older, &image)
        .expect("first half of a save");
    let (_, reopened) = open(&fx).expect("reopen");
    assert_eq!(reopened.versions(), vec![1, 2]);
}

#[test]
fn torn_first_slot_write_opens_the_old_state() {
    let fx = fixture();
    let (file, _) = open(&fx).expect("create");
    let older = 1 - file.newest_slot;
    corrupt_slot(&fx, older);
    let (_, reopened) = open(&fx).expect("reopen");
    assert_eq!(reopened.versions(), vec![1]);
}

#[test]
fn group_readable_keyring_is_refused() {
    let fx = fixture();
    open(&fx).expect("create");
    fs::set_permissions(&fx.path, fs::Permissions::from_mode(0o640)).expect("chmod");
    let err = open(&fx).expect_err("insecure");
    assert!(
        matches!(err, CryptoError::InsecurePermissions { mode: 0o640, .. }),
        "{err}"
    );
}

#[test]
fn truncated_or_empty_keyring_file_is_corrupt() {
    let fx = fixture();
    open(&fx).expect("create");
    let contents = fs::read(&fx.path).expect("read");
    fs::write(&fx.path, &contents[..SLOT_LEN]).expect("truncate");
    assert!(matches!(open(&fx), Err(CryptoError::KeyringCorrupt(_))));
    fs::write(&fx.path, b"").expect("empty");
    assert!(matches!(open(&fx), Err(CryptoError::KeyringCorrupt(_))));
}

#[test]
fn keyring_too_large_for_a_slot_is_refused_and_the_file_kept() {
    let fx = fixture();
    let (mut file, mut keyring) = open(&fx).expect("create");
    let before = fs::read(&fx.path).expect("read");
    for i in 0..1_500 {
        keyring.add_version(i);
    }
    let err = file.save(&keyring).expect_err("too large");
    assert!(matches!(err, CryptoError::KeyringTooLarge { .. }), "{err}");
    assert_eq!(fs::read(&fx.path).expect("read"), before);
}

#[test]
fn debug_of_a_keyring_file_shows_no_key() {
    let fx = fixture();
    let (file, _) = open(&fx).expect("create");
    let printed = format!("{file:?}");
    assert!(printed.contains("keyring.bin"));
    assert!(!printed.contains("cipher"));
}

#[test]
fn a_sealed_keyring_opens_with_its_root_key_only() {
    let (root, other) = (fixture(), fixture());
    let mut keyring = Keyring::generate(7);
    keyring.add_version(8);
    let image = seal_keyring(&root.root, &keyring, 42).unwrap();
    let (generation, opened) = open_sealed_keyring(&root.root, &image).unwrap();
    assert_eq!(generation, 42);
    assert_eq!(opened.versions(), vec![1, 2]);
    assert!(matches!(
        open_sealed_keyring(&other.root, &image),
        Err(CryptoError::WrongRootKey)
    ));
    assert!(open_sealed_keyring(&root.root, &image[..100]).is_err());
}

#[test]
fn a_new_root_key_seals_both_slots_and_an_undone_change_seals_as_before() {
    let fx = fixture();
    let (mut file, keyring) = open(&fx).expect("create");
    let new = RootKey::from_key(Key32::generate());
    let contents = || fs::read(&fx.path).expect("read");

    // Undone before a save: the next save still seals by the old key.
    file.seal_by_root_key_from_now_on(&new);
    file.seal_as_before();
    file.save(&keyring).expect("save");
    assert!(root_key_opens(&fx.root, &contents()));
    assert!(!root_key_opens(&new, &contents()));

    file.seal_by_root_key_from_now_on(&new);
    file.save(&keyring).expect("save");
    assert!(root_key_opens(&new, &contents()));
    assert!(
        !root_key_opens(&fx.root, &contents()),
        "a slot opens with the old key"
    );
    let (_, reopened) = KeyringFile::open_or_create(&fx.path, &new, 0).expect("reopen");
    assert_eq!(key_bytes(&reopened, 1), key_bytes(&keyring, 1));
}

#[test]
fn a_keyring_sealed_by_version_moves_to_a_root_key_and_an_undone_move_does_not() {
    let fx = fixture();
    let (mut file, mut keyring) = open(&fx).expect("create");
    let secret = keyring.get(1).expect("live").sealing_secret();
    // Sealed the way a root of trust would (the codec sees only bytes).
    keyring.set_seal(
        1,
        crate::crypto::VersionSeal {
            handle: b"handle-1".to_vec(),
            sealed: secret.to_vec(),
        },
    );
    file.seal_by_version_from_now_on();
    file.save(&keyring).expect("save by version");
    assert!(!is_root_key_image(&fs::read(&fx.path).expect("read")));

    let new = RootKey::from_key(Key32::generate());
    file.seal_by_root_key_from_now_on(&new);
    file.seal_as_before();
    file.save(&keyring).expect("save");
    let contents = fs::read(&fx.path).expect("read");
    assert!(!is_root_key_image(&contents) && !root_key_opens(&new, &contents));

    file.seal_by_root_key_from_now_on(&new);
    file.save(&keyring).expect("save");
    let contents = fs::read(&fx.path).expect("read");
    assert!(is_root_key_image(&contents) && root_key_opens(&new, &contents));
    let (_, reopened) = KeyringFile::open_or_create(&fx.path, &new, 0).expect("reopen");
    assert_eq!(key_bytes(&reopened, 1), key_bytes(&keyring, 1));
}
