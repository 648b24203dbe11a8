//! Counters of what the vault did, for metrics. Counts only: never ids or values.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{TokenFormat, Vault, VaultError};

#[derive(Default)]
pub struct VaultStats {
    tokens_random: AtomicU64,
    tokens_format_preserving: AtomicU64,
    tokens_deterministic: AtomicU64,
    erasures: AtomicU64,
    master_rotations: AtomicU64,
    customer_rotations: AtomicU64,
    anomalies: AtomicU64,
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
    pub store_bytes: u64,
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
}

impl Vault {
    pub async fn stats(&self) -> Result<StatsSnapshot, VaultError> {
        let stats = &self.stats;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (dek_cache_hits, dek_cache_misses) = self.keys.cache_hits_and_misses();
        Ok(StatsSnapshot {
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
            store_bytes: self.store.size_on_disk().await?,
        })
    }
}
