//! Lexical ranking, independent of any backend: the candidates a backend reads
//! ([`preselect`]), their BM25 ([`own_scores`]), then conversational context: a memory is
//! scored as itself, as the window of its neighbouring memories of the same session, and
//! as part of its session; a memory whose subject (first term) the query names is
//! preferred.
//!
//! Chat memories are turns: the answer to "what did Caroline research?" is often a turn
//! that does not repeat the question's words ("Yes, adoption agencies!") right after one
//! that does. Measured on the LoCoMo dev file (760 questions, turn-level recall_any@5 /
//! @10, lexical only, `memproxy-bench eval-locomo`): the former ranking (BM25 plus a fifth
//! of each neighbour's score) 0.649 / 0.728, this one 0.762 / 0.842. In an offline replay
//! of the same ranking, step by step from plain BM25 (0.630 / 0.700): the window (±2
//! turns, weight 1.5) +0.09 / +0.11, the session score (0.7) +0.01, the subject boost
//! (0.5) +0.03 / +0.02.

use std::borrow::Cow;
use std::collections::HashMap;

use foldhash::{HashMap as FastMap, HashMapExt};

use super::retrieve::{same_term, sort_desc, Bm25, Candidate, CorpusStats, DENSE_WINDOW};

/// Memories on each side of a memory that form its window (same session only).
pub const WINDOW: i64 = 2;
/// Weight of the window's normalised BM25 against the memory's own (1).
pub const WINDOW_WEIGHT: f64 = 1.5;
/// The best memories by their own score whose windows are scored; more changed nothing
/// measurable on LoCoMo and costs a lookup per neighbour.
pub const WINDOW_SOURCES: usize = 30;
/// Weight of the session's normalised score.
pub const SESSION_WEIGHT: f64 = 0.7;
/// A memory whose first term is a query term ("Caroline: …" for "what did Caroline …",
/// "User prefers tabs" for "what does the user prefer") scores `1 + SUBJECT_BOOST` times.
pub const SUBJECT_BOOST: f64 = 0.5;

/// Candidates (by summed IDF of their matching terms) re-ranked with exact BM25. Summed
/// IDF already orders them nearly as BM25 does (BM25 adds term counts and length), so 100
/// rather than 200 changed LoCoMo recall_any@5 by one question in 760 (0.650 -> 0.649) and
/// made the proxy benchmark's search (`bench-memory --query`, 100k memories of one user)
/// ~35 % faster.
pub const RERANK: usize = 100;

/// Each row id of the terms' match lists with the sum of the IDFs of the lists holding
/// it, newest first. Every list is in descending row-id order (as the backends read
/// them), so this is a merge of the lists: no hashing of the thousands of matches.
fn summed_idf(lists: &[(Vec<i64>, f64)]) -> Vec<(i64, f64)> {
    debug_assert!(lists.iter().all(|l| l.0.windows(2).all(|w| w[0] > w[1])));
    let longest = lists.iter().map(|l| l.0.len()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(longest * 2);
    let mut next = vec![0usize; lists.len()];
    loop {
        let head = lists
            .iter()
            .zip(&next)
            .filter_map(|(l, &i)| l.0.get(i).copied())
            .max();
        let Some(rid) = head else {
            return out;
        };
        let mut sum = 0.0;
        for (l, i) in lists.iter().zip(next.iter_mut()) {
            if l.0.get(*i) == Some(&rid) {
                sum += l.1;
                *i += 1;
            }
        }
        out.push((rid, sum));
    }
}

/// The candidates worth reading, from each query term's matches (newest first) and IDF:
/// the best [`RERANK`] by the summed IDF of the terms they contain (ties to the newer).
pub fn preselect(matches: &[(Vec<i64>, f64)]) -> Vec<i64> {
    let mut keys = summed_idf(matches);
    if keys.len() > RERANK {
        keys.select_nth_unstable_by(RERANK - 1, |a, b| {
            b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0))
        });
        keys.truncate(RERANK);
    }
    keys.into_iter().map(|x| x.0).collect()
}

/// BM25 of the candidates `keys` that were read into `known`, best first (those that
/// match nothing are left out).
pub fn own_scores(
    bm25: &Bm25,
    query_terms: &[String],
    df: &HashMap<String, u64>,
    stats: CorpusStats,
    keys: &[i64],
    known: &Known<'_>,
) -> Vec<(i64, f64)> {
    let candidates: Vec<Candidate<i64>> = keys
        .iter()
        .filter_map(|k| {
            known.get(k).map(|l| Candidate {
                key: *k,
                terms: &l.terms,
                len: l.len,
            })
        })
        .collect();
    let mut own = bm25.score(query_terms, df, stats, &candidates);
    sort_desc(&mut own);
    own
}

/// The lights a search has read, by key: borrowed from an index that holds the scope,
/// or read from the database (a copy of each candidate's terms was 6 % of a search of a
/// held scope).
pub type Known<'a> = FastMap<i64, Cow<'a, Light>>;

/// What ranking needs of one memory, as the backends read it.
#[derive(Debug, Clone)]
pub struct Light {
    /// Its session; memories without one have no window and no session score.
    pub session_id: Option<String>,
    /// [`crate::memory::text::content_hash`] of its content (for de-duplication).
    pub hash: i64,
    /// The memory's analyzed terms, space separated (as stored).
    pub terms: String,
    /// Number of terms.
    pub len: u32,
}

/// The memories whose [`Light`]s [`rank`] needs besides the candidates': those within
/// [`WINDOW`] of the best [`WINDOW_SOURCES`] of `own` (best first) that have a session
/// (`known` holds the candidates). Keys are adjacent integers in write order (a user's row
/// ids or sequence numbers).
pub fn window_keys(own: &[(i64, f64)], known: &Known<'_>) -> Vec<i64> {
    let mut keys: Vec<i64> = own
        .iter()
        .take(WINDOW_SOURCES)
        .filter(|(k, _)| known.get(k).is_some_and(|l| l.session_id.is_some()))
        .flat_map(|&(k, _)| (k - WINDOW..=k + WINDOW).filter(move |n| *n != k))
        .filter(|n| *n >= 0 && !known.contains_key(n))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Each candidate's dense window (a hybrid search's [`super::retrieve::fuse`]): itself and
/// its neighbours within [`DENSE_WINDOW`] of the same session that are in `known` (a
/// candidate without a session is its window alone).
pub fn dense_windows(candidates: &[i64], known: &Known<'_>) -> Vec<Vec<i64>> {
    candidates
        .iter()
        .map(|&k| {
            let session = known.get(&k).and_then(|l| l.session_id.as_deref());
            (k - DENSE_WINDOW..=k + DENSE_WINDOW)
                .filter(|&n| {
                    n == k
                        || session.is_some()
                            && known.get(&n).and_then(|l| l.session_id.as_deref()) == session
                })
                .collect()
        })
        .collect()
}

/// The keys whose lights [`dense_windows`] needs besides those `known`.
pub fn dense_window_keys(candidates: &[i64], known: &Known<'_>) -> Vec<i64> {
    let mut keys: Vec<i64> = candidates
        .iter()
        .flat_map(|&k| k - DENSE_WINDOW..=k + DENSE_WINDOW)
        .filter(|n| *n >= 0 && !known.contains_key(n))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Term frequencies of the query terms in `terms`, added to `tf`.
fn count(query: &[&str], terms: &str, tf: &mut [u32]) {
    for t in terms.split_ascii_whitespace() {
        if let Some(i) = query.iter().position(|q| same_term(q, t)) {
            tf[i] += 1;
        }
    }
}

fn normalise(scores: &mut FastMap<i64, f64>) {
    let max = scores.values().copied().fold(0.0, f64::max);
    if max > 0.0 {
        scores.values_mut().for_each(|s| *s /= max);
    }
}

/// Ranks memories for `query_terms` from their own BM25 scores (`own`: every matching
/// candidate, best first) and `docs` (the candidates' and [`window_keys`]'s memories as far
/// as they exist): `own / max + WINDOW_WEIGHT × window / max + SESSION_WEIGHT × session /
/// max`, times `1 + SUBJECT_BOOST` for a memory whose first term the query names.
///
/// The window of a memory is itself and its neighbours within [`WINDOW`] of the same
/// session, scored by BM25 as one text (per-user IDF; average length `2 × WINDOW + 1` times
/// the memories'). A session's score sums, over the query terms, `idf × n / (n + 1)` where
/// `n` is the number of its candidates containing the term.
pub fn rank(
    bm25: &Bm25,
    query_terms: &[String],
    df: &HashMap<String, u64>,
    stats: CorpusStats,
    own: &[(i64, f64)],
    docs: &Known<'_>,
) -> Vec<(i64, f64)> {
    if own.is_empty() {
        return vec![];
    }
    let query: Vec<&str> = query_terms.iter().map(String::as_str).collect();
    let idf: Vec<f64> = query
        .iter()
        .map(|t| Bm25::idf(df.get(*t).copied().unwrap_or(0), stats.docs))
        .collect();
    let session_of = |k: i64| docs.get(&k).and_then(|d| d.session_id.as_deref());
    let mut total: FastMap<i64, f64> = own.iter().copied().collect();
    normalise(&mut total);

    // Each known memory's query-term frequencies, counted once.
    let n = query.len();
    let mut arena = vec![0u32; docs.len() * n];
    let mut slot: FastMap<i64, usize> = FastMap::with_capacity(docs.len());
    for (i, (k, d)) in docs.iter().enumerate() {
        count(&query, &d.terms, &mut arena[i * n..(i + 1) * n]);
        slot.insert(*k, i);
    }
    let tf_of = |k: i64| slot.get(&k).map(|&i| &arena[i * n..(i + 1) * n]);

    // Windows of the best memories and of their neighbours.
    let window_avg = stats.avg_len() * (2 * WINDOW + 1) as f64;
    let mut window: FastMap<i64, f64> = FastMap::new();
    let mut tf = vec![0u32; n];
    for &(source, _) in own.iter().take(WINDOW_SOURCES) {
        let Some(session) = session_of(source) else {
            continue;
        };
        for k in source - WINDOW..=source + WINDOW {
            if window.contains_key(&k) || session_of(k) != Some(session) {
                continue;
            }
            tf.iter_mut().for_each(|f| *f = 0);
            let mut len = 0;
            for m in k - WINDOW..=k + WINDOW {
                if let (Some(d), Some(f)) = (docs.get(&m), tf_of(m)) {
                    if d.session_id.as_deref() == Some(session) {
                        tf.iter_mut().zip(f).for_each(|(a, b)| *a += b);
                        len += d.len;
                    }
                }
            }
            window.insert(k, bm25.weight(&tf, &idf, len, window_avg));
        }
    }
    normalise(&mut window);
    for (k, w) in window {
        *total.entry(k).or_default() += WINDOW_WEIGHT * w;
    }

    // Sessions, by the query terms their candidates contain.
    let mut per_session: FastMap<&str, Vec<u32>> = FastMap::new();
    for &(k, _) in own {
        if let (Some(f), Some(s)) = (tf_of(k), session_of(k)) {
            let counts = per_session.entry(s).or_insert_with(|| vec![0; n]);
            counts
                .iter_mut()
                .zip(f)
                .for_each(|(c, p)| *c += u32::from(*p > 0));
        }
    }
    let session_score: FastMap<&str, f64> = per_session
        .into_iter()
        .map(|(s, counts)| {
            let v = counts
                .iter()
                .zip(&idf)
                .map(|(&n, idf)| idf * f64::from(n) / (f64::from(n) + 1.0))
                .sum::<f64>();
            (s, v)
        })
        .collect();
    let best_session = session_score.values().copied().fold(0.0, f64::max);

    let mut out: Vec<(i64, f64)> = total
        .into_iter()
        .map(|(k, mut s)| {
            if best_session > 0.0 {
                if let Some(v) = session_of(k).and_then(|x| session_score.get(x)) {
                    s += SESSION_WEIGHT * v / best_session;
                }
            }
            let subject = docs
                .get(&k)
                .and_then(|d| d.terms.split_ascii_whitespace().next());
            if subject.is_some_and(|t| query.contains(&t)) {
                s *= 1.0 + SUBJECT_BOOST;
            }
            (k, s)
        })
        .collect();
    sort_desc(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::text::Analyzer;

    struct Corpus {
        texts: Vec<(String, u32, Option<&'static str>)>,
    }

    impl Corpus {
        fn new(turns: &[(&str, Option<&'static str>)]) -> Self {
            let a = Analyzer::default();
            Self {
                texts: turns
                    .iter()
                    .map(|(t, s)| {
                        let terms = a.terms(t);
                        (terms.join(" "), terms.len() as u32, *s)
                    })
                    .collect(),
            }
        }

        fn rank(&self, question: &str) -> Vec<i64> {
            let q = Analyzer::default().query_terms(question);
            let docs: Known<'_> = self
                .texts
                .iter()
                .enumerate()
                .map(|(i, (terms, len, session))| {
                    (
                        i as i64,
                        Cow::Owned(Light {
                            session_id: session.map(str::to_string),
                            hash: i as i64,
                            terms: terms.clone(),
                            len: *len,
                        }),
                    )
                })
                .collect();
            let mut df = HashMap::new();
            for t in &q {
                let n = self
                    .texts
                    .iter()
                    .filter(|(terms, ..)| terms.split(' ').any(|x| x == t))
                    .count();
                df.insert(t.clone(), n as u64);
            }
            let stats = CorpusStats {
                docs: self.texts.len() as u64,
                terms: self.texts.iter().map(|x| u64::from(x.1)).sum(),
            };
            let candidates: Vec<_> = docs
                .iter()
                .map(|(k, d)| crate::memory::retrieve::Candidate {
                    key: *k,
                    terms: &d.terms,
                    len: d.len,
                })
                .collect();
            let mut own = Bm25::default().score(&q, &df, stats, &candidates);
            sort_desc(&mut own);
            assert!(window_keys(&own, &docs).iter().all(|k| *k >= 0));
            rank(&Bm25::default(), &q, &df, stats, &own, &docs)
                .into_iter()
                .map(|x| x.0)
                .collect()
        }
    }

    #[test]
    fn the_answer_after_the_question_is_found() {
        let c = Corpus::new(&[
            ("Mel: did you ever research adoption agencies?", Some("a")),
            (
                "Caroline: yes, the ones that support LGBTQ families",
                Some("a"),
            ),
            ("Mel: the weather is lovely today", Some("b")),
            ("Caroline: I love the weather at the lake", Some("b")),
        ]);
        let ranked = c.rank("Which adoption agencies did Caroline look at?");
        assert_eq!(&ranked[..2], &[1, 0], "{ranked:?}");
    }

    #[test]
    fn windows_stop_at_session_boundaries() {
        let c = Corpus::new(&[
            ("I bought a red bicycle", Some("a")),
            ("nice", Some("b")),
            ("unrelated words here", None),
        ]);
        let ranked = c.rank("red bicycle");
        assert_eq!(ranked, vec![0], "only the matching memory: {ranked:?}");
    }

    #[test]
    fn the_subject_named_by_the_query_wins_a_tie() {
        let c = Corpus::new(&[
            ("Mel: I went hiking last week", None),
            ("Jon: I went hiking last week", None),
        ]);
        assert_eq!(c.rank("Where did Jon go hiking?")[0], 1);
        assert_eq!(c.rank("Where did Mel go hiking?")[0], 0);
    }

    #[test]
    fn dense_windows_keep_to_the_session() {
        let light = |s: Option<&str>| {
            Cow::Owned(Light {
                session_id: s.map(str::to_string),
                hash: 0,
                terms: String::new(),
                len: 0,
            })
        };
        let known: Known<'_> = [
            (4, light(Some("a"))),
            (5, light(Some("a"))),
            (6, light(Some("b"))),
            (8, light(None)),
            (9, light(None)),
        ]
        .into_iter()
        .collect();
        let windows = dense_windows(&[5, 8, 20], &known);
        assert_eq!(windows, vec![vec![4, 5], vec![8], vec![20]]);
        assert_eq!(dense_window_keys(&[5, 8, 20], &known), vec![7, 19, 20, 21]);
    }

    #[test]
    fn summed_idf_merges_descending_lists() {
        let lists = [
            (vec![9, 5, 2], 1.0),
            (vec![7, 5], 2.0),
            (vec![], 8.0),
            (vec![9, 1], 4.0),
        ];
        assert_eq!(
            summed_idf(&lists),
            vec![(9, 5.0), (7, 2.0), (5, 3.0), (2, 1.0), (1, 4.0)]
        );
        assert!(summed_idf(&[]).is_empty());
    }
}
