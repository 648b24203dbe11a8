//! `--health-listen`: a second listener that serves only grpc.health.v1, with
//! a connection budget of its own, so that probes are answered while idle or
//! greedy clients hold every connection of the main listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use super::connections::{ConnectionLimits, Connections};
use super::tls::ServerTls;

/// Probes open a connection each, a few times a minute.
const MAX_CONNECTIONS: usize = 64;

/// Binds `listen` and serves the statuses `reporter` sets, through `builder`
/// and `tls` (the main listener's settings and TLS), until `stop` turns true.
/// Returns the address, the serving task, and its connections, whose
/// `listeners_closed` says when the port is free again.
pub(super) async fn start(
    listen: SocketAddr,
    builder: Server,
    tls: Option<Arc<ServerTls>>,
    reporter: HealthReporter,
    handshake_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(
    SocketAddr,
    JoinHandle<Result<(), tonic::transport::Error>>,
    Connections,
)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the health listener to {listen}"))?;
    let addr = listener.local_addr()?;
    // Probes come from one address (the node, or the pod itself for exec
    // probes), so the per-address cap is the whole budget.
    let connections = Connections::new(ConnectionLimits {
        max_connections: MAX_CONNECTIONS,
        max_per_source: MAX_CONNECTIONS,
        first_request_timeout: handshake_timeout,
    });
    let router = builder
        .layer(connections.first_request_layer())
        .add_service(HealthServer::new(HealthService::from_health_reporter(
            reporter,
        )));
    let serving = connections.clone();
    let task = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        match tls {
            Some(tls) => {
                let incoming = serving.incoming_tls(listener, tls);
                router.serve_with_incoming_shutdown(incoming, stopped).await
            }
            None => {
                let incoming = serving.incoming(listener);
                router.serve_with_incoming_shutdown(incoming, stopped).await
            }
        }
    });
    tracing::info!(%addr, "health listening");
    Ok((addr, task, connections))
}
