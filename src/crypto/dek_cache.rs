use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::DataCipher;

/// A cached cipher, the wrapped DEK it was unwrapped from, and when it expires
/// (`None`: a TTL beyond what the clock can count, so never).
struct Entry {
    wrapped_dek: Vec<u8>,
    cipher: Arc<DataCipher>,
    expires_at: Option<Instant>,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

/// A bounded LRU cache of unwrapped DEK ciphers, one per customer, so hot
/// customers skip the master-key unwrap. An entry counts only for the exact
/// wrapped DEK it came from: a customer erased and created again, re-keyed, or
/// re-wrapped (here or by another replica) has other wrapped bytes and misses,
/// so a stale key is never used. Entries also expire `ttl` after they were
/// cached, so that the key of a customer erased through another replica (which
/// cannot purge this cache) leaves memory too: an expired entry misses, and
/// `sweep_expired` drops them all. An evicted, purged or expired cipher is
/// wiped when its last `Arc` is dropped.
/// Longer than any request runs (calls are capped at 60 s), so a request that
/// read a customer before a purge has finished before caching is allowed again.
const PURGE_GUARD: Duration = Duration::from_secs(120);

pub struct DekCache {
    /// `None` when the capacity is 0: caching disabled.
    entries: Option<Mutex<LruCache<String, Entry>>>,
    /// Customers purged lately, until when no cipher of theirs may be cached:
    /// a request that read the customer before their erasure must not put
    /// their key back after the purge.
    purged: Mutex<std::collections::HashMap<String, Instant>>,
    ttl: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl DekCache {
    pub fn new(capacity: usize, ttl: Duration) -> DekCache {
        DekCache {
            entries: NonZeroUsize::new(capacity).map(|cap| Mutex::new(LruCache::new(cap))),
            purged: Mutex::default(),
            ttl,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cipher of `wrapped_dek`, if this customer's cached entry came from it.
    pub fn get(&self, customer_id: &str, wrapped_dek: &[u8]) -> Option<Arc<DataCipher>> {
        self.get_at(customer_id, wrapped_dek, Instant::now())
    }

    fn get_at(
        &self,
        customer_id: &str,
        wrapped_dek: &[u8],
        now: Instant,
    ) -> Option<Arc<DataCipher>> {
        let found = self.lock().and_then(|mut entries| {
            if entries
                .peek(customer_id)
                .is_some_and(|entry| !entry.is_live(now))
            {
                entries.pop(customer_id);
            }
            entries
                .get(customer_id)
                .filter(|entry| entry.wrapped_dek == wrapped_dek)
                .map(|entry| Arc::clone(&entry.cipher))
        });
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, customer_id: &str, wrapped_dek: &[u8], cipher: Arc<DataCipher>) {
        self.insert_at(customer_id, wrapped_dek, cipher, Instant::now());
    }

    fn insert_at(
        &self,
        customer_id: &str,
        wrapped_dek: &[u8],
        cipher: Arc<DataCipher>,
        now: Instant,
    ) {
        if self.purged_lately(customer_id, now) {
            return;
        }
        if let Some(mut entries) = self.lock() {
            let entry = Entry {
                wrapped_dek: wrapped_dek.to_vec(),
                cipher,
                expires_at: now.checked_add(self.ttl),
            };
            entries.put(customer_id.to_owned(), entry);
        }
    }

    /// Drops every expired entry; returns how many.
    pub fn sweep_expired(&self) -> usize {
        self.sweep_expired_at(Instant::now())
    }

    fn sweep_expired_at(&self, now: Instant) -> usize {
        self.purged().retain(|_, until| *until > now);
        let Some(mut entries) = self.lock() else {
            return 0;
        };
        let expired: Vec<String> = entries
            .iter()
            .filter(|(_, entry)| !entry.is_live(now))
            .map(|(customer_id, _)| customer_id.clone())
            .collect();
        for customer_id in &expired {
            entries.pop(customer_id);
        }
        expired.len()
    }

    /// How often to sweep: half the TTL, so nothing outlives it by more than
    /// half again, but at most once a second.
    pub fn sweep_period(&self) -> Duration {
        (self.ttl / 2).max(Duration::from_secs(1))
    }

    /// Forgets the customer's cipher, on erasure or DEK rotation, and keeps
    /// any from being cached again for `PURGE_GUARD`.
    pub fn purge_customer(&self, customer_id: &str) {
        self.purge_customer_at(customer_id, Instant::now());
    }

    fn purge_customer_at(&self, customer_id: &str, now: Instant) {
        if let Some(until) = now.checked_add(PURGE_GUARD) {
            self.purged().insert(customer_id.to_owned(), until);
        }
        if let Some(mut entries) = self.lock() {
            entries.pop(customer_id);
        }
    }

    fn purged_lately(&self, customer_id: &str, now: Instant) -> bool {
        self.purged()
            .get(customer_id)
            .is_some_and(|until| *until > now)
    }

    fn purged(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Instant>> {
        self.purged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.lock().map_or(0, |entries| entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A panic while holding the lock cannot leave the LRU half-updated in a way
    /// that matters (worst case a stale entry, which `get` rejects), so a
    /// poisoned lock is recovered.
    fn lock(&self) -> Option<MutexGuard<'_, LruCache<String, Entry>>> {
        let entries = self.entries.as_ref()?;
        Some(entries.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl std::fmt::Debug for DekCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DekCache")
            .field("len", &self.len())
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Dek;

    const TTL: Duration = Duration::from_secs(300);

    fn cipher(version: u32) -> Arc<DataCipher> {
        Arc::new(DataCipher::new(&Dek::generate(), version))
    }

    #[test]
    fn cached_cipher_is_returned_and_counted_as_a_hit() {
        let cache = DekCache::new(4, TTL);
        assert!(cache.get("c1", b"wrapped-1").is_none());
        let inserted = cipher(1);
        cache.insert("c1", b"wrapped-1", Arc::clone(&inserted));
        let found = cache.get("c1", b"wrapped-1").expect("cached");
        assert!(Arc::ptr_eq(&found, &inserted));
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
    }

    #[test]
    fn an_entry_from_another_wrapped_dek_is_a_miss() {
        let cache = DekCache::new(4, TTL);
        cache.insert("c1", b"old incarnation", cipher(1));
        assert!(cache.get("c1", b"new incarnation").is_none());
        cache.insert("c1", b"new incarnation", cipher(1));
        assert!(cache.get("c1", b"old incarnation").is_none());
        assert!(cache.get("c1", b"new incarnation").is_some());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn cache_is_bounded_and_evicts_the_least_recently_used() {
        let cache = DekCache::new(2, TTL);
        cache.insert("a", b"w", cipher(1));
        cache.insert("b", b"w", cipher(1));
        assert!(cache.get("a", b"w").is_some());
        cache.insert("c", b"w", cipher(1));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("b", b"w").is_none());
        assert!(cache.get("a", b"w").is_some());
        assert!(cache.get("c", b"w").is_some());
    }

    #[test]
    fn evicted_cipher_is_dropped_by_the_cache() {
        let cache = DekCache::new(1, TTL);
        let first = cipher(1);
        cache.insert("a", b"w", Arc::clone(&first));
        cache.insert("b", b"w", cipher(1));
        assert_eq!(Arc::strong_count(&first), 1);
    }

    #[test]
    fn a_purged_customer_cannot_be_cached_again_by_a_racing_reader() {
        let cache = DekCache::new(8, TTL);
        let start = Instant::now();
        cache.purge_customer_at("gone", start);
        // A reader that unwrapped before the purge inserts after it.
        cache.insert_at("gone", b"w", cipher(1), start + Duration::from_secs(1));
        assert!(cache.get("gone", b"w").is_none());
        assert!(cache.is_empty());
        let later = start + PURGE_GUARD + Duration::from_secs(1);
        cache.sweep_expired_at(later);
        cache.insert_at("gone", b"w", cipher(1), later);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn purge_customer_removes_that_customer_only() {
        let cache = DekCache::new(8, TTL);
        cache.insert("gone", b"w", cipher(1));
        cache.insert("stays", b"w", cipher(1));
        cache.insert("gone-too-not", b"w", cipher(1));
        cache.purge_customer("gone");
        assert_eq!(cache.len(), 2);
        assert!(cache.get("gone", b"w").is_none());
        assert!(cache.get("stays", b"w").is_some());
        assert!(cache.get("gone-too-not", b"w").is_some());
    }

    #[test]
    fn capacity_zero_never_caches() {
        let cache = DekCache::new(0, TTL);
        cache.insert("a", b"w", cipher(1));
        assert!(cache.get("a", b"w").is_none());
        assert!(cache.is_empty());
        cache.purge_customer("a");
        assert_eq!(cache.misses(), 1);
    }

    #[test]
    fn an_entry_misses_once_its_ttl_has_passed() {
        let cache = DekCache::new(4, TTL);
        let start = Instant::now();
        cache.insert_at("c1", b"w", cipher(1), start);
        let just_before = start + TTL - Duration::from_millis(1);
        assert!(cache.get_at("c1", b"w", just_before).is_some());
        assert!(cache.get_at("c1", b"w", start + TTL).is_none());
        assert!(cache.is_empty(), "the expired entry is dropped on lookup");
    }

    #[test]
    fn ttl_counts_from_insertion_not_from_last_use() {
        let cache = DekCache::new(4, TTL);
        let start = Instant::now();
        cache.insert_at("c1", b"w", cipher(1), start);
        assert!(cache.get_at("c1", b"w", start + TTL / 2).is_some());
        assert!(cache.get_at("c1", b"w", start + TTL).is_none());
    }

    #[test]
    fn sweep_drops_expired_entries_and_wipes_their_ciphers() {
        let cache = DekCache::new(8, TTL);
        let start = Instant::now();
        let erased_elsewhere = cipher(1);
        cache.insert_at("old", b"w", Arc::clone(&erased_elsewhere), start);
        cache.insert_at("new", b"w", cipher(1), start + TTL / 2);
        assert_eq!(
            cache.sweep_expired_at(start + TTL - Duration::from_millis(1)),
            0
        );
        assert_eq!(cache.sweep_expired_at(start + TTL), 1);
        assert_eq!(
            Arc::strong_count(&erased_elsewhere),
            1,
            "no copy left in the cache"
        );
        assert_eq!(cache.len(), 1);
        assert!(cache.get_at("new", b"w", start + TTL).is_some());
        assert_eq!(cache.sweep_expired_at(start + TTL + TTL / 2), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_ttl_too_long_for_the_clock_never_expires() {
        let cache = DekCache::new(2, Duration::MAX);
        let start = Instant::now();
        cache.insert_at("c1", b"w", cipher(1), start);
        let much_later = start + Duration::from_secs(100 * 365 * 24 * 60 * 60);
        assert_eq!(cache.sweep_expired_at(much_later), 0);
        assert!(cache.get_at("c1", b"w", much_later).is_some());
    }

    #[test]
    fn sweeps_run_twice_per_ttl_but_at_most_once_a_second() {
        assert_eq!(DekCache::new(1, TTL).sweep_period(), TTL / 2);
        assert_eq!(
            DekCache::new(1, Duration::ZERO).sweep_period(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn cache_and_keys_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<DekCache>();
        shareable::<DataCipher>();
        shareable::<crate::crypto::Keyring>();
        shareable::<crate::crypto::KeyringFile>();
    }

    #[test]
    fn poisoned_lock_is_recovered_without_panicking() {
        let cache = Arc::new(DekCache::new(2, TTL));
        cache.insert("a", b"w", cipher(1));
        let poisoner = Arc::clone(&cache);
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock();
            panic!("poison the cache lock");
        })
        .join();
        assert!(cache.get("a", b"w").is_some());
        cache.insert("b", b"w", cipher(1));
        assert_eq!(cache.len(), 2);
    }
}
