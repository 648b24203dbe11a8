//! How the vault is reached in production: mTLS with principals matched by
//! their certificate, the Prometheus endpoint, and the health command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{field, Bearer, ADMIN_KEY};
use pii_vault::app::{self, VaultOptions};
use pii_vault::pb::{self, vault_service_client::VaultServiceClient, FieldKind};
use pii_vault::server::{RunningServer, ServerOptions, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A certificate and its key (PEM) for `common_name`, with DNS or URI names.
    fn issue(&self, common_name: &str, dns: &[&str], uris: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example");
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write_private(path: &Path, contents: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_path_buf()
}

/// The test policy plus principals that authenticate by certificate.
fn mtls_policy() -> String {
    format!(
        r#"{}
[[principals]]
name = "billing-service"
spiffe_id = "spiffe://example.org/billing"
scopes = ["data:write", "data:read"]
purposes = ["billing"]
[principals.disclosure]
"*" = "plaintext"

[[principals]]
name = "support-desk"
cert_subject = "CN=support-desk,O=Example"
scopes = ["data:read"]
purposes = ["billing"]
[principals.disclosure]
"*" = "masked"
"#,
        common::test_policy()
    )
}

struct TlsVault {
    server: Option<RunningServer>,
    pki: Pki,
    ca_pem: String,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

async fn spawn_tls_vault() -> TlsVault {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &mtls_policy());
    let pki = Pki::new("vault test CA");
    let (server_cert, server_key) = pki.issue("vault", &["localhost"], &[]);
    let tls = TlsFiles {
        cert: write_private(&dir.path().join("tls.crt"), &server_cert),
        key: write_private(&dir.path().join("tls.key"), &server_key),
        client_ca: Some(write_private(&dir.path().join("ca.crt"), &pki.ca.pem())),
    };
    let vault = app::open_vault(&paths, &VaultOptions::default())
        .await
        .unwrap();
    let options = ServerOptions {
        tls: Some(tls),
        ..ServerOptions::plain("127.0.0.1:0".parse().unwrap())
    };
    let server = pii_vault::server::start(Arc::new(vault), options)
        .await
        .unwrap();
    TlsVault {
        addr: server.local_addr,
        server: Some(server),
        ca_pem: pki.ca.pem(),
        pki,
        _dir: dir,
    }
}

impl TlsVault {
    async fn channel(
        &self,
        identity: Option<(String, String)>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Channel::from_shared(format!("https://{}", self.addr))
            .unwrap()
            .tls_config(tls)?
            .connect()
            .await
    }
}

async fn put_by(channel: Channel, api_key: &str) -> Result<pb::PutFieldsResponse, tonic::Status> {
    let mut client = VaultServiceClient::with_interceptor(channel, Bearer::new(api_key));
    common::put(
        &mut client,
        "tls-1",
        vec![field("email", FieldKind::Email, "tls@example.com")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_the_trusted_ca_is_served_as_its_principal() {
    let vault = spawn_tls_vault().await;
    let billing = vault
        .pki
        .issue("billing", &[], &["spiffe://example.org/billing"]);
    let channel = vault.channel(Some(billing)).await.unwrap();
    put_by(channel.clone(), "").await.unwrap();
    let mut client = VaultServiceClient::new(channel);
    let read = common::get_plain(&mut client, "tls-1").await.unwrap();
    assert_eq!(read.fields[0].value, "tls@example.com");

    // Matched by subject: the support desk reads masked values.
    let support = vault.pki.issue("support-desk", &[], &[]);
    let mut client = VaultServiceClient::new(vault.channel(Some(support)).await.unwrap());
    let read = common::get_plain(&mut client, "tls-1").await.unwrap();
    assert_eq!(read.fields[0].value, "t***@example.com");
    let refused = client
        .put_fields(pb::PutFieldsRequest {
            customer_id: "tls-1".into(),
            fields: vec![field("x", FieldKind::Generic, "y")],
            purpose: "billing".into(),
            token_format: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("support-desk"),
        "{}",
        refused.message()
    );

    // An API key still works over TLS (with a certificate, since the vault requires one).
    let anyone = vault.pki.issue("someone", &[], &[]);
    put_by(vault.channel(Some(anyone)).await.unwrap(), ADMIN_KEY)
        .await
        .unwrap();
    vault.server.unwrap().shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_certificate_or_with_one_from_another_ca_are_refused() {
    let vault = spawn_tls_vault().await;
    // No certificate: the TLS handshake (or the first call) fails.
    let no_certificate = match vault.channel(None).await {
        Ok(channel) => put_by(channel, ADMIN_KEY).await.is_err(),
        Err(_) => true,
    };
    assert!(no_certificate, "served without a client certificate");

    let other_ca = Pki::new("somebody else's CA");
    let forged = other_ca.issue("billing", &[], &["spiffe://example.org/billing"]);
    let forged_refused = match vault.channel(Some(forged)).await {
        Ok(channel) => put_by(channel, ADMIN_KEY).await.is_err(),
        Err(_) => true,
    };
    assert!(forged_refused, "served a certificate from an untrusted CA");

    // Trusted, but no principal of the policy names it.
    let stranger = vault
        .pki
        .issue("stranger", &[], &["spiffe://example.org/stranger"]);
    let status = put_by(vault.channel(Some(stranger)).await.unwrap(), "")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    vault.server.unwrap().shutdown().await.unwrap();
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_shows_the_documented_series_and_no_ids_or_values() {
    let dir = tempfile::tempdir().unwrap();
    let paths = common::prepare_dir(dir.path(), &common::test_policy());
    let vault = app::open_vault(&paths, &VaultOptions::default())
        .await
        .unwrap();
    let options = ServerOptions {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..ServerOptions::plain("127.0.0.1:0".parse().unwrap())
    };
    let server = pii_vault::server::start(Arc::new(vault), options)
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{}", server.local_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = VaultServiceClient::with_interceptor(channel.clone(), Bearer::new(ADMIN_KEY));
    common::put(
        &mut admin,
        "metrics-cust-7f3a",
        vec![field("ssn", FieldKind::Ssn, "219-09-9999")],
    )
    .await
    .unwrap();
    common::get(&mut admin, "metrics-cust-7f3a", &[], "billing")
        .await
        .unwrap();
    common::tokenize(
        &mut admin,
        "metrics-cust-7f3a",
        vec![(
            FieldKind::Email,
            "planted.metrics@example.com",
            pb::TokenFormat::Deterministic,
        )],
    )
    .await
    .unwrap();
    let refused = common::get(&mut admin, "metrics-cust-7f3a", &[], "no-such-purpose").await;
    assert!(refused.is_err());
    let mut privacy = pb::privacy_service_client::PrivacyServiceClient::with_interceptor(
        channel,
        Bearer::new(ADMIN_KEY),
    );
    common::delete_customer(&mut privacy, "metrics-cust-7f3a")
        .await
        .unwrap();

    let text = scrape(server.metrics_addr.unwrap()).await;
    for series in [
        r#"piivault_grpc_requests_total{method="PutFields",code="Ok"} 1"#,
        r#"piivault_grpc_requests_total{method="GetFields",code="InvalidArgument"} 1"#,
        r#"piivault_grpc_request_duration_seconds_bucket{le="#,
        r#"piivault_tokens_issued_total{format="random"} 1"#,
        r#"piivault_tokens_issued_total{format="deterministic"} 1"#,
        "piivault_erasures_total 1",
        "piivault_master_key_rotations_total 0",
        "piivault_customer_key_rotations_total 0",
        "piivault_dek_cache_hits_total",
        "piivault_dek_cache_misses_total",
        "piivault_store_size_bytes",
    ] {
        assert!(text.contains(series), "missing {series:?} in:\n{text}");
    }
    for planted in [
        "metrics-cust-7f3a",
        "219-09-9999",
        "planted.metrics",
        "no-such-purpose",
    ] {
        assert!(
            !text.contains(planted),
            "{planted:?} leaked into the metrics"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_command_says_serving_over_plain_and_mutual_tls() {
    let plain = common::spawn_vault().await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pii-vault"))
        .args(["health", "--addr", &format!("http://{}", plain.addr)])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "SERVING");

    let vault = spawn_tls_vault().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = vault.pki.issue("probe", &[], &[]);
    let ca = write_private(&dir.path().join("ca.crt"), &vault.ca_pem);
    let cert = write_private(&dir.path().join("probe.crt"), &cert);
    let key = write_private(&dir.path().join("probe.key"), &key);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pii-vault"))
        .args([
            "health",
            "--addr",
            &format!("https://127.0.0.1:{}", vault.addr.port()),
            "--tls-server-name",
            "localhost",
        ])
        .arg("--ca")
        .arg(&ca)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Nothing listening: a failing exit code, quickly.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = std::time::Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pii-vault"))
        .args(["health", "--addr", &format!("http://{closed}")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    vault.server.unwrap().shutdown().await.unwrap();
}
