//! The root of trust: where each master key version is sealed, and what
//! destroys it for good.
//!
//! Every master version (its key and its index key) is sealed by key material
//! of its own inside the root of trust: a Transit key version, an HSM key
//! object, a KMS key. The keyring holds only the sealed bytes and a handle
//! naming that material. Retiring a master version destroys the material, so
//! every earlier copy of the keyring (a backup, a database dump) holds bytes
//! nothing can open any more.
//!
//! The root of trust is called when the vault starts, when a master version
//! is created or retired, and when another replica's keyring is loaded: never
//! on a request's path. Unsealed versions stay in the vault's locked memory.
//!
//! A new kind (GCP KMS, Azure Key Vault) is one more implementation of
//! [`RootOfTrust`]: create a key (version) per master version, seal and
//! unseal with it, destroy it.

pub mod aws_kms;
#[cfg(test)]
mod conformance;
pub mod file;
pub mod pkcs11;
pub mod transit;

use std::fmt;

use zeroize::Zeroizing;

/// Names the key material that seals one master version, as the root of
/// trust knows it: a Transit key version, a PKCS#11 object id, a KMS key ARN.
/// Kept in the keyring beside the sealed version. Not secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyHandle(pub Vec<u8>);

impl fmt::Debug for KeyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) => write!(f, "KeyHandle({text:?})"),
            Err(_) => write!(f, "KeyHandle({})", data_encoding::HEXLOWER.encode(&self.0)),
        }
    }
}

/// What a sealed master version is bound to: its keyring and its version.
/// A sealed version moved to another keyring or version does not open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealContext {
    pub keyring_id: [u8; 16],
    pub master_version: u32,
}

impl SealContext {
    const LABEL: &'static [u8] = b"piivault.master-version.v1";

    /// The associated data every kind binds a sealed version to.
    pub fn associated_data(&self) -> Vec<u8> {
        let mut ad = Vec::with_capacity(Self::LABEL.len() + 16 + 4);
        ad.extend_from_slice(Self::LABEL);
        ad.extend_from_slice(&self.keyring_id);
        ad.extend_from_slice(&self.master_version.to_be_bytes());
        ad
    }

    /// A name for the material of this version, for roots of trust that name
    /// their keys (an HSM label, a KMS description).
    pub fn label(&self) -> String {
        format!(
            "pii-vault/{}/v{}",
            data_encoding::HEXLOWER.encode(&self.keyring_id),
            self.master_version
        )
    }
}

/// When destroyed material is gone for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destruction {
    /// Gone now: nothing can open what it sealed.
    Done,
    /// Unusable now and gone for good at this time (Unix ms): AWS KMS keeps a
    /// key pending deletion for 7 to 30 days, during which it can be restored.
    Scheduled { at_ms: i64 },
    /// Nothing can be destroyed: one key seals every version (the root key
    /// file). Copies of the keyring open as long as that key exists.
    Impossible,
}

/// Which root of trust, for `GetKeyStatus`, the log and the keyring (which
/// records the kind that sealed it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RootKind {
    File,
    Transit,
    Pkcs11,
    AwsKms,
}

impl RootKind {
    pub fn name(self) -> &'static str {
        match self {
            RootKind::File => "file",
            RootKind::Transit => "transit",
            RootKind::Pkcs11 => "pkcs11",
            RootKind::AwsKms => "aws-kms",
        }
    }

    /// What retiring a master version destroys, in plain words.
    pub fn guarantee(self) -> &'static str {
        match self {
            RootKind::File => {
                "one root key file seals every master version: a backup of the keyring or \
                 store stays readable with it, so an erasure is cryptographic only after \
                 --backup-retention"
            }
            RootKind::Transit => {
                "each master version is sealed by a Transit key version of its own, trimmed \
                 when the version retires: earlier backups become unreadable at once"
            }
            RootKind::Pkcs11 => {
                "each master version is sealed by an HSM key object of its own, destroyed \
                 when the version retires: earlier backups become unreadable at once"
            }
            RootKind::AwsKms => {
                "each master version is sealed by a KMS key of its own, scheduled for \
                 deletion when the version retires: earlier backups become unreadable \
                 when the pending-deletion window ends"
            }
        }
    }
}

/// Why the root of trust did not do what was asked. Messages name the
/// service, key and reason; never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// It could not be reached, or answered that it is unavailable: worth
    /// retrying.
    #[error("the root of trust ({kind}) is unreachable: {reason}")]
    Unreachable { kind: &'static str, reason: String },
    /// It answered and refused: a permission, a missing key, bad settings.
    #[error("the root of trust ({kind}) refused: {reason}")]
    Refused { kind: &'static str, reason: String },
    /// A sealed version did not open: its material was destroyed, or the
    /// sealed bytes belong to other material or were altered.
    #[error("the root of trust ({kind}) could not open master version {version}: {reason}")]
    NotOpened {
        kind: &'static str,
        version: u32,
        reason: String,
    },
}

impl RootError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, RootError::Unreachable { .. })
    }
}

/// One root of trust: the file, Transit, an HSM, a KMS.
#[async_trait::async_trait]
pub trait RootOfTrust: Send + Sync + fmt::Debug {
    fn kind(&self) -> RootKind;

    /// Where it is, for the log and `GetKeyStatus`: an address and key name,
    /// a module and token label. No credential.
    fn location(&self) -> String;

    /// Whether it answers now (start-up, health).
    async fn check(&self) -> Result<(), RootError>;

    /// Creates the material that will seal master version `context`, and
    /// returns its handle.
    async fn create_key(&self, context: &SealContext) -> Result<KeyHandle, RootError>;

    /// Seals `secret` under the material `handle` names, bound to `context`.
    async fn seal(
        &self,
        handle: &KeyHandle,
        context: &SealContext,
        secret: &[u8],
    ) -> Result<Vec<u8>, RootError>;

    /// Opens what `seal` sealed with the same handle and context.
    async fn unseal(
        &self,
        handle: &KeyHandle,
        context: &SealContext,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, RootError>;

    /// Destroys the material `handle` names, and every earlier version's
    /// where the root of trust can only destroy in order (Transit). Destroying
    /// material already destroyed succeeds: a retirement cut short retries.
    async fn destroy(&self, handle: &KeyHandle) -> Result<Destruction, RootError>;

    /// The key itself when this is a root key file, which seals a keyring
    /// as a whole rather than version by version; `None` for a root of
    /// trust that keeps its material inside.
    fn as_root_key_file(&self) -> Option<&crate::crypto::RootKey> {
        None
    }
}
