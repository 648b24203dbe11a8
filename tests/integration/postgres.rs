//! Several vault processes on one PostgreSQL database: acknowledged writes
//! visible from every replica, erasures final everywhere, one intact audit
//! chain through a master rotation; and no plaintext anywhere in the database.

use crate::common;

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
    VaultProcess::start_on(paths, log, database, &[])
}

/// Two vault processes on `database`, sharing the keys and policy in `dir`.
fn two_replicas(dir: &std::path::Path, database: &TestDatabase) -> (VaultProcess, VaultProcess) {
    let paths = common::prepare_dir(dir, &common::test_policy());
    (
        replica(&paths, &dir.join("a.log"), database),
        replica(&paths, &dir.join("b.log"), database),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: runs in the PII_VAULT_TEST_STORE=postgres pass (--include-ignored)"]
async fn two_replicas_share_writes_erasures_rotation_and_one_audit_chain() {
    let database = TestDatabase::required().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_replicas(dir.path(), &database);
    let clients = [a.vault(ADMIN_KEY).await, b.vault(ADMIN_KEY).await];
    const CUSTOMERS: usize = 20;
    const WRITERS: usize = 6;

    // Customers to erase during the run.
    for i in 0..5 {
        let mut client = clients[i % 2].clone();
        common::put(
            &mut client,
            common::PutFields::of(&format!("gone-{i}")).field("note", FieldKind::Generic, "bye"),
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
                            common::PutFields::of(&format!("shared-{c}")).field(
                                &format!("w{w}"),
                                FieldKind::Generic,
                                &value,
                            ),
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
    let rotation = common::rotate_master(&mut a.key_admin(ADMIN_KEY).await, true).await;
    assert_eq!(rotation.retired_versions, [1]);
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
            let status = process
                .key_admin(ADMIN_KEY)
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
            common::PutFields::of(&format!("after-{i}")).field("note", FieldKind::Generic, "new"),
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
        let verified = process.verify_audit_log().await;
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
#[ignore = "PostgreSQL: runs in the PII_VAULT_TEST_STORE=postgres pass (--include-ignored)"]
async fn a_pg_dump_of_the_database_holds_no_plaintext_value() {
    let database = TestDatabase::required().await;
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let process = replica(&paths, &dir.path().join("vault.log"), &database);
    let mut admin = process.vault(ADMIN_KEY).await;
    let fields = PLANTED
        .iter()
        .enumerate()
        .map(|(i, (kind, sent, _))| field(&format!("f{i}"), *kind, sent))
        .collect();
    common::put(&mut admin, common::PutFields::of("dumped").fields(fields))
        .await
        .unwrap();
    let items = PLANTED
        .iter()
        .map(|(kind, sent, _)| (*kind, *sent, pb::TokenFormat::Random))
        .collect();
    common::tokenize(&mut admin, common::Tokenize::of("dumped").items(items))
        .await
        .unwrap();
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
#[ignore = "PostgreSQL: runs in the PII_VAULT_TEST_STORE=postgres pass (--include-ignored)"]
async fn an_audit_event_altered_in_the_database_is_reported() {
    let database = TestDatabase::required().await;
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let process = replica(&paths, &dir.path().join("vault.log"), &database);
    let mut admin = process.vault(ADMIN_KEY).await;
    for i in 0..4 {
        common::put(
            &mut admin,
            common::PutFields::of(&format!("t-{i}")).field("note", FieldKind::Generic, "x"),
        )
        .await
        .unwrap();
    }
    assert!(process.verify_audit_log().await.intact);

    let client = database.client().await;
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
    let verified = process.verify_audit_log().await;
    assert!(!verified.intact);
    assert_eq!(verified.first_bad_seq, 2);
    process.kill9();
}

/// Starts a master rotation on `process` and returns its progress stream
/// once the vault has accepted it (it holds the rotation lease from then on).
async fn start_rotation(
    process: &VaultProcess,
    retire_previous: bool,
) -> Result<tonic::Streaming<pb::RotationProgress>, tonic::Status> {
    process
        .key_admin(ADMIN_KEY)
        .await
        .rotate_master_key(pb::RotateMasterKeyRequest { retire_previous })
        .await
        .map(|response| response.into_inner())
}

/// Starts a rotation on `process`, asking again while one still runs
/// elsewhere (a lease is released moments after its rotation ends).
async fn rotation_once_free(
    process: &VaultProcess,
    retire_previous: bool,
) -> tonic::Streaming<pb::RotationProgress> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match start_rotation(process, retire_previous).await {
            Ok(rotation) => return rotation,
            Err(status) if status.code() == Code::FailedPrecondition => {
                assert!(
                    Instant::now() < deadline,
                    "the lease was never released: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    }
}

/// The refusal a replica gives while another one rotates.
fn assert_refused_for_another_replica(refused: Result<impl std::fmt::Debug, tonic::Status>) {
    let status = refused.expect_err("a second replica started rotating at the same time");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("on another replica"),
        "{}",
        status.message()
    );
}

async fn seed(process: &VaultProcess, customers: usize) {
    let mut client = process.vault(ADMIN_KEY).await;
    for i in 0..customers {
        common::put(
            &mut client,
            common::PutFields::of(&format!("seed-{i}")).field("note", FieldKind::Generic, "x"),
        )
        .await
        .unwrap();
    }
}

async fn master_versions(process: &VaultProcess) -> Vec<u32> {
    process
        .key_admin(ADMIN_KEY)
        .await
        .get_key_status(pb::GetKeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .master_versions
}

/// Waits until a rotation has recorded itself in the database (it has added
/// its master version and promised to retire the older ones).
async fn wait_for_rotation_record(database: &TestDatabase) {
    let client = database.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .query_opt("SELECT 1 FROM rotation", &[])
        .await
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "the rotation never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// A rotation holds the lease from the moment it is accepted until it ends, at
// least the keyring's propagation delay (2 s on PostgreSQL) before it re-wraps
// anything: the other replica's request comes well inside that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: runs in the PII_VAULT_TEST_STORE=postgres pass (--include-ignored)"]
async fn only_one_replica_rotates_the_master_key_at_a_time() {
    let database = TestDatabase::required().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_replicas(dir.path(), &database);
    seed(&a, 50).await;

    let first = start_rotation(&a, false).await.unwrap();
    assert_refused_for_another_replica(start_rotation(&b, false).await);
    assert_eq!(common::rotation_done(first).await.new_master_version, 2);

    let second = common::rotation_done(rotation_once_free(&b, true).await).await;
    assert_eq!(second.new_master_version, 3);
    assert_eq!(second.retired_versions, [1, 2]);
    assert_eq!(master_versions(&b).await, [3]);
    a.kill9();
    b.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: runs in the PII_VAULT_TEST_STORE=postgres pass (--include-ignored)"]
async fn a_rotating_replica_killed_with_sigkill_releases_the_lease() {
    let database = TestDatabase::required().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_replicas(dir.path(), &database);
    seed(&a, 20).await;

    let _cut_short = start_rotation(&a, true).await.unwrap();
    assert_refused_for_another_replica(start_rotation(&b, false).await);
    wait_for_rotation_record(&database).await;
    tokio::task::spawn_blocking(move || a.kill9())
        .await
        .unwrap();

    // B takes over; its rotation keeps the killed one's promise to retire.
    let rotation = common::rotation_done(rotation_once_free(&b, false).await).await;
    assert_eq!(rotation.new_master_version, 3);
    assert_eq!(rotation.retired_versions, [1, 2]);
    let mut client = b.vault(ADMIN_KEY).await;
    for i in 0..20 {
        common::get(&mut client, &format!("seed-{i}"), &[], "billing")
            .await
            .unwrap();
    }
    b.kill9();
}

/// The local PostgreSQL, behind the test proxy.
const POSTGRES: &str = "127.0.0.1:5432";

/// Runs `serve` against `url`, which must fail to start; returns what it said.
fn failed_start(paths: &pii_vault::app::VaultPaths, url: &str, extra_args: &[&str]) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pii-vault"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "postgres"])
        .args(["--database-url", url])
        .arg("--root-key-file")
        .arg(&paths.root_key_file)
        .arg("--policy")
        .arg(&paths.policy_file)
        .args(extra_args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the vault started (or hung) instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A database behind a TLS proxy, a vault directory, and two CA files: the
/// proxy's (`ca_file`) and another CA's (`other_ca_file`). Keep `dir` bound:
/// dropping it removes the directory.
struct OverTls {
    database: TestDatabase,
    proxy: common::pg_tls_proxy::PgTlsProxy,
    paths: pii_vault::app::VaultPaths,
    ca_file: String,
    other_ca_file: String,
    dir: tempfile::TempDir,
}

impl OverTls {
    async fn start() -> OverTls {
        let database = TestDatabase::required().await;
        let proxy = common::pg_tls_proxy::PgTlsProxy::start(POSTGRES.parse().unwrap()).await;
        let dir = tempfile::tempdir().unwrap();
        let paths = common::prepare_dir(dir.path(), &common::test_policy());
        let write = |name: &str, pem: &str| {
            let file = dir.path().join(name);
            std::fs::write(&file, pem).unwrap();
            file.to_str().unwrap().to_owned()
        };
        let ca_file = write("database-ca.pem", &proxy.ca_pem);
        let other_ca_file = write(
            "other-ca.pem",
            &common::pg_tls_proxy::test_ca("another CA").pem(),
        );
        OverTls {
            database,
            proxy,
            paths,
            ca_file,
            other_ca_file,
            dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: runs in the PII_VAULT_TEST_STORE=postgres pass (--include-ignored)"]
async fn a_vault_talks_to_postgres_over_tls_verified_by_the_given_ca() {
    let OverTls {
        database,
        proxy,
        paths,
        ca_file,
        dir,
        ..
    } = OverTls::start().await;
    let url = proxy.url(&database.name, "require");
    let over_tls = VaultProcess::start_with(
        &paths,
        &dir.path().join("tls.log"),
        &[
            "--store",
            "postgres",
            "--database-url",
            &url,
            "--database-ca",
            &ca_file,
        ],
    );
    let mut client = over_tls.vault(ADMIN_KEY).await;
    common::put(
        &mut client,
        common::PutFields::of("over-tls").field("email", FieldKind::Email, "tls@example.com"),
    )
    .await
    .unwrap();
    let read = common::get(&mut client, "over-tls", &["email"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "email").value, "tls@example.com");
    assert!(proxy.tls_sessions() > 0, "nothing went through the proxy");

    // The same database reached directly with sslmode=disable.
    let direct = replica(&paths, &dir.path().join("direct.log"), &database);
    let mut direct_client = direct.vault(ADMIN_KEY).await;
    let read = common::get(&mut direct_client, "over-tls", &["email"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "email").value, "tls@example.com");
    over_tls.kill9();
    direct.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: runs in the PII_VAULT_TEST_STORE=postgres pass (--include-ignored)"]
async fn a_vault_refuses_to_start_when_it_cannot_verify_postgres_certificate() {
    let OverTls {
        database,
        proxy,
        paths,
        other_ca_file,
        dir: _dir,
        ..
    } = OverTls::start().await;
    let url = proxy.url(&database.name, "require");
    let other_ca = other_ca_file.as_str();
    for extra_args in [&["--database-ca", other_ca][..], &[]] {
        let said = failed_start(&paths, &url, extra_args);
        assert!(
            said.contains("TLS") && said.contains("certificate"),
            "{extra_args:?}: {said}"
        );
    }
    // sslmode=prefer (allowed on purpose) verifies too: a server it cannot
    // verify is not used in clear.
    let allowed = "--database-allow-plaintext";
    let said = failed_start(&paths, &proxy.url(&database.name, "prefer"), &[allowed]);
    assert!(said.contains("certificate"), "{said}");
    let said = failed_start(&paths, &database.url, &["--database-ca", other_ca, allowed]);
    assert!(said.contains("a database CA was given"), "{said}");
}

/// A stock Debian PostgreSQL offers a certificate for its host name only; a
/// URL naming it by address is refused, and the refusal says how to fix it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: runs in the PII_VAULT_TEST_STORE=postgres pass (--include-ignored)"]
async fn a_certificate_for_another_name_is_refused_with_the_fix_or_accepted_by_verify_ca() {
    let OverTls {
        database,
        proxy,
        paths,
        ca_file,
        other_ca_file,
        dir,
    } = OverTls::start().await;
    let ca = ca_file.as_str();
    // The proxy's certificate names 127.0.0.1, not localhost.
    for sslmode in ["require", "verify-full"] {
        let url = proxy.url_naming("localhost", &database.name, sslmode);
        let said = failed_start(&paths, &url, &["--database-ca", ca]);
        assert!(
            said.contains("not valid for name")
                && said.contains("sslmode=verify-ca")
                && said.contains("--database-ca"),
            "{sslmode}: {said}"
        );
    }
    // verify-ca still checks the chain: another CA's certificate is refused.
    let verify_ca = proxy.url_naming("localhost", &database.name, "verify-ca");
    let said = failed_start(&paths, &verify_ca, &["--database-ca", &other_ca_file]);
    assert!(said.contains("certificate"), "{said}");
    // verify-ca with the right CA connects, whatever the name.
    let started = VaultProcess::start_with(
        &paths,
        &dir.path().join("verify-ca.log"),
        &[
            "--store",
            "postgres",
            "--database-url",
            &verify_ca,
            "--database-ca",
            ca,
        ],
    );
    let mut client = started.vault(ADMIN_KEY).await;
    common::put(
        &mut client,
        common::PutFields::of("verified-by-ca").field("note", FieldKind::Generic, "hello"),
    )
    .await
    .unwrap();
    assert!(proxy.tls_sessions() > 0, "nothing went through the proxy");
    started.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: runs in the PII_VAULT_TEST_STORE=postgres pass (--include-ignored)"]
async fn a_vault_refuses_clear_text_to_postgres_unless_told_so() {
    let database = TestDatabase::required().await;
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    // disable, and prefer (libpq's default) which an on-path attacker can
    // downgrade by answering that the server has no TLS.
    let plain = format!("host=127.0.0.1 user=postgres dbname={}", database.name);
    for url in [
        format!("{plain} sslmode=disable"),
        format!("{plain} sslmode=prefer"),
        plain.clone(),
    ] {
        let said = failed_start(&paths, &url, &[]);
        assert!(
            said.contains("--database-allow-plaintext") && said.contains("sslmode=require"),
            "{url}: {said}"
        );
    }
    // Said on purpose, it starts.
    let told = VaultProcess::start_with(
        &paths,
        &dir.path().join("plain.log"),
        &[
            "--store",
            "postgres",
            "--database-url",
            &format!("{plain} sslmode=disable"),
            "--database-allow-plaintext",
        ],
    );
    let mut client = told.vault(ADMIN_KEY).await;
    common::put(
        &mut client,
        common::PutFields::of("in-clear").field("note", FieldKind::Generic, "hello"),
    )
    .await
    .unwrap();
    told.kill9();
}

/// Replicas that start together on an empty database (the chart's default
/// of two) create one keyring between them: before, each could create its
/// own, and customers written through the loser became unreadable once it
/// restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "PostgreSQL: runs in the PII_VAULT_TEST_STORE=postgres pass (--include-ignored)"]
async fn replicas_starting_together_on_an_empty_database_share_one_keyring() {
    let database = TestDatabase::required().await;
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let replicas: Vec<VaultProcess> = std::thread::scope(|scope| {
        let started: Vec<_> = (0..3)
            .map(|i| {
                let (paths, database, log) =
                    (&paths, &database, dir.path().join(format!("{i}.log")));
                scope.spawn(move || replica(paths, &log, database))
            })
            .collect();
        started.into_iter().map(|s| s.join().unwrap()).collect()
    });
    for (i, process) in replicas.iter().enumerate() {
        let mut client = process.vault(ADMIN_KEY).await;
        common::put(
            &mut client,
            common::PutFields::of(&format!("via-{i}")).field(
                "note",
                FieldKind::Generic,
                &format!("n{i}"),
            ),
        )
        .await
        .unwrap();
    }
    for process in replicas {
        assert!(process.terminate().success());
    }
    let fresh = replica(&paths, &dir.path().join("fresh.log"), &database);
    let mut client = fresh.vault(ADMIN_KEY).await;
    for i in 0..3 {
        let read = common::get(&mut client, &format!("via-{i}"), &["note"], "billing")
            .await
            .unwrap_or_else(|status| panic!("written via replica {i}, now unreadable: {status}"));
        assert_eq!(common::value_of(&read, "note").value, format!("n{i}"));
    }
}
