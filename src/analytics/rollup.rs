//! Usage rollups: the analytics writer folds every batch of rows into per-minute,
//! per-hour and per-day aggregates (one row per bucket × user × client × model × key ×
//! project), each with
//! latency and TTFT histograms, so that `GET /v1/usage/timeseries` reads a few thousand
//! aggregates instead of scanning millions of request rows. Both stores (SQLite and
//! PostgreSQL) keep the same tables and use the helpers here.

use std::collections::HashMap;

use serde::Serialize;

use super::record::Record;

/// Histogram bins: bin 0 holds values below 1 ms, bin `i` values in
/// `[GROWTH^(i-1), GROWTH^i)` ms, the last bin everything above.
pub const BINS: usize = 48;
const GROWTH: f64 = 1.3;

/// The bin of a duration in milliseconds.
pub fn bin_of(ms: f64) -> usize {
    if !ms.is_finite() || ms < 1.0 {
        return 0;
    }
    ((ms.ln() / GROWTH.ln()).floor() as usize + 1).min(BINS - 1)
}

/// The value a bin stands for: the geometric middle of its bounds (0.5 ms for bin 0).
pub fn bin_value(bin: usize) -> f64 {
    if bin == 0 {
        0.5
    } else {
        GROWTH.powf(bin as f64 - 0.5)
    }
}

/// Counts per bin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram(pub [i64; BINS]);

impl Default for Histogram {
    fn default() -> Self {
        Self([0; BINS])
    }
}

impl Histogram {
    pub fn add(&mut self, ms: f64) {
        self.0[bin_of(ms)] += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// Nearest-rank percentile (`p` in 0..=100), as its bin's value; 0 when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        let n: i64 = self.0.iter().sum();
        if n == 0 {
            return 0.0;
        }
        let rank = ((n as f64 * p / 100.0).ceil() as i64).max(1);
        let mut seen = 0;
        for (i, c) in self.0.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bin_value(i);
            }
        }
        bin_value(BINS - 1)
    }

    /// The SQLite column: the non-empty bins only, each as its index (1 byte) and count
    /// (u32, little-endian); most rollup rows hold a few bins.
    pub fn to_blob(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, c) in self.0.iter().enumerate().filter(|(_, c)| **c > 0) {
            out.push(i as u8);
            out.extend_from_slice(&((*c).min(i64::from(u32::MAX)) as u32).to_le_bytes());
        }
        out
    }

    pub fn from_blob(b: &[u8]) -> Self {
        let mut h = Self::default();
        h.merge_blob(b);
        h
    }

    /// Adds the counts of a [`Histogram::to_blob`] encoding.
    pub fn merge_blob(&mut self, b: &[u8]) {
        for c in b.chunks_exact(5) {
            if let Some(slot) = self.0.get_mut(usize::from(c[0])) {
                *slot += i64::from(u32::from_le_bytes([c[1], c[2], c[3], c[4]]));
            }
        }
    }

    pub fn from_slice(v: &[i64]) -> Self {
        let mut h = Self::default();
        for (a, b) in h.0.iter_mut().zip(v) {
            *a = *b;
        }
        h
    }
}

/// The dimensions of one rollup row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RollupKey {
    /// Start of the bucket, Unix ms.
    pub bucket_ms: i64,
    pub user_id: String,
    pub client: String,
    pub model: String,
    /// The virtual key's hash, `""` for the master key / open mode.
    pub key_id: String,
    /// The request's project, `""` for none.
    pub project: String,
}

/// The totals of one rollup row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollupValue {
    pub requests: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub errors: i64,
    pub latency: Histogram,
    pub ttft: Histogram,
}

impl RollupValue {
    pub fn add(&mut self, r: &Record) {
        self.requests += 1;
        self.tokens_in += r.tokens_in.min(i64::MAX as u64) as i64;
        self.tokens_out += r.tokens_out.min(i64::MAX as u64) as i64;
        self.cost_usd += r.cost_usd.unwrap_or(0.0);
        if r.status >= 400 || r.error_type.is_some() {
            self.errors += 1;
        }
        self.latency.add(r.total_ms);
        if let Some(t) = r.ttft_ms {
            self.ttft.add(t);
        }
    }

    pub fn merge(&mut self, o: &RollupValue) {
        self.requests += o.requests;
        self.tokens_in += o.tokens_in;
        self.tokens_out += o.tokens_out;
        self.cost_usd += o.cost_usd;
        self.errors += o.errors;
        self.latency.merge(&o.latency);
        self.ttft.merge(&o.ttft);
    }
}

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// Folds rows into per-`width` buckets.
pub fn fold(rows: &[Record], width: i64) -> HashMap<RollupKey, RollupValue> {
    let mut out: HashMap<RollupKey, RollupValue> = HashMap::new();
    for r in rows {
        let key = RollupKey {
            bucket_ms: r.ts_ms.div_euclid(width) * width,
            user_id: r.user_id.clone(),
            client: r.client.clone(),
            model: r.model.clone(),
            key_id: r.key_id.clone().unwrap_or_default(),
            project: r.project.clone(),
        };
        out.entry(key).or_default().add(r);
    }
    out
}

/// The time ranges the timeseries API offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Range {
    #[serde(rename = "1h")]
    H1,
    #[serde(rename = "6h")]
    H6,
    #[serde(rename = "24h")]
    H24,
    #[serde(rename = "7d")]
    D7,
    #[serde(rename = "30d")]
    D30,
}

impl Range {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "1h" => Self::H1,
            "6h" => Self::H6,
            "24h" => Self::H24,
            "7d" => Self::D7,
            "30d" => Self::D30,
            _ => return None,
        })
    }

    /// (span, bucket width, the rollup table's bucket width that serves it).
    pub fn plan(self) -> (i64, i64, i64) {
        match self {
            Self::H1 => (HOUR_MS, MINUTE_MS, MINUTE_MS),
            Self::H6 => (6 * HOUR_MS, 5 * MINUTE_MS, MINUTE_MS),
            Self::H24 => (24 * HOUR_MS, HOUR_MS, HOUR_MS),
            Self::D7 => (7 * DAY_MS, 6 * HOUR_MS, HOUR_MS),
            Self::D30 => (30 * DAY_MS, DAY_MS, DAY_MS),
        }
    }
}

/// What a timeseries is split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesBy {
    None,
    Client,
    Model,
    Key,
    User,
    Project,
}

impl SeriesBy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" | "none" => Self::None,
            "client" => Self::Client,
            "model" => Self::Model,
            "key" | "api_key" => Self::Key,
            "user" | "user_id" => Self::User,
            "project" => Self::Project,
            _ => return None,
        })
    }

    /// The rollup column, for SQL.
    pub fn column(self) -> &'static str {
        match self {
            Self::None => "''",
            Self::Client => "client",
            Self::Model => "model",
            Self::Key => "key_id",
            Self::User => "user_id",
            Self::Project => "project",
        }
    }
}

/// `GET /v1/usage/timeseries`.
#[derive(Debug, Clone)]
pub struct TimeseriesQuery {
    pub range: Range,
    pub group_by: SeriesBy,
    /// Only this user's rows (a virtual key's scope).
    pub user_id: Option<String>,
    /// Only this key's rows (an unbound virtual key's scope).
    pub key_id: Option<String>,
    /// Only this project's rows (a project-bound key's scope, or a filter).
    pub project: Option<String>,
    /// The end of the range, Unix ms (now).
    pub now_ms: i64,
}

impl TimeseriesQuery {
    /// (from, to, bucket width, rollup table width): `to` is the end of the current
    /// bucket.
    pub fn window(&self) -> (i64, i64, i64, i64) {
        let (span, width, table) = self.range.plan();
        let to = (self.now_ms.div_euclid(width) + 1) * width;
        (to - span, to, width, table)
    }
}

/// One bucket of a series.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// Start of the bucket, Unix ms.
    pub t: i64,
    pub requests: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub errors: i64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub ttft_p50_ms: f64,
    pub ttft_p95_ms: f64,
}

/// One group's buckets (every bucket of the range, zeros included).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Series {
    pub group: String,
    pub totals: Point,
    pub points: Vec<Point>,
}

/// The answer: the overall series and one per group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Timeseries {
    pub range: Range,
    pub group_by: SeriesBy,
    pub from_ms: i64,
    pub to_ms: i64,
    pub bucket_ms: i64,
    pub total: Series,
    pub groups: Vec<Series>,
}

fn point(t: i64, v: &RollupValue) -> Point {
    Point {
        t,
        requests: v.requests,
        tokens_in: v.tokens_in,
        tokens_out: v.tokens_out,
        cost_usd: v.cost_usd,
        errors: v.errors,
        latency_p50_ms: v.latency.percentile(50.0),
        latency_p95_ms: v.latency.percentile(95.0),
        ttft_p50_ms: v.ttft.percentile(50.0),
        ttft_p95_ms: v.ttft.percentile(95.0),
    }
}

/// Builds the answer from rollup rows `(group, bucket start, value)` read from a store
/// (rows of the finer table are re-bucketed to the query's width here).
pub fn assemble(q: &TimeseriesQuery, rows: Vec<(String, i64, RollupValue)>) -> Timeseries {
    let (from, to, width, _) = q.window();
    let n = ((to - from) / width) as usize;
    let mut total = vec![RollupValue::default(); n];
    let mut groups: HashMap<String, Vec<RollupValue>> = HashMap::new();
    for (g, t, v) in rows {
        if t < from || t >= to {
            continue;
        }
        let i = ((t - from) / width) as usize;
        total[i].merge(&v);
        if q.group_by != SeriesBy::None {
            groups
                .entry(g)
                .or_insert_with(|| vec![RollupValue::default(); n])[i]
                .merge(&v);
        }
    }
    let series = |group: String, buckets: &[RollupValue]| {
        let mut all = RollupValue::default();
        let points = buckets
            .iter()
            .enumerate()
            .map(|(i, v)| {
                all.merge(v);
                point(from + i as i64 * width, v)
            })
            .collect();
        Series {
            group,
            totals: point(from, &all),
            points,
        }
    };
    let mut groups: Vec<Series> = groups.iter().map(|(g, b)| series(g.clone(), b)).collect();
    groups.sort_by(|a, b| (b.totals.requests, &a.group).cmp(&(a.totals.requests, &b.group)));
    Timeseries {
        range: q.range,
        group_by: q.group_by,
        from_ms: from,
        to_ms: to,
        bucket_ms: width,
        total: series(String::new(), &total),
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_within_a_bin() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.add(ms as f64);
        }
        let p50 = h.percentile(50.0);
        let p95 = h.percentile(95.0);
        assert!((50.0 / GROWTH..=50.0 * GROWTH).contains(&p50), "{p50}");
        assert!((95.0 / GROWTH..=95.0 * GROWTH).contains(&p95), "{p95}");
        assert_eq!(Histogram::from_blob(&h.to_blob()), h);
        assert_eq!(Histogram::default().percentile(50.0), 0.0);
    }

    #[test]
    fn assemble_fills_every_bucket_and_splits_groups() {
        let now = 10 * HOUR_MS + 30 * MINUTE_MS + 30_000;
        let q = TimeseriesQuery {
            range: Range::H1,
            group_by: SeriesBy::Model,
            user_id: None,
            key_id: None,
            project: None,
            now_ms: now,
        };
        let rec = |model: &str, ts_ms: i64| Record {
            ts_ms,
            model: model.into(),
            total_ms: 10.0,
            tokens_in: 3,
            ..Default::default()
        };
        let rows = vec![
            rec("a", now),
            rec("a", now - 1),
            rec("b", now - 5 * MINUTE_MS),
        ];
        let folded = fold(&rows, MINUTE_MS)
            .into_iter()
            .map(|(k, v)| (k.model, k.bucket_ms, v))
            .collect();
        let ts = assemble(&q, folded);
        assert_eq!(ts.total.points.len(), 60);
        assert_eq!(ts.total.totals.requests, 3);
        assert_eq!(ts.total.points.last().unwrap().requests, 2);
        assert_eq!(ts.groups[0].group, "a");
        assert_eq!(ts.groups[0].totals.tokens_in, 6);
        assert_eq!(ts.groups[1].totals.requests, 1);
    }
}
