//! File handling shared by the root key and the keyring: secret files are
//! private to their owner, created without racing an existing file, and made
//! durable together with the directory entry that names them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::CryptoError;

/// Who besides the owner may access a key file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyFileAccess {
    /// Owner only (0600 or stricter): the default.
    #[default]
    OwnerOnly,
    /// The owner's group too, never others. Kubernetes mounts Secrets as 0440
    /// owned by the pod's fsGroup whatever `defaultMode` says, so a non-root
    /// pod cannot have 0400 files it can read.
    OwnerAndGroup,
}

/// Refuses a secret file that others (or, by default, the group) may read or
/// write. Checked on the open handle (fstat), so the file checked is the file read.
pub(crate) fn ensure_private(
    file: &File,
    path: &Path,
    access: KeyFileAccess,
) -> Result<(), CryptoError> {
    let metadata = file.metadata().map_err(|e| CryptoError::io(path, e))?;
    let mode = metadata.permissions().mode() & 0o7777;
    let forbidden = match access {
        KeyFileAccess::OwnerOnly => 0o077,
        KeyFileAccess::OwnerAndGroup => 0o007,
    };
    if mode & forbidden != 0 {
        return Err(CryptoError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    if mode & 0o070 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "key file is readable by its group (allowed by --allow-group-readable-keys)");
    }
    Ok(())
}

/// The contents of a secret file that passes `ensure_private` (a TLS private
/// key, say), in a buffer wiped on drop.
pub fn read_private_file(
    path: &Path,
    access: KeyFileAccess,
) -> Result<zeroize::Zeroizing<Vec<u8>>, CryptoError> {
    use std::io::Read;
    let mut file = File::open(path).map_err(|e| CryptoError::io(path, e))?;
    ensure_private(&file, path, access)?;
    let mut contents = zeroize::Zeroizing::new(Vec::new());
    file.read_to_end(&mut contents)
        .map_err(|e| CryptoError::io(path, e))?;
    Ok(contents)
}

/// Creates a new owner-only file; fails if one already exists, so a key is never
/// silently replaced (also when two processes race to create it).
pub(crate) fn create_private(path: &Path) -> Result<File, CryptoError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CryptoError::io(path, e))
}

/// Makes a newly created file's directory entry durable: without this a crash
/// could lose the file even though its contents were fsync'd.
pub(crate) fn sync_parent_dir(path: &Path) -> Result<(), CryptoError> {
    let parent = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| CryptoError::io(parent, e))
}

/// Reads at most `buffer.len()` bytes, retrying interrupted reads; returns how
/// many were read. Reading into a caller-owned buffer (rather than a growing
/// `Vec`) leaves no reallocated copies of secret bytes behind.
pub(crate) fn read_up_to(file: &mut File, buffer: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_mode(dir: &Path, mode: u32) -> (File, std::path::PathBuf) {
        let path = dir.join(format!("key-{mode:o}"));
        std::fs::write(&path, b"k").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (File::open(&path).unwrap(), path)
    }

    #[test]
    fn group_access_is_refused_unless_allowed_and_access_by_others_always() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (0o600, true, true),
            (0o400, true, true),
            (0o640, false, true),
            (0o660, false, true),
            (0o604, false, false),
            (0o644, false, false),
        ];
        for (mode, owner_only, owner_and_group) in cases {
            let (file, path) = file_with_mode(dir.path(), mode);
            let strict = ensure_private(&file, &path, KeyFileAccess::OwnerOnly).is_ok();
            let lenient = ensure_private(&file, &path, KeyFileAccess::OwnerAndGroup).is_ok();
            assert_eq!(
                (strict, lenient),
                (owner_only, owner_and_group),
                "mode {mode:o}"
            );
        }
    }
}
