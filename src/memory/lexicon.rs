//! The process's in-memory term index, per memory scope (a store's numeric user id): what
//! lexical ranking reads of each memory (its [`Light`]: terms, session, content hash) and,
//! per term, the memories holding it. A search of a scope held here reads no database
//! page until it fetches its final hits: with 100k memories of one user, the FTS5 scans
//! of the query's terms and the reads of ~200 candidates' and neighbours' rows were most
//! of a lexical search's time.
//!
//! Bounded like the vector index ([`TermIndex::new`], least recently searched scopes
//! dropped first); the embedded store loads a scope on its writer thread (so no write
//! falls between the read and the index) and applies its committed writes and deletions.

use foldhash::HashMap;
use std::time::Instant;

use super::context::Light;
use super::retrieve::CorpusStats;
use super::scopes::{Held, ScopeCache, Shared};

/// The bytes the index holds at most by default (64 MiB: ~200k memories).
pub const DEFAULT_LIMIT: usize = 64 << 20;

/// Memories from which a scope is searched through this index (loaded whole on its first
/// search). A smaller scope is searched in the store's own full-text index, which at a
/// few thousand memories is about as fast, and is never loaded: with 1M memories over
/// 1000 users nearly every search met a scope not held (the bound holds ~200 of them)
/// and loaded it, 11-16 ms p50 where FTS5 alone took ~1.2 ms.
pub const HELD_FROM: u64 = 2_048;

/// Bytes counted per memory besides its strings (the light, its map slot, allocation).
const PER_MEMORY: usize = 96;
/// Bytes counted per term besides its text (the map slot, the list).
const PER_TERM: usize = 64;

/// One scope's memories, as lexical ranking reads them.
#[derive(Default)]
pub struct Terms {
    /// Every memory of the scope in the store is here.
    pub loaded: bool,
    lights: HashMap<i64, Light>,
    /// Each term's memories, in ascending key order (keys grow with write order).
    postings: HashMap<Box<str>, Vec<i64>>,
    /// Terms over all memories held.
    terms: u64,
    bytes: usize,
    used: Option<Instant>,
}

/// The distinct terms of a light, sorted: O(n log n) in its terms where comparing them
/// pairwise was O(n²) (a captured exchange runs to hundreds of terms; on the memory
/// benchmark's short ones loading 100k took as long either way, ~0.7 s of CPU).
fn distinct(light: &Light) -> Vec<&str> {
    let mut terms: Vec<&str> = light.terms.split_ascii_whitespace().collect();
    terms.sort_unstable();
    terms.dedup();
    terms
}

fn light_bytes(l: &Light) -> usize {
    PER_MEMORY + l.terms.len() + l.session_id.as_ref().map_or(0, String::len)
}

impl Terms {
    /// Adds memory `key` (or replaces it).
    pub fn insert(&mut self, key: i64, light: Light) {
        self.remove(key);
        for t in distinct(&light) {
            let list = match self.postings.get_mut(t) {
                Some(l) => l,
                None => {
                    self.bytes += PER_TERM + t.len();
                    self.postings.entry(t.into()).or_default()
                }
            };
            match list.last() {
                Some(&last) if last > key => {
                    let at = list.binary_search(&key).unwrap_or_else(|i| i);
                    list.insert(at, key);
                }
                _ => list.push(key),
            }
            self.bytes += 8;
        }
        self.bytes += light_bytes(&light);
        self.terms += u64::from(light.len);
        self.lights.insert(key, light);
    }

    /// Drops memory `key`, if held.
    pub fn remove(&mut self, key: i64) {
        let Some(light) = self.lights.remove(&key) else {
            return;
        };
        for t in distinct(&light) {
            let Some(list) = self.postings.get_mut(t) else {
                continue;
            };
            if let Ok(i) = list.binary_search(&key) {
                list.remove(i);
                self.bytes -= 8;
            }
            if list.is_empty() {
                self.postings.remove(t);
                self.bytes -= PER_TERM + t.len();
            }
        }
        self.bytes -= light_bytes(&light);
        self.terms -= u64::from(light.len);
    }

    /// How many memories hold `term`, and the newest `cap` of them, newest first.
    pub fn matches(&self, term: &str, cap: usize) -> (u64, Vec<i64>) {
        match self.postings.get(term) {
            Some(list) => (
                list.len() as u64,
                list.iter().rev().take(cap).copied().collect(),
            ),
            None => (0, vec![]),
        }
    }

    /// Memory `key`'s light, if held.
    pub fn light(&self, key: i64) -> Option<&Light> {
        self.lights.get(&key)
    }

    /// The memories held and their terms.
    pub fn stats(&self) -> CorpusStats {
        CorpusStats {
            docs: self.lights.len() as u64,
            terms: self.terms,
        }
    }
}

impl Held for Terms {
    fn bytes(&self) -> usize {
        self.bytes
    }

    fn used(&self) -> Option<Instant> {
        self.used
    }

    fn touch(&mut self) {
        self.used = Some(Instant::now());
    }
}

/// The index (see the module docs).
pub struct TermIndex {
    scopes: ScopeCache<i64, Terms>,
}

impl TermIndex {
    /// An index holding about `limit` bytes at most.
    pub fn new(limit: usize) -> Self {
        Self {
            scopes: ScopeCache::new(limit),
        }
    }

    /// Scope `uid`'s memories when they are held and loaded whole, marked used.
    pub fn loaded(&self, uid: i64) -> Option<Shared<Terms>> {
        let held = self.scopes.get(&uid)?;
        let mut g = super::scopes::lock(&held);
        if !g.loaded {
            return None;
        }
        g.touch();
        drop(g);
        Some(held)
    }

    /// Adds memory `key` to scope `uid` when the scope is held and loaded (one not held
    /// is read whole when it is next searched).
    pub fn insert_if_loaded(&self, uid: i64, key: i64, light: Light) {
        self.scopes.update_held(&uid, |t| {
            if t.loaded {
                t.insert(key, light);
            }
        });
    }

    /// Drops memory `key` of scope `uid`, or, with `None`, the whole scope.
    pub fn forget(&self, uid: i64, key: Option<i64>) {
        match key {
            Some(k) => {
                self.scopes.update_held(&uid, |t| t.remove(k));
            }
            None => self.scopes.remove(uid),
        }
    }

    /// Runs `f` on scope `uid` (made empty when not held), keeping the index's size true.
    pub fn update<R>(&self, uid: i64, f: impl FnOnce(&mut Terms) -> R) -> R {
        self.scopes.update(&uid, f)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.scopes.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn light(terms: &str, session: Option<&str>) -> Light {
        Light {
            session_id: session.map(str::to_string),
            hash: terms.len() as i64,
            terms: terms.to_string(),
            len: terms.split_whitespace().count() as u32,
        }
    }

    #[test]
    fn postings_stay_ordered_and_follow_removals() {
        let mut t = Terms::default();
        t.insert(5, light("red bike red", Some("a")));
        t.insert(9, light("blue bike", None));
        t.insert(7, light("bike lane", Some("a")));
        assert_eq!(t.matches("bike", 10), (3, vec![9, 7, 5]));
        assert_eq!(t.matches("bike", 2), (3, vec![9, 7]));
        assert_eq!(
            t.matches("red", 10),
            (1, vec![5]),
            "a memory counts once per term"
        );
        assert_eq!(t.stats().docs, 3);
        assert_eq!(t.stats().terms, 7);
        t.remove(7);
        t.remove(7);
        assert_eq!(t.matches("bike", 10), (2, vec![9, 5]));
        assert_eq!(t.matches("lane", 10), (0, vec![]));
        assert!(t.light(7).is_none());
        // Replacing a memory replaces its terms.
        t.insert(5, light("green", None));
        assert_eq!(t.matches("red", 10), (0, vec![]));
        assert_eq!(t.matches("green", 10), (1, vec![5]));
        assert_eq!(t.stats().terms, 3);
    }

    #[test]
    fn bytes_return_to_zero_and_the_bound_evicts() {
        let mut t = Terms::default();
        t.insert(1, light("alpha beta", Some("s")));
        t.insert(2, light("beta gamma", None));
        assert!(t.bytes() > 0);
        t.remove(1);
        t.remove(2);
        assert_eq!(t.bytes(), 0);
        assert!(t.postings.is_empty());

        let index = TermIndex::new(2_000);
        for uid in 0..10 {
            index.update(uid, |t| {
                t.loaded = true;
                for k in 0..5 {
                    t.insert(k, light("some words of a memory", None));
                }
            });
        }
        assert!(index.bytes() <= 2_000, "{}", index.bytes());
        assert!(index.loaded(0).is_none(), "the oldest scope was dropped");
        assert!(index.loaded(9).is_some());
        index.insert_if_loaded(9, 99, light("fresh", None));
        index.insert_if_loaded(1234, 1, light("not held", None));
        assert!(index.loaded(1234).is_none());
        let nine = index.loaded(9).unwrap();
        assert_eq!(super::super::scopes::lock(&nine).matches("fresh", 5).0, 1);
        index.forget(9, Some(99));
        assert_eq!(super::super::scopes::lock(&nine).matches("fresh", 5).0, 0);
        index.forget(9, None);
        assert!(index.loaded(9).is_none());
    }
}
