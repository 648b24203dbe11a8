//! Key rotation: master keys re-wrapped and retired online, customer keys
//! replaced, crashes mid-rotation, and the erasure that becomes cryptographic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{field, TestVault, VaultClient, ADMIN_KEY, CHECKOUT_KEY};
use pii_vault::crypto::{KeyringFile, RootKey};
use pii_vault::pb::{self, FieldKind};
use tonic::Code;

/// Stores `count` customers "rot-0".. with an email and a note, `concurrency` at a time.
async fn seed(client: &VaultClient, count: usize) {
    let concurrency = 32;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in (worker..count).step_by(concurrency) {
                let fields = vec![
                    field("email", FieldKind::Email, &format!("user{i}@example.com")),
                    field("note", FieldKind::Generic, &format!("note {i}")),
                ];
                common::put(&mut client, &format!("rot-{i}"), fields)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

async fn assert_readable(client: &mut VaultClient, count: usize) {
    for i in 0..count {
        let response = common::get(client, &format!("rot-{i}"), &["note"], "billing")
            .await
            .unwrap_or_else(|status| panic!("rot-{i} unreadable: {status}"));
        assert_eq!(
            common::value_of(&response, "note").value,
            format!("note {i}")
        );
    }
}

/// Runs a master rotation to the end and returns its last progress message.
async fn rotate_master(vault: &TestVault, retire: bool) -> pb::RotationProgress {
    let mut keys = vault.key_admin(ADMIN_KEY).await;
    let mut stream = keys
        .rotate_master_key(pb::RotateMasterKeyRequest {
            retire_previous: retire,
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(progress) = stream.message().await.unwrap() {
        assert!(progress.rewrapped <= progress.total, "{progress:?}");
        last = Some(progress);
    }
    let last = last.expect("no progress streamed");
    assert!(last.done, "{last:?}");
    last
}

async fn key_status(vault: &TestVault, customer: &str) -> pb::KeyStatus {
    vault
        .key_admin(ADMIN_KEY)
        .await
        .get_key_status(pb::GetKeyStatusRequest {
            customer_id: customer.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The master versions in the keyring file (sled mode), else as the vault reports them.
async fn keyring_versions(vault: &TestVault) -> Vec<u32> {
    if common::on_postgres() {
        return key_status(vault, "").await.master_versions;
    }
    let root = RootKey::load(&vault.paths.root_key_file).unwrap();
    let (_, keyring) = KeyringFile::open_or_create(&vault.paths.keyring_file, &root, 0).unwrap();
    keyring.versions()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_master_rotation_with_retirement_every_value_is_readable_and_old_keys_are_gone() {
    let mut vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    seed(&admin, 300).await;
    let token = common::tokenize(
        &mut admin,
        "rot-1",
        vec![(FieldKind::Ssn, "123-45-6789", pb::TokenFormat::Random)],
    )
    .await
    .unwrap();
    assert_eq!(keyring_versions(&vault).await, [1]);

    let last = rotate_master(&vault, true).await;
    assert_eq!(last.new_master_version, 2);
    assert_eq!((last.rewrapped, last.total), (300, 300));
    assert_eq!(last.retired_versions, [1]);
    assert_eq!(
        keyring_versions(&vault).await,
        [2],
        "retired version still in the keyring file"
    );
    let status = key_status(&vault, "").await;
    assert_eq!(
        (status.active_master_version, status.master_versions.clone()),
        (2, vec![2])
    );
    assert_eq!(status.customers, 300);

    assert_readable(&mut admin, 300).await;
    let resolved = common::detokenize(&mut admin, &token, "billing")
        .await
        .unwrap();
    assert_eq!(resolved[0].value, "123-45-6789");

    vault.restart().await;
    let mut admin = vault.admin().await;
    assert_readable(&mut admin, 300).await;
    let last = rotate_master(&vault, false).await;
    assert_eq!(
        (last.new_master_version, last.retired_versions.len()),
        (3, 0)
    );
    assert_eq!(keyring_versions(&vault).await, [2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_keep_succeeding_while_thousands_of_customers_are_rewrapped() {
    let vault = common::spawn_vault().await;
    let admin = vault.admin().await;
    seed(&admin, 3000).await;

    let rotation = {
        let mut keys = vault.key_admin(ADMIN_KEY).await;
        tokio::spawn(async move {
            let mut stream = keys
                .rotate_master_key(pb::RotateMasterKeyRequest {
                    retire_previous: true,
                })
                .await
                .unwrap()
                .into_inner();
            let mut messages = Vec::new();
            while let Some(progress) = stream.message().await.unwrap() {
                messages.push(progress);
            }
            messages
        })
    };
    // Traffic on the same customers while they are re-wrapped.
    let mut client = admin.clone();
    let mut operations = 0;
    while !rotation.is_finished() {
        let i = operations % 3000;
        let customer = format!("rot-{i}");
        common::put(
            &mut client,
            &customer,
            vec![field("note", FieldKind::Generic, &format!("note {i}"))],
        )
        .await
        .unwrap_or_else(|status| panic!("write during rotation failed: {status}"));
        common::get(&mut client, &customer, &["email"], "billing")
            .await
            .unwrap_or_else(|status| panic!("read during rotation failed: {status}"));
        operations += 1;
    }
    let messages = rotation.await.unwrap();
    assert!(
        messages.len() > 2,
        "progress was streamed in steps: {messages:?}"
    );
    assert!(operations > 0);
    let last = messages.last().unwrap();
    assert!(last.done && last.retired_versions == [1], "{last:?}");
    assert_readable(&mut client, 3000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rotation_while_one_runs_is_refused() {
    let vault = common::spawn_vault().await;
    seed(&vault.admin().await, 2000).await;
    let mut first_keys = vault.key_admin(ADMIN_KEY).await;
    let mut first = first_keys
        .rotate_master_key(pb::RotateMasterKeyRequest {
            retire_previous: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut second_keys = vault.key_admin(ADMIN_KEY).await;
    let second = second_keys
        .rotate_master_key(pb::RotateMasterKeyRequest {
            retire_previous: false,
        })
        .await;
    // The first rotation holds the lock until it is done: re-wrapping 2000
    // customers takes several disk syncs, far longer than this second call.
    let status = second.expect_err("second rotation started");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    while first.message().await.unwrap().is_some() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_killed_midway_completes_after_restart_without_losing_data() {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let log = dir.path().join("vault.log");
    let process = common::VaultProcess::start(&paths, &log);
    let admin = process.vault(ADMIN_KEY).await;
    seed(&admin, 4000).await;
    let mut keys = pii_vault::pb::key_admin_service_client::KeyAdminServiceClient::with_interceptor(
        process.channel().await,
        common::Bearer::new(ADMIN_KEY),
    );
    let mut stream = keys
        .rotate_master_key(pb::RotateMasterKeyRequest {
            retire_previous: true,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(!first.done);
    process.kill9();

    let process = common::VaultProcess::start(&paths, &log);
    let mut admin = process.vault(ADMIN_KEY).await;
    let mut keys = pii_vault::pb::key_admin_service_client::KeyAdminServiceClient::with_interceptor(
        process.channel().await,
        common::Bearer::new(ADMIN_KEY),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = keys
            .get_key_status(pb::GetKeyStatusRequest::default())
            .await
            .unwrap()
            .into_inner();
        if status.master_versions == [2] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotation never completed: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("resuming master key rotation"),
        "the restart did not resume it"
    );
    assert_readable(&mut admin, 4000).await;
    process.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_the_data_directory_cannot_bring_back_an_erased_customer() {
    if !common::sled_only("a_backup_of_the_data_directory_cannot_bring_back_an_erased_customer") {
        return;
    }
    let mut vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    let tokens = common::put(
        &mut admin,
        "erased",
        vec![field("ssn", FieldKind::Ssn, "219-09-9999")],
    )
    .await
    .unwrap()
    .tokens;
    common::put(
        &mut admin,
        "kept",
        vec![field("ssn", FieldKind::Ssn, "123-45-6789")],
    )
    .await
    .unwrap();
    // The backup: the data directory only, as a disk snapshot would take it.
    let backup = tempfile::tempdir().unwrap();
    common::copy_dir(&vault.paths.data_dir, &backup.path().join("data"));

    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let receipt = common::delete_customer(&mut privacy, "erased")
        .await
        .unwrap();
    assert_eq!(receipt.state, pb::ErasureState::Logical as i32);
    assert!(
        receipt.cryptographic_erasure_due.is_some(),
        "a logical erasure says when it becomes final"
    );
    rotate_master(&vault, true).await;
    let status = privacy
        .get_deletion_status(pb::GetDeletionStatusRequest {
            receipt_id: receipt.receipt_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, pb::ErasureState::Cryptographic as i32);
    assert!(status.cryptographic_erasure_due.is_none());
    vault.stop().await;

    // A vault on the old data directory with today's keyring and root key.
    let mut paths = vault.paths.clone();
    paths.data_dir = backup.path().join("data");
    let restored = common::spawn_vault_on(paths, backup).await;
    let mut admin = restored.admin().await;
    let read = common::get(&mut admin, "erased", &[], "billing").await;
    let status = read.expect_err("an erased customer's values came back from a backup");
    assert_eq!(status.code(), Code::Internal);
    assert!(!status.message().contains("219"));
    let resolved = common::detokenize(&mut admin, &[tokens["ssn"].clone()], "billing").await;
    assert!(resolved.is_err(), "detokenized from a backup: {resolved:?}");
    let mut privacy = restored.privacy(ADMIN_KEY).await;
    let export = common::export(&mut privacy, "erased", pb::ExportFormat::Json).await;
    assert!(export.is_err(), "exported from a backup");
    // Everyone in the backup was wrapped under the destroyed version.
    assert!(common::get(&mut admin, "kept", &[], "billing")
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_customer_key_keeps_values_readable_and_the_old_key_unusable() {
    if !common::sled_only("rotating_a_customer_key_keeps_values_readable_and_the_old_key_unusable")
    {
        return;
    }
    let mut vault = common::spawn_vault().await;
    let mut admin = vault.admin().await;
    common::put(
        &mut admin,
        "rekeyed",
        vec![
            field("ssn", FieldKind::Ssn, "123-45-6789"),
            field("email", FieldKind::Email, "rekey@example.com"),
        ],
    )
    .await
    .unwrap();
    let token = common::tokenize(&mut admin, "rekeyed", common::card())
        .await
        .unwrap();
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    common::set_consent(&mut privacy, "rekeyed", "marketing", true)
        .await
        .unwrap();
    let before = key_status(&vault, "rekeyed").await;
    assert_eq!(before.customer_key_version, 1);

    // The ciphertext of a field under the first key, straight from the store.
    vault.stop().await;
    let entry_key = b"Crekeyed";
    let old_ciphertext = {
        let db = sled::open(&vault.paths.data_dir).unwrap();
        let entry = db.get(entry_key).unwrap().unwrap();
        entry[ciphertext_range(&entry, "ssn")].to_vec()
    };
    vault.start_again().await;

    let mut keys = vault.key_admin(ADMIN_KEY).await;
    let rotated = keys
        .rotate_customer_key(pb::RotateCustomerKeyRequest {
            customer_id: "rekeyed".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.new_key_version, 2);
    assert_eq!(
        rotated.values_reencrypted, 4,
        "2 fields, 1 token, the consent ledger"
    );
    let after = key_status(&vault, "rekeyed").await;
    assert_eq!(after.customer_key_version, 2);
    assert_eq!(after.customer_key_encryptions, 4);

    let mut admin = vault.admin().await;
    let fields = common::get(&mut admin, "rekeyed", &[], "marketing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&fields, "ssn").value, "123-45-6789");
    assert_eq!(
        common::value_of(&fields, "email").value,
        "rekey@example.com"
    );
    let resolved = common::detokenize(&mut admin, &token, "billing")
        .await
        .unwrap();
    assert_eq!(resolved[0].value, "4242424242424242");

    // Put the old ciphertext back: the vault no longer has a key that opens it.
    vault.stop().await;
    {
        let db = sled::open(&vault.paths.data_dir).unwrap();
        let mut entry = db.get(entry_key).unwrap().unwrap().to_vec();
        let range = ciphertext_range(&entry, "ssn");
        assert_ne!(entry[range.clone()], old_ciphertext[..], "re-encrypted");
        entry[range].copy_from_slice(&old_ciphertext);
        db.insert(entry_key, entry).unwrap();
        db.flush().unwrap();
    }
    vault.start_again().await;
    let mut admin = vault.admin().await;
    let status = common::get(&mut admin, "rekeyed", &["ssn"], "billing")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal);
}

/// Where the ciphertext of field `name` (of the kind of the same name) sits in
/// a customer's stored entry (postcard): after the field map's key and the
/// record's kind, both `name`, then the token, each behind a one-byte length,
/// and behind its own one-byte length. Re-encryption keeps token and length.
fn ciphertext_range(entry: &[u8], name: &str) -> std::ops::Range<usize> {
    let prefixed = [&[name.len() as u8], name.as_bytes()].concat();
    let marker = prefixed.repeat(2);
    let at = entry
        .windows(marker.len())
        .position(|window| window == marker)
        .expect("the field is in the entry");
    let token_at = at + marker.len();
    let ciphertext_at = token_at + 1 + usize::from(entry[token_at]);
    let start = ciphertext_at + 1;
    assert!(
        entry[token_at] < 128 && entry[ciphertext_at] < 128,
        "one-byte lengths"
    );
    start..start + usize::from(entry[ciphertext_at])
}

#[tokio::test]
async fn only_keys_admin_may_rotate_or_read_key_status() {
    let vault = common::spawn_vault().await;
    common::put(
        &mut vault.admin().await,
        "someone",
        vec![field("note", FieldKind::Generic, "x")],
    )
    .await
    .unwrap();
    let mut keys = vault.key_admin(CHECKOUT_KEY).await;
    let refused = [
        keys.rotate_master_key(pb::RotateMasterKeyRequest {
            retire_previous: true,
        })
        .await
        .err(),
        keys.rotate_customer_key(pb::RotateCustomerKeyRequest {
            customer_id: "someone".into(),
        })
        .await
        .err(),
        keys.get_key_status(pb::GetKeyStatusRequest::default())
            .await
            .err(),
    ];
    for status in refused {
        let status = status.expect("allowed without keys:admin");
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(
            status.message().contains("keys:admin"),
            "{}",
            status.message()
        );
    }
    assert_eq!(key_status(&vault, "someone").await.customer_key_version, 1);
    assert_eq!(key_status(&vault, "").await.active_master_version, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_by_themselves_on_schedule_and_after_their_encryption_limit() {
    let options = pii_vault::app::VaultOptions {
        rotation: pii_vault::vault::RotationPolicy {
            master_interval: Duration::from_secs(2),
            dek_max_encryptions: 5,
        },
        ..Default::default()
    };
    let vault = common::spawn_vault_with(&common::test_policy(), options).await;
    let mut admin = vault.admin().await;
    for i in 0..3 {
        common::put(
            &mut admin,
            "busy",
            vec![field(&format!("f{i}"), FieldKind::Generic, "v")],
        )
        .await
        .unwrap();
    }
    // 3 encryptions so far; the next two writes reach the limit of 5.
    common::put(
        &mut admin,
        "busy",
        vec![
            field("f3", FieldKind::Generic, "v"),
            field("f4", FieldKind::Generic, "v"),
        ],
    )
    .await
    .unwrap();
    let status = key_status(&vault, "busy").await;
    assert_eq!(status.customer_key_version, 2, "{status:?}");
    // The new key's count starts with re-encrypting the five values.
    assert_eq!(status.customer_key_encryptions, 5, "{status:?}");

    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let receipt = common::delete_customer(&mut privacy, "busy").await.unwrap();
    assert_eq!(receipt.state, pb::ErasureState::Logical as i32);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = privacy
            .get_deletion_status(pb::GetDeletionStatusRequest {
                receipt_id: receipt.receipt_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if status.state == pb::ErasureState::Cryptographic as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduled rotation never retired the key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(key_status(&vault, "").await.active_master_version >= 2);
}
