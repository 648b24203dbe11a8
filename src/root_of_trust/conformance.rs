//! The contract every [`RootOfTrust`] keeps, checked once for all kinds.
//! Each kind's tests start its service, build a root and call these
//! functions with what the kind says about itself ([`Expect`]); the tests
//! left in each kind's file are about that kind alone.

use super::{Destruction, KeyHandle, RootError, RootOfTrust, SealContext};

/// What `destroy` answers for this kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destroys {
    /// [`Destruction::Done`]: Transit, PKCS#11.
    Done,
    /// [`Destruction::Scheduled`]: AWS KMS.
    Scheduled,
    /// [`Destruction::Impossible`]: the root key file, whose one key seals
    /// every version (so every version has the same handle).
    Impossible,
}

/// Whether the service opens what destroyed material sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestroyedOpens {
    /// Never: `RootError::NotOpened` for that version.
    Never,
    /// Always: nothing was destroyed (the root key file).
    Still,
    /// Either: the real service refuses, its test double (moto) keeps no key
    /// state and still opens it; when it opens, it opens to the secret.
    Either,
}

/// What unsealing one version's sealed bytes under another version's handle
/// (and the first version's context) answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwappedHandle {
    /// `RootError::NotOpened` for the first version.
    NotOpened,
    /// An error of some kind: AWS KMS answers IncorrectKeyException
    /// (NotOpened), moto AccessDeniedException (Refused).
    Fails,
    /// It opens: every version has the same handle (the root key file).
    Opens,
}

/// What a kind says about itself.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    pub destroys: Destroys,
    pub destroyed_opens: DestroyedOpens,
    pub swapped_handle: SwappedHandle,
}

impl Expect {
    /// Whether each version is sealed by material of its own (and so has a
    /// handle of its own).
    fn material_per_version(&self) -> bool {
        self.destroys != Destroys::Impossible
    }

    fn assert_destruction(&self, destruction: Destruction, what: &str) {
        let expected = match destruction {
            Destruction::Done => Destroys::Done,
            Destruction::Scheduled { .. } => Destroys::Scheduled,
            Destruction::Impossible => Destroys::Impossible,
        };
        assert_eq!(expected, self.destroys, "{what}: {destruction:?}");
    }
}

/// Master version `version` of one keyring.
pub fn context(version: u32) -> SealContext {
    SealContext {
        keyring_id: [7; 16],
        master_version: version,
    }
}

/// The secret sealed for `version`: 64 bytes of `version`.
pub fn secret(version: u32) -> [u8; 64] {
    [version as u8; 64]
}

/// Creates material for `version` and seals [`secret`]`(version)` with it.
pub async fn sealed_version(root: &dyn RootOfTrust, version: u32) -> (KeyHandle, Vec<u8>) {
    let handle = root.create_key(&context(version)).await.expect("create");
    let sealed = root
        .seal(&handle, &context(version), &secret(version))
        .await
        .expect("seal");
    (handle, sealed)
}

/// Asserts that `sealed` opens under `handle` and `context(version)` to
/// [`secret`]`(version)`.
pub async fn assert_opens(root: &dyn RootOfTrust, handle: &KeyHandle, version: u32, sealed: &[u8]) {
    let opened = root
        .unseal(handle, &context(version), sealed)
        .await
        .unwrap_or_else(|error| panic!("open version {version}: {error:?}"));
    assert_eq!(&opened[..], &secret(version)[..], "version {version}");
}

/// Asserts that `sealed` does not open under `handle` and `context`:
/// `RootError::NotOpened` for `context`'s version.
pub async fn assert_not_opened(
    root: &dyn RootOfTrust,
    handle: &KeyHandle,
    context: &SealContext,
    sealed: &[u8],
) {
    let result = root.unseal(handle, context, sealed).await;
    let version = context.master_version;
    assert!(
        matches!(&result, Err(RootError::NotOpened { version: v, .. }) if *v == version),
        "{handle:?} under {context:?}: {result:?}"
    );
}

/// Two versions seal (under material of their own, where the kind has it)
/// and open to their secrets; the root answers `check` before and after;
/// sealed bytes do not hold the secret; one version's sealed bytes under the
/// other's handle answer as the kind says. Returns both versions' handles and sealed
/// bytes for the kind's own checks.
pub async fn two_versions_seal_and_open(
    root: &dyn RootOfTrust,
    expect: Expect,
) -> [(KeyHandle, Vec<u8>); 2] {
    root.check().await.expect("check before any key exists");
    let (handle_1, sealed_1) = sealed_version(root, 1).await;
    let (handle_2, sealed_2) = sealed_version(root, 2).await;
    if expect.material_per_version() {
        assert_ne!(handle_1, handle_2);
    }
    for sealed in [&sealed_1, &sealed_2] {
        assert!(!sealed.windows(64).any(|w| w == secret(1) || w == secret(2)));
    }
    assert_opens(root, &handle_1, 1, &sealed_1).await;
    assert_opens(root, &handle_2, 2, &sealed_2).await;
    root.check().await.expect("check");
    // Sealed bytes of one version under the other's handle.
    match expect.swapped_handle {
        SwappedHandle::NotOpened => {
            assert_not_opened(root, &handle_2, &context(1), &sealed_1).await;
        }
        SwappedHandle::Fails => {
            let swapped = root.unseal(&handle_2, &context(1), &sealed_1).await;
            assert!(swapped.is_err(), "it opened under {handle_2:?}");
        }
        SwappedHandle::Opens => assert_opens(root, &handle_2, 1, &sealed_1).await,
    }
    [(handle_1, sealed_1), (handle_2, sealed_2)]
}

/// A sealed version does not open under another version's context, another
/// keyring's, or `foreign` (a handle of another root of trust). Returns its
/// handle and sealed bytes for the kind's own checks.
pub async fn a_sealed_version_opens_only_under_its_own_context(
    root: &dyn RootOfTrust,
    foreign: &KeyHandle,
) -> (KeyHandle, Vec<u8>) {
    let (handle, sealed) = sealed_version(root, 1).await;
    assert_opens(root, &handle, 1, &sealed).await;
    assert_not_opened(root, &handle, &context(2), &sealed).await;
    let other_keyring = SealContext {
        keyring_id: [8; 16],
        master_version: 1,
    };
    assert_not_opened(root, &handle, &other_keyring, &sealed).await;
    assert_not_opened(root, foreign, &context(1), &sealed).await;
    (handle, sealed)
}

/// Destroying version 1 answers what the kind destroys; version 1 opens
/// after it as the kind says, version 2 still opens, and a version created
/// after the destruction seals and opens.
pub async fn a_destroyed_version_no_longer_opens_and_the_others_still_do(
    root: &dyn RootOfTrust,
    expect: Expect,
) {
    let (handle_1, sealed_1) = sealed_version(root, 1).await;
    let (handle_2, sealed_2) = sealed_version(root, 2).await;
    let destroyed = root.destroy(&handle_1).await.expect("destroy");
    expect.assert_destruction(destroyed, "destroy");
    match expect.destroyed_opens {
        DestroyedOpens::Never => assert_not_opened(root, &handle_1, &context(1), &sealed_1).await,
        DestroyedOpens::Still => assert_opens(root, &handle_1, 1, &sealed_1).await,
        DestroyedOpens::Either => match root.unseal(&handle_1, &context(1), &sealed_1).await {
            Err(RootError::NotOpened { version: 1, .. }) => {}
            Ok(opened) => assert_eq!(&opened[..], &secret(1)[..], "it opened"),
            Err(other) => panic!("neither NotOpened nor the secret: {other:?}"),
        },
    }
    assert_opens(root, &handle_2, 2, &sealed_2).await;
    let (handle_3, sealed_3) = sealed_version(root, 3).await;
    assert_opens(root, &handle_3, 3, &sealed_3).await;
}

/// Destroying material already destroyed succeeds with the same answer (a
/// retirement cut short retries), before and after a later version is
/// destroyed. Version 3 stays, for kinds that do not destroy the latest.
pub async fn destroying_a_version_twice_succeeds(root: &dyn RootOfTrust, expect: Expect) {
    let (handle_1, _) = sealed_version(root, 1).await;
    let (handle_2, _) = sealed_version(root, 2).await;
    let (handle_3, sealed_3) = sealed_version(root, 3).await;
    let first = root.destroy(&handle_1).await.expect("destroy");
    expect.assert_destruction(first, "destroy");
    assert_eq!(root.destroy(&handle_1).await.expect("again"), first);
    let next = root.destroy(&handle_2).await.expect("next");
    expect.assert_destruction(next, "next");
    assert_eq!(root.destroy(&handle_1).await.expect("older"), first);
    assert_opens(root, &handle_3, 3, &sealed_3).await;
}
