//! Connections that never become calls: closed at the handshake timeout, capped
//! per source address, and an accept loop that pauses when the process is out
//! of file descriptors. Regression tests of the security review's "idle
//! sockets stop the vault" finding (SECURITY.md, "Fixed findings"). Every test
//! uses 127.0.0.1 only and ends within seconds.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::TlsVault;
use pii_vault::app::{self, VaultOptions};
use pii_vault::server::{RunningServer, ServerLimits, ServerOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The handshake timeout of these tests' servers.
const SHORT: Duration = Duration::from_secs(1);

/// What a timer may add to it: a connection is never closed before.
const SLACK: Duration = Duration::from_millis(50);

const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const EMPTY_SETTINGS_FRAME: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

async fn serve(limits: ServerLimits) -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let vault = app::open_vault(&paths, &VaultOptions::default())
        .await
        .unwrap();
    let options = ServerOptions {
        limits,
        ..ServerOptions::plain("127.0.0.1:0".parse().unwrap())
    };
    let server = pii_vault::server::start(Arc::new(vault), options)
        .await
        .unwrap();
    (server, dir)
}

/// Graceful shutdown waits for open connections; a test must not hang on it.
async fn stop(server: RunningServer) {
    let _ = tokio::time::timeout(Duration::from_secs(5), server.shutdown()).await;
}

fn short_deadline() -> ServerLimits {
    ServerLimits {
        handshake_timeout: SHORT,
        ..ServerLimits::default()
    }
}

/// Reads (and drops) whatever the server sends until it closes the
/// connection: how long after `since` that was, or `None` if the connection
/// is still open after `limit`.
async fn closed_after(
    stream: &mut (impl AsyncRead + Unpin),
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut buffer = [0u8; 4096];
    let until_closed = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, until_closed).await.ok()
}

async fn health(channel: Channel) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await?;
    Ok(response.into_inner().status())
}

fn lazy_channel(addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_or_only_the_http2_preface_is_closed_at_the_handshake_timeout(
) {
    let (server, _dir) = serve(short_deadline()).await;

    let connected = Instant::now();
    let mut silent = TcpStream::connect(server.local_addr).await.unwrap();
    let closed = closed_after(&mut silent, connected, Duration::from_secs(10))
        .await
        .expect("a silent connection was still open 10 s after it connected");
    assert!(closed + SLACK >= SHORT, "closed after {closed:?}");

    let connected = Instant::now();
    let mut preface_only = TcpStream::connect(server.local_addr).await.unwrap();
    preface_only.write_all(HTTP2_PREFACE).await.unwrap();
    preface_only.write_all(&EMPTY_SETTINGS_FRAME).await.unwrap();
    let closed = closed_after(&mut preface_only, connected, Duration::from_secs(10))
        .await
        .expect("a connection that sent no request was still open 10 s after it connected");
    assert!(closed + SLACK >= SHORT, "closed after {closed:?}");
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_stalled_handshake_or_a_connection_without_a_request_is_closed_at_the_timeout() {
    let vault = TlsVault::spawn_with(&common::test_policy(), |options| ServerOptions {
        limits: short_deadline(),
        ..options
    })
    .await;

    let connected = Instant::now();
    let mut no_client_hello = TcpStream::connect(vault.addr).await.unwrap();
    let closed = closed_after(&mut no_client_hello, connected, Duration::from_secs(10))
        .await
        .expect("a connection that never started TLS was still open after 10 s");
    assert!(closed + SLACK >= SHORT, "closed after {closed:?}");

    let connected = Instant::now();
    let identity = vault.pki.issue("idle", &[], &[]);
    let mut handshaken = vault.tls_handshake(identity).await;
    handshaken.write_all(HTTP2_PREFACE).await.unwrap();
    handshaken.write_all(&EMPTY_SETTINGS_FRAME).await.unwrap();
    let closed = closed_after(&mut handshaken, connected, Duration::from_secs(10))
        .await
        .expect("a TLS connection that sent no request was still open after 10 s");
    assert!(closed + SLACK >= SHORT, "closed after {closed:?}");

    // A client that calls is served.
    let identity = vault.pki.issue("caller", &[], &[]);
    let channel = vault.channel(Some(identity)).await.unwrap();
    assert_eq!(health(channel).await.unwrap(), ServingStatus::Serving);
    vault.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_has_sent_a_request_outlives_the_handshake_timeout() {
    let (server, _dir) = serve(ServerLimits {
        max_connections: 1,
        ..short_deadline()
    })
    .await;
    let first = lazy_channel(server.local_addr);
    assert_eq!(health(first.clone()).await.unwrap(), ServingStatus::Serving);
    tokio::time::sleep(SHORT * 2).await;

    // The one connection allowed is still the first client's: another is not
    // served, and the first calls again on the connection it has.
    let second = lazy_channel(server.local_addr);
    let waited = tokio::time::timeout(Duration::from_millis(500), health(second.clone())).await;
    assert!(
        !matches!(waited, Ok(Ok(_))),
        "a second connection was served: the first was closed although it had sent a request"
    );
    assert_eq!(health(first.clone()).await.unwrap(), ServingStatus::Serving);
    drop((first, second));
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_holding_every_slot_are_closed_so_a_real_client_gets_through() {
    let max_connections = 4;
    let (server, _dir) = serve(ServerLimits {
        max_connections,
        ..short_deadline()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..max_connections {
        idle.push(TcpStream::connect(server.local_addr).await.unwrap());
    }

    let started = Instant::now();
    let served = tokio::time::timeout(
        Duration::from_secs(10),
        health(lazy_channel(server.local_addr)),
    )
    .await
    .expect("no answer within 10 s while idle connections held every slot");
    assert_eq!(served.unwrap(), ServingStatus::Serving);
    let waited = started.elapsed();
    assert!(
        waited >= SHORT / 2,
        "answered after {waited:?}: the idle connections did not hold every slot"
    );
    for mut connection in idle {
        let closed = closed_after(&mut connection, started, Duration::from_secs(5)).await;
        assert!(closed.is_some(), "an idle connection is still open");
    }
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_ip_cap_are_closed_at_once_and_the_rest_kept() {
    let (server, _dir) = serve(ServerLimits {
        max_connections_per_ip: 2,
        handshake_timeout: Duration::from_secs(30),
        ..ServerLimits::default()
    })
    .await;
    let mut first = TcpStream::connect(server.local_addr).await.unwrap();
    let mut second = TcpStream::connect(server.local_addr).await.unwrap();

    let connected = Instant::now();
    let mut third = TcpStream::connect(server.local_addr).await.unwrap();
    let closed = closed_after(&mut third, connected, Duration::from_secs(5))
        .await
        .expect("a third connection from 127.0.0.1 was kept open");
    assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
    for kept in [&mut first, &mut second] {
        let still_open = closed_after(kept, Instant::now(), Duration::from_millis(300)).await;
        assert_eq!(still_open, None, "a connection within the cap was closed");
    }
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        health(lazy_channel(server.local_addr)),
    )
    .await
    .expect("a refused client waited instead of being closed");
    assert!(refused.is_err(), "a client past the cap was served");

    // Once one of the two closes, a client from the same address is served.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match health(lazy_channel(server.local_addr)).await {
            Ok(status) => {
                assert_eq!(status, ServingStatus::Serving);
                break;
            }
            Err(status) => assert!(
                Instant::now() < deadline,
                "not served 5 s after a slot freed: {status:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(second);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_is_closed_once_the_server_has_stopped() {
    let (server, _dir) = serve(ServerLimits::default()).await;
    let addr = server.local_addr;
    assert_eq!(
        health(lazy_channel(addr)).await.unwrap(),
        ServingStatus::Serving
    );
    server.shutdown().await.unwrap();
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the port still accepts connections");
}

/// Kills the vault process when the test ends, passed or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User plus system CPU time the process has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: utime is the
    // 14th field of the line, stime the 15th.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let output = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    let ticks_per_second: u64 = String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Duration::from_millis(ticks * 1000 / ticks_per_second)
}

/// The vault binary on 127.0.0.1 with `serve_args`, logging JSON at info
/// level to `log_file`, with at most `descriptor_limit` open files.
fn spawn_binary(
    paths: &pii_vault::app::VaultPaths,
    log_file: &std::path::Path,
    descriptor_limit: u32,
    serve_args: &[&str],
) -> (KillOnDrop, std::net::SocketAddr) {
    let log = std::fs::File::create(log_file).unwrap();
    let vault = KillOnDrop(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {descriptor_limit} && exec \"$0\" \"$@\""
            ))
            .arg(env!("CARGO_BIN_EXE_pii-vault"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(serve_args)
            .arg("--data-dir")
            .arg(&paths.data_dir)
            .arg("--keyring-file")
            .arg(&paths.keyring_file)
            .arg("--root-key-file")
            .arg(&paths.root_key_file)
            .arg("--policy")
            .arg(&paths.policy_file)
            .env("PII_VAULT_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    (vault, common::wait_for_listening(log_file, 0))
}

#[test]
fn a_connection_past_the_per_ip_cap_is_logged_once_without_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let log_file = dir.path().join("vault.log");
    let (_vault, addr) = spawn_binary(&paths, &log_file, 1024, &["--max-connections-per-ip", "1"]);
    let kept = std::net::TcpStream::connect(addr).unwrap();
    for _ in 0..3 {
        let mut refused = std::net::TcpStream::connect(addr).unwrap();
        refused
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 64];
        // EOF, or a reset: closed either way, and not by the read timeout.
        let read = std::io::Read::read(&mut refused, &mut buffer);
        let timed_out = read.is_err_and(|error| {
            use std::io::ErrorKind::{TimedOut, WouldBlock};
            matches!(error.kind(), WouldBlock | TimedOut)
        });
        assert!(!timed_out, "a connection past the cap was kept open");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let warning = loop {
        let log_text = std::fs::read_to_string(&log_file).unwrap();
        let warnings: Vec<String> = log_text
            .lines()
            .filter(|line| line.contains("--max-connections-per-ip"))
            .map(str::to_owned)
            .collect();
        if let [warning] = warnings.as_slice() {
            break warning.clone();
        }
        assert!(
            warnings.is_empty() && Instant::now() < deadline,
            "expected one warning:\n{log_text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!warning.contains("127.0.0.1"), "{warning}");
    drop(kept);
}

#[test]
fn out_of_file_descriptors_the_accept_loop_pauses_instead_of_spinning() {
    // The vault holds about 15 descriptors when idle; 60 connections leave
    // some in the listen queue, and each accept of those fails with EMFILE.
    const DESCRIPTOR_LIMIT: u32 = 40;
    const CONNECTIONS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let log_file = dir.path().join("vault.log");
    let (vault, addr) = spawn_binary(
        &paths,
        &log_file,
        DESCRIPTOR_LIMIT,
        &["--handshake-timeout", "60s"],
    );
    let clients: Vec<std::net::TcpStream> = (0..CONNECTIONS)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let before = cpu_time(vault.0.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time(vault.0.id()) - before;
    let log_text = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        used < Duration::from_millis(400),
        "the vault used {used:?} of CPU in 2 s while out of descriptors:\n{log_text}"
    );
    let warnings = log_text
        .matches("accepting connections failed (out of file descriptors?); pausing")
        .count();
    assert_eq!(warnings, 1, "one warning per 10 s expected:\n{log_text}");
    assert!(log_text.contains("Too many open files"), "{log_text}");

    // With the connections gone, it serves again.
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let probe = Command::new(env!("CARGO_BIN_EXE_pii-vault"))
            .args(["health", "--addr", &format!("http://{addr}")])
            .output()
            .unwrap();
        if probe.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not serving 10 s after the connections closed: {}",
            String::from_utf8_lossy(&probe.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many connections the metrics listener takes at once
/// (`MAX_CONNECTIONS` in src/server/metrics.rs).
const METRICS_CONNECTIONS: usize = 32;

async fn serve_with_metrics(limits: ServerLimits) -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let vault = app::open_vault(&paths, &VaultOptions::default())
        .await
        .unwrap();
    let options = ServerOptions {
        limits,
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerOptions::plain("127.0.0.1:0".parse().unwrap())
    };
    let server = pii_vault::server::start(Arc::new(vault), options)
        .await
        .unwrap();
    (server, dir)
}

/// A whole scrape on a new connection: the response's status line.
async fn scrape_status(addr: std::net::SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_connections_are_closed_at_the_handshake_timeout_and_capped() {
    let (server, _dir) = serve_with_metrics(short_deadline()).await;
    let metrics = server.metrics_addr.unwrap();
    assert_eq!(scrape_status(metrics).await, "HTTP/1.1 200 OK");

    // Silent, or stuck in the middle of its headers: closed at the timeout.
    let connected = Instant::now();
    let mut silent = TcpStream::connect(metrics).await.unwrap();
    let mut half_headers = TcpStream::connect(metrics).await.unwrap();
    half_headers
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    for stream in [&mut silent, &mut half_headers] {
        let closed = closed_after(stream, connected, Duration::from_secs(10))
            .await
            .expect("an idle metrics connection was still open 10 s after it connected");
        assert!(closed + SLACK >= SHORT, "closed after {closed:?}");
    }

    // Idle connections fill the listener: a scrape waits until they are
    // closed, then is answered.
    let connected = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..METRICS_CONNECTIONS {
        idle.push(TcpStream::connect(metrics).await.unwrap());
    }
    let status = tokio::time::timeout(Duration::from_secs(10), scrape_status(metrics))
        .await
        .expect("the scrape was not answered once the idle connections were closed");
    let waited = connected.elapsed();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        waited + SLACK >= SHORT,
        "a scrape past the cap was answered after {waited:?}, before the idle connections were closed"
    );
    for stream in &mut idle {
        assert!(closed_after(stream, connected, Duration::from_secs(10))
            .await
            .is_some());
    }
    stop(server).await;
}

/// A connection is asked to go away at `max_connection_age` (issue #19: new
/// replicas get no traffic otherwise): an HTTP/2 connection, long past its
/// handshake and far from the handshake timeout, is closed once it is that
/// old, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_closed_at_their_maximum_age() {
    let age = Duration::from_secs(1);
    let (server, _dir) = serve(ServerLimits {
        handshake_timeout: Duration::from_secs(60),
        max_connection_age: age,
        call_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    })
    .await;
    let opened = Instant::now();
    let mut stream = TcpStream::connect(server.local_addr).await.unwrap();
    stream.write_all(HTTP2_PREFACE).await.unwrap();
    stream.write_all(&EMPTY_SETTINGS_FRAME).await.unwrap();
    let closed = closed_after(&mut stream, opened, Duration::from_secs(10))
        .await
        .expect("the connection outlived its maximum age");
    assert!(closed + SLACK >= age, "closed after {closed:?}");
    stop(server).await;
}
