//! A small read-through cache for what nearly every call reads: the caller's department and, for
//! GetEntry, catalogue entries.
//!
//! Correctness first: the hub that makes a change forgets the cached value at once, so on one
//! node (SQLite) a deactivation or an entry change is seen by the next call. Other hub nodes over
//! the same PostgreSQL are told of a department change at once (LISTEN/NOTIFY, see
//! `server::forget_departments_changed_elsewhere`); a lost notification, and any entry change,
//! reaches them when their copy expires, at most [`FRESH_FOR`] later. Live streams re-check their
//! rights on their own schedule regardless.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a cached value is trusted: the most a change made on another hub node can go unseen.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// A cache that grows past this many values starts afresh rather than grow without bound.
const MAX_VALUES: usize = 10_000;

pub struct Cache<K, V> {
    /// Values are shared, so that a reader copies one after letting go of the lock: several
    /// searches copy a page of entries each at once.
    values: Mutex<HashMap<K, Held<V>>>,
    fresh_for: Duration,
}

/// A value, when it was put, and whether a caller has been sent to read it again.
struct Held<V> {
    value: Arc<V>,
    at: Instant,
    renewing: bool,
}

impl<K: Eq + Hash + Clone, V: Clone> Cache<K, V> {
    pub fn new(fresh_for: Duration) -> Self {
        Self {
            values: Mutex::new(HashMap::new()),
            fresh_for,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Held<V>>> {
        // The map holds plain values; a panic elsewhere while holding it leaves it usable.
        self.values.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached value, if it is still fresh.
    ///
    /// Past half its freshness, one caller gets `None` (and so reads the value again and puts
    /// it) while the others are still served the value: a value in steady use is renewed before
    /// it expires, by one read, instead of every concurrent caller reading it at once when it
    /// expires (which showed as the p99 of calls on a busy key).
    pub fn get(&self, key: &K) -> Option<V> {
        let shared = {
            let mut values = self.lock();
            let held = values.get_mut(key)?;
            let age = held.at.elapsed();
            if age >= self.fresh_for {
                return None;
            }
            if age >= self.fresh_for / 2 && !held.renewing {
                held.renewing = true;
                return None;
            }
            held.value.clone()
        };
        Some(V::clone(&shared))
    }

    pub fn put(&self, key: K, value: V) {
        let mut values = self.lock();
        if values.len() >= MAX_VALUES {
            values.clear();
        }
        values.insert(
            key,
            Held {
                value: Arc::new(value),
                at: Instant::now(),
                renewing: false,
            },
        );
    }

    /// Forgets a value that has just changed.
    pub fn forget(&self, key: &K) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_expire_and_can_be_forgotten() {
        let cache = Cache::new(Duration::from_millis(50));
        cache.put("a".to_string(), 1);
        assert_eq!(cache.get(&"a".to_string()), Some(1));
        cache.forget(&"a".to_string());
        assert_eq!(cache.get(&"a".to_string()), None);
        cache.put("b".to_string(), 2);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&"b".to_string()), None, "stale values are not served");
    }

    #[test]
    fn past_half_its_freshness_one_caller_renews_a_value_while_the_others_are_served() {
        let cache = Cache::new(Duration::from_millis(200));
        cache.put("a".to_string(), 1);
        assert_eq!(cache.get(&"a".to_string()), Some(1));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            cache.get(&"a".to_string()),
            None,
            "the first caller past half renews it"
        );
        assert_eq!(cache.get(&"a".to_string()), Some(1), "the others are served meanwhile");
        assert_eq!(cache.get(&"a".to_string()), Some(1));
        cache.put("a".to_string(), 2);
        assert_eq!(cache.get(&"a".to_string()), Some(2), "the renewed value starts afresh");
        std::thread::sleep(Duration::from_millis(210));
        assert_eq!(cache.get(&"a".to_string()), None, "a value not renewed still expires");
        assert_eq!(cache.get(&"a".to_string()), None);
    }

    #[test]
    fn it_stays_bounded() {
        let cache = Cache::new(Duration::from_secs(60));
        for i in 0..MAX_VALUES + 5 {
            cache.put(i, i);
        }
        assert!(cache.lock().len() <= MAX_VALUES);
    }
}
