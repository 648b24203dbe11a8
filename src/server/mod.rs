//! The gRPC layer: tonic services, authentication, proto <-> domain conversion,
//! health and reflection, TLS, metrics, and the server's lifecycle.

mod audit_service;
mod auth;
mod call;
mod connections;
mod convert;
mod key_admin_service;
mod metrics;
mod privacy_service;
mod status;
mod vault_service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::crypto::{read_private_file, KeyFileAccess};
use crate::pb::audit_service_server::AuditServiceServer;
use crate::pb::key_admin_service_server::KeyAdminServiceServer;
use crate::pb::privacy_service_server::PrivacyServiceServer;
use crate::pb::vault_service_server::VaultServiceServer;
use crate::vault::Vault;

use audit_service::AuditApi;
use key_admin_service::KeyAdminApi;
use metrics::Metrics;
use privacy_service::PrivacyApi;
use vault_service::VaultApi;

/// Largest request or response message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// Serves Prometheus metrics at `/metrics` on this address.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether the TLS key may be readable by its group (Kubernetes Secrets).
    pub key_file_access: KeyFileAccess,
    pub limits: ServerLimits,
}

/// What keeps one client (or thousands) from starving the others.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Open connections; the listener waits while this many are open.
    pub max_connections: usize,
    /// Calls in progress across all connections; past it, calls are shed at
    /// once with RESOURCE_EXHAUSTED instead of queueing.
    pub max_concurrent_calls: usize,
    /// HTTP/2 streams (calls) one connection may have open.
    pub max_streams_per_connection: u32,
    /// The longest a call may run; a client's shorter `grpc-timeout` wins.
    pub call_timeout: std::time::Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 4096,
            max_concurrent_calls: 1024,
            max_streams_per_connection: 256,
            call_timeout: std::time::Duration::from_secs(60),
        }
    }
}

impl ServerOptions {
    /// Plain gRPC on `listen`, no metrics endpoint.
    pub fn plain(listen: SocketAddr) -> ServerOptions {
        ServerOptions {
            listen,
            tls: None,
            metrics_listen: None,
            key_file_access: KeyFileAccess::OwnerOnly,
            limits: ServerLimits::default(),
        }
    }
}

/// PEM files of the server's TLS identity, and of the CA that signs client
/// certificates when clients must present one (mTLS).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// A server accepting calls, with the addresses it bound (port 0 picks a free one).
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Key rotation on schedule (and resuming an interrupted one), and the
    /// metrics endpoint: stopped at shutdown.
    background: Vec<JoinHandle<()>>,
    vault: Arc<Vault>,
}

impl RunningServer {
    /// Stops accepting calls, lets in-flight calls finish, then flushes the store.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        self.task.await??;
        // An interrupted rotation resumes at the next start.
        for task in self.background.drain(..) {
            task.abort();
            let _ = task.await;
        }
        self.vault.flush().await?;
        Ok(())
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        signal.await;
        tracing::info!("shutting down: finishing in-flight calls");
        self.shutdown().await?;
        tracing::info!("store flushed; bye");
        Ok(())
    }
}

/// Binds and starts serving every service (and metrics, when asked).
pub async fn start(vault: Arc<Vault>, options: ServerOptions) -> anyhow::Result<RunningServer> {
    let metrics = Arc::new(Metrics::default());
    let limits = &options.limits;
    let mut builder = Server::builder()
        .timeout(limits.call_timeout)
        .max_concurrent_streams(Some(limits.max_streams_per_connection))
        .http2_max_header_list_size(Some(16 * 1024))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .tcp_keepalive(Some(std::time::Duration::from_secs(60)));
    if let Some(tls) = &options.tls {
        builder = builder
            .tls_config(tls_config(tls, options.key_file_access)?)
            .context("configuring TLS")?;
    }
    let listener = TcpListener::bind(options.listen).await?;
    let local_addr = listener.local_addr()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<VaultServiceServer<VaultApi>>()
        .await;
    health_reporter
        .set_serving::<PrivacyServiceServer<PrivacyApi>>()
        .await;
    health_reporter
        .set_serving::<AuditServiceServer<AuditApi>>()
        .await;
    health_reporter
        .set_serving::<KeyAdminServiceServer<KeyAdminApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let (vault_api, privacy_api, audit_api, key_admin_api) = apis(&vault, &metrics);
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let shedding = tower::ServiceBuilder::new()
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_calls,
        ))
        .into_inner();
    let router = builder
        .layer(shedding)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(vault_api)
        .add_service(privacy_api)
        .add_service(audit_api)
        .add_service(key_admin_api);
    let max_connections = limits.max_connections;
    let task = tokio::spawn(async move {
        let reporter = health_reporter;
        let stop = async move {
            let _ = shutdown_rx.await;
            // Readiness goes false before the listener closes.
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        };
        router
            .serve_with_incoming_shutdown(
                connections::limited_incoming(listener, max_connections),
                stop,
            )
            .await
    });
    tracing::info!(%local_addr, tls = options.tls.is_some(), "listening");
    let mut background = vec![tokio::spawn(Arc::clone(&vault).maintain_keys())];
    let metrics_addr = match options.metrics_listen {
        Some(listen) => {
            let (addr, metrics_task) = metrics::serve(listen, metrics, Arc::clone(&vault)).await?;
            background.push(metrics_task);
            Some(addr)
        }
        None => None,
    };
    Ok(RunningServer {
        local_addr,
        metrics_addr,
        shutdown: Some(shutdown_tx),
        task,
        background,
        vault,
    })
}

fn tls_config(files: &TlsFiles, key_access: KeyFileAccess) -> anyhow::Result<ServerTlsConfig> {
    let read =
        |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let key = read_private_file(&files.key, key_access)?;
    let mut config =
        ServerTlsConfig::new().identity(Identity::from_pem(read(&files.cert)?, &key[..]));
    if let Some(client_ca) = &files.client_ca {
        // With a client CA, a client without a certificate it signed is refused.
        config = config.client_ca_root(Certificate::from_pem(read(client_ca)?));
    }
    Ok(config)
}

type Apis = (
    VaultServiceServer<VaultApi>,
    PrivacyServiceServer<PrivacyApi>,
    AuditServiceServer<AuditApi>,
    KeyAdminServiceServer<KeyAdminApi>,
);

/// A service over the vault, with the vault's message size limits.
macro_rules! limited_service {
    ($server:ident, $api:ident, $vault:expr, $metrics:expr) => {
        $server::new($api {
            vault: Arc::clone($vault),
            metrics: Arc::clone($metrics),
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
    };
}

fn apis(vault: &Arc<Vault>, metrics: &Arc<Metrics>) -> Apis {
    (
        limited_service!(VaultServiceServer, VaultApi, vault, metrics),
        limited_service!(PrivacyServiceServer, PrivacyApi, vault, metrics),
        limited_service!(AuditServiceServer, AuditApi, vault, metrics),
        limited_service!(KeyAdminServiceServer, KeyAdminApi, vault, metrics),
    )
}
