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

    fn as_root_key_file(&self) -> Option<&RootKey> {
        Some(&self.key)
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
    use crate::root_of_trust::conformance::{
        self, context, DestroyedOpens, Destroys, Expect, SwappedHandle,
    };

    /// One key seals every version: nothing is destroyed, all still opens.
    const EXPECT: Expect = Expect {
        destroys: Destroys::Impossible,
        destroyed_opens: DestroyedOpens::Still,
        swapped_handle: SwappedHandle::Opens,
    };

    fn root() -> FileRoot {
        FileRoot::new(RootKey::from_key(Key32::generate()), "root.key")
    }

    #[tokio::test]
    async fn two_versions_seal_under_the_one_key_and_open() {
        let root = root();
        let [(first, _), (second, _)] =
            conformance::two_versions_seal_and_open(&root, EXPECT).await;
        assert_eq!(first, second);
        assert_eq!(first.0, FILE_HANDLE);
    }

    #[tokio::test]
    async fn a_sealed_version_opens_only_under_its_own_context() {
        let foreign = KeyHandle(b"arn:aws:kms:x".to_vec());
        conformance::a_sealed_version_opens_only_under_its_own_context(&root(), &foreign).await;
    }

    #[tokio::test]
    async fn a_destroyed_version_still_opens_since_nothing_is_destroyed() {
        conformance::a_destroyed_version_no_longer_opens_and_the_others_still_do(&root(), EXPECT)
            .await;
    }

    #[tokio::test]
    async fn destroying_a_version_twice_is_impossible_twice() {
        conformance::destroying_a_version_twice_succeeds(&root(), EXPECT).await;
    }

    #[tokio::test]
    async fn another_root_key_file_does_not_open_it() {
        let (handle, sealed) = conformance::sealed_version(&root(), 1).await;
        let other = root().unseal(&handle, &context(1), &sealed).await;
        assert!(
            matches!(other, Err(RootError::NotOpened { version: 1, .. })),
            "{other:?}"
        );
    }
}
