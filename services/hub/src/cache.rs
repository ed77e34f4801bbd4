//! A small read-through cache for what nearly every call reads: the caller's department and, for
//! GetEntry, catalogue entries.
//!
//! Correctness first: the hub that makes a change forgets the cached value at once, so on one
//! node (SQLite) a deactivation or an entry change is seen by the next call. Other hub nodes over
//! the same PostgreSQL are told of a department change at once (LISTEN/NOTIFY, see
//! `server::forget_departments_changed_elsewhere`); a lost notification, and any entry change,
//! reaches them when their copy expires, at most [`FRESH_FOR`] later. Live streams re-check their
//! rights on their own schedule regardless.
//!
//! A value read from the store is cached only if nothing was forgotten since the read began (see
//! [`Cache::mark`]): otherwise a read that began before a change and ended after its `forget`
//! would put the old value back, and this node would serve it for up to [`FRESH_FOR`].

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a cached value is trusted: the most a change made on another hub node can go unseen.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// A cache that grows past this many values starts afresh rather than grow without bound.
const MAX_VALUES: usize = 10_000;

pub struct Cache<K, V> {
    /// Values are shared, so that a reader copies one after letting go of the lock: several
    /// searches copy a page of entries each at once.
    values: Mutex<HashMap<K, (Arc<V>, Instant)>>,
    fresh_for: Duration,
    /// How many times a value was forgotten, counted under the lock of `values`.
    forgotten: AtomicU64,
}

/// When a read of the store for the cache began: see [`Cache::mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark(u64);

impl<K: Eq + Hash + Clone, V: Clone> Cache<K, V> {
    pub fn new(fresh_for: Duration) -> Self {
        Self {
            values: Mutex::new(HashMap::new()),
            fresh_for,
            forgotten: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Arc<V>, Instant)>> {
        // The map holds plain values; a panic elsewhere while holding it leaves it usable.
        self.values.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached value, if it is still fresh.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_shared(key).map(|value| V::clone(&value))
    }

    /// The cached value itself, shared, if it is still fresh: for a reader that only looks at it.
    pub fn get_shared<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_many_shared([key]).pop().flatten()
    }

    /// The values of `keys` that are cached and fresh, shared, in the keys' order, under one lock
    /// and one reading of the clock: a search checks the entries of its page and sends their
    /// encoded form.
    pub fn get_many_shared<'k, Q>(&self, keys: impl IntoIterator<Item = &'k Q>) -> Vec<Option<Arc<V>>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized + 'k,
    {
        let now = Instant::now();
        let values = self.lock();
        keys.into_iter()
            .map(|key| {
                values
                    .get(key)
                    .filter(|(_, at)| now.saturating_duration_since(*at) < self.fresh_for)
                    .map(|(value, _)| value.clone())
            })
            .collect()
    }

    /// Taken before reading the store for a value to [`Cache::put`]. (An older count only makes
    /// `put` more cautious; the count that matters is compared under the lock.)
    pub fn mark(&self) -> Mark {
        Mark(self.forgotten.load(Ordering::Relaxed))
    }

    /// Caches `value`, read from the store since `since`, unless a value was forgotten meanwhile
    /// (the read may have seen the store before that change); gives it back shared either way.
    pub fn put(&self, since: Mark, key: K, value: V) -> Arc<V> {
        let value = Arc::new(value);
        let mut values = self.lock();
        if self.forgotten.load(Ordering::Relaxed) != since.0 {
            return value;
        }
        if values.len() >= MAX_VALUES {
            values.clear();
        }
        values.insert(key, (value.clone(), Instant::now()));
        value
    }

    /// Forgets a value that has just changed.
    pub fn forget<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut values = self.lock();
        values.remove(key);
        self.forgotten.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_expire_and_can_be_forgotten() {
        let cache = Cache::new(Duration::from_millis(50));
        cache.put(cache.mark(), "a".to_string(), 1);
        assert_eq!(cache.get(&"a".to_string()), Some(1));
        cache.forget(&"a".to_string());
        assert_eq!(cache.get(&"a".to_string()), None);
        cache.put(cache.mark(), "b".to_string(), 2);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get(&"b".to_string()), None, "stale values are not served");
    }

    #[test]
    fn many_values_come_shared_in_the_keys_order() {
        let cache = Cache::new(Duration::from_millis(50));
        let a = cache.put(cache.mark(), "a".to_string(), 1);
        cache.put(cache.mark(), "b".to_string(), 2);
        let found = cache.get_many_shared(["b", "missing", "a"]);
        let plain: Vec<Option<i32>> = found.iter().map(|v| v.as_deref().copied()).collect();
        assert_eq!(plain, [Some(2), None, Some(1)]);
        assert!(
            Arc::ptr_eq(found[2].as_ref().unwrap(), &a),
            "the cached value itself, not a copy"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            cache.get_many_shared(["a", "b"]),
            [None, None],
            "stale values are not served"
        );
    }

    #[test]
    fn a_value_read_before_a_forget_is_not_cached() {
        let cache = Cache::new(Duration::from_secs(60));
        // A reader starts reading "a" from the store; meanwhile "a" changes and is forgotten.
        let read_began = cache.mark();
        cache.forget(&"a".to_string());
        let old = cache.put(read_began, "a".to_string(), 1);
        assert_eq!(*old, 1, "the reader still gets what it read");
        assert_eq!(cache.get(&"a".to_string()), None, "the old value is not put back");
        // A read that began after the forget is cached.
        cache.put(cache.mark(), "a".to_string(), 2);
        assert_eq!(cache.get(&"a".to_string()), Some(2));
    }

    #[test]
    fn it_stays_bounded() {
        let cache = Cache::new(Duration::from_secs(60));
        for i in 0..MAX_VALUES + 5 {
            cache.put(cache.mark(), i, i);
        }
        assert!(cache.lock().len() <= MAX_VALUES);
    }
}
