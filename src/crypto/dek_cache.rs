use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use lru::LruCache;

use super::DataCipher;

type CacheKey = (String, u32);

/// A bounded LRU cache of unwrapped DEK ciphers, keyed by (customer, DEK version),
/// so hot customers skip the master-key unwrap. An evicted or purged cipher is
/// wiped when its last `Arc` is dropped.
pub struct DekCache {
    /// `None` when the capacity is 0: caching disabled.
    entries: Option<Mutex<LruCache<CacheKey, Arc<DataCipher>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl DekCache {
    pub fn new(capacity: usize) -> DekCache {
        DekCache {
            entries: NonZeroUsize::new(capacity).map(|cap| Mutex::new(LruCache::new(cap))),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, customer_id: &str, key_version: u32) -> Option<Arc<DataCipher>> {
        let found = self
            .lock()
            .and_then(|mut entries| entries.get(&(customer_id.to_owned(), key_version)).cloned());
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn insert(&self, customer_id: &str, key_version: u32, cipher: Arc<DataCipher>) {
        if let Some(mut entries) = self.lock() {
            entries.put((customer_id.to_owned(), key_version), cipher);
        }
    }

    /// Forgets every DEK version of a customer, on erasure or DEK rotation.
    pub fn purge_customer(&self, customer_id: &str) {
        let Some(mut entries) = self.lock() else {
            return;
        };
        // A scan is fine: the cache is bounded and erasure is rare.
        let doomed: Vec<CacheKey> = entries
            .iter()
            .filter(|((customer, _), _)| customer == customer_id)
            .map(|(key, _)| key.clone())
            .collect();
        for key in doomed {
            entries.pop(&key);
        }
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
    /// that matters (worst case a stale entry), so a poisoned lock is recovered.
    fn lock(&self) -> Option<MutexGuard<'_, LruCache<CacheKey, Arc<DataCipher>>>> {
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

    fn cipher(version: u32) -> Arc<DataCipher> {
        Arc::new(DataCipher::new(&Dek::generate(), version))
    }

    #[test]
    fn cached_cipher_is_returned_and_counted_as_a_hit() {
        let cache = DekCache::new(4);
        assert!(cache.get("c1", 1).is_none());
        let inserted = cipher(1);
        cache.insert("c1", 1, Arc::clone(&inserted));
        let found = cache.get("c1", 1).expect("cached");
        assert!(Arc::ptr_eq(&found, &inserted));
        assert!(cache.get("c1", 2).is_none());
        assert_eq!((cache.hits(), cache.misses()), (1, 2));
    }

    #[test]
    fn cache_is_bounded_and_evicts_the_least_recently_used() {
        let cache = DekCache::new(2);
        cache.insert("a", 1, cipher(1));
        cache.insert("b", 1, cipher(1));
        assert!(cache.get("a", 1).is_some());
        cache.insert("c", 1, cipher(1));
        assert_eq!(cache.len(), 2);
        assert!(cache.get("b", 1).is_none());
        assert!(cache.get("a", 1).is_some());
        assert!(cache.get("c", 1).is_some());
    }

    #[test]
    fn evicted_cipher_is_dropped_by_the_cache() {
        let cache = DekCache::new(1);
        let first = cipher(1);
        cache.insert("a", 1, Arc::clone(&first));
        cache.insert("b", 1, cipher(1));
        assert_eq!(Arc::strong_count(&first), 1);
    }

    #[test]
    fn purge_customer_removes_every_version_of_that_customer_only() {
        let cache = DekCache::new(8);
        for version in 1..=3 {
            cache.insert("gone", version, cipher(version));
        }
        cache.insert("stays", 1, cipher(1));
        cache.insert("gone-too-not", 1, cipher(1));
        cache.purge_customer("gone");
        assert_eq!(cache.len(), 2);
        assert!((1..=3).all(|version| cache.get("gone", version).is_none()));
        assert!(cache.get("stays", 1).is_some());
        assert!(cache.get("gone-too-not", 1).is_some());
    }

    #[test]
    fn capacity_zero_never_caches() {
        let cache = DekCache::new(0);
        cache.insert("a", 1, cipher(1));
        assert!(cache.get("a", 1).is_none());
        assert!(cache.is_empty());
        cache.purge_customer("a");
        assert_eq!(cache.misses(), 1);
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
        let cache = Arc::new(DekCache::new(2));
        cache.insert("a", 1, cipher(1));
        let poisoner = Arc::clone(&cache);
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock();
            panic!("poison the cache lock");
        })
        .join();
        assert!(cache.get("a", 1).is_some());
        cache.insert("b", 1, cipher(1));
        assert_eq!(cache.len(), 2);
    }
}
