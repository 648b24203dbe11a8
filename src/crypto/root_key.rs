use std::fs::File;
use std::io::Write;
use std::path::Path;

use data_encoding::{HEXLOWER, HEXLOWER_PERMISSIVE};
use zeroize::Zeroizing;

use super::sealed;
use super::secure_file::{
    create_private, ensure_private, read_up_to, sync_parent_dir, KeyFileAccess,
};
use super::{CryptoError, Key32};

/// The key version a root key's sealed box names: there is only one.
const SEAL_VERSION: u32 = 0;

/// Longest root key file accepted: 64 hex characters and a newline.
const MAX_FILE_LEN: usize = 65;
/// What a refused key file should have held.
const KEY_FORMAT: &str =
    "expected 64 hex characters, optionally followed by one newline (as `pii-vault keygen` writes)";

/// The root key: wraps the keyring file. Read from a file (a Kubernetes Secret in
/// production) that only its owner may read. `Clone` gives another zeroizing
/// copy (the keyring's sealing and the root of trust each hold one).
#[derive(Debug, Clone)]
pub struct RootKey(Key32);

impl RootKey {
    /// Loads 64 hex characters, optionally followed by one newline, as
    /// `generate_file` writes them; anything else is refused rather than
    /// guessed at (any 32-byte file used to pass as a raw key). Refuses a file
    /// that group or others can access.
    pub fn load(path: impl AsRef<Path>) -> Result<RootKey, CryptoError> {
        Self::load_with(path, KeyFileAccess::OwnerOnly)
    }

    /// `load`, allowing the group access that `access` allows.
    pub fn load_with(
        path: impl AsRef<Path>,
        access: KeyFileAccess,
    ) -> Result<RootKey, CryptoError> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| CryptoError::io(path, e))?;
        ensure_private(&file, path, access)?;
        let mut contents = Zeroizing::new([0u8; MAX_FILE_LEN + 1]);
        let len = read_up_to(&mut file, &mut contents[..]).map_err(|e| CryptoError::io(path, e))?;
        if len > MAX_FILE_LEN {
            return Err(bad_file(path, KEY_FORMAT));
        }
        parse_key(&contents[..len])
            .map(RootKey)
            .ok_or_else(|| bad_file(path, KEY_FORMAT))
    }

    /// Writes a new random root key as 64 lowercase hex characters and a newline,
    /// to a new owner-only file. Never overwrites an existing file.
    pub fn generate_file(path: impl AsRef<Path>) -> Result<(), CryptoError> {
        let path = path.as_ref();
        let mut file = create_private(path)?;
        let written = write_new_key(&mut file).map_err(|e| CryptoError::io(path, e));
        if written.is_err() {
            // A half-written key file would make the next start fail with a
            // confusing error; nothing was ever encrypted under it, so remove it.
            let _ = std::fs::remove_file(path);
        }
        written?;
        sync_parent_dir(path)
    }

    pub(crate) fn key(&self) -> &Key32 {
        &self.0
    }

    /// Seals `secret` under the root key, bound to `associated_data` (the
    /// file root of trust seals each master version this way).
    pub fn seal(&self, associated_data: &[u8], secret: &[u8]) -> Vec<u8> {
        sealed::seal(
            &sealed::cipher_for(&self.0),
            SEAL_VERSION,
            sealed::random_nonce(),
            associated_data,
            secret,
        )
    }

    /// Opens what `seal` sealed with the same associated data.
    pub fn open(
        &self,
        associated_data: &[u8],
        sealed_bytes: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut secret = Zeroizing::new(vec![0u8; sealed::plaintext_len(sealed_bytes)?]);
        sealed::open_into(
            &sealed::cipher_for(&self.0),
            SEAL_VERSION,
            associated_data,
            sealed_bytes,
            &mut secret,
        )?;
        Ok(secret)
    }

    #[cfg(test)]
    pub(crate) fn from_key(key: Key32) -> RootKey {
        RootKey(key)
    }
}

fn write_new_key(file: &mut File) -> std::io::Result<()> {
    let key = Key32::generate();
    let mut line = Zeroizing::new([b'\n'; 65]);
    HEXLOWER.encode_mut(key.expose(), &mut line[..64]);
    file.write_all(&line[..])?;
    file.sync_all()
}

fn parse_key(contents: &[u8]) -> Option<Key32> {
    let hex = contents.strip_suffix(b"\n").unwrap_or(contents);
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = Zeroizing::new([0u8; 32]);
    HEXLOWER_PERMISSIVE.decode_mut(hex, &mut bytes[..]).ok()?;
    Key32::from_slice(&bytes[..])
}

fn bad_file(path: &Path, reason: &'static str) -> CryptoError {
    CryptoError::BadKeyFile {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    use super::*;

    fn write_file(path: &Path, contents: &[u8], mode: u32) {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .expect("create test file");
        file.write_all(contents).expect("write test file");
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn generated_file_loads_and_is_owner_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("root.key");
        RootKey::generate_file(&path).expect("generate");
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert!(text[..64]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let mode = fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = RootKey::load(&path).expect("load");
        assert_eq!(HEXLOWER.encode(key.key().expose()), text[..64]);
    }

    #[test]
    fn generate_file_refuses_to_overwrite_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("root.key");
        write_file(&path, b"keep me", 0o600);
        let err = RootKey::generate_file(&path).expect_err("must refuse");
        assert!(matches!(err, CryptoError::Io { .. }));
        assert_eq!(fs::read(&path).expect("read"), b"keep me");
    }

    #[test]
    fn hex_key_with_or_without_one_newline_loads_in_either_case() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (i, text) in ["AB".repeat(32), "ab".repeat(32) + "\n"].iter().enumerate() {
            let path = dir.path().join(format!("root{i}.key"));
            write_file(&path, text.as_bytes(), 0o600);
            let key = RootKey::load(&path).expect("load");
            assert_eq!(key.key().expose(), &[0xab; 32]);
        }
    }

    #[test]
    fn only_the_documented_format_loads_not_raw_bytes_or_stray_whitespace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw: Vec<u8> = (0u8..32).collect();
        let hex = "ab".repeat(32);
        let cases: [Vec<u8>; 5] = [
            raw,
            vec![b'x'; 32],
            format!("{hex} ").into_bytes(),
            format!("{hex}\r\n").into_bytes(),
            format!("{hex}\n\n").into_bytes(),
        ];
        for (i, contents) in cases.iter().enumerate() {
            let path = dir.path().join(format!("bad{i}.key"));
            write_file(&path, contents, 0o600);
            let err = RootKey::load(&path).expect_err("must refuse");
            assert!(
                matches!(err, CryptoError::BadKeyFile { .. })
                    && err.to_string().contains("64 hex characters"),
                "case {i}: {err}"
            );
        }
    }

    #[test]
    fn group_readable_root_key_is_refused_with_its_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("root.key");
        write_file(&path, "00".repeat(32).as_bytes(), 0o644);
        let err = RootKey::load(&path).expect_err("must refuse");
        assert!(matches!(
            err,
            CryptoError::InsecurePermissions { mode: 0o644, .. }
        ));
        assert!(err.to_string().contains("(mode 0644); chmod 600 it"));
    }

    #[test]
    fn bad_contents_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: [&[u8]; 6] = [
            b"",
            b"short",
            &[0u8; 31],
            &[0u8; 33],
            b"zz00000000000000000000000000000000000000000000000000000000000000",
            b"  00000000000000000000000000000000000000000000000000000000000000",
        ];
        for (i, contents) in cases.iter().enumerate() {
            let path = dir.path().join(format!("bad{i}.key"));
            write_file(&path, contents, 0o600);
            let err = RootKey::load(&path).expect_err("must refuse");
            assert!(
                matches!(err, CryptoError::BadKeyFile { .. }),
                "case {i}: {err}"
            );
        }
        let long = dir.path().join("long.key");
        write_file(&long, &[b'0'; 1000], 0o600);
        assert!(matches!(
            RootKey::load(&long),
            Err(CryptoError::BadKeyFile { .. })
        ));
    }

    #[test]
    fn missing_root_key_file_is_an_io_error_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = RootKey::load(dir.path().join("absent.key")).expect_err("missing");
        assert!(err.to_string().contains("absent.key"));
    }

    #[test]
    fn sealed_secrets_open_only_with_their_associated_data_and_key() {
        let key = RootKey::from_key(Key32::generate());
        let sealed_bytes = key.seal(b"v1", b"secret");
        assert_eq!(
            &key.open(b"v1", &sealed_bytes).expect("open")[..],
            b"secret"
        );
        assert!(key.open(b"v2", &sealed_bytes).is_err());
        let other = RootKey::from_key(Key32::generate());
        assert!(other.open(b"v1", &sealed_bytes).is_err());
        assert!(key.open(b"v1", &sealed_bytes[..10]).is_err());
    }

    #[test]
    fn debug_of_a_root_key_is_redacted() {
        let key = RootKey::from_key(Key32::from_bytes([0x5a; 32]));
        let printed = format!("{key:?}");
        assert!(printed.contains("redacted"));
        assert!(!printed.to_lowercase().contains("5a5a"));
    }
}
