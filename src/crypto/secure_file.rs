//! File handling shared by the root key and the keyring: secret files are
//! private to their owner, created without racing an existing file, and made
//! durable together with the directory entry that names them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::CryptoError;

/// Refuses a secret file that group or others may read or write. Checked on the
/// open handle (fstat), so the file checked is the file read.
pub(crate) fn ensure_private(file: &File, path: &Path) -> Result<(), CryptoError> {
    let metadata = file.metadata().map_err(|e| CryptoError::io(path, e))?;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CryptoError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
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
