//! Moving a running vault off its root key file (MigrateRootOfTrust).

use pii_vault::app::RootOfTrustChoice;
use pii_vault::pb;
use pii_vault_testkit::openbao::OpenBao;

use super::*;
use crate::common::{self, PutFields, ADMIN_KEY};

/// The newest version of the vault's Transit key.
fn transit_latest_version(bao: &OpenBao) -> u64 {
    let read = bao.run(&["read", "-format=json", "transit/keys/pii-vault"]);
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let key: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    key["data"]["latest_version"].as_u64().unwrap()
}

/// Asserts the kind of the root of trust in use, and of the migration target
/// ("" for none), as GetKeyStatus says.
async fn assert_root_and_target(vault: &crate::common::TestVault, kind: &str, target: &str) {
    let root = key_status(vault).await.root_of_trust.unwrap();
    assert_eq!(
        (root.kind.as_str(), root.migration_target.as_str()),
        (kind, target)
    );
}

/// How a MigrateRootOfTrust call that must fail ends: refused at once, or in
/// its stream.
pub(super) async fn migration_failure(
    keys: &mut common::KeyAdminClient,
    request: pb::MigrateRootOfTrustRequest,
) -> tonic::Status {
    let migrated = async {
        let mut stream = keys.migrate_root_of_trust(request).await?.into_inner();
        while stream.message().await?.is_some() {}
        Ok::<(), tonic::Status>(())
    };
    migrated.await.expect_err("the migration must fail")
}

/// Runs MigrateRootOfTrust to its end and returns its last message.
async fn migrate(keys: &mut common::KeyAdminClient) -> pb::RootOfTrustMigrationProgress {
    migrate_with(keys, pb::MigrateRootOfTrustRequest::default()).await
}

/// Runs MigrateRootOfTrust, as `request` asks, to its end and returns its
/// last message.
pub(super) async fn migrate_with(
    keys: &mut common::KeyAdminClient,
    request: pb::MigrateRootOfTrustRequest,
) -> pb::RootOfTrustMigrationProgress {
    let mut stream = keys
        .migrate_root_of_trust(request)
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(step) = stream.message().await.unwrap() {
        assert!(step.sealed <= step.total, "{step:?}");
        last = Some(step);
    }
    last.expect("the migration reported progress")
}

/// A vault on its root key file, restarted with `--root-of-trust transit`
/// and the same file, serves from the file until MigrateRootOfTrust, which
/// moves the keyring to Transit while the vault serves; afterwards the vault
/// starts and rotates with the file gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
async fn a_file_key_vault_moves_to_transit_while_it_serves() {
    let bao = OpenBao::start();
    let mut vault = common::spawn_vault().await;
    store_customers(&vault).await;
    vault.rotate_master(false).await;
    vault.stop().await;
    vault.options.root_of_trust = RootOfTrustChoice::Transit(transit_config(&bao));
    // Without the root key file the keyring cannot be opened, and the vault
    // says what to do.
    let mut without_file = vault.paths.clone();
    without_file.root_key_file = std::path::PathBuf::new();
    let message = super::refusal_to_open(
        &without_file,
        &vault.options,
        "a vault without the root key file",
    )
    .await;
    assert!(
        message.contains("still sealed by a root key file: give that file with --root-key-file"),
        "{message}"
    );
    vault.start_again().await;
    assert_root_and_target(&vault, "file", "transit").await;

    let migrated = crate::cli::pii_vault(&vault, &["keys", "migrate-root-of-trust"]);
    let said = crate::cli::stdout_of(&migrated);
    assert!(
        said.contains("The keyring is sealed by transit now"),
        "{said}"
    );
    let progress = String::from_utf8_lossy(&migrated.stderr);
    assert!(
        progress.contains("sealed 2/2 master versions under transit"),
        "{progress}"
    );
    let mut keys = vault.key_admin(ADMIN_KEY).await;
    let status = key_status(&vault).await;
    let root = status.root_of_trust.unwrap();
    assert_eq!(
        (root.kind.as_str(), root.migration_target.as_str()),
        ("transit", "")
    );
    // One Transit version for each live master version (the key's first
    // version, from its creation, is never used).
    assert_eq!(transit_latest_version(&bao), 3);
    assert_eq!(status.master_versions, vec![1, 2]);
    let mut admin = vault.admin().await;
    let read = common::get(&mut admin, "victim", &["ssn"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "ssn").value, SSN);
    let again = keys
        .migrate_root_of_trust(pb::MigrateRootOfTrustRequest::default())
        .await
        .expect_err("nothing left to migrate");
    assert_eq!(again.code(), tonic::Code::InvalidArgument, "{again:?}");

    // Migrated, the keyring no longer opens with the root key file alone.
    vault.stop().await;
    let on_the_file = pii_vault::app::VaultOptions {
        root_of_trust: RootOfTrustChoice::File,
        ..vault.options.clone()
    };
    let message = super::refusal_to_open(
        &vault.paths,
        &on_the_file,
        "a vault on the root key file alone",
    )
    .await;
    assert!(message.contains("sealed version by version"), "{message}");

    std::fs::remove_file(&vault.paths.root_key_file).unwrap();
    vault.restart().await;
    vault.rotate_master(true).await;
    let mut admin = vault.admin().await;
    let read = common::get(&mut admin, "kept", &["ssn"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "ssn").value, KEPT_SSN);
    assert_eq!(key_status(&vault).await.master_versions, vec![3]);
}

/// kill -9 while a migration to `kind` runs, again and again, the real
/// binary: each restart (with the same flags) finds the keyring either
/// still on the file, and the migration runs again, or on `kind`; nothing
/// is lost.
async fn kill_9_during_a_migration_loses_nothing_on(kind: &str) {
    use rand::Rng;
    let peer = Peer::start(kind);
    let mut vault = common::spawn_vault().await;
    store_customers(&vault).await;
    // Eight live versions: sixteen calls to the root of trust, a migration
    // long enough to be cut in the middle.
    for _ in 0..7 {
        vault.rotate_master(false).await;
    }
    vault.stop().await;
    let root_key = vault.paths.root_key_file.to_str().unwrap().to_owned();
    let log_file = vault.dir.path().join("vault.log");
    let mut migrated = false;
    let mut cut_short = 0;
    for cycle in 0..8 {
        let (child, addr) = serve_listening(
            &vault,
            peer.serve_flags(),
            &log_file,
            &["--root-key-file", &root_key],
        );
        let mut keys = keys_at(addr).await;
        let status = status_of(&mut keys).await;
        let root = status.root_of_trust.unwrap();
        if migrated {
            assert_eq!(
                root.kind, kind,
                "cycle {cycle}: a finished migration came undone"
            );
        }
        if cycle > 0 && root.kind != kind {
            cut_short += 1;
        }
        migrated = root.kind == kind;
        let mut admin = admin_at(addr).await;
        let read = common::get(&mut admin, "kept", &["ssn"], "billing")
            .await
            .unwrap();
        assert_eq!(
            common::value_of(&read, "ssn").value,
            KEPT_SSN,
            "cycle {cycle}"
        );
        if !migrated {
            let started = keys.migrate_root_of_trust(pb::MigrateRootOfTrustRequest::default());
            let delay = rand::rng().random_range(0..25);
            let _ = tokio::time::timeout(std::time::Duration::from_millis(delay), started).await;
        }
        child.kill9();
    }
    println!("migrations cut short by kill -9 and run again: {cut_short}");
    // The last restart finishes it, if no cycle did.
    let (child, addr) = serve_listening(
        &vault,
        peer.serve_flags(),
        &log_file,
        &["--root-key-file", &root_key],
    );
    let mut keys = keys_at(addr).await;
    // The last cycle's migration may have finished before its kill.
    let root = status_of(&mut keys).await.root_of_trust.unwrap();
    if root.kind != kind {
        assert!(!migrated, "a finished migration came undone");
        let last = migrate(&mut keys).await;
        assert!(last.done, "{last:?}");
    }
    let status = status_of(&mut keys).await;
    assert_eq!(status.root_of_trust.unwrap().kind, kind);
    let mut admin = admin_at(addr).await;
    let read = common::get(&mut admin, "victim", &["ssn"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "ssn").value, SSN);
    child.kill9();
}

macro_rules! kill_9_migration_tests {
    ($module:ident, $kind:literal, $needs:literal) => {
        mod $module {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $needs]
            async fn kill_9_during_a_migration_loses_nothing() {
                super::kill_9_during_a_migration_loses_nothing_on($kind).await;
            }
        }
    };
}

// Not on SoftHSM2: its file object store is written in place, and a kill
// -9 while it creates a key object can leave the token unreadable (seen
// here: the restarted vault found no token of that label). A real HSM keeps
// its objects itself, out of the vault process.
kill_9_migration_tests!(
    transit,
    "transit",
    "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"
);
kill_9_migration_tests!(
    aws_kms,
    "aws-kms",
    "root of trust: needs moto; .ci/root-of-trust-tools installs it"
);

/// The keyring image as stored now: the file's two slots on sled, the row on
/// PostgreSQL.
async fn stored_keyring(vault: &crate::common::TestVault) -> Vec<u8> {
    match &vault.database {
        Some(database) => super::keyring_row(database).await,
        None => std::fs::read(&vault.paths.keyring_file).unwrap(),
    }
}

/// A root key file replaced by a new one, online: started with the new file
/// and `previous_root_key_file` set to the old one, the vault serves from the
/// old until MigrateRootOfTrust seals the keyring by the new; afterwards it
/// starts on the new file alone, the old one opens nothing, and a rotation
/// with retirement runs on. Nothing else changes: every customer reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_key_file_is_replaced_by_a_new_one_online() {
    use pii_vault::crypto::{root_key_opens, RootKey};
    let mut vault = common::spawn_vault().await;
    store_customers(&vault).await;
    vault.rotate_master(false).await;
    let old_file = vault.paths.root_key_file.clone();
    let new_file = vault.dir.path().join("root-2.key");
    RootKey::generate_file(&new_file).unwrap();
    let (old, new) = (
        RootKey::load(&old_file).unwrap(),
        RootKey::load(&new_file).unwrap(),
    );

    vault.stop().await;
    vault.paths.root_key_file = new_file.clone();
    vault.options.previous_root_key_file = Some(old_file.clone());
    vault.restart().await;
    assert_root_and_target(&vault, "file", "file").await;
    let mut keys = vault.key_admin(ADMIN_KEY).await;
    let last = migrate(&mut keys).await;
    assert_eq!((last.to.as_str(), last.total, last.done), ("file", 2, true));
    let root = key_status(&vault).await.root_of_trust.unwrap();
    assert_eq!(root.migration_target, "");
    let stored = stored_keyring(&vault).await;
    assert!(root_key_opens(&new, &stored));
    assert!(
        !root_key_opens(&old, &stored),
        "a slot still opens with the old file"
    );

    // The old file alone opens nothing now.
    vault.stop().await;
    let mut on_the_old = vault.paths.clone();
    on_the_old.root_key_file = old_file.clone();
    let without_previous = pii_vault::app::VaultOptions {
        previous_root_key_file: None,
        ..vault.options.clone()
    };
    let message =
        super::refusal_to_open(&on_the_old, &without_previous, "the old root key file").await;
    assert!(message.contains("keyring"), "{message}");

    vault.options.previous_root_key_file = None;
    std::fs::remove_file(&old_file).unwrap();
    vault.restart().await;
    vault.rotate_master(true).await;
    let mut admin = vault.admin().await;
    for (customer, ssn) in [("victim", SSN), ("kept", KEPT_SSN)] {
        let read = common::get(&mut admin, customer, &["ssn"], "billing")
            .await
            .unwrap();
        assert_eq!(common::value_of(&read, "ssn").value, ssn);
    }
    assert_eq!(key_status(&vault).await.master_versions, vec![3]);
}

/// Started with a previous root key file that no longer seals the keyring
/// (the replacement already done), the vault opens with the new file and
/// has nothing to migrate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_root_key_file_that_seals_nothing_is_ignored() {
    let mut vault = common::spawn_vault().await;
    store_customers(&vault).await;
    let stale = vault.dir.path().join("stale.key");
    pii_vault::crypto::RootKey::generate_file(&stale).unwrap();
    vault.stop().await;
    vault.options.previous_root_key_file = Some(stale);
    vault.restart().await;
    let root = key_status(&vault).await.root_of_trust.unwrap();
    assert_eq!(root.migration_target, "");
    let mut admin = vault.admin().await;
    let read = common::get(&mut admin, "kept", &["ssn"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "ssn").value, KEPT_SSN);
}

/// Moves a vault on `from` to `to` (a root of trust, or `None`: a new root
/// key file) while it serves: started with `to` and `from` as the previous
/// root of trust, it opens the keyring with `from` until MigrateRootOfTrust;
/// afterwards it starts on `to` alone, even with the previous still given,
/// and rotates with retirement. Every customer reads back at each step.
async fn moves_between_roots_of_trust(from: &Peer, to: Option<&Peer>) {
    let mut vault = vault_on(from).await;
    store_customers(&vault).await;
    vault.rotate_master(false).await;
    let to_kind = to.map_or("file", Peer::kind);

    vault.stop().await;
    match to {
        Some(to) => vault.options.root_of_trust = to.choice(),
        None => {
            vault.options.root_of_trust = RootOfTrustChoice::File;
            pii_vault::crypto::RootKey::generate_file(&vault.paths.root_key_file).unwrap();
        }
    }
    vault.options.previous_root_of_trust = Some(from.choice());
    vault.restart().await;
    assert_root_and_target(&vault, from.kind(), to_kind).await;
    reads_every_customer(&vault).await;
    let mut keys = vault.key_admin(ADMIN_KEY).await;
    let last = migrate(&mut keys).await;
    assert_eq!(
        (last.to.as_str(), last.total, last.done),
        (to_kind, 2, true)
    );
    assert_root_and_target(&vault, to_kind, "").await;
    reads_every_customer(&vault).await;

    // The previous root of trust still given: it seals nothing, and is
    // ignored.
    vault.restart().await;
    assert_root_and_target(&vault, to_kind, "").await;
    reads_every_customer(&vault).await;

    vault.stop().await;
    vault.options.previous_root_of_trust = None;
    vault.restart().await;
    vault.rotate_master(true).await;
    reads_every_customer(&vault).await;
    assert_eq!(key_status(&vault).await.master_versions, vec![3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root of trust: needs OpenBao and SoftHSM2; .ci/root-of-trust-tools installs them"]
async fn a_vault_moves_from_transit_to_an_hsm_while_it_serves() {
    let (from, to) = (Peer::start("transit"), Peer::start("pkcs11"));
    moves_between_roots_of_trust(&from, Some(&to)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root of trust: needs moto; .ci/root-of-trust-tools installs it"]
async fn a_vault_moves_from_aws_kms_back_to_a_root_key_file_while_it_serves() {
    moves_between_roots_of_trust(&Peer::start("aws-kms"), None).await;
}

/// Given a previous root of trust that opens neither the keyring nor lets
/// the configured one open it, the vault refuses to start, naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root of trust: needs OpenBao and SoftHSM2; .ci/root-of-trust-tools installs them"]
async fn a_keyring_that_neither_root_of_trust_opens_is_refused_naming_both() {
    let sealing = Peer::start("transit");
    let vault = vault_on(&sealing).await;
    store_customers(&vault).await;
    let (unrelated, other) = (Peer::start("pkcs11"), Peer::start("transit"));
    let options = pii_vault::app::VaultOptions {
        root_of_trust: unrelated.choice(),
        previous_root_of_trust: Some(other.choice()),
        ..vault.options.clone()
    };
    let mut paths = vault.paths.clone();
    let copy = vault.dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    if vault.database.is_none() {
        paths.keyring_file = copy.join("keyring");
        std::fs::copy(&vault.paths.keyring_file, &paths.keyring_file).unwrap();
        paths.data_dir = copy.join("store");
        super::copy_dir(&vault.paths.data_dir, &paths.data_dir);
    }
    let message =
        super::refusal_to_open(&paths, &options, "a vault neither root of trust opens").await;
    assert!(
        message.contains("opens neither with the previous root of trust"),
        "{message}"
    );
}

/// Backups of the keyring sealed by the root key file before a migration to
/// Transit hold every version that existed then: an erasure covered by one
/// stays LOGICAL after the migration (with the due date it had, for one
/// destroyed before), until the backup retention has passed since the file
/// stopped sealing. An erasure covered only by versions created after the
/// migration, and destroyed in Transit, is CRYPTOGRAPHIC at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
async fn erasures_covered_by_versions_of_the_file_wait_for_the_backup_retention() {
    let bao = OpenBao::start();
    let mut vault = common::spawn_vault().await;
    store_customers(&vault).await;
    let erased_on_file = common::delete_customer(&mut vault.privacy(ADMIN_KEY).await, "victim")
        .await
        .unwrap();
    vault.rotate_master(true).await;
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let before = common::deletion_status(&mut privacy, &erased_on_file.receipt_id)
        .await
        .unwrap();
    assert_eq!(before.state(), pb::ErasureState::Logical);

    vault.stop().await;
    vault.options.root_of_trust = RootOfTrustChoice::Transit(transit_config(&bao));
    vault.restart().await;
    let migrated_ms = now_ms();
    let last = migrate(&mut vault.key_admin(ADMIN_KEY).await).await;
    assert!(last.done, "{last:?}");
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let after = common::deletion_status(&mut privacy, &erased_on_file.receipt_id)
        .await
        .unwrap();
    assert_eq!(after.state(), pb::ErasureState::Logical, "{after:?}");
    assert_eq!(
        common::erasure_due_ms(&after),
        common::erasure_due_ms(&before)
    );

    // On Transit alone (the record of the file's time is in the keyring):
    // "kept" was wrapped under a version of the file's time, retired in
    // Transit now; "fresh" only under one created on Transit.
    vault.stop().await;
    std::fs::remove_file(&vault.paths.root_key_file).unwrap();
    vault.restart().await;
    vault.rotate_master(true).await;
    let mut admin = vault.admin().await;
    common::put(
        &mut admin,
        PutFields::of("fresh").field("ssn", FieldKind::Ssn, "219-77-1234"),
    )
    .await
    .unwrap();
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let erased_kept = common::delete_customer(&mut privacy, "kept").await.unwrap();
    let erased_fresh = common::delete_customer(&mut privacy, "fresh")
        .await
        .unwrap();
    vault.rotate_master(true).await;
    let kept = common::deletion_status(&mut privacy, &erased_kept.receipt_id)
        .await
        .unwrap();
    assert_eq!(kept.state(), pb::ErasureState::Logical, "{kept:?}");
    let retention_ms = 30 * 24 * 3600 * 1000;
    let from_migration = common::erasure_due_ms(&kept) - migrated_ms - retention_ms;
    assert!((0..60_000).contains(&from_migration), "{from_migration}");
    let fresh = common::deletion_status(&mut privacy, &erased_fresh.receipt_id)
        .await
        .unwrap();
    assert_eq!(fresh.state(), pb::ErasureState::Cryptographic, "{fresh:?}");
}

/// A move to another kind first has the previous root of trust destroy what
/// it still owed (a retired version's material), since its handles mean
/// nothing to the new one: while it cannot, the migration fails and the
/// keyring stays where it was; once it can, the material is destroyed and
/// the keyring moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root of trust: needs OpenBao and SoftHSM2; .ci/root-of-trust-tools installs them"]
async fn a_move_first_destroys_what_the_previous_root_of_trust_owed() {
    use std::sync::atomic::Ordering;
    let (from, to) = (Peer::start("transit"), Peer::start("pkcs11"));
    let previous = Arc::new(super::renewal::RefusingDestruction {
        inner: from.client().await,
        refuse: std::sync::atomic::AtomicBool::new(true),
    });
    let options = pii_vault::app::VaultOptions {
        root_of_trust: RootOfTrustChoice::Connected(Arc::clone(&previous) as Arc<dyn RootOfTrust>),
        ..pii_vault::app::VaultOptions::default()
    };
    let mut vault = common::spawn_vault_with(&common::test_policy(), options).await;
    store_customers(&vault).await;
    let rotation = common::start_rotation(&mut vault.key_admin(ADMIN_KEY).await, true).await;
    super::unreachable::rotation_failure(rotation).await;
    assert_eq!(owed(&vault).await, vec![1]);

    vault.stop().await;
    vault.options.previous_root_of_trust = vault.options.root_of_trust.clone().into();
    vault.options.root_of_trust = to.choice();
    vault.restart().await;
    let mut keys = vault.key_admin(ADMIN_KEY).await;
    let failed = migration_failure(&mut keys, pb::MigrateRootOfTrustRequest::default()).await;
    super::unreachable::assert_root_of_trust_unavailable(&failed);
    assert_root_and_target(&vault, "transit", "pkcs11").await;
    assert_eq!(owed(&vault).await, vec![1]);

    previous.refuse.store(false, Ordering::SeqCst);
    let last = migrate(&mut keys).await;
    assert!(last.done, "{last:?}");
    assert_root_and_target(&vault, "pkcs11", "").await;
    assert!(owed(&vault).await.is_empty());
    reads_every_customer(&vault).await;
}

/// Retired versions whose material the root of trust in use still owes.
async fn owed(vault: &crate::common::TestVault) -> Vec<u32> {
    let root = key_status(vault).await.root_of_trust.unwrap();
    root.awaiting_destruction
}
