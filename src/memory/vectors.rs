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

use std::cmp::{Ordering as Order, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::MutexGuard;
use std::time::Instant;

use super::scopes::{Held, ScopeCache};

use super::retrieve::MIN_COSINE;

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

/// `y` (|y| ≤ 127) rounded half away from zero. By hand: `f32::round` is a libm call per
/// component on the baseline CPU, a fifth of the time of reading a scope's vectors; the
/// cast truncates and saturates.
#[inline]
fn quantize(y: f32) -> i8 {
    (y + 0.5f32.copysign(y)) as i32 as i8
}

/// The largest |component| of `v` and its norm, over eight lanes (a fold over one lane
/// and `f32::max`, which minds NaN, was most of the time of reading a scope's vectors).
fn max_and_norm(v: &[f32]) -> (f32, f32) {
    const LANES: usize = 8;
    let (mut max, mut sq) = ([0f32; LANES], [0f32; LANES]);
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            let a = c[i].abs();
            max[i] = if a > max[i] { a } else { max[i] };
            sq[i] += c[i] * c[i];
        }
    }
    for (i, x) in tail.iter().enumerate() {
        max[i] = if x.abs() > max[i] { x.abs() } else { max[i] };
        sq[i] += x * x;
    }
    let max = max.into_iter().fold(0f32, |m, x| if x > m { x } else { m });
    (max, sq.iter().sum::<f32>().sqrt())
}

/// A vector as the index holds it (and the embedded store keeps it): each component
/// scaled by the largest |component| to ±127, and the factor that turns dot products of
/// the components into cosines (that scale divided by the norm).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub factor: f32,
    pub components: Vec<i8>,
}

impl Quantized {
    pub fn of(v: &[f32]) -> Self {
        let (max, norm) = max_and_norm(v);
        let (scale, factor) = if max > 0.0 && norm > 0.0 {
            (127.0 / max, max / 127.0 / norm)
        } else {
            (0.0, 0.0)
        };
        Self {
            factor,
            components: v.iter().map(|x| quantize(x * scale)).collect(),
        }
    }

    /// The unit vector it stands for (within the quantization's error).
    pub fn unit(&self) -> Vec<f32> {
        self.components
            .iter()
            .map(|&c| f32::from(c) * self.factor)
            .collect()
    }

    /// Stored form: the factor (little-endian f32), then one byte per component.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(4 + self.components.len());
        b.extend(self.factor.to_le_bytes());
        b.extend(self.components.iter().map(|&c| c as u8));
        b
    }

    /// The factor and the components' bytes of a stored form (`None` when it is too
    /// short to be one).
    pub fn parts(bytes: &[u8]) -> Option<(f32, &[u8])> {
        let (factor, components) = bytes.split_first_chunk::<4>()?;
        Some((f32::from_le_bytes(*factor), components))
    }

    /// Reads a stored form.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (factor, components) = Self::parts(bytes)?;
        Some(Self {
            factor,
            components: components.iter().map(|&c| c as i8).collect(),
        })
    }
}

/// Dot product of two float vectors over eight lanes (a sum over one lane is a chain of
/// dependent adds the compiler may not reorder).
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
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

impl Vectors {
    /// The rows of the `n` best partial scores (the heads' dot products with `qhead`),
    /// in no order. Rather than keep a heap of `n` over every row, it takes a threshold
    /// from a sample (every 16th score) that about `n` scores pass, keeps those, and
    /// selects among them: exact whenever at least `n` pass, else it selects among all.
    fn first_pass(&mut self, qhead: &[i8], n: usize) -> Vec<usize> {
        const STRIDE: usize = 16;
        let qhead: &[i8; HEAD] = qhead.try_into().expect("a head's length");
        let mut scores = std::mem::take(&mut self.scratch);
        scores.clear();
        head_scores(&self.head, &self.factors, qhead, &mut scores);
        let all = || scores.iter().copied().enumerate();
        let mut picked: Vec<(usize, f32)> = if scores.len() <= n {
            all().collect()
        } else {
            let mut sample: Vec<f32> = scores.iter().step_by(STRIDE).copied().collect();
            // A quarter more than the sample's share of `n`, so that rarely too few pass.
            let k = (n / STRIDE + n / STRIDE / 4 + 8).min(sample.len());
            let (_, &mut threshold, _) =
                sample.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            let passed: Vec<(usize, f32)> = all().filter(|&(_, s)| s >= threshold).collect();
            if passed.len() >= n {
                passed
            } else {
                all().collect()
            }
        };
        if picked.len() > n {
            picked.select_nth_unstable_by(n - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            picked.truncate(n);
        }
        self.scratch = scores;
        picked.into_iter().map(|(i, _)| i).collect()
    }
}

/// Whether the scans below may use AVX2 ([`dot_avx2`]): the release binary targets the
/// baseline x86-64 (SSE2), where the compiler widens int8 products to 32 bits before it
/// multiplies. Checked once per scan (std caches the CPU's answer).
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Every head's partial score with `q` (its dot product times the row's factor), into
/// `out`, in row order.
fn head_scores(heads: &[i8], factors: &[f32], q: &[i8; HEAD], out: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { head_scores_avx2(heads, factors, q, out) };
    }
    scan_heads(heads, factors, q, out, |h, q| {
        dot_head(h.try_into().expect("a head"), q.try_into().expect("a head"))
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn head_scores_avx2(heads: &[i8], factors: &[f32], q: &[i8; HEAD], out: &mut Vec<f32>) {
    scan_heads(heads, factors, q, out, |h, q| dot_avx2(h, q))
}

/// [`head_scores`]' loop over `dot`, inlined into each build of it.
#[inline(always)]
fn scan_heads(
    heads: &[i8],
    factors: &[f32],
    q: &[i8; HEAD],
    out: &mut Vec<f32>,
    dot: impl Fn(&[i8], &[i8]) -> i32,
) {
    let n = factors.len().min(heads.len() / HEAD);
    out.clear();
    out.resize(n, 0.0);
    for (i, o) in out.iter_mut().enumerate() {
        *o = dot(&heads[i * HEAD..(i + 1) * HEAD], q) as f32 * factors[i];
    }
}

/// The cosines of the vectors in `rows` (of `dims` components each in `data`; `None`:
/// all) with the quantized query `q` (whose factor is `qfactor`), in the order of `rows`.
fn full_scores(
    data: &[i8],
    dims: usize,
    factors: &[f32],
    q: &[i8],
    qfactor: f32,
    rows: Option<&[usize]>,
) -> Vec<f32> {
    let rows = Rows {
        data,
        dims,
        factors,
        rows,
    };
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { full_scores_avx2(&rows, q, qfactor) };
    }
    rows.scan(q, qfactor, dot_i8)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn full_scores_avx2(rows: &Rows<'_>, q: &[i8], qfactor: f32) -> Vec<f32> {
    rows.scan(q, qfactor, |a, b| dot_avx2(a, b))
}

/// The rows [`full_scores`] scores.
struct Rows<'a> {
    data: &'a [i8],
    dims: usize,
    factors: &'a [f32],
    /// `None`: all.
    rows: Option<&'a [usize]>,
}

impl Rows<'_> {
    /// [`full_scores`]' loop over `dot`, inlined into each build of it.
    #[inline(always)]
    fn scan(&self, q: &[i8], qfactor: f32, dot: impl Fn(&[i8], &[i8]) -> i32) -> Vec<f32> {
        let n = self.rows.map_or(self.factors.len(), <[usize]>::len);
        let mut out = vec![0f32; n];
        for (j, o) in out.iter_mut().enumerate() {
            let i = self.rows.map_or(j, |r| r[j]);
            let row = &self.data[i * self.dims..(i + 1) * self.dims];
            *o = dot(row, q) as f32 * self.factors[i] * qfactor;
        }
        out
    }
}

/// The dot product of two int8 vectors with AVX2, 32 components per step: `|a|` times
/// `b` with `a`'s signs (unsigned × signed bytes, summed in pairs to 16 bits), pairs of
/// those summed to 32 bits. Exact for components in ±127, as quantized here (a pair's sum
/// is at most 2 × 127² < 2¹⁵).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dot_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    let mut i = 0;
    while i + 32 <= n {
        let va = _mm256_loadu_si256(a.as_ptr().add(i).cast());
        let vb = _mm256_loadu_si256(b.as_ptr().add(i).cast());
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(va, va), _mm256_sign_epi8(vb, va));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
        i += 32;
    }
    let mut lanes = [0i32; 8];
    _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc);
    let mut sum: i32 = lanes.iter().sum();
    while i < n {
        sum += i32::from(a[i]) * i32::from(b[i]);
        i += 1;
    }
    sum
}

/// The dot product of two heads (fixed length: unrolled and vectorized).
#[inline(always)]
fn dot_head(a: &[i8; HEAD], b: &[i8; HEAD]) -> i32 {
    let mut sum = 0i32;
    for (&x, &y) in a.iter().zip(b) {
        sum += i32::from(x) * i32::from(y);
    }
    sum
}

/// A score and its row in a bounded min-heap (the worst kept on top).
#[derive(PartialEq)]
struct Ranked(f32, usize);

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Order> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Order {
        self.0
            .total_cmp(&other.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

/// Selection of the `n` best scores without sorting or storing the rest (a bounded heap).
struct Best;

impl Best {
    /// The `n` best `(row, score)` of at least `floor`.
    fn of_indexed(
        scores: impl Iterator<Item = (usize, f32)>,
        n: usize,
        floor: f32,
    ) -> Vec<(usize, f32)> {
        let mut heap: BinaryHeap<Reverse<Ranked>> = BinaryHeap::with_capacity(n + 1);
        let mut worst = floor;
        for (i, s) in scores {
            if s < worst || (s == worst && heap.len() >= n) {
                continue;
            }
            heap.push(Reverse(Ranked(s, i)));
            if heap.len() > n {
                heap.pop();
            }
            if heap.len() >= n {
                worst = heap.peek().map_or(floor, |r| r.0 .0);
            }
        }
        heap.into_iter()
            .map(|Reverse(Ranked(s, i))| (i, s))
            .collect()
    }
}

/// The dot product of two int8 vectors of one length, in 16 lanes (vectorized).
#[inline(always)]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut lanes = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((l, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *l += i32::from(x) * i32::from(y);
        }
    }
    lanes.iter().sum::<i32>() + tail
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
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn scores_match_exact_cosine_closely_and_best_come_first() {
        let mut v = Vectors::default();
        let rows: Vec<Vec<f32>> = (0..50)
            .map(|i| {
                (0..64)
                    .map(|d| (((i * 7 + d * 13) % 17) as f32 - 8.0) * 0.1)
                    .collect()
            })
            .collect();
        for (i, r) in rows.iter().enumerate() {
            v.upsert(i as i64, r);
        }
        let q = rows[3].clone();
        let got = v.scored(&q, 10);
        assert_eq!(got[0].0, 3);
        for (k, s) in &got {
            let exact = super::super::retrieve::cosine(&q, &rows[*k as usize]);
            assert!((*s as f32 - exact).abs() < 0.02, "{s} vs {exact}");
        }
        assert!(got.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(got.len() <= 10);
    }

    #[test]
    fn the_stored_form_holds_what_the_index_scores() {
        let v = [3.0f32, -4.0, 0.5, 0.0, 1.25, -0.01, 2.0, 7.0, -7.0];
        let q = Quantized::of(&v);
        assert_eq!(q.components.iter().map(|c| c.abs()).max(), Some(127));
        assert_eq!(Quantized::from_bytes(&q.to_bytes()), Some(q.clone()));
        assert_eq!(Quantized::from_bytes(&[1, 2]), None);
        // The unit vector it stands for.
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        for (u, x) in q.unit().iter().zip(&v) {
            assert!((u - x / norm).abs() < 0.01, "{u} vs {}", x / norm);
        }
        // Held from the stored form or from the vector: the same scores.
        let (mut a, mut b) = (Vectors::default(), Vectors::default());
        a.upsert(1, &v);
        b.upsert_stored(1, &q.to_bytes());
        b.upsert_stored(2, &[9]);
        assert_eq!(b.len(), 1);
        assert_eq!(a.scored(&v, 5), b.scored(&v, 5));
        // All zeros: kept, never similar to anything.
        let zero = Quantized::of(&[0.0; 4]);
        assert_eq!((zero.factor, zero.components), (0.0, vec![0; 4]));
    }

    #[test]
    fn replace_and_remove_keep_the_rest_intact() {
        let mut v = Vectors::default();
        v.upsert(1, &unit(&[1.0, 0.0, 0.0]));
        v.upsert(2, &unit(&[0.0, 1.0, 0.0]));
        v.upsert(3, &unit(&[0.0, 0.0, 1.0]));
        v.upsert(1, &unit(&[0.0, 1.0, 0.1]));
        v.remove(2);
        assert_eq!(v.len(), 2);
        let got = v.scored(&[0.0, 1.0, 0.0], 5);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 1);
        assert_eq!(v.scored(&[0.0, 0.0, 1.0], 5)[0].0, 3);
        v.remove(3);
        v.remove(1);
        assert!(v.is_empty());
        assert!(v.scored(&[0.0, 1.0, 0.0], 5).is_empty());
    }

    /// Vectors whose leading dimensions carry most of their direction, like a PCA's.
    fn pca_like(seed: u64, dims: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..dims)
            .map(|d| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5;
                u / (1.0 + d as f32 / 8.0)
            })
            .collect()
    }

    #[test]
    fn two_passes_find_the_exact_best_and_follow_removals() {
        let mut v = Vectors::default();
        for k in 0..5_000 {
            v.upsert(k, &pca_like(k as u64, 128));
        }
        // Removals move the last row into the hole: its head must move with it.
        for k in (0..5_000).step_by(7) {
            v.remove(k);
        }
        v.upsert(4_999, &pca_like(77_777, 128));
        let mut found = 0;
        let mut wanted = 0;
        for q in 0..20 {
            let query = pca_like(1_000_000 + q, 128);
            let exact = v.scored_exact(&query, 10);
            let two = v.scored_two_passes(&query, 10);
            assert!(two.windows(2).all(|w| w[0].1 >= w[1].1));
            let exact_keys: Vec<i64> = exact.iter().map(|x| x.0).collect();
            // Every hit's score is its exact score.
            for (k, s) in &two {
                if let Some(e) = exact.iter().find(|e| e.0 == *k) {
                    assert!((e.1 - s).abs() < 1e-6);
                }
                assert!(k % 7 != 0 || *k == 4_999, "a removed vector was found");
            }
            found += two.iter().filter(|x| exact_keys.contains(&x.0)).count();
            wanted += exact.len();
        }
        assert!(wanted > 0);
        assert!(found * 100 >= wanted * 95, "{found} of {wanted}");
        // A vector searched for itself comes first.
        let me = pca_like(77_777, 128);
        assert_eq!(v.scored_two_passes(&me, 5)[0].0, 4_999);
    }

    #[test]
    fn the_avx2_dot_product_is_exact() {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            let mut rng = fastrand::Rng::with_seed(7);
            for len in [0, 1, 31, 32, 33, 256, 385] {
                let a: Vec<i8> = (0..len).map(|_| rng.i8(-127..=127)).collect();
                let b: Vec<i8> = (0..len).map(|_| rng.i8(-127..=127)).collect();
                // SAFETY: the CPU has AVX2 (checked above).
                assert_eq!(unsafe { dot_avx2(&a, &b) }, dot_i8(&a, &b), "{len}");
            }
            let extreme = [127i8; 64];
            let negative = [-127i8; 64];
            // SAFETY: as above.
            assert_eq!(unsafe { dot_avx2(&extreme, &negative) }, -127 * 127 * 64);
        }
    }

    #[test]
    fn window_cosines_sum_the_groups_unit_vectors() {
        let mut v = Vectors::default();
        v.upsert(1, &[2.0, 0.0, 0.0, 0.0]);
        v.upsert(2, &[0.0, 0.5, 0.0, 0.0]);
        let got = v.window_cosines(&[1.0, 1.0, 0.0, 0.0], &[vec![1], vec![1, 2], vec![9]]);
        assert!(
            (got[0].unwrap() - std::f64::consts::FRAC_1_SQRT_2).abs() < 0.01,
            "{got:?}"
        );
        assert!(
            (got[1].unwrap() - 1.0).abs() < 0.01,
            "lengths do not count: {got:?}"
        );
        assert_eq!(got[2], None, "no vector in the group");
        assert_eq!(v.window_cosines(&[1.0], &[vec![1]]), vec![None]);
    }

    #[test]
    fn the_first_pass_keeps_exactly_the_best_partial_scores() {
        let mut v = Vectors::default();
        for k in 0..3_000 {
            v.upsert(k, &pca_like(k as u64, 64));
        }
        let q: Vec<i8> = pca_like(9, 64)[..HEAD]
            .iter()
            .map(|x| (x * 400.0).clamp(-127.0, 127.0) as i8)
            .collect();
        let mut all: Vec<(usize, f32)> = (0..v.len())
            .map(|i| {
                let h: &[i8; HEAD] = v.head[i * HEAD..(i + 1) * HEAD].try_into().unwrap();
                (
                    i,
                    dot_head(h, q[..].try_into().unwrap()) as f32 * v.factors[i],
                )
            })
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for n in [1, 17, 500, 2_999, 3_000, 5_000] {
            let mut got = v.first_pass(&q, n);
            got.sort_unstable();
            let mut want: Vec<usize> = all.iter().take(n).map(|x| x.0).collect();
            want.sort_unstable();
            assert_eq!(got, want, "n = {n}");
        }
    }

    #[test]
    fn the_best_are_kept_in_a_bounded_heap() {
        let scores = [0.1, 0.9, 0.5, 0.9, 0.3, 0.7];
        let of = |n, floor| {
            let mut rows: Vec<usize> =
                Best::of_indexed(scores.iter().copied().enumerate(), n, floor)
                    .into_iter()
                    .map(|(i, _)| i)
                    .collect();
            rows.sort();
            rows
        };
        assert_eq!(of(3, 0.2), vec![1, 3, 5]);
        assert_eq!(of(10, 0.6).len(), 3);
        assert!(of(0, 0.0).is_empty());
    }

    #[test]
    fn the_size_follows_puts_and_removals_of_a_loaded_scope() {
        let index = VectorIndex::new(1 << 20);
        let row = [0.5f32; 128];
        // Not held: a put is left for the load.
        index.put_if_loaded(1, "m", 10, &row);
        assert!(index.get(1, "m").is_none());
        index.update(1, "m", |v| {
            v.upsert(1, &row);
            v.loaded = true;
        });
        let one = index.bytes();
        assert!(one > 0);
        for k in 2..=50 {
            index.put_if_loaded(1, "m", k, &row);
        }
        assert_eq!(index.bytes(), 50 * one);
        for k in 1..=50 {
            index.forget(1, Some(k));
        }
        assert_eq!(index.bytes(), 0);
        // Forgetting what is not held, or twice, never takes the count below zero.
        index.forget(1, Some(7));
        index.forget(1, None);
        index.forget(1, None);
        index.scopes.resized(1_000, 0);
        assert_eq!(index.bytes(), 0);
        index.update(2, "m", |v| v.upsert(1, &row));
        assert_eq!(index.bytes(), one);
    }

    #[test]
    fn forgetting_and_the_bound() {
        // Scopes of 3,840 bytes each (20 rows of 128 dimensions, their heads and keys):
        // two pass the bound.
        let index = VectorIndex::new(7_000);
        for uid in 0..3 {
            index.update(uid, "m", |v| {
                for k in 0..20 {
                    v.upsert(k, &[1.0; 128]);
                }
            });
        }
        assert!(index.bytes() <= 7_000, "{}", index.bytes());
        assert!(
            index.get(0, "m").is_none(),
            "the least recently searched went first"
        );
        assert!(index.get(2, "m").is_some());
        index.forget(2, Some(5));
        assert_eq!(lock(&index.get(2, "m").unwrap()).len(), 19);
        index.forget(2, None);
        assert!(index.get(2, "m").is_none());
    }
}
