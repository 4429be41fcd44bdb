//! `bench-vectors`: the in-memory vector index's two-pass search measured against its exact
//! full scan, with the built-in embedding model: how many of the exact best the two passes
//! find (recall of the pool a hybrid search fuses), and how long each takes.
//!
//! The memories are LoCoMo's turns (real text, when `--file` is given) and synthetic
//! memories up to each size, all of one scope; the queries are LoCoMo's questions, or
//! synthetic user messages.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use memproxy::memory::embed::StaticModel;
use memproxy::memory::vectors::{self, Vectors};

use crate::membench::{percentile, Rng, Vocabulary};

/// What to measure.
pub struct Options<'a> {
    pub model: &'a Path,
    pub file: Option<&'a str>,
    pub sizes: &'a [u64],
    pub queries: usize,
    pub pool: usize,
    pub seed: u64,
}

/// The figures of one size.
pub struct Report {
    pub size: usize,
    pub queries: usize,
    /// Share of the exact best `pool` the two passes found.
    pub recall: f64,
    /// Share of the exact best 10 the two passes found.
    pub recall_10: f64,
    pub exact: (Duration, Duration),
    pub two_passes: (Duration, Duration),
    pub bytes: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "{:>9} {:>7} {:>8.4} {:>8.4} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>8.1}",
            self.size,
            self.queries,
            self.recall,
            self.recall_10,
            ms(self.exact.0),
            ms(self.exact.1),
            ms(self.two_passes.0),
            ms(self.two_passes.1),
            self.bytes as f64 / (1 << 20) as f64,
        )
    }
}

/// The column names of [`Report`]'s lines.
pub fn header() -> String {
    format!(
        "{:>9} {:>7} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8}",
        "vectors", "queries", "recall", "rec@10", "ex p50", "ex p99", "2p p50", "2p p99", "MiB"
    )
}

/// Runs every size; `progress` gets a line now and then.
pub fn run(opts: &Options<'_>, progress: &mut dyn FnMut(String)) -> Result<Vec<Report>, String> {
    let model = StaticModel::load(opts.model).map_err(|e| e.to_string())?;
    let vocab = Vocabulary::new(50_000, 1.0);
    let mut rng = Rng::new(opts.seed);
    let (turns, questions) = match opts.file {
        Some(path) => {
            let convs = crate::eval::parse(path).map_err(|e| e.to_string())?;
            let turns: Vec<String> = convs
                .iter()
                .flat_map(|c| c.turns.iter().map(|t| t.1.clone()))
                .collect();
            let questions: Vec<String> = convs
                .iter()
                .flat_map(|c| c.questions.iter().map(|q| q.0.clone()))
                .collect();
            (turns, questions)
        }
        None => (vec![], vec![]),
    };
    let queries: Vec<Vec<f32>> = (0..opts.queries)
        .map(|i| match questions.get(i) {
            Some(q) => model.vector(q),
            None => model.vector(&vocab.user_message(&mut rng)),
        })
        .collect();
    let mut out = Vec::new();
    let mut v = Vectors::default();
    let mut held = 0usize;
    for &size in opts.sizes {
        let size = size as usize;
        progress(format!("embedding memories up to {size}"));
        while held < size {
            let text = match turns.get(held) {
                Some(t) => t.clone(),
                None => vocab.memory_text(&mut rng),
            };
            v.upsert(held as i64, &model.vector(&text));
            held += 1;
        }
        let (mut exact_t, mut two_t) = (Vec::new(), Vec::new());
        let (mut found, mut wanted, mut found_10, mut wanted_10) = (0, 0, 0, 0);
        for q in &queries {
            let t = Instant::now();
            let exact = v.scored_exact(q, opts.pool);
            exact_t.push(t.elapsed());
            let t = Instant::now();
            let two = v.scored_two_passes(q, opts.pool);
            two_t.push(t.elapsed());
            let got: std::collections::HashSet<i64> = two.iter().map(|x| x.0).collect();
            found += exact.iter().filter(|x| got.contains(&x.0)).count();
            wanted += exact.len();
            found_10 += exact.iter().take(10).filter(|x| got.contains(&x.0)).count();
            wanted_10 += exact.len().min(10);
        }
        exact_t.sort_unstable();
        two_t.sort_unstable();
        let share = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        out.push(Report {
            size,
            queries: queries.len(),
            recall: share(found, wanted),
            recall_10: share(found_10, wanted_10),
            exact: (percentile(&exact_t, 50.0), percentile(&exact_t, 99.0)),
            two_passes: (percentile(&two_t, 50.0), percentile(&two_t, 99.0)),
            bytes: v.len() * (model.dims() + vectors::HEAD + 32),
        });
    }
    Ok(out)
}
