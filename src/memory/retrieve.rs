//! Ranking, independent of any backend: BM25 over analyzed terms with per-user
//! statistics, cosine similarity, weighted score fusion and
//! de-duplication; and the [`Embedder`] interface that semantic ranking uses.
//!
//! What was measured on the LoCoMo dev file (one memory per turn, categories 1-4,
//! turn-level recall_any@5), and therefore is the default:
//! - BM25 on the analyzer's terms (stop words removed, Snowball stems): 0.60 (plain
//!   tokens: 0.51);
//! - length normalisation `b = 0.3` instead of 0.75: +0.02 (short chat turns are
//!   over-rewarded by the usual `b`);
//! - the neighbouring turns and the session as context ([`super::context`]): +0.13 at
//!   @5 (0.630 → 0.76);
//! - proper-noun boosts and other `k1` values changed nothing measurable, so there are none.

use std::collections::HashMap;
use std::hash::Hash;

use super::store::BoxFuture;
use super::text::Analyzer;

/// BM25 parameters.
#[derive(Debug, Clone, Copy)]
pub struct Bm25 {
    /// Term-frequency saturation.
    pub k1: f64,
    /// Length normalisation (0 = none, 1 = full).
    pub b: f64,
}

impl Default for Bm25 {
    fn default() -> Self {
        Self { k1: 1.2, b: 0.3 }
    }
}

/// Weight of the dense (vector) window scores in [`fuse`]; lexical scores weigh 1.
///
/// Measured on the LoCoMo dev file with the built-in static model and the context-aware
/// lexical ranking ([`super::context`]), recall_any@1/@5/@10: lexical alone
/// 0.466/0.762/0.842. Fusing each memory's own cosine (as until 2026-12-07) changed
/// nothing at weight 0.15 and lost at 0.4 (0.403/0.732/0.824): an answer turn ("Yes,
/// adoption agencies!") embeds poorly alone. Its *window* (the sum of its and its
/// neighbours' vectors, [`DENSE_WINDOW`]) carries the topic: weight 0.1 0.461/0.766/0.845,
/// 0.15 0.466/0.770/0.850, **0.2 0.462/0.770/0.851**, 0.25 0.464/0.770/0.843; a ±2
/// window 0.845-0.849; no neighbours 0.842. The peak is narrow (tuned on the dev file; a
/// leave-one-conversation-out fit of every lexical and dense signal reached 0.843-0.845).
pub const DENSE_WEIGHT: f64 = 0.2;

/// Memories on each side of a memory (of its session) whose vectors form its dense window.
pub const DENSE_WINDOW: i64 = 1;

/// Least cosine for a memory to enter the dense ranking: below it a vector match is
/// noise (unrelated texts score 0.05-0.2 with the built-in model; a paraphrase can sit
/// below 0.3, as "own a dog" against "adopted a puppy" in tests/semantic.rs does), and a
/// query that matches nothing must not bring memories along.
pub const MIN_COSINE: f32 = 0.2;

/// The memories a hybrid search fuses: the lexical ranking's (cut to the pool before) and
/// the dense ranking's whose own cosine reaches `alone_floor` (a dense match alone must be
/// a strong one), in ascending key order.
pub fn fusion_candidates<K: Copy + Ord>(
    lexical: &[(K, f64)],
    dense: &[(K, f64)],
    alone_floor: f32,
) -> Vec<K> {
    let mut keys: Vec<K> = lexical.iter().map(|x| x.0).collect();
    keys.sort_unstable();
    let alone: Vec<K> = dense
        .iter()
        .filter(|(k, s)| *s >= f64::from(alone_floor) && keys.binary_search(k).is_err())
        .map(|x| x.0)
        .collect();
    keys.extend(alone);
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Weighted score fusion of a lexical ranking (best first) with the dense window cosines
/// of `candidates` (from [`fusion_candidates`]; `None`: no vector there): lexical scores
/// divided by the best (BM25 has a natural zero), window cosines min-max normalised over
/// the candidates (one, or all equal: each counts in full), and the fused score is
/// `lexical + dense_weight * dense`. Unlike rank fusion, a clearly better match in one
/// list keeps its lead.
pub fn fuse<K: Copy + Eq + Hash + Ord>(
    lexical: &[(K, f64)],
    candidates: &[K],
    window_cosines: &[Option<f64>],
    dense_weight: f64,
) -> Vec<(K, f64)> {
    let mut total: HashMap<K, f64> = HashMap::with_capacity(candidates.len());
    let lex_max = lexical.iter().map(|x| x.1).fold(0.0, f64::max);
    if lex_max > 0.0 {
        for &(k, s) in lexical {
            total.insert(k, s / lex_max);
        }
    }
    let (lo, hi) = window_cosines
        .iter()
        .flatten()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &c| (lo.min(c), hi.max(c)));
    for (k, c) in candidates.iter().zip(window_cosines) {
        let norm = match c {
            Some(c) if hi > lo => (c - lo) / (hi - lo),
            Some(_) => 1.0,
            None => 0.0,
        };
        *total.entry(*k).or_default() += dense_weight * norm;
    }
    let mut out: Vec<(K, f64)> = total.into_iter().collect();
    sort_desc(&mut out);
    out
}

/// Collection statistics of one user's memories.
#[derive(Debug, Clone, Copy)]
pub struct CorpusStats {
    /// Number of memories.
    pub docs: u64,
    /// Total number of terms over them.
    pub terms: u64,
}

impl CorpusStats {
    /// Average number of terms per memory (at least 1).
    pub fn avg_len(&self) -> f64 {
        if self.docs == 0 {
            1.0
        } else {
            (self.terms as f64 / self.docs as f64).max(1.0)
        }
    }
}

/// What lexical scoring needs of one candidate memory.
#[derive(Debug, Clone)]
pub struct Candidate<'a, K> {
    pub key: K,
    /// The memory's analyzed terms, space separated (as stored).
    pub terms: &'a str,
    /// Number of terms (document length).
    pub len: u32,
}

impl Bm25 {
    /// Inverse document frequency (the non-negative BM25+ form).
    pub fn idf(df: u64, docs: u64) -> f64 {
        let (df, n) = (df as f64, docs.max(df) as f64);
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// Scores candidates for `query_terms`; `df` maps each query term to the number of the
    /// user's memories containing it. Candidates that match nothing are left out.
    ///
    /// Query terms are few (at most [`crate::memory::text::MAX_QUERY_TERMS`]), so a
    /// memory's terms are matched against them by a linear scan, with no hashing and no
    /// allocation per candidate.
    pub fn score<K: Copy>(
        &self,
        query_terms: &[String],
        df: &HashMap<String, u64>,
        stats: CorpusStats,
        candidates: &[Candidate<'_, K>],
    ) -> Vec<(K, f64)> {
        let idf: Vec<(&str, f64)> = query_terms
            .iter()
            .map(|t| {
                let d = df.get(t).copied().unwrap_or(0);
                (t.as_str(), Self::idf(d, stats.docs))
            })
            .collect();
        let idf_only: Vec<f64> = idf.iter().map(|x| x.1).collect();
        let avg = stats.avg_len();
        let mut out = Vec::with_capacity(candidates.len());
        let mut tf = vec![0u32; idf.len()];
        for c in candidates {
            tf.iter_mut().for_each(|f| *f = 0);
            let mut matched = false;
            for t in c.terms.split_ascii_whitespace() {
                if let Some(i) = idf.iter().position(|(q, _)| same_term(q, t)) {
                    tf[i] += 1;
                    matched = true;
                }
            }
            if !matched {
                continue;
            }
            out.push((c.key, self.weight(&tf, &idf_only, c.len, avg)));
        }
        out
    }

    /// BM25 of one text: `tf[i]` occurrences of the query term whose IDF is `idf[i]`, in
    /// a text of `len` terms where texts average `avg` terms.
    pub fn weight(&self, tf: &[u32], idf: &[f64], len: u32, avg: f64) -> f64 {
        let norm = self.k1 * (1.0 - self.b + self.b * f64::from(len.max(1)) / avg);
        tf.iter()
            .zip(idf)
            .filter(|(&f, _)| f > 0)
            .map(|(&f, idf)| {
                let f = f64::from(f);
                idf * f * (self.k1 + 1.0) / (f + norm)
            })
            .sum()
    }
}

/// Whether two terms are equal, their lengths and first bytes compared first: most pairs
/// differ there, and a search compares thousands of them (a `memcmp` call each was a
/// quarter of a search's CPU).
#[inline]
pub fn same_term(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

/// Sorts by score, best first; ties go to the smaller key (for memories: the older one),
/// so that rankings are deterministic.
pub fn sort_desc<K: Ord>(list: &mut [(K, f64)]) {
    list.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
}

/// Cosine similarity; 0 for mismatched or zero vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// Keeps the first (best) entry of each group of equal `dedup_key`s.
pub fn dedup<K, D: Eq + Hash>(ranked: Vec<(K, f64)>, dedup_key: impl Fn(&K) -> D) -> Vec<(K, f64)> {
    let mut seen = std::collections::HashSet::new();
    ranked
        .into_iter()
        .filter(|(k, _)| seen.insert(dedup_key(k)))
        .collect()
}

/// f32 vector ↔ little-endian bytes, the stored form of embeddings.
pub fn vector_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Reads a vector stored by [`vector_to_bytes`].
pub fn vector_from_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Why texts could not be embedded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("embedding failed: {0}")]
pub struct EmbedError(pub String);

/// Turns texts into vectors (one per text, same order). The server's implementation
/// calls the `/embeddings` of the model named by `memory.embedding_model`.
pub trait Embedder: Send + Sync {
    /// The model name, stored with each vector so that vectors of different models are
    /// never compared.
    fn model(&self) -> &str;
    /// Embeds `texts`.
    fn embed<'a>(&'a self, texts: &'a [String])
        -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>>;
    /// Least cosine for a memory found by meaning alone (none of the query's terms in
    /// it) to be returned; [`MIN_COSINE`] unless the model is calibrated.
    fn alone_floor(&self) -> f32 {
        MIN_COSINE
    }
}

/// An offline embedder for tests: hashed bag of analyzed terms (feature hashing),
/// L2-normalised. Deterministic; semantically it is only a lexical model in vector form.
pub struct HashEmbedder {
    dim: usize,
    analyzer: Analyzer,
}

impl HashEmbedder {
    /// An embedder of `dim` dimensions.
    pub fn new(dim: usize) -> Self {
        Self {
            dim: dim.max(1),
            analyzer: Analyzer::default(),
        }
    }

    /// Embeds one text synchronously.
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dim];
        for t in self.analyzer.terms(text) {
            let h = super::text::content_hash(&t) as u64;
            let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
            v[(h % self.dim as u64) as usize] += sign;
        }
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if n > 0.0 {
            v.iter_mut().for_each(|x| *x /= n);
        }
        v
    }
}

impl Embedder for HashEmbedder {
    fn model(&self) -> &str {
        "memproxy-hash-test"
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
        let out = texts.iter().map(|t| self.vector(t)).collect();
        Box::pin(async move { Ok(out) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyzed(text: &str) -> (String, u32) {
        let terms = Analyzer::default().terms(text);
        (terms.join(" "), terms.len() as u32)
    }

    #[test]
    fn bm25_prefers_rare_terms_and_matches() {
        let a = Analyzer::default();
        let texts = [
            analyzed("I prefer tabs over spaces"),
            analyzed("spaces spaces everywhere"),
            analyzed("the weather is nice"),
        ];
        let docs: Vec<Candidate<u32>> = (1..)
            .zip(&texts)
            .map(|(key, (terms, len))| Candidate {
                key,
                terms,
                len: *len,
            })
            .collect();
        let q = a.query_terms("tabs or spaces?");
        let df = HashMap::from([("tab".to_string(), 1), ("space".to_string(), 2)]);
        let mut s = Bm25::default().score(&q, &df, CorpusStats { docs: 3, terms: 9 }, &docs);
        sort_desc(&mut s);
        assert_eq!(s.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn fusion_weighs_normalised_scores() {
        // 1 is best lexically, 3 best densely, 2 good in both.
        let lexical = [(1, 10.0), (2, 8.0)];
        let dense = [(3, 0.9), (2, 0.85), (4, 0.5)];
        let keys = fusion_candidates(&lexical, &dense, MIN_COSINE);
        assert_eq!(keys, vec![1, 2, 3, 4]);
        let cosines = [Some(0.5), Some(0.85), Some(0.9), None];
        let fused = fuse(&lexical, &keys, &cosines, 1.0);
        assert_eq!(fused[0].0, 2);
        assert_eq!(fused.len(), 4);
        // The lowest window cosine normalises to 0, a memory without a vector scores 0.
        assert_eq!(fused[3], (4, 0.0));
        let only = fuse(&lexical, &[1, 2], &[None, None], DENSE_WEIGHT);
        assert_eq!(only, vec![(1, 1.0), (2, 0.8)]);
        // A lone dense match (nothing lexical) is still found.
        assert_eq!(
            fuse::<i32>(&[], &[5], &[Some(0.6)], DENSE_WEIGHT),
            vec![(5, DENSE_WEIGHT)]
        );
    }

    #[test]
    fn a_dense_match_alone_needs_the_floor() {
        let lexical = [(1, 4.0)];
        let dense = [(2, 0.5), (1, 0.3), (3, 0.3)];
        // 3 is a dense match alone below the floor; 1 is a lexical one, whatever its cosine.
        assert_eq!(fusion_candidates(&lexical, &dense, 0.45), vec![1, 2]);
        assert!(fusion_candidates::<i32>(&[], &[(5, 0.44)], 0.45).is_empty());
    }

    #[test]
    fn dedup_keeps_best() {
        let out = dedup(vec![(1, 3.0), (2, 2.0), (3, 1.0)], |k| k % 2);
        assert_eq!(out, vec![(1, 3.0), (2, 2.0)]);
    }

    #[test]
    fn vectors_roundtrip_and_cosine() {
        let v = vec![0.5f32, -1.25, 3.0];
        assert_eq!(vector_from_bytes(&vector_to_bytes(&v)), v);
        assert!((cosine(&v, &v) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&v, &[1.0]), 0.0);
        let e = HashEmbedder::new(64);
        assert!(cosine(&e.vector("tabs over spaces"), &e.vector("Tabs, spaces")) > 0.5);
    }
}
