//! The root of trust out of reach: at start, in a rotation, in a
//! retirement, while serving; and a kill -9 in a rotation.

use std::sync::Arc;

use pii_vault::app::{self, RootOfTrustChoice, VaultOptions};
use pii_vault::pb::{self, FieldKind};
use pii_vault_testkit::openbao::OpenBao;

use super::*;
use crate::common::{self, PutFields, ADMIN_KEY};

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
    let child = serve_on_transit(&vault, &bao, health, &log_file, &[]);
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
    child.kill9();
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
pub(super) async fn rotation_failure(
    mut stream: tonic::Streaming<pb::RotationProgress>,
) -> tonic::Status {
    loop {
        match stream.message().await {
            Err(status) => return status,
            Ok(Some(progress)) => assert!(!progress.done, "{progress:?}"),
            Ok(None) => panic!("the rotation finished without the root of trust"),
        }
    }
}

#[track_caller]
pub(super) fn assert_root_of_trust_unavailable(status: &tonic::Status) {
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let details = tonic_types::StatusExt::get_error_details(status);
    assert_eq!(
        details.error_info().unwrap().reason,
        "ROOT_OF_TRUST_UNAVAILABLE"
    );
}

/// A TCP proxy in front of a server that a test can cut at once: every
/// open connection drops and new ones close as soon as they are accepted.
pub(super) struct CuttableProxy {
    pub(super) addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl CuttableProxy {
    pub(super) async fn start(target: std::net::SocketAddr) -> CuttableProxy {
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

    pub(super) fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub(super) fn restore(&self) {
        self.cut.send_replace(false);
    }
}

/// A vault on `bao`'s Transit through a proxy the test can cut.
pub(super) async fn vault_behind_a_proxy_to(bao: &OpenBao) -> (TestVault, CuttableProxy) {
    let target = bao.addr().trim_start_matches("http://").parse().unwrap();
    let proxy = CuttableProxy::start(target).await;
    let mut config = transit_config(bao);
    config.addr = format!("http://{}", proxy.addr);
    let options = VaultOptions {
        root_of_trust: RootOfTrustChoice::Transit(config),
        ..VaultOptions::default()
    };
    let vault = common::spawn_vault_with(&common::test_policy(), options).await;
    (vault, proxy)
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
    let (vault, proxy) = vault_behind_a_proxy_to(&bao).await;
    store_customers(&vault).await;
    let mut admin = vault.admin().await;
    store_many(&mut admin, 300).await;
    let receipt = common::delete_customer(&mut vault.privacy(ADMIN_KEY).await, "victim")
        .await
        .unwrap();
    let stream = rotation_under_way(&mut vault.key_admin(ADMIN_KEY).await).await;
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

/// kill -9 in the middle of a rotation with retirement, the real binary on
/// `kind`: the restarted vault serves everything and resumes the rotation
/// by itself, to its end: the retired versions destroyed in the root of
/// trust (scheduled for deletion with AWS KMS), none left awaiting it.
pub(super) async fn kill_9_during_a_rotation_is_finished_after_the_restart_on(kind: &str) {
    let peer = Peer::start(kind);
    let mut vault = vault_on(&peer).await;
    store_customers(&vault).await;
    let mut admin = vault.admin().await;
    store_many(&mut admin, 300).await;
    vault.stop().await;
    let log_file = vault.dir.path().join("vault.log");
    let (child, addr) = serve_listening(&vault, peer.serve_flags(), &log_file, &[]);
    rotation_under_way(&mut keys_at(addr).await).await;
    child.kill9();

    let (child, addr) = serve_listening(&vault, peer.serve_flags(), &log_file, &[]);
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
    child.kill9();
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
