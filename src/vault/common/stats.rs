//! Counters of what the vault did, for metrics. Counts only: never ids or
//! values. Reading them never waits on the store (a scrape must answer while
//! the database does not): the store's size is refreshed in the background.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::store::StorePressure;
use crate::vault::{TokenFormat, Vault};

/// How often the store's size on disk is measured.
const STORE_SIZE_EVERY: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct VaultStats {
    tokens_random: AtomicU64,
    tokens_format_preserving: AtomicU64,
    tokens_deterministic: AtomicU64,
    erasures: AtomicU64,
    master_rotations: AtomicU64,
    customer_rotations: AtomicU64,
    anomalies: AtomicU64,
    rotation_failures: AtomicU64,
    store_bytes: AtomicU64,
    policy_reloads: AtomicU64,
    policy_reloads_refused: AtomicU64,
    tls_reloads: AtomicU64,
    tls_reloads_refused: AtomicU64,
}

/// The counters at one moment, with the key cache's and the store's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub tokens_issued: Vec<(TokenFormat, u64)>,
    pub erasures: u64,
    pub master_rotations: u64,
    pub customer_rotations: u64,
    /// Windows in which a principal detokenized far above its baseline.
    pub anomalies: u64,
    pub dek_cache_hits: u64,
    pub dek_cache_misses: u64,
    /// As last measured (every 30 s).
    pub store_bytes: u64,
    /// Scheduled master rotations that failed.
    pub rotation_failures: u64,
    /// Since the last master rotation finished (or the keyring was made).
    pub master_key_age_seconds: u64,
    /// Policy files put in force since start, and new ones refused.
    pub policy_reloads: u64,
    pub policy_reloads_refused: u64,
    /// TLS files put in force since start, and new ones refused.
    pub tls_reloads: u64,
    pub tls_reloads_refused: u64,
    pub store: StorePressure,
    /// Whether the root of trust answered its last check.
    pub root_of_trust_reachable: bool,
    /// Retired master versions whose material it has not destroyed yet.
    pub versions_awaiting_destruction: u64,
}

impl VaultStats {
    pub fn token_issued(&self, format: TokenFormat) {
        let counter = match format {
            TokenFormat::Random => &self.tokens_random,
            TokenFormat::FormatPreserving => &self.tokens_format_preserving,
            TokenFormat::Deterministic => &self.tokens_deterministic,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn erased(&self) {
        self.erasures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn master_rotated(&self) {
        self.master_rotations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn anomaly(&self) {
        self.anomalies.fetch_add(1, Ordering::Relaxed);
    }

    pub fn customer_rotated(&self) {
        self.customer_rotations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rotation_failed(&self) {
        self.rotation_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn policy_reloaded(&self) {
        self.policy_reloads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn policy_reload_refused(&self) {
        self.policy_reloads_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tls_reloaded(&self) {
        self.tls_reloads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tls_reload_refused(&self) {
        self.tls_reloads_refused.fetch_add(1, Ordering::Relaxed);
    }
}

impl Vault {
    /// Measures the store's size on disk now and every 30 s, for as long as
    /// the vault serves.
    pub async fn measure_store_size(self: std::sync::Arc<Self>) {
        loop {
            match self.store.size_on_disk().await {
                Ok(bytes) => self.stats.store_bytes.store(bytes, Ordering::Relaxed),
                Err(error) => tracing::warn!(%error, "could not measure the store's size"),
            }
            tokio::time::sleep(STORE_SIZE_EVERY).await;
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        let stats = &self.stats;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (dek_cache_hits, dek_cache_misses) = self.keys.cache_hits_and_misses();
        let age_ms = self
            .now_ms()
            .saturating_sub(self.keys.last_rotation_ms())
            .max(0);
        StatsSnapshot {
            tokens_issued: vec![
                (TokenFormat::Random, load(&stats.tokens_random)),
                (
                    TokenFormat::FormatPreserving,
                    load(&stats.tokens_format_preserving),
                ),
                (
                    TokenFormat::Deterministic,
                    load(&stats.tokens_deterministic),
                ),
            ],
            erasures: load(&stats.erasures),
            master_rotations: load(&stats.master_rotations),
            customer_rotations: load(&stats.customer_rotations),
            anomalies: load(&stats.anomalies),
            dek_cache_hits,
            dek_cache_misses,
            store_bytes: load(&stats.store_bytes),
            rotation_failures: load(&stats.rotation_failures),
            master_key_age_seconds: u64::try_from(age_ms / 1000).unwrap_or(0),
            policy_reloads: load(&stats.policy_reloads),
            policy_reloads_refused: load(&stats.policy_reloads_refused),
            tls_reloads: load(&stats.tls_reloads),
            tls_reloads_refused: load(&stats.tls_reloads_refused),
            store: self.store.pressure(),
            root_of_trust_reachable: self.keys.root_of_trust_reachable(),
            versions_awaiting_destruction: self.keys.versions_awaiting_destruction().len() as u64,
        }
    }
}
