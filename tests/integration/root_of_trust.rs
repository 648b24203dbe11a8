//! The roots of trust outside the vault, each against its real service: a
//! SoftHSM2 token (PKCS#11), an OpenBao dev server (Transit) and moto's KMS
//! (AWS KMS). Each kind's tests run on both engines (the
//! PostgreSQL pass runs them too). They are `#[ignore]`d in a plain
//! `cargo test`, which needs nothing installed; `.ci/run` installs the
//! services (`.ci/root-of-trust-tools`) and runs them.

use std::path::Path;
use std::sync::Arc;

use pii_vault::app::{self, RootOfTrustChoice, StorageBackend, VaultOptions, VaultPaths};
use pii_vault::pb::{self, FieldKind};
use pii_vault::root_of_trust::aws_kms::AwsKmsConfig;
use pii_vault::root_of_trust::pkcs11::{Pkcs11Config, Pkcs11Root};
use pii_vault::root_of_trust::transit::{TransitConfig, TransitRoot, TransitToken};
use pii_vault::root_of_trust::{Destruction, KeyHandle, RootOfTrust};
use pii_vault_testkit::moto::Moto;
use pii_vault_testkit::openbao::OpenBao;
use pii_vault_testkit::softhsm::SoftHsm;

use crate::common::{self, PutFields, TestVault, ADMIN_KEY};

/// A real root of trust for one test, and what puts a vault on it.
enum Peer {
    Hsm(SoftHsm),
    Bao(OpenBao),
    Kms(Moto),
}

impl Peer {
    fn start(kind: &str) -> Peer {
        match kind {
            "pkcs11" => Peer::Hsm(SoftHsm::new()),
            "transit" => Peer::Bao(OpenBao::start()),
            "aws-kms" => Peer::Kms(Moto::start()),
            other => panic!("no root of trust {other}"),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Peer::Hsm(_) => "pkcs11",
            Peer::Bao(_) => "transit",
            Peer::Kms(_) => "aws-kms",
        }
    }

    fn choice(&self) -> RootOfTrustChoice {
        match self {
            Peer::Hsm(hsm) => RootOfTrustChoice::Pkcs11(pkcs11_config(hsm)),
            Peer::Bao(bao) => RootOfTrustChoice::Transit(transit_config(bao)),
            // The SDK's environment is the process's, shared by parallel
            // tests: the client gets moto's address and credentials directly.
            Peer::Kms(moto) => {
                RootOfTrustChoice::Connected(Arc::new(moto.kms_root(AwsKmsConfig::default())))
            }
        }
    }

    /// A client of the same root of trust, as an attacker holding a backup
    /// and every credential of the vault would use it.
    async fn client(&self) -> Arc<dyn RootOfTrust> {
        match self {
            Peer::Hsm(hsm) => Arc::new(Pkcs11Root::connect(pkcs11_config(hsm)).await.unwrap()),
            Peer::Bao(bao) => Arc::new(TransitRoot::connect(transit_config(bao)).await.unwrap()),
            Peer::Kms(moto) => Arc::new(moto.kms_root(AwsKmsConfig::default())),
        }
    }

    /// Whether retiring a version destroys its material at once: a KMS
    /// schedules the deletion at the end of a window instead.
    fn destroys_at_once(&self) -> bool {
        !matches!(self, Peer::Kms(_))
    }

    /// Whether the service refuses to use material it was asked to destroy.
    /// moto does not: its KMS decrypts under a key pending deletion (AWS
    /// answers KMSInvalidStateException), so a backup opens there until
    /// the key is deleted, which moto never does.
    fn enforces_destruction(&self) -> bool {
        !matches!(self, Peer::Kms(_))
    }
}

fn transit_config(bao: &OpenBao) -> TransitConfig {
    TransitConfig {
        addr: bao.addr().to_owned(),
        mount: "transit".to_owned(),
        key: "pii-vault".to_owned(),
        token: TransitToken::Value(zeroize::Zeroizing::new(bao.token().to_owned())),
        ca_file: None,
    }
}

fn pkcs11_config(hsm: &SoftHsm) -> Pkcs11Config {
    Pkcs11Config {
        module: hsm.module(),
        token_label: hsm.token_label().to_owned(),
        pin_file: hsm.pin_file().to_path_buf(),
        pin_access: pii_vault::crypto::KeyFileAccess::OwnerOnly,
    }
}

/// A vault on `peer`, on the suite's engine.
async fn vault_on(peer: &Peer) -> TestVault {
    let options = VaultOptions {
        root_of_trust: peer.choice(),
        ..VaultOptions::default()
    };
    let vault = common::spawn_vault_with(&common::test_policy(), options).await;
    // Nothing of the root key file is used: remove it to prove it.
    std::fs::remove_file(&vault.paths.root_key_file).unwrap();
    vault
}

const SSN: &str = "219-09-9999";
const KEPT_SSN: &str = "219-45-1234";

async fn store_customers(vault: &TestVault) {
    let mut admin = vault.admin().await;
    for (customer, ssn) in [("victim", SSN), ("kept", KEPT_SSN)] {
        common::put(
            &mut admin,
            PutFields::of(customer)
                .field("ssn", FieldKind::Ssn, ssn)
                .field(
                    "email",
                    FieldKind::Email,
                    &format!("{customer}@example.com"),
                ),
        )
        .await
        .unwrap();
    }
}

async fn key_status(vault: &TestVault) -> pb::KeyStatus {
    status_of(&mut vault.key_admin(ADMIN_KEY).await).await
}

/// Start, store, rotate with retirement, restart, read back: the vault runs
/// on the root of trust alone (its root key file removed), says which it is,
/// and an erasure it covered is cryptographic once the retired version's
/// material is destroyed.
async fn runs_rotates_and_restarts_on(kind: &str) {
    let peer = Peer::start(kind);
    let mut vault = vault_on(&peer).await;
    store_customers(&vault).await;
    let status = key_status(&vault).await;
    let root = status.root_of_trust.clone().unwrap();
    assert_eq!((root.kind.as_str(), root.reachable), (peer.kind(), true));
    assert!(root.guarantee.contains("backups"), "{root:?}");

    let receipt = common::delete_customer(&mut vault.privacy(ADMIN_KEY).await, "victim")
        .await
        .unwrap();
    assert_eq!(receipt.state(), pb::ErasureState::Logical);
    let rotated = vault.rotate_master(true).await;
    assert_eq!(rotated.retired_versions, vec![1]);
    let status = key_status(&vault).await;
    assert_eq!(status.master_versions, vec![2]);
    assert!(status
        .root_of_trust
        .as_ref()
        .unwrap()
        .awaiting_destruction
        .is_empty());

    vault.restart().await;
    let mut admin = vault.admin().await;
    let read = common::get(&mut admin, "kept", &["ssn"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "ssn").value, KEPT_SSN);
    let status = common::deletion_status(&mut vault.privacy(ADMIN_KEY).await, &receipt.receipt_id)
        .await
        .unwrap();
    if peer.destroys_at_once() {
        assert_eq!(
            status.state(),
            pb::ErasureState::Cryptographic,
            "no backup retention to wait for: the material is gone"
        );
    } else {
        assert_eq!(status.state(), pb::ErasureState::Logical);
        assert!(status.cryptographic_erasure_due.is_some(), "{status:?}");
    }
}

/// A copy of the store and keyring (a database dump on PostgreSQL) taken
/// before an erasure opens nothing once the versions it was sealed under are
/// retired: a vault started on it with the same root of trust and every
/// credential refuses to start, naming the version it cannot open; the
/// copy's keyring does not open offline either; and the copy holds none of
/// the values in clear.
async fn a_backup_is_unreadable_after_retirement_on(kind: &str) {
    let peer = Peer::start(kind);
    let vault = vault_on(&peer).await;
    store_customers(&vault).await;
    let backup = Backup::take(&vault).await;
    common::delete_customer(&mut vault.privacy(ADMIN_KEY).await, "victim")
        .await
        .unwrap();
    vault.rotate_master(true).await;

    let sealed = pii_vault::crypto::decode_image(&backup.keyring_image().await).unwrap();
    assert_eq!(sealed.versions.keys().copied().collect::<Vec<_>>(), vec![1]);
    if peer.enforces_destruction() {
        let options = VaultOptions {
            root_of_trust: peer.choice(),
            storage: backup.storage.clone(),
            ..VaultOptions::default()
        };
        let refused = app::open_vault(&backup.paths, &options)
            .await
            .err()
            .expect("a vault on the backup must not start");
        let message = format!("{refused:#}");
        assert!(
            message.contains("could not open master version 1"),
            "{message}"
        );
        let opened = pii_vault::vault::open_keyring(peer.client().await.as_ref(), sealed).await;
        assert!(opened.is_err(), "the backup's keyring opened offline");
    } else {
        // moto decrypts under a key pending deletion (AWS does not): what
        // can be shown is that the backup's version 1 key is pending
        // deletion, for the window's 7 days.
        let handle = KeyHandle(sealed.versions[&1].1.handle.clone());
        let scheduled = peer.client().await.destroy(&handle).await.unwrap();
        let Destruction::Scheduled { at_ms } = scheduled else {
            panic!("the backup's KMS key is not pending deletion: {scheduled:?}");
        };
        let week_ms = 7 * 24 * 3600 * 1000;
        let from_now = at_ms - now_ms();
        assert!(
            (week_ms - 120_000..=week_ms).contains(&from_now),
            "{from_now}"
        );
    }
    for value in [SSN, KEPT_SSN, "victim@example.com"] {
        assert!(
            !backup.holds_in_clear(value),
            "the backup holds {value} in clear"
        );
    }
}

/// What a backup of the vault holds: the data directory and keyring file on
/// sled, a `pg_dump` restored into a database of its own on PostgreSQL.
struct Backup {
    paths: VaultPaths,
    storage: StorageBackend,
    database: Option<common::TestDatabase>,
    dump: String,
    _dir: tempfile::TempDir,
}

impl Backup {
    async fn take(vault: &TestVault) -> Backup {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = vault.paths.clone();
        paths.data_dir = dir.path().join("store");
        paths.keyring_file = dir.path().join("keyring");
        match &vault.database {
            Some(database) => {
                let dump = common::pg_dump(database);
                let restored = common::restore_dump(&dump).await;
                Backup {
                    paths,
                    storage: restored.storage(),
                    database: Some(restored),
                    dump,
                    _dir: dir,
                }
            }
            None => {
                copy_dir(&vault.paths.data_dir, &paths.data_dir);
                std::fs::copy(&vault.paths.keyring_file, &paths.keyring_file).unwrap();
                Backup {
                    paths,
                    storage: StorageBackend::Sled,
                    database: None,
                    dump: String::new(),
                    _dir: dir,
                }
            }
        }
    }

    /// The keyring image the backup holds (the newest slot of the file).
    async fn keyring_image(&self) -> Vec<u8> {
        match &self.database {
            Some(database) => {
                use pii_vault::store::KeyringTable;
                let store = pii_vault::store::PgStore::connect(&database.url, 1, None, true)
                    .await
                    .unwrap();
                store.keyring_row().await.unwrap().expect("a keyring row").2
            }
            None => {
                let file = std::fs::read(&self.paths.keyring_file).unwrap();
                file.chunks(64 * 1024)
                    .filter_map(|slot| {
                        pii_vault::crypto::decode_image(slot)
                            .ok()
                            .map(|k| (k.generation, slot.to_vec()))
                    })
                    .max_by_key(|(generation, _)| *generation)
                    .expect("a slot sealed by version")
                    .1
            }
        }
    }

    fn holds_in_clear(&self, value: &str) -> bool {
        if self.database.is_some() {
            return self.dump.contains(value);
        }
        walk(&self.paths.data_dir)
            .into_iter()
            .chain([self.paths.keyring_file.clone()])
            .any(|file| {
                let bytes = std::fs::read(file).unwrap_or_default();
                bytes.windows(value.len()).any(|w| w == value.as_bytes())
            })
    }
}

fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    since_epoch.as_millis() as i64
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The tests each kind runs.
macro_rules! root_of_trust_tests {
    ($module:ident, $kind:literal, $needs:literal) => {
        mod $module {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $needs]
            async fn starts_stores_rotates_with_retirement_restarts_and_reads_back() {
                super::runs_rotates_and_restarts_on($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $needs]
            async fn a_backup_taken_before_an_erasure_opens_nothing_after_retirement() {
                super::a_backup_is_unreadable_after_retirement_on($kind).await;
            }
        }
    };
}

root_of_trust_tests!(
    pkcs11,
    "pkcs11",
    "root of trust: needs SoftHSM2; .ci/root-of-trust-tools installs it"
);
root_of_trust_tests!(
    transit,
    "transit",
    "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"
);
root_of_trust_tests!(
    aws_kms,
    "aws-kms",
    "root of trust: needs moto; .ci/root-of-trust-tools installs it"
);

/// The real binary on Transit: `serve --root-of-trust transit` with the
/// token in BAO_TOKEN, no root key file, health on a listener of its own.
fn serve_on_transit(
    vault: &TestVault,
    bao: &OpenBao,
    health: std::net::SocketAddr,
    log_file: &Path,
    extra_args: &[&str],
) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pii-vault"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--health-listen", &health.to_string()])
        .args(["--root-of-trust", "transit", "--transit-addr", bao.addr()])
        .args(["--transit-key", "pii-vault"])
        .arg("--data-dir")
        .arg(&vault.paths.data_dir)
        .arg("--keyring-file")
        .arg(&vault.paths.keyring_file)
        .arg("--policy")
        .arg(&vault.paths.policy_file)
        .args(extra_args)
        .env("BAO_TOKEN", bao.token())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    if let Some(database) = &vault.database {
        command.args(database.serve_args());
    }
    command.spawn().unwrap()
}

fn free_port() -> std::net::SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

async fn wait_for_health(addr: std::net::SocketAddr, wanted: i32, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    while crate::health_listener::status_at(addr, "").await != Some(wanted) {
        assert!(
            std::time::Instant::now() < deadline,
            "health never answered {wanted}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Transit sealed while the vault starts: the vault waits for it, health
/// answers NOT_SERVING and the log says why; once Transit is unsealed the
/// vault opens its keyring and serves what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
async fn transit_out_of_reach_at_start_holds_the_vault_not_serving_until_it_answers() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let peer = Peer::start("transit");
    let mut vault = vault_on(&peer).await;
    store_customers(&vault).await;
    vault.stop().await;
    let Peer::Bao(mut bao) = peer else {
        unreachable!()
    };
    bao.seal();

    let health = free_port();
    let log_file = vault.dir.path().join("vault.log");
    let mut child = serve_on_transit(&vault, &bao, health, &log_file, &[]);
    wait_for_health(
        health,
        ServingStatus::NotServing as i32,
        std::time::Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        log.contains("the root of trust is out of reach; retrying"),
        "{log}"
    );
    assert!(!log.contains("pii-vault listening on"), "{log}");

    bao.unseal();
    let addr = common::wait_for_listening(&log_file, 0);
    wait_for_health(
        health,
        ServingStatus::Serving as i32,
        std::time::Duration::from_secs(30),
    )
    .await;
    let mut admin = admin_at(addr).await;
    let read = common::get(&mut admin, "kept", &["ssn"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "ssn").value, KEPT_SSN);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Transit sealed when a rotation starts: the rotation fails cleanly with
/// ROOT_OF_TRUST_UNAVAILABLE and changes nothing, the vault serves on, and
/// once Transit answers the rotation runs to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
async fn a_rotation_that_cannot_reach_transit_fails_cleanly_and_runs_once_it_can() {
    let mut peer = Peer::start("transit");
    let vault = vault_on(&peer).await;
    store_customers(&vault).await;
    let Peer::Bao(bao) = &mut peer else {
        unreachable!()
    };
    bao.seal();

    let mut keys = vault.key_admin(ADMIN_KEY).await;
    let refused = match keys
        .rotate_master_key(pb::RotateMasterKeyRequest {
            retire_previous: true,
        })
        .await
    {
        Err(status) => status,
        Ok(stream) => rotation_failure(stream.into_inner()).await,
    };
    assert_root_of_trust_unavailable(&refused);
    assert_eq!(key_status(&vault).await.master_versions, vec![1]);
    let mut admin = vault.admin().await;
    common::get(&mut admin, "kept", &["ssn"], "billing")
        .await
        .unwrap();

    bao.unseal();
    let rotated = vault.rotate_master(true).await;
    assert_eq!(rotated.retired_versions, vec![1]);
    let read = common::get(&mut admin, "kept", &["ssn"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "ssn").value, KEPT_SSN);
}

/// How a rotation's progress stream ended: it must fail before it is done.
async fn rotation_failure(mut stream: tonic::Streaming<pb::RotationProgress>) -> tonic::Status {
    loop {
        match stream.message().await {
            Err(status) => return status,
            Ok(Some(progress)) => assert!(!progress.done, "{progress:?}"),
            Ok(None) => panic!("the rotation finished without the root of trust"),
        }
    }
}

#[track_caller]
fn assert_root_of_trust_unavailable(status: &tonic::Status) {
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let details = tonic_types::StatusExt::get_error_details(status);
    assert_eq!(
        details.error_info().unwrap().reason,
        "ROOT_OF_TRUST_UNAVAILABLE"
    );
}

/// A TCP proxy in front of a server that a test can cut at once: every
/// open connection drops and new ones close as soon as they are accepted.
struct CuttableProxy {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl CuttableProxy {
    async fn start(target: std::net::SocketAddr) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = tokio::sync::watch::channel(false);
        let cut_seen = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = cut_seen.subscribe();
                if *cut.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        CuttableProxy { addr, cut }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn restore(&self) {
        self.cut.send_replace(false);
    }
}

/// Transit out of reach in the middle of a rotation with retirement (while
/// keys are re-wrapped, after the new version was sealed): the retirement
/// cannot destroy version 1 in Transit, so the rotation fails with
/// ROOT_OF_TRUST_UNAVAILABLE, GetKeyStatus names version 1 as awaiting
/// destruction and the erasure it covers stays LOGICAL while the vault
/// serves on; the next rotation, with Transit back, destroys it and the
/// erasure is CRYPTOGRAPHIC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
async fn a_retirement_that_cannot_reach_transit_is_finished_by_the_next_rotation() {
    let bao = OpenBao::start();
    let target = bao.addr().trim_start_matches("http://").parse().unwrap();
    let proxy = CuttableProxy::start(target).await;
    let mut config = transit_config(&bao);
    config.addr = format!("http://{}", proxy.addr);
    let options = VaultOptions {
        root_of_trust: RootOfTrustChoice::Transit(config),
        ..VaultOptions::default()
    };
    let vault = common::spawn_vault_with(&common::test_policy(), options).await;
    store_customers(&vault).await;
    let mut admin = vault.admin().await;
    store_many(&mut admin, 300).await;
    let receipt = common::delete_customer(&mut vault.privacy(ADMIN_KEY).await, "victim")
        .await
        .unwrap();
    let mut stream = vault
        .key_admin(ADMIN_KEY)
        .await
        .rotate_master_key(pb::RotateMasterKeyRequest {
            retire_previous: true,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("progress");
    assert!(!first.done, "{first:?}");
    proxy.cut();
    let failed = rotation_failure(stream).await;
    assert_root_of_trust_unavailable(&failed);
    let status = key_status(&vault).await;
    assert_eq!(status.master_versions, vec![2]);
    assert_eq!(status.root_of_trust.unwrap().awaiting_destruction, vec![1]);
    let mut privacy = vault.privacy(ADMIN_KEY).await;
    let pending = common::deletion_status(&mut privacy, &receipt.receipt_id)
        .await
        .unwrap();
    assert_eq!(pending.state(), pb::ErasureState::Logical);
    let read = common::get(&mut admin, "kept", &["ssn"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "ssn").value, KEPT_SSN);

    proxy.restore();
    vault.rotate_master(true).await;
    let status = key_status(&vault).await;
    assert!(status
        .root_of_trust
        .unwrap()
        .awaiting_destruction
        .is_empty());
    let done = common::deletion_status(&mut privacy, &receipt.receipt_id)
        .await
        .unwrap();
    assert_eq!(done.state(), pb::ErasureState::Cryptographic);
}

/// The admin's key and vault clients of a vault process at `addr`.
async fn keys_at(addr: std::net::SocketAddr) -> common::KeyAdminClient {
    pii_vault::pb::key_admin_service_client::KeyAdminServiceClient::with_interceptor(
        common::connect(addr).await,
        common::Bearer::new(ADMIN_KEY),
    )
}

async fn admin_at(addr: std::net::SocketAddr) -> common::VaultClient {
    pii_vault::pb::vault_service_client::VaultServiceClient::with_interceptor(
        common::connect(addr).await,
        common::Bearer::new(ADMIN_KEY),
    )
}

async fn status_of(keys: &mut common::KeyAdminClient) -> pb::KeyStatus {
    keys.get_key_status(pb::GetKeyStatusRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// `count` more customers, enough for a rotation to report progress before
/// it ends.
async fn store_many(admin: &mut common::VaultClient, count: usize) {
    for n in 0..count {
        common::put(
            admin,
            PutFields::of(&format!("c{n}")).field("email", FieldKind::Email, "a@example.com"),
        )
        .await
        .unwrap();
    }
}

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

/// Runs MigrateRootOfTrust to its end and returns its last message.
async fn migrate(keys: &mut common::KeyAdminClient) -> pb::RootOfTrustMigrationProgress {
    let mut stream = keys
        .migrate_root_of_trust(pb::MigrateRootOfTrustRequest {})
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
    vault.start_again().await;
    let root = key_status(&vault).await.root_of_trust.unwrap();
    assert_eq!(
        (root.kind.as_str(), root.migration_target.as_str()),
        ("file", "transit")
    );

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
        .migrate_root_of_trust(pb::MigrateRootOfTrustRequest {})
        .await
        .expect_err("nothing left to migrate");
    assert_eq!(again.code(), tonic::Code::InvalidArgument, "{again:?}");

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

/// kill -9 while a migration to Transit runs, again and again: each
/// restart (with the same flags) finds the keyring either still on the
/// file, and the migration runs again, or on Transit; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
async fn kill_9_during_a_migration_to_transit_loses_nothing() {
    use rand::Rng;
    let bao = OpenBao::start();
    let mut vault = common::spawn_vault().await;
    store_customers(&vault).await;
    vault.stop().await;
    let root_key = vault.paths.root_key_file.to_str().unwrap().to_owned();
    let log_file = vault.dir.path().join("vault.log");
    let mut migrated = false;
    for cycle in 0..5 {
        let offset = std::fs::metadata(&log_file).map_or(0, |m| m.len() as usize);
        let mut child = serve_on_transit(
            &vault,
            &bao,
            free_port(),
            &log_file,
            &["--root-key-file", &root_key],
        );
        let addr = common::wait_for_listening(&log_file, offset);
        let mut keys = keys_at(addr).await;
        let status = status_of(&mut keys).await;
        let root = status.root_of_trust.unwrap();
        if migrated {
            assert_eq!(
                root.kind, "transit",
                "cycle {cycle}: a finished migration came undone"
            );
        }
        migrated = root.kind == "transit";
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
            let started = keys.migrate_root_of_trust(pb::MigrateRootOfTrustRequest {});
            let delay = rand::rng().random_range(0..40);
            let _ = tokio::time::timeout(std::time::Duration::from_millis(delay), started).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    // The last restart finishes it, if no cycle did.
    let offset = std::fs::metadata(&log_file).map_or(0, |m| m.len() as usize);
    let mut child = serve_on_transit(
        &vault,
        &bao,
        free_port(),
        &log_file,
        &["--root-key-file", &root_key],
    );
    let addr = common::wait_for_listening(&log_file, offset);
    let mut keys = keys_at(addr).await;
    if !migrated {
        let last = migrate(&mut keys).await;
        assert!(last.done, "{last:?}");
    }
    let status = status_of(&mut keys).await;
    assert_eq!(status.root_of_trust.unwrap().kind, "transit");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// kill -9 in the middle of a rotation with retirement on Transit: the
/// restarted vault serves everything and resumes the rotation by itself, to
/// its end: the retired versions destroyed in Transit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
async fn kill_9_during_a_rotation_on_transit_is_finished_after_the_restart() {
    let peer = Peer::start("transit");
    let mut vault = vault_on(&peer).await;
    store_customers(&vault).await;
    let mut admin = vault.admin().await;
    store_many(&mut admin, 300).await;
    vault.stop().await;
    let Peer::Bao(bao) = &peer else {
        unreachable!()
    };
    let log_file = vault.dir.path().join("vault.log");
    let mut child = serve_on_transit(&vault, bao, free_port(), &log_file, &[]);
    let addr = common::wait_for_listening(&log_file, 0);
    let mut keys = keys_at(addr).await;
    let mut stream = keys
        .rotate_master_key(pb::RotateMasterKeyRequest {
            retire_previous: true,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("progress");
    assert!(!first.done, "{first:?}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let offset = std::fs::metadata(&log_file).unwrap().len() as usize;
    let mut child = serve_on_transit(&vault, bao, free_port(), &log_file, &[]);
    let addr = common::wait_for_listening(&log_file, offset);
    let mut keys = keys_at(addr).await;
    let mut admin = admin_at(addr).await;
    let read = common::get(&mut admin, "kept", &["ssn"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "ssn").value, KEPT_SSN);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        let status = status_of(&mut keys).await;
        if status.master_rotation.is_none() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never resumed: {status:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(status.master_versions, vec![2], "{status:?}");
    assert!(status
        .root_of_trust
        .unwrap()
        .awaiting_destruction
        .is_empty());
    let read = common::get(&mut admin, "c7", &["email"], "billing")
        .await
        .unwrap();
    assert_eq!(common::value_of(&read, "email").value, "a@example.com");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Transit lost while the vault serves: requests go on; within a check
/// (15 s) the health service `piivault.v1.RootOfTrust` answers NOT_SERVING
/// while the server stays SERVING, the metric `piivault_root_of_trust_reachable` is 0
/// and GetKeyStatus says so; all turn back once Transit answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "root of trust: needs OpenBao; .ci/root-of-trust-tools installs it"]
async fn losing_transit_while_serving_shows_in_health_and_key_status() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut bao = OpenBao::start();
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let mut options = VaultOptions {
        root_of_trust: RootOfTrustChoice::Transit(transit_config(&bao)),
        ..VaultOptions::default()
    };
    let database = common::TestDatabase::create().await;
    if let Some(database) = &database {
        options.storage = database.storage();
    }
    let vault = app::open_vault(&paths, &options).await.unwrap();
    let server_options = pii_vault::server::ServerOptions {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..pii_vault::server::ServerOptions::plain("127.0.0.1:0".parse().unwrap())
    };
    let server = pii_vault::server::start(Arc::new(vault), server_options)
        .await
        .unwrap();
    let addr = server.local_addr;
    let root_health = || crate::health_listener::status_at(addr, "piivault.v1.RootOfTrust");
    let reachable_metric = || async {
        let metrics = common::scrape_metrics(server.metrics_addr.unwrap()).await;
        metrics
            .lines()
            .find(|line| line.starts_with("piivault_root_of_trust_reachable "))
            .map(str::to_owned)
    };
    let within = std::time::Duration::from_secs(40);
    wait_until(within, || async {
        root_health().await == Some(ServingStatus::Serving as i32)
    })
    .await;
    assert_eq!(
        reachable_metric().await.as_deref(),
        Some("piivault_root_of_trust_reachable 1")
    );

    bao.seal();
    wait_until(within, || async {
        root_health().await == Some(ServingStatus::NotServing as i32)
    })
    .await;
    assert_eq!(
        crate::health_listener::status_at(addr, "").await,
        Some(ServingStatus::Serving as i32)
    );
    assert_eq!(
        reachable_metric().await.as_deref(),
        Some("piivault_root_of_trust_reachable 0")
    );
    let mut keys = keys_at(addr).await;
    let status = status_of(&mut keys).await;
    assert!(!status.root_of_trust.unwrap().reachable);
    let mut admin = admin_at(addr).await;
    common::put(
        &mut admin,
        PutFields::of("while-down").field("ssn", FieldKind::Ssn, KEPT_SSN),
    )
    .await
    .unwrap();

    bao.unseal();
    wait_until(within, || async {
        root_health().await == Some(ServingStatus::Serving as i32)
    })
    .await;
    assert_eq!(
        reachable_metric().await.as_deref(),
        Some("piivault_root_of_trust_reachable 1")
    );
    server.shutdown().await.unwrap();
}

async fn wait_until<F, Fut>(within: std::time::Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "not within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
