//! What the process keeps in memory per memory scope (a store's numeric user id), bounded
//! in bytes: the [`super::vectors::VectorIndex`] (per scope and model) and the
//! [`super::lexicon::TermIndex`] are each one of these. Past its bound the least recently
//! used scopes are dropped; each backend reads a dropped scope again on its next search.

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

/// One scope's data, locked while it is changed or read.
pub type Shared<T> = Arc<Mutex<T>>;

/// Locks a scope's data (a poisoned lock is taken over: the data stays usable).
pub fn lock<T>(v: &Shared<T>) -> MutexGuard<'_, T> {
    v.lock().unwrap_or_else(|p| p.into_inner())
}

/// The scopes held, by key, and the bytes they hold (see the module docs).
pub struct ScopeCache<K, T> {
    scopes: Mutex<HashMap<K, Shared<T>>>,
    /// Bytes held over all scopes, as of their last change.
    bytes: AtomicUsize,
    limit: usize,
}

impl<K: Eq + Hash + Clone, T: Held> ScopeCache<K, T> {
    /// A cache holding about `limit` bytes at most.
    pub fn new(limit: usize) -> Self {
        Self {
            scopes: Mutex::default(),
            bytes: AtomicUsize::new(0),
            limit,
        }
    }

    fn scopes(&self) -> MutexGuard<'_, HashMap<K, Shared<T>>> {
        self.scopes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The data of `key`, made empty when not held.
    pub fn entry(&self, key: &K) -> Shared<T> {
        self.scopes().entry(key.clone()).or_default().clone()
    }

    /// The data of `key`, if held.
    pub fn get(&self, key: &K) -> Option<Shared<T>> {
        self.scopes().get(key).cloned()
    }

    /// Runs `f` on every held scope whose key `matches`, keeping the byte count true.
    pub fn each(&self, matches: impl Fn(&K) -> bool, mut f: impl FnMut(&mut T)) {
        let held: Vec<Shared<T>> = self
            .scopes()
            .iter()
            .filter(|(k, _)| matches(k))
            .map(|(_, v)| v.clone())
            .collect();
        for v in held {
            let mut g = lock(&v);
            let before = g.bytes();
            f(&mut g);
            self.resized(before, g.bytes());
        }
    }

    /// Drops every scope whose key `matches`.
    pub fn remove(&self, matches: impl Fn(&K) -> bool) {
        let gone: Vec<Shared<T>> = {
            let mut scopes = self.scopes();
            let keys: Vec<K> = scopes.keys().filter(|k| matches(k)).cloned().collect();
            keys.into_iter().filter_map(|k| scopes.remove(&k)).collect()
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
    /// count true; `None` when it is not held.
    pub fn update_held<R>(&self, key: &K, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let v = self.get(key)?;
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
        let mut scopes = self.scopes();
        let mut by_use: Vec<(K, Option<Instant>, usize)> = scopes
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
            scopes.remove(&k);
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}
