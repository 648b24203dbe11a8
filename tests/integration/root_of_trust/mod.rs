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

mod migration;
mod renewal;
mod unreachable;

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
        // Due when KMS deletes the retired version's key: the end of its
        // pending window (7 days), not the backup retention (30 days).
        assert_eq!(status.state(), pb::ErasureState::Logical);
        let week_ms = 7 * 24 * 3600 * 1000;
        let from_now = common::erasure_due_ms(&status) - now_ms();
        assert!(
            (week_ms - 120_000..=week_ms).contains(&from_now),
            "{from_now}"
        );
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
    backup.opens_nothing_on(&peer).await;
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
            Some(database) => keyring_row(database).await,
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

    /// With every credential of the vault and the same root of trust, the
    /// backup opens nothing: a vault started on it refuses to start, naming
    /// a version it cannot open, and its keyring does not open offline.
    /// moto decrypts under keys pending deletion (AWS does not): there, each
    /// key the backup names is shown pending deletion, for the window's 7
    /// days.
    async fn opens_nothing_on(&self, peer: &Peer) {
        let sealed = pii_vault::crypto::decode_image(&self.keyring_image().await).unwrap();
        if !peer.enforces_destruction() {
            for (_, seal) in sealed.versions.values() {
                let handle = KeyHandle(seal.handle.clone());
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
            return;
        }
        let options = VaultOptions {
            root_of_trust: peer.choice(),
            storage: self.storage.clone(),
            ..VaultOptions::default()
        };
        let message = refusal_to_open(&self.paths, &options, "a vault on the backup").await;
        assert!(
            message.contains("could not open master version"),
            "{message}"
        );
        let opened = pii_vault::vault::open_keyring(peer.client().await.as_ref(), sealed).await;
        assert!(opened.is_err(), "the backup's keyring opened offline");
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

/// Why a vault on `paths` with `options` does not open (the whole chain of
/// causes); panics, naming `what`, if it opens.
async fn refusal_to_open(paths: &VaultPaths, options: &VaultOptions, what: &str) -> String {
    match app::open_vault(paths, options).await {
        Ok(_) => panic!("{what} must not open"),
        Err(refused) => format!("{refused:#}"),
    }
}

/// The keyring row of a database, as stored.
async fn keyring_row(database: &common::TestDatabase) -> Vec<u8> {
    use pii_vault::store::KeyringTable;
    let store = pii_vault::store::PgStore::connect(&database.url, 1, None, true)
        .await
        .unwrap();
    store.keyring_row().await.unwrap().expect("a keyring row").2
}

/// Both customers `store_customers` stored read back.
async fn reads_every_customer(vault: &TestVault) {
    let mut admin = vault.admin().await;
    for (customer, ssn) in [("victim", SSN), ("kept", KEPT_SSN)] {
        let read = common::get(&mut admin, customer, &["ssn"], "billing")
            .await
            .unwrap();
        assert_eq!(common::value_of(&read, "ssn").value, ssn);
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

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = $needs]
            async fn kill_9_during_a_rotation_is_finished_after_the_restart() {
                super::unreachable::kill_9_during_a_rotation_is_finished_after_the_restart_on(
                    $kind,
                )
                .await;
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

/// A rotation with retirement started, past its first progress message
/// and not done: keys are being re-wrapped.
async fn rotation_under_way(
    keys: &mut common::KeyAdminClient,
) -> tonic::Streaming<pb::RotationProgress> {
    let mut stream = common::start_rotation(keys, true).await;
    let first = stream.message().await.unwrap().expect("progress");
    assert!(!first.done, "{first:?}");
    stream
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

/// `serve`'s flags and environment for Transit: the token in BAO_TOKEN.
fn transit_flags(bao: &OpenBao) -> (Vec<String>, Vec<(&'static str, String)>) {
    let flags = ["--root-of-trust", "transit", "--transit-addr", bao.addr()]
        .into_iter()
        .chain(["--transit-key", "pii-vault"])
        .map(str::to_owned)
        .collect();
    (flags, vec![("BAO_TOKEN", bao.token().to_owned())])
}

impl Peer {
    /// `serve`'s flags and environment for this root of trust.
    fn serve_flags(&self) -> (Vec<String>, Vec<(&'static str, String)>) {
        match self {
            Peer::Bao(bao) => transit_flags(bao),
            Peer::Hsm(hsm) => {
                let flags = vec![
                    "--root-of-trust".to_owned(),
                    "pkcs11".to_owned(),
                    "--pkcs11-module".to_owned(),
                    hsm.module().display().to_string(),
                    "--pkcs11-token-label".to_owned(),
                    hsm.token_label().to_owned(),
                    "--pkcs11-pin-file".to_owned(),
                    hsm.pin_file().display().to_string(),
                ];
                let envs = hsm
                    .envs()
                    .map(|(name, path)| (name, path.display().to_string()));
                (flags, envs.to_vec())
            }
            Peer::Kms(moto) => (
                vec!["--root-of-trust".to_owned(), "aws-kms".to_owned()],
                moto.env_vars(),
            ),
        }
    }
}

/// The real binary on Transit: `serve --root-of-trust transit` with the
/// token in BAO_TOKEN, no root key file, health on a listener of its own.
fn serve_on_transit(
    vault: &TestVault,
    bao: &OpenBao,
    health: std::net::SocketAddr,
    log_file: &Path,
    extra_args: &[&str],
) -> Served {
    serve_with(vault, transit_flags(bao), health, log_file, extra_args)
}

/// The real binary with a root of trust's `serve` flags and environment, no
/// root key file, health on a listener of its own, its log in `log_file`.
fn serve_with(
    vault: &TestVault,
    (root_flags, envs): (Vec<String>, Vec<(&'static str, String)>),
    health: std::net::SocketAddr,
    log_file: &Path,
    extra_args: &[&str],
) -> Served {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pii-vault"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--health-listen", &health.to_string()])
        .args(root_flags)
        .arg("--data-dir")
        .arg(&vault.paths.data_dir)
        .arg("--keyring-file")
        .arg(&vault.paths.keyring_file)
        .arg("--policy")
        .arg(&vault.paths.policy_file)
        .args(extra_args)
        .envs(envs)
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    if let Some(database) = &vault.database {
        command.args(database.serve_args());
    }
    Served(command.spawn().unwrap())
}

/// `serve_with` on a free port, once it listens (as the log says after what
/// it already held): the process and its address.
fn serve_listening(
    vault: &TestVault,
    root: (Vec<String>, Vec<(&'static str, String)>),
    log_file: &Path,
    extra_args: &[&str],
) -> (Served, std::net::SocketAddr) {
    let offset = std::fs::metadata(log_file).map_or(0, |m| m.len() as usize);
    let child = serve_with(vault, root, free_port(), log_file, extra_args);
    (child, common::wait_for_listening(log_file, offset))
}

/// A vault process that a failing test must not leave running: killed
/// (SIGKILL) when dropped, or by `kill9`.
pub(super) struct Served(std::process::Child);

impl Served {
    pub(super) fn kill9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> std::net::SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}
