//! The gRPC layer: tonic services, authentication, proto <-> domain conversion,
//! health and reflection, TLS, metrics, and the server's lifecycle.

mod audit_service;
mod auth;
mod call;
mod call_layer;
mod call_limit;
mod connections;
mod convert;
mod deadline;
mod health_listener;
mod key_admin_service;
mod metrics;
mod privacy_service;
mod readiness;
mod request_id;
mod status;
mod tls;
mod vault_service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;

use crate::crypto::KeyFileAccess;
use crate::pb::audit_service_server::AuditServiceServer;
use crate::pb::key_admin_service_server::KeyAdminServiceServer;
use crate::pb::privacy_service_server::PrivacyServiceServer;
use crate::pb::vault_service_server::VaultServiceServer;
use crate::vault::Vault;

use audit_service::AuditApi;
use call_layer::Framed;
use call_limit::CallLimitLayer;
use connections::{ConnectionLimits, Connections};
use deadline::DeadlineLayer;
use key_admin_service::KeyAdminApi;
use metrics::Metrics;
use privacy_service::PrivacyApi;
pub use tls::ServerTls;
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
    /// Serves only grpc.health.v1 on this address too, with connections of
    /// its own, for probes.
    pub health_listen: Option<SocketAddr>,
    /// Whether the TLS key may be readable by its group (Kubernetes Secrets).
    pub key_file_access: KeyFileAccess,
    pub limits: ServerLimits,
}

/// What keeps one client (or thousands) from starving the others.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Open connections; the listener waits while this many are open.
    pub max_connections: usize,
    /// Open connections from one IPv4 address (or IPv6 /64); more are closed
    /// as soon as they are accepted.
    pub max_connections_per_ip: usize,
    /// The longest a new connection may take to finish its TLS handshake and
    /// send its first request (HTTP/2 preface included); then it is closed.
    pub handshake_timeout: std::time::Duration,
    /// Calls in progress across all connections; past it, calls are shed at
    /// once with RESOURCE_EXHAUSTED instead of queueing.
    pub max_concurrent_calls: usize,
    /// HTTP/2 streams (calls) one connection may have open.
    pub max_streams_per_connection: u32,
    /// The longest a call may run; a client's shorter `grpc-timeout` wins.
    pub call_timeout: std::time::Duration,
    /// After this a connection is asked to go away (its calls get the call
    /// timeout to finish), so that clients reconnect and spread over new
    /// replicas instead of staying on the ones that were up first.
    pub max_connection_age: std::time::Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 4096,
            max_connections_per_ip: 256,
            handshake_timeout: std::time::Duration::from_secs(10),
            max_concurrent_calls: 1024,
            max_streams_per_connection: 256,
            call_timeout: std::time::Duration::from_secs(60),
            max_connection_age: std::time::Duration::from_secs(30 * 60),
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
            health_listen: None,
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
    pub health_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    health_task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// Key rotation on schedule (and resuming an interrupted one), counted
    /// refusals written as their windows end, and the metrics endpoint:
    /// stopped at shutdown.
    background: Vec<JoinHandle<()>>,
    /// Why the store failed for good (readiness sets it): the server must stop.
    store_failure: watch::Receiver<Option<String>>,
    vault: Arc<Vault>,
    /// The TLS files in force, which a reload replaces.
    tls: Option<Arc<ServerTls>>,
}

impl RunningServer {
    /// The TLS files in force (none when serving plain gRPC), for reloads.
    pub fn tls(&self) -> Option<Arc<ServerTls>> {
        self.tls.clone()
    }

    /// Stops accepting calls, lets in-flight calls finish, then flushes the store.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        self.task.await??;
        if let Some(health_task) = self.health_task.take() {
            health_task.await??;
        }
        // No call is left to refuse: every refusal still counted is written
        // now (after any write under way, which this waits for).
        if let Err(error) = self.vault.write_counted_refusals(true).await {
            tracing::error!(%error, "could not write the counted refusals at shutdown");
        }
        // An interrupted rotation resumes at the next start.
        for task in self.background.drain(..) {
            task.abort();
            let _ = task.await;
        }
        self.vault.flush().await?;
        Ok(())
    }

    /// Runs until `signal` completes, then shuts down gracefully. A store
    /// that failed for good ends the run at once with `StoreFailed`: nothing
    /// can be flushed then, and in-flight calls wait on the store.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let mut store_failure = self.store_failure.clone();
        tokio::select! {
            () = signal => {}
            failure = store_failure.wait_for(Option::is_some) => {
                let failure = failure.ok().and_then(|failure| failure.clone()).unwrap_or_default();
                self.stop.send_replace(true);
                return Err(StoreFailed(failure).into());
            }
        }
        tracing::info!("shutting down: finishing in-flight calls");
        self.shutdown().await?;
        tracing::info!("store flushed; bye");
        Ok(())
    }
}

/// The store failed in a way only a restart recovers from.
#[derive(Debug, thiserror::Error)]
#[error("stopped because the store failed: {0}")]
pub struct StoreFailed(pub String);

/// The health service name that is SERVING whenever the process answers,
/// while the vault ("") may not be: a startup probe on it passes during a
/// long store upgrade, while readiness waits for the vault.
pub const PROCESS_HEALTH_SERVICE: &str = "pii-vault.process";

/// Health answers on `--listen` (and `--health-listen`) while the vault opens
/// its store, which can take minutes when an upgrade folds a large one: the
/// vault NOT_SERVING, the process SERVING. Stopped before `start` binds the
/// same addresses.
pub struct Opening {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// Each listener's connections: the port is free once they are closed.
    listeners: Vec<connections::Connections>,
}

impl Opening {
    pub async fn answer_health(options: &ServerOptions) -> anyhow::Result<Opening> {
        let (reporter, _) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status(PROCESS_HEALTH_SERVICE, tonic_health::ServingStatus::Serving)
            .await;
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut listeners = Vec::new();
        let tls = load_tls(options)?;
        for listen in std::iter::once(options.listen).chain(options.health_listen) {
            let (addr, task, connections) = health_listener::start(
                listen,
                server_builder(options),
                tls.clone(),
                reporter.clone(),
                options.limits.handshake_timeout,
                stop.subscribe(),
            )
            .await?;
            tracing::info!(%addr, "opening the store; health answers NOT_SERVING meanwhile");
            tasks.push(task);
            listeners.push(connections);
        }
        Ok(Opening {
            stop,
            tasks,
            listeners,
        })
    }

    /// Closes the listeners (a probe's open connection gets 2 s to end),
    /// and returns once their ports are free: --listen's is bound again
    /// right after.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for mut task in self.tasks {
            if tokio::time::timeout(std::time::Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
        for connections in self.listeners {
            connections.listeners_closed().await;
        }
    }
}

/// Binds and starts serving every service (and metrics, when asked).
pub async fn start(vault: Arc<Vault>, options: ServerOptions) -> anyhow::Result<RunningServer> {
    let metrics = Arc::new(Metrics::default());
    let limits = &options.limits;
    let builder = server_builder(&options);
    let tls = load_tls(&options)?;
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("binding {} (--listen)", options.listen))?;
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
    health_reporter
        .set_service_status(PROCESS_HEALTH_SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    // Both reflection versions: many tools and Google's own Python client
    // still speak only v1alpha.
    let reflection = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;
    let (vault_api, privacy_api, audit_api, key_admin_api) = apis(&vault, &metrics);
    let (stop, mut stopped) = watch::channel(false);
    let call_limit = CallLimitLayer::new(limits.max_concurrent_calls, Arc::clone(&metrics));
    let connections = Connections::new(ConnectionLimits {
        max_connections: limits.max_connections,
        max_per_source: limits.max_connections_per_ip,
        first_request_timeout: limits.handshake_timeout,
    });
    let router = builder
        .layer(connections.first_request_layer())
        .layer(Framed(request_id::RequestIdLayer))
        .layer(Framed(call_limit))
        .layer(Framed(DeadlineLayer::new(
            limits.call_timeout,
            Arc::clone(&metrics),
        )))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(vault_api)
        .add_service(privacy_api)
        .add_service(audit_api)
        .add_service(key_admin_api);
    let (health_addr, health_task) = match options.health_listen {
        Some(listen) => {
            let (addr, task, _) = health_listener::start(
                listen,
                server_builder(&options),
                tls.clone(),
                health_reporter.clone(),
                limits.handshake_timeout,
                stop.subscribe(),
            )
            .await?;
            (Some(addr), Some(task))
        }
        None => (None, None),
    };
    let (failed, store_failure) = watch::channel(None);
    let readiness = tokio::spawn(readiness::follow_store(
        Arc::clone(&vault),
        health_reporter.clone(),
        Arc::clone(&metrics),
        stop.subscribe(),
        failed,
    ));
    let root_watch = tokio::spawn(readiness::follow_root_of_trust(
        Arc::clone(&vault),
        health_reporter.clone(),
        stop.subscribe(),
    ));
    let main_tls = tls.clone();
    let task = tokio::spawn(async move {
        let reporter = health_reporter;
        let stop = async move {
            let _ = stopped.wait_for(|stopped| *stopped).await;
            // Readiness goes false before the listener closes.
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        };
        match main_tls {
            Some(tls) => {
                let incoming = connections.incoming_tls(listener, tls);
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
            None => {
                let incoming = connections.incoming(listener);
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
        }
    });
    tracing::info!(%local_addr, tls = options.tls.is_some(), "listening");
    let mut background = vec![
        readiness,
        root_watch,
        tokio::spawn(Arc::clone(&vault).measure_store_size()),
        tokio::spawn(Arc::clone(&vault).maintain_keys()),
        tokio::spawn(Arc::clone(&vault).write_counted_refusals_as_windows_end()),
    ];
    let metrics_addr = match options.metrics_listen {
        Some(listen) => {
            let (addr, metrics_task) = metrics::serve(
                listen,
                metrics,
                Arc::clone(&vault),
                limits.handshake_timeout,
            )
            .await?;
            background.push(metrics_task);
            Some(addr)
        }
        None => None,
    };
    Ok(RunningServer {
        local_addr,
        metrics_addr,
        health_addr,
        stop,
        task,
        health_task,
        background,
        store_failure,
        vault,
        tls,
    })
}

/// Timeouts and HTTP/2 settings, the same for every listener (TLS is
/// `ServerTls`'s, on the incoming connections).
fn server_builder(options: &ServerOptions) -> Server {
    let limits = &options.limits;
    // Call deadlines are `DeadlineLayer`'s, which answers DEADLINE_EXCEEDED
    // (tonic's own timeout answers CANCELLED).
    Server::builder()
        .max_connection_age(limits.max_connection_age)
        .max_connection_age_grace(limits.call_timeout)
        .max_concurrent_streams(Some(limits.max_streams_per_connection))
        .http2_max_header_list_size(Some(16 * 1024))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .tcp_keepalive(Some(std::time::Duration::from_secs(60)))
}

/// The TLS files, read (and checked) once for every listener.
fn load_tls(options: &ServerOptions) -> anyhow::Result<Option<Arc<ServerTls>>> {
    let Some(files) = &options.tls else {
        return Ok(None);
    };
    let tls = ServerTls::load(files, options.key_file_access).context("configuring TLS")?;
    Ok(Some(Arc::new(tls)))
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

/// Reflection over the vault's own API and the health service.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_vault_bounds_replies_by_the_grpc_layers_own_message_limit() {
        let limits = crate::vault::Limits::default();
        assert_eq!(limits.max_reply_bytes, super::MAX_MESSAGE_BYTES);
    }
}
