//! What the process keeps in memory per memory scope (a store's numeric user id), bounded
//! in bytes: the [`super::vectors::VectorIndex`] (per scope and model) and the
//! [`super::lexicon::TermIndex`] are each one of these. Past its bound the least recently
//! used scopes are dropped; each backend reads a dropped scope again on its next search.
//!
//! A reader may also build a scope from the database itself and [`ScopeCache::offer`] it:
//! it is kept only when no change to that scope was applied since the reader took a
//! [`ScopeCache::stamp`] before its read began (every change through
//! [`ScopeCache::update_held`], [`ScopeCache::each`] and [`ScopeCache::remove`] is
//! recorded, held or not), so a scope read before a write committed never hides that
//! write: a write the read missed committed after the read began, so its change to the
//! cache comes after the stamp, and either before the offer (which is refused) or after it
//! (and reaches the scope offered).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// What one scope holds.
pub trait Held: Default + Send {
    /// Bytes held (approximately).
    fn bytes(&self) -> usize;
    /// When it was last used (searched or updated through [`ScopeCache::update`]).
    fn used(&self) -> Option<Instant>;
    /// Marks it used now.
    fn touch(&mut self);
}

/// A key of a [`ScopeCache`]: which scope (a store's numeric user id) it belongs to.
pub trait ScopeKey: Eq + Hash + Clone {
    fn scope(&self) -> i64;
}

impl ScopeKey for i64 {
    fn scope(&self) -> i64 {
        *self
    }
}

impl ScopeKey for (i64, String) {
    fn scope(&self) -> i64 {
        self.0
    }
}

/// Scopes' last changes kept (scopes share one by their id modulo this: a change to one
/// only makes an offer of another fail).
const STAMPS: usize = 256;

fn slot(scope: i64) -> usize {
    scope.rem_euclid(STAMPS as i64) as usize
}

/// One scope's data, locked while it is changed or read.
pub type Shared<T> = Arc<Mutex<T>>;

/// Locks a scope's data (a poisoned lock is taken over: the data stays usable).
pub fn lock<T>(v: &Shared<T>) -> MutexGuard<'_, T> {
    v.lock().unwrap_or_else(|p| p.into_inner())
}

/// The scopes held, by key, and the bytes they hold (see the module docs).
pub struct ScopeCache<K, T> {
    scopes: Mutex<Map<K, T>>,
    /// Bytes held over all scopes, as of their last change.
    bytes: AtomicUsize,
    limit: usize,
}

/// The held scopes and their changes, under one lock.
struct Map<K, T> {
    held: HashMap<K, Shared<T>>,
    /// Changes so far.
    changes: u64,
    /// Per slot of scopes, the number of its last change.
    changed: Vec<u64>,
}

impl<K, T> Map<K, T> {
    fn changed(&mut self, scope: i64) {
        self.changes += 1;
        self.changed[slot(scope)] = self.changes;
    }
}

impl<K: ScopeKey, T: Held> ScopeCache<K, T> {
    /// A cache holding about `limit` bytes at most.
    pub fn new(limit: usize) -> Self {
        Self {
            scopes: Mutex::new(Map {
                held: HashMap::new(),
                changes: 0,
                changed: vec![0; STAMPS],
            }),
            bytes: AtomicUsize::new(0),
            limit,
        }
    }

    fn scopes(&self) -> MutexGuard<'_, Map<K, T>> {
        self.scopes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The data of `key`, made empty when not held.
    pub fn entry(&self, key: &K) -> Shared<T> {
        self.scopes().held.entry(key.clone()).or_default().clone()
    }

    /// The data of `key`, if held.
    pub fn get(&self, key: &K) -> Option<Shared<T>> {
        self.scopes().held.get(key).cloned()
    }

    /// Where changes stand: take it before a read of the store begins, then
    /// [`Self::offer`] what the read found.
    pub fn stamp(&self) -> u64 {
        self.scopes().changes
    }

    /// Keeps `data`, read from the store in a read begun after [`Self::stamp`] gave
    /// `stamp`, as `key`'s (marked used) when its scope did not change since and `key` is
    /// not held; returns it, shared or not.
    pub fn offer(&self, key: &K, stamp: u64, mut data: T) -> Shared<T> {
        data.touch();
        let bytes = data.bytes();
        let data = Arc::new(Mutex::new(data));
        {
            let mut m = self.scopes();
            if m.changed[slot(key.scope())] > stamp || m.held.contains_key(key) {
                return data;
            }
            m.held.insert(key.clone(), data.clone());
        }
        self.resized(0, bytes);
        data
    }

    /// Runs `f` on every held scope of `scope`, keeping the byte count true.
    pub fn each(&self, scope: i64, mut f: impl FnMut(&mut T)) {
        let held: Vec<Shared<T>> = {
            let mut m = self.scopes();
            m.changed(scope);
            m.held
                .iter()
                .filter(|(k, _)| k.scope() == scope)
                .map(|(_, v)| v.clone())
                .collect()
        };
        for v in held {
            let mut g = lock(&v);
            let before = g.bytes();
            f(&mut g);
            self.resized(before, g.bytes());
        }
    }

    /// Drops every held scope of `scope`.
    pub fn remove(&self, scope: i64) {
        let gone: Vec<Shared<T>> = {
            let mut m = self.scopes();
            m.changed(scope);
            let keys: Vec<K> = m
                .held
                .keys()
                .filter(|k| k.scope() == scope)
                .cloned()
                .collect();
            keys.into_iter().filter_map(|k| m.held.remove(&k)).collect()
        };
        for v in gone {
            let bytes = lock(&v).bytes();
            self.resized(bytes, 0);
        }
    }

    /// Runs `f` on the data of `key` (made when not held), marked used, keeping the byte
    /// count true.
    pub fn update<R>(&self, key: &K, f: impl FnOnce(&mut T) -> R) -> R {
        let v = self.entry(key);
        let mut g = lock(&v);
        g.touch();
        let before = g.bytes();
        let r = f(&mut g);
        let after = g.bytes();
        drop(g);
        self.resized(before, after);
        r
    }

    /// Runs `f` on the data of `key` when it is held (not marked used), keeping the byte
    /// count true; `None` when it is not held. Either way the scope counts as changed.
    pub fn update_held<R>(&self, key: &K, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let v = {
            let mut m = self.scopes();
            m.changed(key.scope());
            m.held.get(key).cloned()
        }?;
        let mut g = lock(&v);
        let before = g.bytes();
        let r = f(&mut g);
        let after = g.bytes();
        drop(g);
        self.resized(before, after);
        Some(r)
    }

    /// Records that a scope went from `before` to `after` bytes, and evicts the least
    /// recently used scopes while the cache is over its bound. The count never goes below
    /// zero, and eviction recounts what is held (a scope changed after it was evicted,
    /// through a handle taken before, is not counted twice).
    pub fn resized(&self, before: usize, after: usize) {
        if after >= before {
            let grown = after - before;
            let total = self
                .bytes
                .fetch_add(grown, Ordering::Relaxed)
                .saturating_add(grown);
            if total > self.limit {
                self.evict();
            }
        } else {
            let shrunk = before - after;
            let _ = self
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(shrunk))
                });
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn evict(&self) {
        let mut m = self.scopes();
        let mut by_use: Vec<(K, Option<Instant>, usize)> = m
            .held
            .iter()
            .filter_map(|(k, v)| v.try_lock().ok().map(|g| (k.clone(), g.used(), g.bytes())))
            .collect();
        // Recounted from what is held (a scope locked right now counts as empty until
        // its holder reports its change).
        self.bytes
            .store(by_use.iter().map(|x| x.2).sum(), Ordering::Relaxed);
        by_use.sort_by_key(|x| x.1);
        for (k, _, bytes) in by_use {
            if self.bytes.load(Ordering::Relaxed) <= self.limit {
                break;
            }
            m.held.remove(&k);
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Items(Vec<i64>, Option<Instant>);

    impl Held for Items {
        fn bytes(&self) -> usize {
            self.0.len() * 8
        }
        fn used(&self) -> Option<Instant> {
            self.1
        }
        fn touch(&mut self) {
            self.1 = Some(Instant::now());
        }
    }

    #[test]
    fn an_offer_is_kept_only_when_its_scope_did_not_change_since_its_stamp() {
        let cache: ScopeCache<(i64, String), Items> = ScopeCache::new(1 << 20);
        let key = |uid: i64| (uid, "m".to_string());
        // Unchanged since the stamp: kept, and later changes reach it.
        let stamp = cache.stamp();
        let kept = cache.offer(&key(1), stamp, Items(vec![10], None));
        assert!(Arc::ptr_eq(&kept, &cache.get(&key(1)).unwrap()));
        cache.update_held(&key(1), |t| t.0.push(11));
        assert_eq!(lock(&kept).0, vec![10, 11]);
        assert_eq!(cache.bytes(), 16);
        // A change applied to a scope not held (a write committed after the reader read
        // the store) makes the offer fail; the reader still gets its data.
        let stamp = cache.stamp();
        assert!(cache.update_held(&key(2), |t| t.0.push(20)).is_none());
        let mine = cache.offer(&key(2), stamp, Items(vec![], None));
        assert!(cache.get(&key(2)).is_none());
        assert!(lock(&mine).0.is_empty());
        // So do a removal of one item and of the whole scope.
        let stamp = cache.stamp();
        cache.each(3, |t| t.0.clear());
        cache.offer(&key(3), stamp, Items::default());
        let stamp = cache.stamp();
        cache.remove(3);
        cache.offer(&key(3), stamp, Items::default());
        assert!(cache.get(&key(3)).is_none());
        // Another scope's change does not (unless it shares the stamp's slot).
        let stamp = cache.stamp();
        cache.remove(5);
        cache.offer(&key(4), stamp, Items::default());
        assert!(cache.get(&key(4)).is_some());
        // A held scope is not replaced by an offer.
        let stamp = cache.stamp();
        let other = cache.offer(&key(1), stamp, Items(vec![99], None));
        assert!(!Arc::ptr_eq(&other, &cache.get(&key(1)).unwrap()));
        assert_eq!(lock(&cache.get(&key(1)).unwrap()).0, vec![10, 11]);
    }
}
