//! The gRPC layer: tonic services, authentication, proto <-> domain conversion,
//! health and reflection, and the server's lifecycle.

mod audit_service;
mod auth;
mod call;
mod convert;
mod key_admin_service;
mod privacy_service;
mod status;
mod vault_service;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::pb::audit_service_server::AuditServiceServer;
use crate::pb::key_admin_service_server::KeyAdminServiceServer;
use crate::pb::privacy_service_server::PrivacyServiceServer;
use crate::pb::vault_service_server::VaultServiceServer;
use crate::vault::Vault;

use audit_service::AuditApi;
use key_admin_service::KeyAdminApi;
use privacy_service::PrivacyApi;
use vault_service::VaultApi;

/// Largest request or response message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// A server accepting calls, with the address it bound (port 0 picks a free one).
pub struct RunningServer {
    pub local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Key rotation on schedule (and resuming an interrupted one).
    key_maintenance: JoinHandle<()>,
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
        self.key_maintenance.abort();
        let _ = self.key_maintenance.await;
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

/// Binds `listen` and starts serving every service.
pub async fn start(vault: Arc<Vault>, listen: SocketAddr) -> anyhow::Result<RunningServer> {
    let listener = TcpListener::bind(listen).await?;
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
    let vault_api = VaultServiceServer::new(VaultApi {
        vault: Arc::clone(&vault),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let privacy_api = PrivacyServiceServer::new(PrivacyApi {
        vault: Arc::clone(&vault),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let audit_api = AuditServiceServer::new(AuditApi {
        vault: Arc::clone(&vault),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let key_admin_api = KeyAdminServiceServer::new(KeyAdminApi {
        vault: Arc::clone(&vault),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let router = Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(vault_api)
        .add_service(privacy_api)
        .add_service(audit_api)
        .add_service(key_admin_api);
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
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
            .await
    });
    tracing::info!(%local_addr, "listening");
    let key_maintenance = tokio::spawn(Arc::clone(&vault).maintain_keys());
    Ok(RunningServer {
        local_addr,
        shutdown: Some(shutdown_tx),
        task,
        key_maintenance,
        vault,
    })
}
