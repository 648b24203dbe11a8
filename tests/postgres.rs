//! Several vault processes on one PostgreSQL database: acknowledged writes
//! visible from every replica, erasures final everywhere, one intact audit
//! chain through a master rotation; and no plaintext anywhere in the database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{field, TestDatabase, VaultProcess, ADMIN_KEY};
use pii_vault::pb::{self, FieldKind};
use tonic::Code;

fn replica(
    paths: &pii_vault::app::VaultPaths,
    log: &std::path::Path,
    database: &TestDatabase,
) -> VaultProcess {
    VaultProcess::start_with(
        paths,
        log,
        &["--store", "postgres", "--database-url", &database.url],
    )
}

async fn key_admin(process: &VaultProcess) -> common::KeyAdminClient {
    pb::key_admin_service_client::KeyAdminServiceClient::with_interceptor(
        process.channel().await,
        common::Bearer::new(ADMIN_KEY),
    )
}

async fn verify_audit(process: &VaultProcess) -> pb::VerifyAuditLogResponse {
    pb::audit_service_client::AuditServiceClient::with_interceptor(
        process.channel().await,
        common::Bearer::new(ADMIN_KEY),
    )
    .verify_audit_log(pb::VerifyAuditLogRequest {})
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_writes_erasures_rotation_and_one_audit_chain() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let a = replica(&paths, &dir.path().join("a.log"), &database);
    let b = replica(&paths, &dir.path().join("b.log"), &database);
    let clients = [a.vault(ADMIN_KEY).await, b.vault(ADMIN_KEY).await];
    const CUSTOMERS: usize = 20;
    const WRITERS: usize = 6;

    // Customers to erase during the run.
    for i in 0..5 {
        let mut client = clients[i % 2].clone();
        common::put(
            &mut client,
            &format!("gone-{i}"),
            vec![field("note", FieldKind::Generic, "bye")],
        )
        .await
        .unwrap();
    }
    // Writers on both replicas, each owning one field on every shared customer:
    // a lost update would leave a customer without some writer's field.
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let clients = clients.clone();
            tokio::spawn(async move {
                let mut acknowledged = BTreeMap::new();
                for round in 0..3 {
                    for c in 0..CUSTOMERS {
                        let mut client = clients[(w + c + round) % 2].clone();
                        let value = format!("w{w}-r{round}-c{c}");
                        let put = common::put(
                            &mut client,
                            &format!("shared-{c}"),
                            vec![field(&format!("w{w}"), FieldKind::Generic, &value)],
                        )
                        .await;
                        if put.is_ok() {
                            acknowledged.insert(c, value);
                        }
                    }
                }
                acknowledged
            })
        })
        .collect();
    let erasures = {
        let process_b = b.channel().await;
        tokio::spawn(async move {
            let mut privacy = pb::privacy_service_client::PrivacyServiceClient::with_interceptor(
                process_b,
                common::Bearer::new(ADMIN_KEY),
            );
            for i in 0..5 {
                common::delete_customer(&mut privacy, &format!("gone-{i}"))
                    .await
                    .unwrap();
            }
        })
    };
    let mut keys = key_admin(&a).await;
    let mut rotation = keys
        .rotate_master_key(pb::RotateMasterKeyRequest {
            retire_previous: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(progress) = rotation.message().await.unwrap() {
        last = Some(progress);
    }
    assert_eq!(last.unwrap().retired_versions, [1]);
    erasures.await.unwrap();
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.push(writer.await.unwrap());
    }

    // Every acknowledged write readable from both replicas.
    for mut client in clients.clone() {
        for c in 0..CUSTOMERS {
            let response = common::get(&mut client, &format!("shared-{c}"), &[], "billing")
                .await
                .unwrap();
            for (w, writes) in acknowledged.iter().enumerate() {
                let expected = writes
                    .get(&c)
                    .expect("every writer was acknowledged at least once");
                assert_eq!(
                    &common::value_of(&response, &format!("w{w}")).value,
                    expected
                );
            }
        }
        for i in 0..5 {
            let status = common::get(&mut client, &format!("gone-{i}"), &[], "billing")
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::NotFound);
        }
    }
    // Both replicas see the retired version gone (B within its keyring poll).
    let deadline = Instant::now() + Duration::from_secs(10);
    for process in [&a, &b] {
        loop {
            let status = key_admin(process)
                .await
                .get_key_status(pb::GetKeyStatusRequest::default())
                .await
                .unwrap()
                .into_inner();
            if status.master_versions == [2] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica kept the retired key: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // New customers written through either replica after the rotation.
    for (i, mut client) in clients.clone().into_iter().enumerate() {
        common::put(
            &mut client,
            &format!("after-{i}"),
            vec![field("note", FieldKind::Generic, "new")],
        )
        .await
        .unwrap();
    }
    for mut client in clients {
        for i in 0..2 {
            common::get(&mut client, &format!("after-{i}"), &[], "billing")
                .await
                .unwrap();
        }
    }
    for process in [&a, &b] {
        let verified = verify_audit(process).await;
        assert!(verified.intact, "{verified:?}");
        assert!(verified.events_checked > (WRITERS * CUSTOMERS * 3) as u64);
    }
    a.kill9();
    b.kill9();
}

const PLANTED: &[(FieldKind, &str, &str)] = &[
    (FieldKind::Ssn, "219 09 9999", "219-09-9999"),
    (
        FieldKind::Email,
        "Zebulon.Planted@LeakCheck.Example",
        "Zebulon.Planted@leakcheck.example",
    ),
    (
        FieldKind::Name,
        "Zebulon Quixote-Marmaduke",
        "Zebulon Quixote-Marmaduke",
    ),
    (
        FieldKind::CardNumber,
        "4111 1111 1111 1111",
        "4111111111111111",
    ),
    (
        FieldKind::Generic,
        "PLANTED-SECRET-9f8e7d6c",
        "PLANTED-SECRET-9f8e7d6c",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_dump_of_the_database_holds_no_plaintext_value() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let process = replica(&paths, &dir.path().join("vault.log"), &database);
    let mut admin = process.vault(ADMIN_KEY).await;
    let fields = PLANTED
        .iter()
        .enumerate()
        .map(|(i, (kind, sent, _))| field(&format!("f{i}"), *kind, sent))
        .collect();
    common::put(&mut admin, "dumped", fields).await.unwrap();
    let items = PLANTED
        .iter()
        .map(|(kind, sent, _)| (*kind, *sent, pb::TokenFormat::Random))
        .collect();
    common::tokenize(&mut admin, "dumped", items).await.unwrap();
    common::get(&mut admin, "dumped", &[], "billing")
        .await
        .unwrap();
    process.kill9();

    let dump = std::process::Command::new("pg_dump")
        .args([
            "--host",
            "127.0.0.1",
            "--username",
            "postgres",
            "--dbname",
            &database.name,
        ])
        .output()
        .expect("pg_dump is installed with PostgreSQL");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8_lossy(&dump.stdout).to_lowercase();
    // The scan sees what is stored in the clear (ids, field names).
    assert!(text.contains("dumped") && text.contains("audit_events"));
    for (_, sent, stored) in PLANTED {
        for value in [sent, stored] {
            let hex = data_encoding::HEXLOWER.encode(value.as_bytes());
            assert!(
                !text.contains(&value.to_lowercase()),
                "{value:?} in the dump"
            );
            assert!(!text.contains(&hex), "{value:?} in the dump as bytea hex");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_event_altered_in_the_database_is_reported() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let process = replica(&paths, &dir.path().join("vault.log"), &database);
    let mut admin = process.vault(ADMIN_KEY).await;
    for i in 0..4 {
        common::put(
            &mut admin,
            &format!("t-{i}"),
            vec![field("note", FieldKind::Generic, "x")],
        )
        .await
        .unwrap();
    }
    assert!(verify_audit(&process).await.intact);

    let (client, connection) = tokio_postgres::connect(&database.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one("SELECT record FROM audit_events WHERE seq = 2", &[])
        .await
        .unwrap();
    let mut event: pii_vault::store::AuditRecord =
        postcard::from_bytes(row.get::<_, &[u8]>(0)).unwrap();
    event.outcome = "PERMISSION_DENIED".into();
    client
        .execute(
            "UPDATE audit_events SET record = $1 WHERE seq = 2",
            &[&postcard::to_stdvec(&event).unwrap()],
        )
        .await
        .unwrap();
    let verified = verify_audit(&process).await;
    assert!(!verified.intact);
    assert_eq!(verified.first_bad_seq, 2);
    process.kill9();
}
