//! A bounded in-process cache of completed keys' responses, so a hot replay is answered without
//! a store round trip. It only ever holds *final* records (which never change), so it can never
//! disagree with the store; it never replaces the store (a miss always goes to the store).
//!
//! A final record does leave the store once: the reaper deletes it after the retention. So an
//! entry is served only while it is well inside the retention (its completion time is checked
//! on every read); near the cutoff the store decides, whatever the reaper has done meanwhile,
//! on this instance or another.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use payment_store::StoredResponse;

/// A completed key: its fingerprint (to answer 422 on a mismatched body) and its response.
#[derive(Debug, Clone)]
pub(crate) struct CachedKey {
    pub(crate) fingerprint: String,
    pub(crate) response: Arc<StoredResponse>,
    /// When the key was completed: the reaper deletes it once the retention has passed.
    pub(crate) completed_at: DateTime<Utc>,
}

type CacheKey = (String, String);

#[derive(Debug)]
struct Entry {
    key: CachedKey,
    /// Set by every hit; eviction passes over (and clears) it once: CLOCK, a cheap LRU.
    referenced: AtomicBool,
}

/// (tenant, key) → completed record, at most `capacity` entries.
///
/// Eviction is CLOCK (second chance): the oldest entry goes unless it was read since it was
/// last passed over. New payments and their retries (the hot replays) stay; an old key replayed
/// often stays too. A miss costs one store read.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    entries: DashMap<CacheKey, Entry>,
    /// Insertion order, for eviction; holds exactly the keys in `entries`.
    order: Mutex<VecDeque<CacheKey>>,
    capacity: usize,
    /// Entries completed longer ago than this are not served (see the module docs).
    horizon: chrono::Duration,
}

impl ReplayCache {
    /// A cache of at most `capacity` keys, for keys kept `retention` after completion.
    pub(crate) fn new(capacity: usize, retention: std::time::Duration) -> Self {
        // Stop serving an entry a tenth of the retention (at most an hour) before the reaper
        // may delete it: room for clock skew between instances and a reaper pass in progress.
        let margin = (retention / 10).min(std::time::Duration::from_secs(3600));
        let horizon = chrono::Duration::from_std(retention.saturating_sub(margin))
            .unwrap_or(chrono::Duration::MAX);
        Self {
            entries: DashMap::new(),
            order: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            horizon,
        }
    }

    /// The cached record of a key, unless it is near or past the retention cutoff.
    pub(crate) fn get(&self, tenant: &str, key: &str) -> Option<CachedKey> {
        self.get_at(tenant, key, Utc::now())
    }

    fn get_at(&self, tenant: &str, key: &str, now: DateTime<Utc>) -> Option<CachedKey> {
        let entry = self.entries.get(&(tenant.to_owned(), key.to_owned()))?;
        if entry.key.completed_at + self.horizon <= now {
            return None;
        }
        entry.referenced.store(true, Ordering::Relaxed);
        Some(entry.key.clone())
    }

    pub(crate) fn insert(&self, tenant: &str, key: &str, entry: CachedKey) {
        if self.capacity == 0 || entry.completed_at + self.horizon <= Utc::now() {
            return;
        }
        let id = (tenant.to_owned(), key.to_owned());
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        if self.entries.contains_key(&id) {
            // Final records never change: the cached one is the same.
            return;
        }
        // Each entry is passed over at most once per eviction, so this ends.
        let mut passes = order.len();
        while order.len() >= self.capacity {
            let Some(oldest) = order.pop_front() else {
                break;
            };
            let second_chance = passes > 0
                && self
                    .entries
                    .get(&oldest)
                    .is_some_and(|e| e.referenced.swap(false, Ordering::Relaxed));
            if second_chance {
                passes -= 1;
                order.push_back(oldest);
            } else {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(
            id.clone(),
            Entry {
                key: entry,
                referenced: AtomicBool::new(false),
            },
        );
        order.push_back(id);
    }

    /// Drops every entry (after the reaper deleted keys from the store).
    pub(crate) fn clear(&self) {
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        order.clear();
        self.entries.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

    fn entry(n: u16) -> CachedKey {
        entry_at(n, Utc::now())
    }

    fn entry_at(n: u16, completed_at: DateTime<Utc>) -> CachedKey {
        CachedKey {
            fingerprint: n.to_string(),
            response: Arc::new(StoredResponse {
                status: n,
                headers: vec![],
                body: vec![],
            }),
            completed_at,
        }
    }

    #[test]
    fn an_entry_near_the_retention_cutoff_is_not_served_so_a_reaped_key_never_replays() {
        let cache = ReplayCache::new(10, DAY);
        let now = Utc::now();
        cache.insert("t", "k", entry_at(201, now));
        assert!(cache.get_at("t", "k", now).is_some());
        let inside = now + chrono::Duration::hours(22);
        assert!(
            cache.get_at("t", "k", inside).is_some(),
            "well inside the retention"
        );
        // The reaper deletes keys completed more than a day ago; the cache stops serving an
        // hour (a tenth of the retention, at most an hour) earlier, and the store decides.
        let near_cutoff = now + chrono::Duration::hours(23) + chrono::Duration::minutes(1);
        assert!(cache.get_at("t", "k", near_cutoff).is_none());
        let reaped = now + chrono::Duration::hours(25);
        assert!(cache.get_at("t", "k", reaped).is_none());
    }

    #[test]
    fn a_key_completed_before_the_horizon_is_not_cached_at_all() {
        let cache = ReplayCache::new(10, DAY);
        cache.insert(
            "t",
            "old",
            entry_at(201, Utc::now() - chrono::Duration::hours(23)),
        );
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn entries_are_scoped_by_tenant() {
        let cache = ReplayCache::new(10, DAY);
        cache.insert("a", "k", entry(201));
        assert_eq!(cache.get("a", "k").unwrap().response.status, 201);
        assert!(cache.get("b", "k").is_none());
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity() {
        let cache = ReplayCache::new(3, DAY);
        for i in 0..10 {
            cache.insert("t", &i.to_string(), entry(200 + i));
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get("t", "9").is_some(), "the newest entry is kept");
    }

    #[test]
    fn the_oldest_unread_entry_is_evicted_and_a_read_one_gets_a_second_chance() {
        let cache = ReplayCache::new(3, DAY);
        for i in 0..3 {
            cache.insert("t", &i.to_string(), entry(200 + i));
        }
        assert!(
            cache.get("t", "0").is_some(),
            "0 is read: it survives one eviction"
        );
        cache.insert("t", "3", entry(203));
        assert!(cache.get("t", "0").is_some());
        assert!(
            cache.get("t", "1").is_none(),
            "1 was the oldest unread entry"
        );
        assert!(cache.get("t", "2").is_some());
        assert!(cache.get("t", "3").is_some());
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn the_most_recent_keys_all_stay_when_many_more_pass_through() {
        let cache = ReplayCache::new(100, DAY);
        for i in 0..1000 {
            cache.insert("t", &i.to_string(), entry(1));
        }
        assert_eq!(cache.len(), 100);
        assert!((900..1000).all(|i| cache.get("t", &i.to_string()).is_some()));
    }
}
