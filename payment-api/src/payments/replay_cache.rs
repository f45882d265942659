//! A bounded in-process cache of completed keys' responses, so a hot replay is answered without
//! a store round trip. It only ever holds *final* records (which never change), so it can never
//! disagree with the store; it never replaces the store (a miss always goes to the store).

use std::sync::Arc;

use dashmap::DashMap;
use payment_store::StoredResponse;

/// A completed key: its fingerprint (to answer 422 on a mismatched body) and its response.
#[derive(Debug, Clone)]
pub(crate) struct CachedKey {
    pub(crate) fingerprint: String,
    pub(crate) response: Arc<StoredResponse>,
}

/// (tenant, key) → completed record, at most `capacity` entries.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    entries: DashMap<(String, String), CachedKey>,
    /// Bound on entries; when full, an arbitrary entry is evicted (a miss costs one store read).
    capacity: usize,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: DashMap::new(),
            capacity,
        }
    }

    pub(crate) fn get(&self, tenant: &str, key: &str) -> Option<CachedKey> {
        self.entries
            .get(&(tenant.to_owned(), key.to_owned()))
            .map(|e| e.clone())
    }

    pub(crate) fn insert(&self, tenant: &str, key: &str, entry: CachedKey) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            let victim = self.entries.iter().next().map(|e| e.key().clone());
            if let Some(victim) = victim {
                self.entries.remove(&victim);
            }
        }
        self.entries
            .insert((tenant.to_owned(), key.to_owned()), entry);
    }

    /// Drops every entry (after the reaper deleted keys from the store).
    pub(crate) fn clear(&self) {
        self.entries.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u16) -> CachedKey {
        CachedKey {
            fingerprint: n.to_string(),
            response: Arc::new(StoredResponse {
                status: n,
                headers: vec![],
                body: vec![],
            }),
        }
    }

    #[test]
    fn entries_are_scoped_by_tenant() {
        let cache = ReplayCache::new(10);
        cache.insert("a", "k", entry(201));
        assert_eq!(cache.get("a", "k").unwrap().response.status, 201);
        assert!(cache.get("b", "k").is_none());
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity() {
        let cache = ReplayCache::new(3);
        for i in 0..10 {
            cache.insert("t", &i.to_string(), entry(200 + i));
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get("t", "9").is_some(), "the newest entry is kept");
    }
}
