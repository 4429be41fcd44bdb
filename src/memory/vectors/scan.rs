//! The scans of a scope's vectors: the first pass over the heads, full scores, and the
//! integer dot products they are made of (AVX2 builds where the CPU has it).

use std::cmp::{Ordering as Order, Reverse};
use std::collections::BinaryHeap;

use super::*;

impl Vectors {
    /// The rows of the `n` best partial scores (the heads' dot products with `qhead`),
    /// in no order. Rather than keep a heap of `n` over every row, it takes a threshold
    /// from a sample (every 16th score) that about `n` scores pass, keeps those, and
    /// selects among them: exact whenever at least `n` pass, else it selects among all.
    pub(super) fn first_pass(&mut self, qhead: &[i8], n: usize) -> Vec<usize> {
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
pub(super) fn avx2() -> bool {
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
pub(super) fn full_scores(
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
pub(super) struct Rows<'a> {
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
pub(super) unsafe fn dot_avx2(a: &[i8], b: &[i8]) -> i32 {
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
pub(super) fn dot_head(a: &[i8; HEAD], b: &[i8; HEAD]) -> i32 {
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
pub(super) struct Best;

impl Best {
    /// The `n` best `(row, score)` of at least `floor`.
    pub(super) fn of_indexed(
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
pub(super) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
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
