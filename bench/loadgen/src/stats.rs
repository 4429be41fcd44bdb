//! Summaries of latency samples: mean and nearest-rank percentiles.

use std::time::Duration;

/// A summary of one set of durations, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Summarises `samples` (sorted in place). Empty input gives all zeros.
pub fn summarize(samples: &mut [Duration]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let total: f64 = samples.iter().map(|d| us(*d)).sum();
    Summary {
        mean: total / samples.len() as f64,
        p50: us(percentile(samples, 50.0)),
        p90: us(percentile(samples, 90.0)),
        p99: us(percentile(samples, 99.0)),
        max: us(samples[samples.len() - 1]),
    }
}

/// Nearest-rank percentile of sorted, non-empty `sorted`: the smallest value with at least
/// `p` percent of the samples at or below it.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|x| Duration::from_micros(*x)).collect()
    }

    #[test]
    fn nearest_rank() {
        let s = us(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 50.0), Duration::from_micros(50));
        assert_eq!(percentile(&s, 99.0), Duration::from_micros(99));
        assert_eq!(percentile(&s, 100.0), Duration::from_micros(100));
        assert_eq!(percentile(&s, 0.0), Duration::from_micros(1));
        let one = us(&[7]);
        assert_eq!(percentile(&one, 99.0), Duration::from_micros(7));
    }

    #[test]
    fn summary_sorts_and_averages() {
        let mut s = us(&[30, 10, 20]);
        let sum = summarize(&mut s);
        assert!((sum.mean - 20.0).abs() < 1e-9);
        assert!((sum.p50 - 20.0).abs() < 1e-9);
        assert!((sum.max - 30.0).abs() < 1e-9);
        assert_eq!(summarize(&mut []), Summary::default());
    }
}
