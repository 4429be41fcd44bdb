//! The process's in-memory vector index, shared by the memory backends: per memory scope
//! (a store's numeric user id) and embedding model, the vectors of its memories, so a
//! semantic search scores them in memory instead of reading and decoding every vector of
//! the scope from the database.
//!
//! Vectors are held as int8 (each scaled by its largest component, with its norm kept):
//! a quarter of the memory of f32 (a 256-dimension vector is 256 bytes); the query is
//! quantized the same way, so scoring is integer dot products, within ±0.02 of the exact
//! cosine. The index is bounded ([`VectorIndex::new`]):
//! past its bound the least recently searched scopes are dropped and loaded again on
//! their next semantic search. Each backend keeps it consistent with its store: the
//! embedded store applies its own committed writes and deletions, PostgreSQL catches a
//! scope up by version before scoring it.
//!
//! A large scope is searched in two passes: the first [`HEAD`] dimensions of every vector
//! (kept apart, contiguous) pick the [`candidates`] with the best partial scores, and only
//! those are scored in full. The built-in model's dimensions come out of a PCA, largest
//! variance first, so the head carries most of a vector's direction: at 100k memories the
//! first pass reads an eighth of the bytes of a full scan. `memproxy-bench bench-vectors`
//! measures how many of the exact best the two passes find, and how fast.

use std::collections::HashMap;
use std::sync::MutexGuard;
use std::time::Instant;

use super::retrieve::MIN_COSINE;
use super::scopes::{Held, ScopeCache};

mod quantized;
mod scan;

pub use quantized::Quantized;
use quantized::{dot_lanes, quantize};
use scan::{full_scores, Best};

/// The bytes an index holds at most by default (64 MiB: 256k vectors of 256 dimensions).
pub const DEFAULT_LIMIT: usize = 64 << 20;

/// Dimensions of the first pass over a large scope (the leading ones of each vector).
pub const HEAD: usize = 32;

/// Vectors a scope holds from which its searches take two passes; a smaller scope is
/// scanned whole (at 16k vectors of 256 dimensions a full scan is ~0.5 ms).
pub const TWO_PASSES_FROM: usize = 16_384;

/// Vectors of a scope from which a search scores them apart from its lexical part: the
/// embedded store on a second thread beside its FTS5 reads, PostgreSQL on the blocking
/// pool while its term scans run. Below, handing the work over costs more than it saves
/// (a full scan of 8k vectors takes ~0.25 ms).
pub const SCORE_APART_FROM: usize = 8_192;

/// Candidates the first pass keeps for a search asking for `pool`. With the built-in
/// model, 100k memories and LoCoMo's questions (`memproxy-bench bench-vectors`), the two
/// passes found 98.2 % of the exact best 50 (98.6 % of the best 10) in 0.48 ms, where the
/// full scan took 3.0 ms; 1,000 candidates found 92.6 %, 4,000 99.2 % in 1.24 ms.
pub fn candidates(pool: usize) -> usize {
    (pool * 40).max(2_000)
}

/// One scope's vectors of one model.
#[derive(Default)]
pub struct Vectors {
    /// The store's version of the newest vector held (PostgreSQL's catch-up point).
    pub version: i64,
    /// Every vector of the scope in the store is here (the embedded store loads a scope
    /// whole before it scores it).
    pub loaded: bool,
    dims: usize,
    keys: Vec<i64>,
    /// Per vector: its scale (largest |component| / 127) divided by its norm.
    factors: Vec<f32>,
    data: Vec<i8>,
    /// The first [`HEAD`] components of each row of `data`, contiguous (empty when the
    /// vectors are too short for two passes to pay).
    head: Vec<i8>,
    /// The first pass's scores, kept between searches (no allocation per search; not
    /// counted in the index's bytes, which change only through updates).
    scratch: Vec<f32>,
    slot: HashMap<i64, usize>,
    used: Option<Instant>,
}

impl Vectors {
    /// Bytes held (approximately: data, keys, factors and the slot map).
    fn bytes(&self) -> usize {
        self.data.len() + self.head.len() + self.keys.len() * 32
    }

    /// Whether rows keep a separate head (vectors at least twice [`HEAD`] long).
    fn has_head(&self) -> bool {
        self.dims >= 2 * HEAD
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds or replaces the vector of memory `key`. A vector of another length than the
    /// scope's first (a model change under the same name) replaces them all.
    pub fn upsert(&mut self, key: i64, v: &[f32]) {
        let q = Quantized::of(v);
        self.put(
            key,
            q.factor,
            q.components.len(),
            q.components.iter().copied(),
        );
    }

    /// [`Self::upsert`] of a vector in its stored form ([`Quantized::to_bytes`]);
    /// anything shorter than one is ignored.
    pub fn upsert_stored(&mut self, key: i64, bytes: &[u8]) {
        if let Some((factor, components)) = Quantized::parts(bytes) {
            self.put(
                key,
                factor,
                components.len(),
                components.iter().map(|&c| c as i8),
            );
        }
    }

    fn put(&mut self, key: i64, factor: f32, dims: usize, quantized: impl Iterator<Item = i8>) {
        if dims == 0 {
            return;
        }
        if self.dims != dims {
            if !self.keys.is_empty() {
                let (version, loaded) = (self.version, self.loaded);
                *self = Vectors {
                    version,
                    loaded,
                    ..Default::default()
                };
            }
            self.dims = dims;
        }
        let i = match self.slot.get(&key) {
            Some(&i) => {
                let row = &mut self.data[i * self.dims..(i + 1) * self.dims];
                row.iter_mut().zip(quantized).for_each(|(d, q)| *d = q);
                self.factors[i] = factor;
                i
            }
            None => {
                let i = self.keys.len();
                self.slot.insert(key, i);
                self.keys.push(key);
                self.factors.push(factor);
                self.data.extend(quantized);
                if self.has_head() {
                    self.head.resize(self.head.len() + HEAD, 0);
                }
                i
            }
        };
        if self.has_head() {
            let row = i * self.dims;
            self.head[i * HEAD..(i + 1) * HEAD].copy_from_slice(&self.data[row..row + HEAD]);
        }
    }

    /// Drops the vector of memory `key`, if held.
    pub fn remove(&mut self, key: i64) {
        let Some(i) = self.slot.remove(&key) else {
            return;
        };
        let last = self.keys.len() - 1;
        if i != last {
            let moved = self.keys[last];
            self.keys[i] = moved;
            self.factors[i] = self.factors[last];
            self.data
                .copy_within(last * self.dims..(last + 1) * self.dims, i * self.dims);
            if self.has_head() {
                self.head
                    .copy_within(last * HEAD..(last + 1) * HEAD, i * HEAD);
            }
            self.slot.insert(moved, i);
        }
        self.keys.pop();
        self.factors.pop();
        self.data.truncate(last * self.dims);
        self.head.truncate(last * HEAD);
    }

    /// The memories most similar to `query` (cosine ≥ [`MIN_COSINE`]), best first, at
    /// most `pool`: in two passes from [`TWO_PASSES_FROM`] vectors on (see the module docs).
    pub fn scored(&mut self, query: &[f32], pool: usize) -> Vec<(i64, f64)> {
        let two = self.len() >= TWO_PASSES_FROM && self.has_head();
        self.search(query, pool, two)
    }

    /// For each group of memories (a hybrid search's dense windows), the cosine of
    /// `query` with the sum of the group's unit vectors; `None` when none has a vector.
    pub fn window_cosines(&self, query: &[f32], groups: &[Vec<i64>]) -> Vec<Option<f64>> {
        let qnorm = query.iter().map(|x| x * x).sum::<f32>().sqrt();
        if query.len() != self.dims || self.dims == 0 || qnorm == 0.0 {
            return vec![None; groups.len()];
        }
        let mut sum = vec![0f32; self.dims];
        groups
            .iter()
            .map(|g| {
                sum.iter_mut().for_each(|x| *x = 0.0);
                let mut any = false;
                for &i in g.iter().filter_map(|k| self.slot.get(k)) {
                    let (f, row) = (
                        self.factors[i],
                        &self.data[i * self.dims..(i + 1) * self.dims],
                    );
                    sum.iter_mut()
                        .zip(row)
                        .for_each(|(s, &d)| *s += f * f32::from(d));
                    any = true;
                }
                let norm = dot_lanes(&sum, &sum).sqrt();
                (any && norm > 0.0).then(|| f64::from(dot_lanes(&sum, query) / (norm * qnorm)))
            })
            .collect()
    }

    /// [`Vectors::scored`] always in one full pass: the exact best (to measure the two
    /// passes against).
    pub fn scored_exact(&mut self, query: &[f32], pool: usize) -> Vec<(i64, f64)> {
        self.search(query, pool, false)
    }

    /// [`Vectors::scored`] always in two passes (when the vectors have a head).
    pub fn scored_two_passes(&mut self, query: &[f32], pool: usize) -> Vec<(i64, f64)> {
        let two = self.has_head();
        self.search(query, pool, two)
    }

    fn search(&mut self, query: &[f32], pool: usize, two_passes: bool) -> Vec<(i64, f64)> {
        self.used = Some(Instant::now());
        if query.len() != self.dims || self.keys.is_empty() || pool == 0 {
            return vec![];
        }
        // The query is quantized like the vectors: the scan is then integer dot products,
        // which the compiler vectorizes (a float sum it may not reorder).
        let qnorm = query.iter().map(|x| x * x).sum::<f32>().sqrt();
        let qmax = query.iter().fold(0f32, |m, x| m.max(x.abs()));
        if qnorm == 0.0 || qmax == 0.0 {
            return vec![];
        }
        let q: Vec<i8> = query.iter().map(|x| quantize(x * 127.0 / qmax)).collect();
        let qfactor = qmax / 127.0 / qnorm;
        // First pass: the heads pick the candidates (partial scores, same scale).
        let first = two_passes.then(|| self.first_pass(&q[..HEAD], candidates(pool)));
        let scores = full_scores(
            &self.data,
            self.dims,
            &self.factors,
            &q,
            qfactor,
            first.as_deref(),
        );
        let best = match &first {
            Some(rows) => Best::of_indexed(rows.iter().copied().zip(scores), pool, MIN_COSINE),
            None => Best::of_indexed(scores.into_iter().enumerate(), pool, MIN_COSINE),
        };
        let mut out: Vec<(i64, f64)> = best
            .into_iter()
            .map(|(i, sim)| (self.keys[i], f64::from(sim)))
            .collect();
        super::retrieve::sort_desc(&mut out);
        out
    }
}

/// One scope's vectors, locked while they are changed or scored.
pub type Shared = super::scopes::Shared<Vectors>;

/// Locks a scope's vectors (a poisoned lock is taken over: the vectors stay usable).
pub fn lock(v: &Shared) -> MutexGuard<'_, Vectors> {
    super::scopes::lock(v)
}

impl Held for Vectors {
    fn bytes(&self) -> usize {
        Vectors::bytes(self)
    }

    fn used(&self) -> Option<Instant> {
        self.used
    }

    fn touch(&mut self) {
        self.used = Some(Instant::now());
    }
}

/// The index (see the module docs): the vectors of each scope and model.
pub struct VectorIndex {
    scopes: ScopeCache<(i64, String), Vectors>,
}

impl VectorIndex {
    /// An index holding about `limit` bytes at most.
    pub fn new(limit: usize) -> Self {
        Self {
            scopes: ScopeCache::new(limit),
        }
    }

    /// The vectors of scope `uid` for `model`, if held.
    pub fn get(&self, uid: i64, model: &str) -> Option<Shared> {
        self.scopes.get(&(uid, model.to_string()))
    }

    /// Drops the vector of memory `key` of scope `uid` (every model), or, with `None`,
    /// all of the scope's.
    pub fn forget(&self, uid: i64, key: Option<i64>) {
        match key {
            Some(k) => self.scopes.each(uid, |v| v.remove(k)),
            None => self.scopes.remove(uid),
        }
    }

    /// Adds or replaces the vector of memory `key` in scope `uid`'s vectors of `model`
    /// when they are held and loaded whole (a scope not held is read whole when it is
    /// next searched), keeping the index's size up to date.
    pub fn put_if_loaded(&self, uid: i64, model: &str, key: i64, vector: &[f32]) {
        self.scopes.update_held(&(uid, model.to_string()), |v| {
            if v.loaded {
                v.upsert(key, vector);
            }
        });
    }

    /// Where changes to the index stand (see [`Self::offer`]).
    pub fn stamp(&self) -> u64 {
        self.scopes.stamp()
    }

    /// Scope `uid`'s vectors of `model`, read whole from the store in a read begun after
    /// [`Self::stamp`] gave `stamp`: kept when nothing changed the scope since and it is
    /// not held (see [`super::scopes`]); returned for the search either way.
    pub fn offer(&self, uid: i64, model: &str, stamp: u64, mut v: Vectors) -> Shared {
        v.loaded = true;
        self.scopes.offer(&(uid, model.to_string()), stamp, v)
    }

    /// Runs `f` on the vectors of scope `uid` for `model` (made when not held), keeping
    /// the index's size up to date.
    pub fn update<R>(&self, uid: i64, model: &str, f: impl FnOnce(&mut Vectors) -> R) -> R {
        self.scopes.update(&(uid, model.to_string()), f)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.scopes.bytes()
    }
}

#[cfg(test)]
mod tests;
