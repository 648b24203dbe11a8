use std::path::PathBuf;

/// Errors of the crypto layer. Messages name files, versions and reasons; they
/// never contain key bytes or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{} is readable by group or others (mode {mode:04o}); chmod 600 it", path.display())]
    InsecurePermissions { path: PathBuf, mode: u32 },

    #[error("{} is not a valid key file: {reason}", path.display())]
    BadKeyFile { path: PathBuf, reason: &'static str },

    #[error("the keyring file is corrupt: {0}")]
    KeyringCorrupt(&'static str),

    #[error("the keyring file cannot be opened with this root key")]
    WrongRootKey,

    #[error("{0}")]
    SealedByAnotherRoot(&'static str),

    #[error("the keyring has grown past its slot: {payload_len} bytes, at most {max} fit")]
    KeyringTooLarge { payload_len: usize, max: usize },

    #[error("master key version {0} does not exist (never created, or destroyed)")]
    UnknownMasterVersion(u32),

    #[error("master key version {0} is active; rotate to a new version before destroying it")]
    ActiveMasterVersion(u32),

    #[error("key version mismatch: expected {expected}, found {found}")]
    KeyVersionMismatch { expected: u32, found: u32 },

    #[error("malformed ciphertext: {0}")]
    Malformed(&'static str),

    #[error("ciphertext failed authentication: wrong key, customer or field")]
    Authentication,
}

impl CryptoError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CryptoError::Io {
            path: path.into(),
            source,
        }
    }
}
