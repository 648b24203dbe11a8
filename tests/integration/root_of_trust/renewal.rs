//! Rotating the root of trust in use (MigrateRootOfTrust with
//! renew_material): every live master version sealed under new material,
//! and the material it replaces destroyed.

use pii_vault::pb;
use pii_vault::root_of_trust::{RootError, SealContext};
use pii_vault_testkit::openbao::OpenBao;

use super::migration::{migrate_with, migration_failure};
use super::*;
use crate::common::{self, ADMIN_KEY};

fn renewal() -> pb::MigrateRootOfTrustRequest {
    pb::MigrateRootOfTrustRequest {
        renew_material: true,
    }
}

/// The handle each live version of a keyring image is sealed under.
fn handles(image: &[u8]) -> Vec<Vec<u8>> {
    let sealed = pii_vault::crypto::decode_image(image).unwrap();
    sealed
        .versions
        .values()
        .map(|(_, s)| s.handle.clone())
        .collect()
}

/// A backup taken before a rotation of the root of trust opens nothing
/// after it, while the vault itself restarts and reads every customer back
/// under the new material.
async fn a_backup_opens_nothing_after_renewal_on(kind: &str) {
    let peer = Peer::start(kind);
    let mut vault = vault_on(&peer).await;
    store_customers(&vault).await;
    vault.rotate_master(false).await;
    let backup = Backup::take(&vault).await;

    let mut keys = vault.key_admin(ADMIN_KEY).await;
    let last = migrate_with(&mut keys, renewal()).await;
    assert_eq!(
        (last.to.as_str(), last.sealed, last.total, last.done),
        (peer.kind(), 2, 2, true)
    );
    let root = key_status(&vault).await.root_of_trust.unwrap();
    assert!(root.superseded_awaiting_destruction.is_empty(), "{root:?}");
    let now = Backup::take(&vault).await;
    let (before, after) = (
        handles(&backup.keyring_image().await),
        handles(&now.keyring_image().await),
    );
    assert_eq!(before.len(), 2);
    assert!(
        before.iter().all(|handle| !after.contains(handle)),
        "{before:?} {after:?}"
    );

    vault.restart().await;
    reads_every_customer(&vault).await;
    backup.opens_nothing_on(&peer).await;
}

macro_rules! renewal_tests {
    ($module:ident, $kind:literal, $needs:literal) => {
        mod $module {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $needs]
            async fn a_backup_taken_before_a_renewal_opens_nothing_after_it() {
                super::a_backup_opens_nothing_after_renewal_on($kind).await;
            }
        }
    };
}

renewal_tests!(
    pkcs11,
    "pkcs11",
    "root of trust: needs SoftHSM2; .ci/root-of-trust-tools installs it"
);
renewal_tests!(
    transit,
    "transit",
    "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"
);
renewal_tests!(
    aws_kms,
    "aws-kms",
    "root of trust: needs moto; .ci/root-of-trust-tools installs it"
);

/// The root key file is one key: there is no material to renew, and the
/// refusal says how to replace the file instead. Nothing changes.
#[tokio::test]
async fn renewing_a_root_key_file_is_refused_with_how_to_replace_it() {
    let vault = common::spawn_vault().await;
    let before = std::fs::read(&vault.paths.keyring_file).ok();
    let mut keys = vault.key_admin(ADMIN_KEY).await;
    let status = keys
        .migrate_root_of_trust(renewal())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("--previous-root-key-file"),
        "{}",
        status.message()
    );
    assert_eq!(std::fs::read(&vault.paths.keyring_file).ok(), before);
}

/// Transit out of reach when a renewal starts: it fails with
/// ROOT_OF_TRUST_UNAVAILABLE and changes nothing (the keyring is sealed as
/// before); once Transit answers, the renewal runs to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
async fn a_renewal_that_cannot_reach_transit_changes_nothing_and_runs_once_it_can() {
    use super::unreachable::{assert_root_of_trust_unavailable, vault_behind_a_proxy_to};
    let bao = OpenBao::start();
    let (vault, proxy) = vault_behind_a_proxy_to(&bao).await;
    store_customers(&vault).await;
    let before = handles(&Backup::take(&vault).await.keyring_image().await);

    proxy.cut();
    let mut keys = vault.key_admin(ADMIN_KEY).await;
    let failed = migration_failure(&mut keys, renewal()).await;
    assert_root_of_trust_unavailable(&failed);
    let unchanged = handles(&Backup::take(&vault).await.keyring_image().await);
    assert_eq!(unchanged, before);
    let mut admin = vault.admin().await;
    let read = common::get(&mut admin, "kept", &["ssn"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "ssn").value, KEPT_SSN);

    proxy.restore();
    let last = migrate_with(&mut keys, renewal()).await;
    assert!(last.done, "{last:?}");
    let after = handles(&Backup::take(&vault).await.keyring_image().await);
    assert_ne!(after, before);
}

/// A real root of trust that refuses to destroy while told to, as one
/// that goes out of reach between a renewal's save and its destructions.
#[derive(Debug)]
pub(super) struct RefusingDestruction {
    pub(super) inner: Arc<dyn RootOfTrust>,
    pub(super) refuse: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl RootOfTrust for RefusingDestruction {
    fn kind(&self) -> pii_vault::root_of_trust::RootKind {
        self.inner.kind()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn check(&self) -> Result<(), RootError> {
        self.inner.check().await
    }
    async fn create_key(&self, context: &SealContext) -> Result<KeyHandle, RootError> {
        self.inner.create_key(context).await
    }
    async fn seal(
        &self,
        handle: &KeyHandle,
        context: &SealContext,
        secret: &[u8],
    ) -> Result<Vec<u8>, RootError> {
        self.inner.seal(handle, context, secret).await
    }
    async fn unseal(
        &self,
        handle: &KeyHandle,
        context: &SealContext,
        sealed: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, RootError> {
        self.inner.unseal(handle, context, sealed).await
    }
    async fn destroy(&self, handle: &KeyHandle) -> Result<Destruction, RootError> {
        if self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RootError::Unreachable {
                kind: "pkcs11",
                reason: "out of reach for this test".to_owned(),
            });
        }
        self.inner.destroy(handle).await
    }
}

/// A renewal whose destructions cannot run (the HSM lost after the keyring
/// was saved under the new material): the call fails saying so, the vault
/// serves under the new material, GetKeyStatus names the versions whose
/// replaced material waits, and a backup from before still opens; the next
/// start destroys that material, and the backup no longer opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root of trust: needs SoftHSM2; .ci/root-of-trust-tools installs it"]
async fn replaced_material_left_by_a_renewal_is_destroyed_at_the_next_start() {
    let peer = Peer::start("pkcs11");
    let root = Arc::new(RefusingDestruction {
        inner: peer.client().await,
        refuse: std::sync::atomic::AtomicBool::new(false),
    });
    let options = VaultOptions {
        root_of_trust: RootOfTrustChoice::Connected(Arc::clone(&root) as Arc<dyn RootOfTrust>),
        ..VaultOptions::default()
    };
    let mut vault = common::spawn_vault_with(&common::test_policy(), options).await;
    store_customers(&vault).await;
    let backup = Backup::take(&vault).await;

    root.refuse.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut keys = vault.key_admin(ADMIN_KEY).await;
    let failed = migration_failure(&mut keys, renewal()).await;
    assert!(
        failed.message().contains("sealed under new material"),
        "{failed:?}"
    );
    let status = key_status(&vault).await.root_of_trust.unwrap();
    assert_eq!(
        status.superseded_awaiting_destruction,
        vec![1],
        "{status:?}"
    );
    let sealed = pii_vault::crypto::decode_image(&backup.keyring_image().await).unwrap();
    let client = peer.client().await;
    assert!(pii_vault::vault::open_keyring(client.as_ref(), sealed)
        .await
        .is_ok());
    let mut admin = vault.admin().await;
    let read = common::get(&mut admin, "victim", &["ssn"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "ssn").value, SSN);

    root.refuse
        .store(false, std::sync::atomic::Ordering::SeqCst);
    vault.restart().await;
    let status = key_status(&vault).await.root_of_trust.unwrap();
    assert!(
        status.superseded_awaiting_destruction.is_empty(),
        "{status:?}"
    );
    let sealed = pii_vault::crypto::decode_image(&backup.keyring_image().await).unwrap();
    assert!(pii_vault::vault::open_keyring(client.as_ref(), sealed)
        .await
        .is_err());
    let mut admin = vault.admin().await;
    let read = common::get(&mut admin, "victim", &["ssn"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "ssn").value, SSN);
}
