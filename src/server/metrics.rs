//! Prometheus metrics on their own port: calls by method and status code,
//! latency histograms, and the vault's counters. Labels carry method names,
//! status codes and token formats only: never a customer id or a value.

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
}

impl Default for Metrics {
    fn default() -> Self {
        fn latency_histogram() -> Histogram {
            // 50 µs to ~1.6 s.
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        }
        Metrics {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
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
        if let Ok(stats) = vault.stats().await {
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
                "Bytes the store takes on disk",
                store_bytes,
            );
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

fn register_counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter = Counter::<u64>::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

/// Serves `GET /metrics` on `listen` until the task is aborted.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    vault: Arc<Vault>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
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
