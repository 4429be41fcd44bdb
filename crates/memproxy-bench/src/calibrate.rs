//! `calibrate-dense`: where the built-in model's cosine separates a question's evidence
//! from unrelated text, on a LoCoMo-format file. For each question: the cosine to each of
//! its evidence turns (related), and the best cosine to any turn of the *other*
//! conversations (unrelated: what a user with no relevant memory would be shown if the
//! floor let it through). Both raw and centred (the mean vector of every turn subtracted
//! first, so that the direction all texts share does not count). A floor for memories
//! found by meaning alone should keep most related pairs and let few questions through
//! to an unrelated memory.

use std::path::Path;

use memproxy::memory::embed::StaticModel;
use memproxy::memory::retrieve::cosine as cos;

/// Pairs worth seeing by name: the semantic test's paraphrase, and a dashboard test's
/// relevant memory beside captured small talk.
const PAIRS: &[(&str, &str)] = &[
    (
        "does she own a dog?",
        "I adopted a puppy from the shelter last weekend",
    ),
    (
        "does she own a dog?",
        "The quarterly report is due on Friday",
    ),
    (
        "which gemstone do I like?",
        "Alice's favourite gemstone is turquoise",
    ),
    (
        "which gemstone do I like?",
        "user: hello\nassistant: mock reply to: hello",
    ),
    (
        "which gemstone do I like?",
        "user: hi there\nassistant: Hi, I am a mock.",
    ),
];

const FLOORS: &[f32] = &[0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6];

fn pct(sorted: &[f32], p: f64) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize]
}

/// Prints the calibration tables.
pub fn run(model: &Path, file: &str) -> Result<(), String> {
    let model = StaticModel::load(model).map_err(|e| e.to_string())?;
    let convs = crate::eval::parse(file).map_err(|e| e.to_string())?;
    let turns: Vec<Vec<Vec<f32>>> = convs
        .iter()
        .map(|c| c.turns.iter().map(|t| model.vector(&t.1)).collect())
        .collect();
    let n: usize = turns.iter().map(Vec::len).sum();
    let mut mean = vec![0.0f32; model.dims()];
    for v in turns.iter().flatten() {
        for (m, x) in mean.iter_mut().zip(v) {
            *m += x / n as f32;
        }
    }
    let centre = |v: &[f32]| -> Vec<f32> { v.iter().zip(&mean).map(|(x, m)| x - m).collect() };
    for centred in [false, true] {
        let prep = |v: &[f32]| if centred { centre(v) } else { v.to_vec() };
        let turns: Vec<Vec<Vec<f32>>> = turns
            .iter()
            .map(|c| c.iter().map(|v| prep(v)).collect())
            .collect();
        let (mut related, mut unrelated) = (Vec::new(), Vec::new());
        for (ci, c) in convs.iter().enumerate() {
            for (q, evidence, _) in &c.questions {
                let qv = prep(&model.vector(q));
                for e in evidence {
                    if let Some(ti) = c.turns.iter().position(|t| &t.0 == e) {
                        related.push(cos(&qv, &turns[ci][ti]));
                    }
                }
                let best = turns
                    .iter()
                    .enumerate()
                    .filter(|(cj, _)| *cj != ci)
                    .flat_map(|(_, t)| t.iter())
                    .map(|v| cos(&qv, v))
                    .fold(f32::MIN, f32::max);
                unrelated.push(best);
            }
        }
        related.sort_by(f32::total_cmp);
        unrelated.sort_by(f32::total_cmp);
        println!(
            "{}: {} related pairs, {} questions",
            if centred { "centred" } else { "raw" },
            related.len(),
            unrelated.len()
        );
        for (name, xs) in [("related", &related), ("best unrelated", &unrelated)] {
            println!(
                "  {name:<15} p10 {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}",
                pct(xs, 10.0),
                pct(xs, 50.0),
                pct(xs, 90.0),
                pct(xs, 99.0)
            );
        }
        println!("  floor   related kept   questions shown an unrelated memory");
        for &f in FLOORS {
            let kept = related.iter().filter(|&&x| x >= f).count();
            let shown = unrelated.iter().filter(|&&x| x >= f).count();
            println!(
                "  {f:.2}    {:>6.1} %        {:>6.1} %",
                100.0 * kept as f64 / related.len().max(1) as f64,
                100.0 * shown as f64 / unrelated.len().max(1) as f64
            );
        }
        for (q, m) in PAIRS {
            let c = cos(&prep(&model.vector(q)), &prep(&model.vector(m)));
            println!("  {c:.3}  {q:?} ~ {m:?}");
        }
    }
    Ok(())
}
