//! Prometheus metrics on their own port: calls by method and status code,
//! latency histograms, and the vault's counters. Labels carry method names,
//! status codes and token formats only: never a customer id or a value.
//!
//! The listener takes at most `MAX_CONNECTIONS` connections, and closes each
//! one `--handshake-timeout` after it was accepted, whatever it sent: a scrape
//! takes milliseconds and a scraper reconnects, while without the bound anyone
//! reaching the port could hold sockets (and file descriptors) for good.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::connections::{ConnectionLimits, Connections, LimitedStream};

use crate::vault::Vault;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FormatLabels {
    format: &'static str,
}

type LatencyFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// What the gRPC layer measures of every call.
pub struct Metrics {
    calls: Family<CallLabels, Counter>,
    latency: LatencyFamily,
    /// 1 while the store can take writes, 0 while readiness says NOT_SERVING.
    store_serving: Gauge,
    /// Calls refused at once because the concurrency limit was reached.
    shed_calls: Counter,
    /// Calls abandoned at their deadline.
    timed_out_calls: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        fn latency_histogram() -> Histogram {
            // 50 µs to ~105 s: past the 60 s call deadline.
            Histogram::new(exponential_buckets(0.000_05, 2.0, 22))
        }
        let store_serving = Gauge::default();
        store_serving.set(1);
        Metrics {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            store_serving,
            shed_calls: Counter::default(),
            timed_out_calls: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn observe_call(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        let code = format!("{code:?}");
        self.calls.get_or_create(&CallLabels { method, code }).inc();
        self.latency
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
    }

    pub fn set_store_serving(&self, serving: bool) {
        self.store_serving.set(i64::from(serving));
    }

    pub fn count_shed_call(&self) {
        self.shed_calls.inc();
    }

    pub fn count_timed_out_call(&self) {
        self.timed_out_calls.inc();
    }

    /// The text exposition of every metric, with the vault's counters read now.
    pub async fn render(&self, vault: &Vault) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("piivault");
        registry.register(
            "grpc_requests",
            "gRPC calls by method and status code",
            self.calls.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "Time to answer a gRPC call, by method",
            self.latency.clone(),
        );
        registry.register(
            "store_serving",
            "1 while the store takes writes; 0 while the vault reports NOT_SERVING",
            self.store_serving.clone(),
        );
        registry.register(
            "shed_calls",
            "Calls refused at once at the concurrency limit",
            self.shed_calls.clone(),
        );
        registry.register(
            "timed_out_calls",
            "Calls abandoned at their deadline (DEADLINE_EXCEEDED)",
            self.timed_out_calls.clone(),
        );
        {
            let stats = vault.stats();
            let tokens = Family::<FormatLabels, Counter>::default();
            for (format, count) in &stats.tokens_issued {
                tokens
                    .get_or_create(&FormatLabels {
                        format: format.name(),
                    })
                    .inc_by(*count);
            }
            registry.register("tokens_issued", "Tokens issued, by format", tokens);
            register_counter(
                &mut registry,
                "erasures",
                "Customers erased",
                stats.erasures,
            );
            register_counter(
                &mut registry,
                "master_key_rotations",
                "Master key rotations finished",
                stats.master_rotations,
            );
            register_counter(
                &mut registry,
                "customer_key_rotations",
                "Customer data keys replaced",
                stats.customer_rotations,
            );
            register_counter(
                &mut registry,
                "detokenize_anomalies",
                "Windows in which a principal detokenized far above its own baseline",
                stats.anomalies,
            );
            register_counter(
                &mut registry,
                "dek_cache_hits",
                "Customer key lookups served from memory",
                stats.dek_cache_hits,
            );
            register_counter(
                &mut registry,
                "dek_cache_misses",
                "Customer key lookups that unwrapped the key",
                stats.dek_cache_misses,
            );
            let store_bytes = Gauge::<i64>::default();
            store_bytes.set(i64::try_from(stats.store_bytes).unwrap_or(i64::MAX));
            registry.register(
                "store_size_bytes",
                "Bytes the store takes on disk, measured every 30 s",
                store_bytes,
            );
            register_counter(
                &mut registry,
                "master_key_rotation_failures",
                "Scheduled master key rotations that failed",
                stats.rotation_failures,
            );
            register_counter(
                &mut registry,
                "policy_reloads",
                "Policy files put in force by a reload (SIGHUP or a changed file)",
                stats.policy_reloads,
            );
            register_counter(
                &mut registry,
                "policy_reloads_refused",
                "New policy files refused (unreadable or invalid): the old policy stayed",
                stats.policy_reloads_refused,
            );
            register_counter(
                &mut registry,
                "tls_reloads",
                "TLS certificate, key and client CA files put in force by a reload",
                stats.tls_reloads,
            );
            register_counter(
                &mut registry,
                "tls_reloads_refused",
                "New TLS files refused (unreadable or invalid): the old ones stayed",
                stats.tls_reloads_refused,
            );
            register_gauge(
                &mut registry,
                "root_of_trust_reachable",
                "1 while the root of trust answers its checks (every 15 s), 0 while it does not",
                u64::from(stats.root_of_trust_reachable),
            );
            register_gauge(
                &mut registry,
                "master_versions_awaiting_destruction",
                "Retired master versions whose material the root of trust has not destroyed yet",
                stats.versions_awaiting_destruction,
            );
            register_gauge(
                &mut registry,
                "master_key_age_seconds",
                "Time since the last master key rotation finished",
                stats.master_key_age_seconds,
            );
            if let Some(queued) = stats.store.queued_writes {
                register_gauge(
                    &mut registry,
                    "store_queued_writes",
                    "Writes waiting for the sled store's writer",
                    queued,
                );
            }
            if let Some(pool) = stats.store.pool {
                register_gauge(
                    &mut registry,
                    "database_connections",
                    "PostgreSQL connections open",
                    pool.size,
                );
                register_gauge(
                    &mut registry,
                    "database_connections_idle",
                    "PostgreSQL connections open and idle",
                    pool.idle,
                );
                register_gauge(
                    &mut registry,
                    "database_pool_waiting",
                    "Calls waiting for a PostgreSQL connection",
                    pool.waiting,
                );
            }
        }
        if let Some(bytes) = resident_memory_bytes() {
            register_gauge(
                &mut registry,
                "resident_memory_bytes",
                "Resident memory of the vault process",
                bytes,
            );
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

fn register_gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, gauge);
}

/// The process's resident set, from /proc/self/status (Linux; `None` elsewhere).
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

fn register_counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter = Counter::<u64>::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

/// Scrapers open a connection or two each; more wait for one to close.
const MAX_CONNECTIONS: usize = 32;

/// The metrics listener's connections, within `MAX_CONNECTIONS`, each closed
/// by its deadline (no request ever lifts it).
struct LimitedListener {
    incoming: ReceiverStream<std::io::Result<LimitedStream>>,
    local_addr: SocketAddr,
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedStream, SocketAddr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let remote = stream.remote_addr().unwrap_or(self.local_addr);
                    return (stream, remote);
                }
                Some(Err(_)) => continue,
                // The accept loop stopped: serve nothing more.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// Serves `GET /metrics` on `listen` until the task is aborted; each
/// connection is closed `connection_lifetime` after it was accepted.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    vault: Arc<Vault>,
    connection_lifetime: Duration,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    // One scraper is one address: the per-address cap is the whole budget.
    let connections = Connections::new(ConnectionLimits {
        max_connections: MAX_CONNECTIONS,
        max_per_source: MAX_CONNECTIONS,
        first_request_timeout: connection_lifetime,
    });
    let listener = LimitedListener {
        incoming: connections.incoming(listener),
        local_addr,
    };
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            match metrics.render(&vault).await {
                Ok(text) => (
                    axum::http::StatusCode::OK,
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                ),
                Err(_) => (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    [("content-type", "text/plain; charset=utf-8")],
                    "metrics could not be encoded\n".to_owned(),
                ),
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    tracing::info!(%local_addr, "metrics listening");
    Ok((local_addr, task))
}
