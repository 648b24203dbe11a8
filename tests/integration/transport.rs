//! How the vault is reached in production: mTLS with principals matched by
//! their certificate, the Prometheus endpoint, and the health command.

use crate::common;

use std::sync::Arc;

use common::tls::{write_private, Pki, TlsVault};
use common::{Bearer, ADMIN_KEY};
use pii_vault::app::{self, VaultOptions};
use pii_vault::pb::{self, vault_service_client::VaultServiceClient, FieldKind};
use pii_vault::server::ServerOptions;
use tonic::transport::Channel;
use tonic::Code;

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

async fn spawn_tls_vault() -> TlsVault {
    TlsVault::spawn(&mtls_policy()).await
}

async fn put_by(channel: Channel, api_key: &str) -> Result<pb::PutFieldsResponse, tonic::Status> {
    let mut client = VaultServiceClient::with_interceptor(channel, Bearer::new(api_key));
    common::put(
        &mut client,
        common::PutFields::of("tls-1").field("email", FieldKind::Email, "tls@example.com"),
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
        .put_fields(
            common::PutFields::of("tls-1")
                .field("x", FieldKind::Generic, "y")
                .format(pb::TokenFormat::Unspecified)
                .build(),
        )
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
    vault.shutdown().await;
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
    vault.shutdown().await;
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
        common::PutFields::of("metrics-cust-7f3a").field("ssn", FieldKind::Ssn, "219-09-9999"),
    )
    .await
    .unwrap();
    common::get(&mut admin, "metrics-cust-7f3a", &[], "billing")
        .await
        .unwrap();
    common::tokenize(
        &mut admin,
        common::Tokenize::of("metrics-cust-7f3a").item(
            FieldKind::Email,
            "planted.metrics@example.com",
            pb::TokenFormat::Deterministic,
        ),
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

    let text = common::scrape_metrics(server.metrics_addr.unwrap()).await;
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
        "piivault_store_serving 1",
        "piivault_shed_calls_total 0",
        "piivault_timed_out_calls_total 0",
        "piivault_master_key_rotation_failures_total 0",
        "piivault_master_key_age_seconds",
        "piivault_store_queued_writes 0",
        "piivault_resident_memory_bytes",
        // Past the 60 s call deadline.
        r#"piivault_grpc_request_duration_seconds_bucket{le="104.857"#,
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
    vault.shutdown().await;
}

/// Asks the vault, through one version of gRPC reflection, for its services
/// and for the file that declares `piivault.v1.VaultService`.
macro_rules! reflect {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::{
            server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
            ServerReflectionRequest,
        };
        let ask = |message| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message),
        };
        let requests = [
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "piivault.v1.VaultService".into(),
            )),
        ];
        let mut replies = ServerReflectionClient::new($channel)
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .expect("reflection answers")
            .into_inner();
        let services = match replies.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(list)) => list
                .service
                .into_iter()
                .map(|service| service.name)
                .collect(),
            other => panic!("no service list: {other:?}"),
        };
        let files = match replies.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::FileDescriptorResponse(files)) => files.file_descriptor_proto,
            other => panic!("no file descriptor: {other:?}"),
        };
        (services, files)
    }};
}

#[tokio::test]
async fn reflection_answers_over_v1_and_v1alpha() {
    let vault = common::spawn_vault().await;
    let (v1_services, v1_files): (Vec<String>, Vec<Vec<u8>>) = reflect!(v1, vault.channel().await);
    let (v1alpha_services, v1alpha_files): (Vec<String>, Vec<Vec<u8>>) =
        reflect!(v1alpha, vault.channel().await);
    for service in [
        "piivault.v1.VaultService",
        "piivault.v1.PrivacyService",
        "piivault.v1.AuditService",
        "piivault.v1.KeyAdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            v1_services.iter().any(|s| s == service),
            "v1: {v1_services:?}"
        );
        assert!(
            v1alpha_services.iter().any(|s| s == service),
            "v1alpha: {v1alpha_services:?}"
        );
    }
    assert!(!v1_files.is_empty());
    assert_eq!(v1_files, v1alpha_files);
}
