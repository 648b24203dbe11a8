//! `--health-listen`: probes are answered on a listener of their own while
//! idle sockets hold every connection of the main one, and that listener
//! serves nothing but grpc.health.v1.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::tls::{write_private, TlsVault};
use common::ADMIN_KEY;
use pii_vault::app::{self, VaultOptions};
use pii_vault::server::{ServerLimits, ServerOptions};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Two connections, both about to be held by idle sockets for longer than
/// any of these tests runs.
fn tiny_budget() -> ServerLimits {
    ServerLimits {
        max_connections: 2,
        handshake_timeout: Duration::from_secs(60),
        ..ServerLimits::default()
    }
}

async fn health(channel: Channel) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await?;
    Ok(response.into_inner().status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_on_the_health_listener_are_answered_while_idle_sockets_hold_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let vault = app::open_vault(&paths, &VaultOptions::default())
        .await
        .unwrap();
    let options = ServerOptions {
        health_listen: Some("127.0.0.1:0".parse().unwrap()),
        limits: tiny_budget(),
        ..ServerOptions::plain("127.0.0.1:0".parse().unwrap())
    };
    let server = pii_vault::server::start(Arc::new(vault), options)
        .await
        .unwrap();
    let health_addr = server.health_addr.expect("a health listener");
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(server.local_addr).await.unwrap());
    }

    let on_main = Endpoint::from_shared(format!("http://{}", server.local_addr))
        .unwrap()
        .connect_lazy();
    let waited = tokio::time::timeout(Duration::from_millis(500), health(on_main)).await;
    assert!(
        !matches!(waited, Ok(Ok(_))),
        "the main listener answered: the idle sockets did not hold it"
    );

    let on_health = Endpoint::from_shared(format!("http://{health_addr}"))
        .unwrap()
        .connect_lazy();
    let answered = tokio::time::timeout(Duration::from_secs(5), health(on_health.clone()))
        .await
        .expect("the health listener did not answer within 5 s");
    assert_eq!(answered.unwrap(), ServingStatus::Serving);

    // Nothing but health: the vault's own services are not there.
    let mut vault_client =
        pii_vault::pb::vault_service_client::VaultServiceClient::with_interceptor(
            on_health,
            common::Bearer::new(ADMIN_KEY),
        );
    let status = common::get(&mut vault_client, "someone", &[], "billing")
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");

    // Its own budget is 64 connections: the client above holds one.
    let mut idle_on_health = Vec::new();
    for _ in 0..62 {
        idle_on_health.push(TcpStream::connect(health_addr).await.unwrap());
    }
    let lazy = || {
        Endpoint::from_shared(format!("http://{health_addr}"))
            .unwrap()
            .connect_lazy()
    };
    let sixty_fourth = lazy();
    assert_eq!(
        health(sixty_fourth.clone()).await.unwrap(),
        ServingStatus::Serving
    );
    let waited = tokio::time::timeout(Duration::from_millis(500), health(lazy())).await;
    assert!(
        !matches!(waited, Ok(Ok(_))),
        "a 65th connection to the health listener was served"
    );

    drop((idle, idle_on_health, sixty_fourth, vault_client));
    let _ = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
    assert!(
        TcpStream::connect(health_addr).await.is_err(),
        "the health listener outlived the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_gets_serving_over_mutual_tls_from_the_health_listener() {
    let vault = TlsVault::spawn_with(&common::test_policy(), |options| ServerOptions {
        health_listen: Some("127.0.0.1:0".parse().unwrap()),
        limits: tiny_budget(),
        ..options
    })
    .await;
    let health_addr = vault.server.as_ref().unwrap().health_addr.unwrap();
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(vault.addr).await.unwrap());
    }

    let (cert, key) = vault.pki.issue("probe", &[], &[]);
    let ca = write_private(&vault.dir.path().join("probe-ca.crt"), &vault.ca_pem);
    let cert = write_private(&vault.dir.path().join("probe.crt"), &cert);
    let key = write_private(&vault.dir.path().join("probe.key"), &key);
    let probe = |addr: std::net::SocketAddr| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pii-vault"))
            .args([
                "health",
                "--timeout",
                "2s",
                "--tls-server-name",
                "localhost",
            ])
            .arg("--addr")
            .arg(format!("https://127.0.0.1:{}", addr.port()))
            .arg("--ca")
            .arg(&ca)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .output()
            .unwrap()
    };
    let output = probe(vault.addr);
    assert!(
        !output.status.success(),
        "the main listener answered: the idle sockets did not hold it"
    );
    let output = probe(health_addr);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "SERVING");

    // Without a client certificate the health listener refuses, like --listen.
    let no_certificate = vault.channel_to(health_addr, None).await;
    let refused = match no_certificate {
        Ok(channel) => health(channel).await.is_err(),
        Err(_) => true,
    };
    assert!(
        refused,
        "the health listener served a client without a certificate"
    );
    drop(idle);
    let _ = tokio::time::timeout(Duration::from_secs(5), vault.shutdown()).await;
}

/// The status of `service` on `addr`, or `None` while nothing answers there.
pub(crate) async fn status_at(addr: std::net::SocketAddr, service: &str) -> Option<i32> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .ok()?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    Some(response.into_inner().status)
}

/// While the vault opens its store (a long upgrade fold; here a store whose
/// lock another process holds), health already answers on the health port:
/// the vault NOT_SERVING, the process (`pii-vault.process`, for startup
/// probes) SERVING. Once the store is open the vault turns SERVING on the
/// same port (issue #19, item 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_not_serving_while_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    std::fs::create_dir_all(&paths.data_dir).unwrap();
    // Holds the store's lock, as a long open would hold the vault back.
    let held = sled::open(&paths.data_dir).unwrap();
    let health_addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let log = std::fs::File::create(dir.path().join("vault.log")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pii-vault"))
        .args(["serve", "--listen", "127.0.0.1:0", "--health-listen"])
        .arg(health_addr.to_string())
        .arg("--data-dir")
        .arg(&paths.data_dir)
        .arg("--keyring-file")
        .arg(&paths.keyring_file)
        .arg("--root-key-file")
        .arg(&paths.root_key_file)
        .arg("--policy")
        .arg(&paths.policy_file)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let vault_status = loop {
        if let Some(status) = status_at(health_addr, "").await {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never answered while opening"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(vault_status, ServingStatus::NotServing as i32);
    assert_eq!(
        status_at(health_addr, "pii-vault.process").await,
        Some(ServingStatus::Serving as i32)
    );

    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while status_at(health_addr, "").await != Some(ServingStatus::Serving as i32) {
        assert!(
            std::time::Instant::now() < deadline,
            "the vault never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status_at(health_addr, "pii-vault.process").await,
        Some(ServingStatus::Serving as i32)
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The listener that answers health while the vault opens shares --listen's
/// port: once it stops, the port is free at once for the vault to bind,
/// every time (it used to be held a moment longer by its accept loop, and a
/// start on a fixed port failed with "Address already in use" now and then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_is_free_as_soon_as_the_opening_listener_stops() {
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let options = ServerOptions::plain(listen);
    for round in 0..30 {
        let opening = pii_vault::server::Opening::answer_health(&options)
            .await
            .unwrap();
        // Now and then a probe connected meanwhile, as a kubelet's would be,
        // which holds the listener until it is cut off (2 s).
        let probe = if round % 10 == 0 {
            Some(TcpStream::connect(listen).await.unwrap())
        } else {
            None
        };
        opening.stop().await;
        let bound = tokio::net::TcpListener::bind(listen).await;
        assert!(bound.is_ok(), "round {round}: {bound:?}");
        drop((bound, probe));
    }
}
