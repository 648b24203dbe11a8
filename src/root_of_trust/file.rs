//! The root key file as a root of trust (the default, and `serve --dev`'s):
//! one key seals every master version, so retiring a version destroys
//! nothing outside the keyring. A backup of the keyring opens with the file
//! for as long as it exists; erasures wait out `--backup-retention`.

use zeroize::Zeroizing;

use super::{Destruction, KeyHandle, RootError, RootKind, RootOfTrust, SealContext};
use crate::crypto::RootKey;

/// The handle of the one key: every version names the same material.
const FILE_HANDLE: &[u8] = b"root-key-file";

pub struct FileRoot {
    key: RootKey,
    path: std::path::PathBuf,
}

impl FileRoot {
    pub fn new(key: RootKey, path: impl Into<std::path::PathBuf>) -> FileRoot {
        FileRoot {
            key,
            path: path.into(),
        }
    }

    /// The root key itself: keyrings written before roots of trust were
    /// sealed by it as a whole.
    pub fn root_key(&self) -> &RootKey {
        &self.key
    }
}

impl std::fmt::Debug for FileRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRoot")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl RootOfTrust for FileRoot {
    fn kind(&self) -> RootKind {
        RootKind::File
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn check(&self) -> Result<(), RootError> {
        Ok(())
    }

    async fn create_key(&self, _context: &SealContext) -> Result<KeyHandle, RootError> {
        Ok(KeyHandle(FILE_HANDLE.to_vec()))
    }

    async fn seal(
        &self,
        handle: &KeyHandle,
        context: &SealContext,
        secret: &[u8],
    ) -> Result<Vec<u8>, RootError> {
        check_handle(handle, context)?;
        Ok(self.key.seal(&context.associated_data(), secret))
    }

    async fn unseal(
        &self,
        handle: &KeyHandle,
        context: &SealContext,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, RootError> {
        check_handle(handle, context)?;
        self.key
            .open(&context.associated_data(), sealed)
            .map_err(|e| RootError::NotOpened {
                kind: RootKind::File.name(),
                version: context.master_version,
                reason: format!("{e} (another root key file?)"),
            })
    }

    async fn destroy(&self, _handle: &KeyHandle) -> Result<Destruction, RootError> {
        Ok(Destruction::Impossible)
    }
}

fn check_handle(handle: &KeyHandle, context: &SealContext) -> Result<(), RootError> {
    if handle.0 == FILE_HANDLE {
        return Ok(());
    }
    Err(RootError::NotOpened {
        kind: RootKind::File.name(),
        version: context.master_version,
        reason: format!("it was sealed by another root of trust ({handle:?})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key32;

    fn context(version: u32) -> SealContext {
        SealContext {
            keyring_id: [7; 16],
            master_version: version,
        }
    }

    #[tokio::test]
    async fn a_sealed_version_opens_only_under_its_own_context() {
        let root = FileRoot::new(RootKey::from_key(Key32::generate()), "root.key");
        let handle = root.create_key(&context(1)).await.expect("handle");
        let sealed = root
            .seal(&handle, &context(1), b"master")
            .await
            .expect("seal");
        let opened = root
            .unseal(&handle, &context(1), &sealed)
            .await
            .expect("open");
        assert_eq!(&opened[..], b"master");
        let moved = root.unseal(&handle, &context(2), &sealed).await;
        assert!(matches!(
            moved,
            Err(RootError::NotOpened { version: 2, .. })
        ));
        let foreign = root
            .unseal(&KeyHandle(b"arn:aws:kms:x".to_vec()), &context(1), &sealed)
            .await;
        assert!(matches!(foreign, Err(RootError::NotOpened { .. })));
        assert_eq!(
            root.destroy(&handle).await.expect("destroy"),
            Destruction::Impossible
        );
    }
}
