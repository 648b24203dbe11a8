//! A keyring sealed version by version by its root of trust: sealing the
//! versions a rotation added, opening a stored keyring, and destroying the
//! material of retired versions.

use std::collections::BTreeMap;

use crate::crypto::{Keyring, SealedKeyring, VersionSeal};
use crate::root_of_trust::{Destruction, KeyHandle, RootOfTrust, SealContext};
use crate::vault::VaultError;

/// Seals every live version that has no seal yet under new material of its
/// own. Nothing is stored here: a failure leaves only unused material behind.
pub async fn seal_new_versions(
    root: &dyn RootOfTrust,
    keyring: &mut Keyring,
) -> Result<(), VaultError> {
    for version in keyring.unsealed_versions() {
        seal_version(root, keyring, version).await?;
    }
    Ok(())
}

/// Seals one live version under new material of its own in `root`.
pub async fn seal_version(
    root: &dyn RootOfTrust,
    keyring: &mut Keyring,
    version: u32,
) -> Result<(), VaultError> {
    let Some(secret) = keyring.get(version).map(|master| master.sealing_secret()) else {
        return Ok(());
    };
    let context = context(keyring, version);
    let handle = root.create_key(&context).await?;
    let sealed = root.seal(&handle, &context, &secret).await?;
    keyring.set_seal(
        version,
        VersionSeal {
            handle: handle.0,
            sealed,
        },
    );
    Ok(())
}

/// The keyring `sealed` holds, each live version unsealed by `root`.
pub async fn open_keyring(
    root: &dyn RootOfTrust,
    sealed: SealedKeyring,
) -> Result<Keyring, VaultError> {
    let mut unsealed = BTreeMap::new();
    for (version, (_, seal)) in &sealed.versions {
        let context = SealContext {
            keyring_id: sealed.id.0,
            master_version: *version,
        };
        let handle = KeyHandle(seal.handle.clone());
        let secret = root.unseal(&handle, &context, &seal.sealed).await?;
        unsealed.insert(*version, secret);
    }
    Ok(sealed.open(unsealed)?)
}

/// What asking the root of trust to destroy retired versions came to.
pub struct Destructions {
    /// Versions whose material, retired or superseded, is now destroyed
    /// (recorded in the keyring).
    pub destroyed: Vec<u32>,
    /// Why the rest are still waiting, if any are.
    pub error: Option<VaultError>,
}

/// What becomes of the material each version was sealed under before it is
/// sealed anew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlierSeal {
    /// Another root of trust's (a root key file, or another kind, whose
    /// material the operator destroys): forgotten.
    Forget,
    /// The same root of trust's: kept as superseded, to be destroyed once
    /// the keyring is saved.
    Supersede,
}

/// Seals every live version anew under new material of its own in `root`,
/// doing with the earlier seals what `earlier` says. `progress(sealed,
/// total)` follows each version. Nothing is stored here.
pub async fn seal_anew(
    root: &dyn RootOfTrust,
    keyring: &mut Keyring,
    earlier: EarlierSeal,
    progress: impl Fn(u32, u32),
) -> Result<(), VaultError> {
    let versions = keyring.versions();
    let total = versions.len() as u32;
    progress(0, total);
    for (done, version) in versions.into_iter().enumerate() {
        match earlier {
            EarlierSeal::Forget => keyring.clear_seal(version),
            EarlierSeal::Supersede => keyring.supersede_seal(version),
        }
        seal_version(root, keyring, version).await?;
        progress(done as u32 + 1, total);
    }
    Ok(())
}

/// Asks the root of trust to destroy the material of every retired version
/// still waiting for it, recording each destruction in `keyring` (for good
/// now, or at the end of a KMS's pending window), then the material a
/// rotation of the root of trust superseded. Stops at the first failure;
/// the next rotation or start retries the rest.
pub async fn destroy_pending(
    root: &dyn RootOfTrust,
    keyring: &mut Keyring,
    now_ms: i64,
) -> Destructions {
    let pending: Vec<(u32, Vec<u8>)> = keyring
        .pending_destructions()
        .iter()
        .map(|(version, handle)| (*version, handle.clone()))
        .collect();
    let mut destroyed = Vec::new();
    for (version, handle) in pending {
        let at_ms = match root.destroy(&KeyHandle(handle)).await {
            Ok(Destruction::Done | Destruction::Impossible) => now_ms,
            Ok(Destruction::Scheduled { at_ms }) => at_ms,
            Err(error) => {
                return Destructions {
                    destroyed,
                    error: Some(error.into()),
                }
            }
        };
        keyring.confirm_destroyed(version, at_ms);
        destroyed.push(version);
    }
    for (version, handle) in keyring.superseded().to_vec() {
        // A superseded seal's version is live, or retired with its current
        // material: either way its own destruction date is the one to keep.
        if let Err(error) = root.destroy(&KeyHandle(handle.clone())).await {
            return Destructions {
                destroyed,
                error: Some(error.into()),
            };
        }
        keyring.confirm_superseded_destroyed(&handle);
        destroyed.push(version);
    }
    Destructions {
        destroyed,
        error: None,
    }
}

fn context(keyring: &Keyring, version: u32) -> SealContext {
    SealContext {
        keyring_id: keyring.id().0,
        master_version: version,
    }
}
