//! A full disk (issue #19, item 3). The release binary runs with its sled
//! store on a small tmpfs: past its reserve it refuses writes and reports
//! NOT_SERVING, takes writes again by itself once the file system grows, and
//! loses none of the writes it acknowledged. Mounting a tmpfs needs root, as
//! CI has; elsewhere the test says so and fails.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{field, PutFields, VaultClient, VaultProcess, ADMIN_KEY};
use pii_vault::pb::FieldKind;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "this test mounts a tmpfs to fill a disk, which needs root"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn grow_to(&self, size_mib: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size_mib}m")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

async fn health(vault: &VaultProcess) -> ServingStatus {
    let response = HealthClient::new(vault.channel().await)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers, even while the store refuses writes");
    ServingStatus::try_from(response.into_inner().status).unwrap()
}

async fn wait_for_health(vault: &VaultProcess, wanted: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while health(vault).await != wanted {
        assert!(Instant::now() < deadline, "health never became {wanted:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 100 generic fields of 4,000 bytes: about 400 KB a call.
fn bulky_fields(seed: usize) -> Vec<pii_vault::pb::Field> {
    (0..100)
        .map(|i| {
            let value = format!("{seed:08}-{i:03}-").repeat(400);
            field(&format!("f{i:03}"), FieldKind::Generic, &value[..4000])
        })
        .collect()
}

/// Writes customers of `bulky_fields` until a write is refused: the
/// customers acknowledged before, and the refusal. Fails when 200 fit (the
/// `disk` was never filled).
async fn fill_until_refused(admin: &mut VaultClient, disk: &str) -> (Vec<String>, tonic::Status) {
    let mut acknowledged = Vec::new();
    loop {
        let customer = format!("bulky-{}", acknowledged.len());
        let request = PutFields::of(&customer).fields(bulky_fields(acknowledged.len()));
        match common::put(admin, request).await {
            Ok(_) => acknowledged.push(customer),
            Err(status) => return (acknowledged, status),
        }
        assert!(acknowledged.len() < 200, "{disk} never filled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_reports_not_serving_and_recovers_by_itself() {
    if !common::sled_only("a_full_disk_refuses_writes") {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(24);
    let mut paths = common::prepare_dir(keys.path(), &common::test_policy());
    paths.data_dir = disk.path().join("data");
    let log_file: PathBuf = keys.path().join("vault.log");
    let args = ["--cache-size", "8MiB", "--min-free-disk", "8MiB"];
    let vault = VaultProcess::start_with(&paths, &log_file, &args);
    let mut admin = vault.vault(ADMIN_KEY).await;
    assert_eq!(health(&vault).await, ServingStatus::Serving);

    let (mut acknowledged, refusal) = fill_until_refused(&mut admin, "24 MiB").await;
    assert_eq!(refusal.code(), Code::Unavailable, "{refusal:?}");
    let details = tonic_types::StatusExt::get_error_details(&refusal);
    assert_eq!(details.error_info().unwrap().reason, "STORE_FULL");
    assert!(details.retry_info().is_some(), "{refusal:?}");
    assert!(
        refusal.message().contains("disk is nearly full"),
        "{}",
        refusal.message()
    );
    assert!(!acknowledged.is_empty());
    wait_for_health(&vault, ServingStatus::NotServing).await;
    // An audited read writes its event too: refused, not served unaudited.
    let read = common::get(&mut admin, &acknowledged[0], &["f000"], "billing").await;
    assert_eq!(read.unwrap_err().code(), Code::Unavailable);

    disk.grow_to(64);
    wait_for_health(&vault, ServingStatus::Serving).await;
    common::put(
        &mut admin,
        common::PutFields::of("after-growth").fields(bulky_fields(999)),
    )
    .await
    .expect("writes resume once space returns, without a restart");
    acknowledged.push("after-growth".into());
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(log.contains("NOT_SERVING"), "no log of the state change");
    assert!(log.contains("taking writes"), "no log of the recovery");

    // Everything acknowledged survived.
    assert!(vault.terminate().success());
    let vault = VaultProcess::start_with(&paths, &log_file, &args);
    let mut admin = vault.vault(ADMIN_KEY).await;
    for customer in &acknowledged {
        let read = common::get(&mut admin, customer, &["f099"], "billing")
            .await
            .unwrap_or_else(|status| panic!("{customer}: {status:?}"));
        assert_eq!(common::value_of(&read, "f099").value.len(), 4000);
    }
    vault.terminate();
}

/// Without a reserve the disk really fills: a write or sync fails, after
/// which sled promises nothing more in this process. The vault stops, so that
/// its supervisor restarts it on what is durable, and loses nothing it
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_for_want_of_space_stops_the_vault_for_a_restart() {
    if !common::sled_only("a_write_that_fails_for_want_of_space") {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(16);
    let mut paths = common::prepare_dir(keys.path(), &common::test_policy());
    paths.data_dir = disk.path().join("data");
    let log_file: PathBuf = keys.path().join("vault.log");
    let args = ["--cache-size", "8MiB", "--min-free-disk", "0"];
    let mut vault = VaultProcess::start_with(&paths, &log_file, &args);
    let mut admin = vault.vault(ADMIN_KEY).await;

    let (acknowledged, refusal) = fill_until_refused(&mut admin, "16 MiB").await;
    // The call that met the full disk is never answered (sled waits on the
    // failed write) until the vault stops and drops its connection.
    assert!(
        matches!(
            refusal.code(),
            Code::Unavailable | Code::Cancelled | Code::Unknown
        ),
        "{refusal:?}"
    );
    // The engine's text ("No space left on device (os error 28)") is logged, not sent.
    assert!(!refusal.message().contains("os error"), "{refusal:?}");
    assert!(!refusal.message().contains("storage engine"), "{refusal:?}");
    // sled waits forever on the failed write; the writer's stall limit (30 s) ends it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = vault.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the vault kept running on a failed store"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(exit.code(), Some(74), "{exit:?}");
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(log.contains("stopped because the store failed"), "{log}");

    disk.grow_to(64);
    let vault = VaultProcess::start_with(&paths, &log_file, &args);
    let mut admin = vault.vault(ADMIN_KEY).await;
    for customer in &acknowledged {
        let read = common::get(&mut admin, customer, &["f099"], "billing")
            .await
            .unwrap_or_else(|status| panic!("{customer}: {status:?}"));
        assert_eq!(common::value_of(&read, "f099").value.len(), 4000);
    }
    common::put(
        &mut admin,
        common::PutFields::of("after-restart").fields(bulky_fields(999)),
    )
    .await
    .unwrap();
    vault.terminate();
}
