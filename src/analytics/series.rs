//! Usage over time (the dashboard's charts): latency histograms, the hourly rollup of the
//! `requests` rows (per hour and per client, model and key; the SQLite store folds new rows
//! into it every few thousand rows, and before each query), and the time-series query,
//! which reads the rollup for buckets of whole hours (a 30-day chart over a million rows
//! reads a few hundred to a few thousand rollup rows, not the million) and the rows, by
//! their time index, for finer buckets over short ranges.
//!
//! Percentiles come from log-scale histograms (5 % wide buckets, so a reported p50/p95 is
//! within ~2.5 % of the exact nearest-rank value); histograms of different hours and groups
//! merge exactly, which exact percentiles would not.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::store::{SeriesDim, SeriesQuery, StoreError};

/// One hour, the rollup's bucket.
pub const HOUR_MS: i64 = 3_600_000;
/// Longest range a query with buckets shorter than an hour may ask for (it reads rows).
pub const MAX_RAW_RANGE_MS: i64 = 48 * HOUR_MS;
/// Most buckets a query may ask for (each holds a histogram per group).
pub const MAX_BUCKETS: i64 = 500;

/// Smallest latency told apart, in ms; anything at or below it lands in bucket 0.
const HIST_BASE_MS: f64 = 0.01;
/// Each bucket is 5 % wider than the one before.
const HIST_GROWTH: f64 = 1.05;
/// Last bucket (0.01 ms × 1.05^450 ≈ 36 hours): longer values land in it.
const HIST_MAX: u16 = 450;

/// A latency histogram: a count per bucket, dense (merging two is adding two arrays, which
/// is what a query does thousands of times); empty until the first value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hist(Vec<u32>);

impl Hist {
    fn index(ms: f64) -> usize {
        if ms.is_nan() || ms <= HIST_BASE_MS {
            return 0;
        }
        let i = ((ms / HIST_BASE_MS).ln() / HIST_GROWTH.ln()).floor() + 1.0;
        i.min(f64::from(HIST_MAX)) as usize
    }

    /// The value a bucket stands for: its geometric middle.
    fn value(i: usize) -> f64 {
        if i == 0 {
            0.0
        } else {
            HIST_BASE_MS * HIST_GROWTH.powf(i as f64 - 0.5)
        }
    }

    fn counts(&mut self) -> &mut [u32] {
        if self.0.is_empty() {
            self.0 = vec![0; usize::from(HIST_MAX) + 1];
        }
        &mut self.0
    }

    /// Counts one value.
    pub fn add(&mut self, ms: f64) {
        let c = &mut self.counts()[Self::index(ms)];
        *c = c.saturating_add(1);
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Hist) {
        if other.0.is_empty() {
            return;
        }
        for (a, b) in self.counts().iter_mut().zip(&other.0) {
            *a = a.saturating_add(*b);
        }
    }

    /// Number of values counted.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|&c| u64::from(c)).sum()
    }

    /// The nearest-rank percentile `p` (0-100), none when empty.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((n as f64) * p / 100.0).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.0.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                return Some(Self::value(i));
            }
        }
        None
    }

    /// Compact form: (index delta, count) pairs of the non-empty buckets, LEB128 varints.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut last = 0;
        for (i, &n) in self.0.iter().enumerate().filter(|(_, &n)| n > 0) {
            put_varint(&mut out, (i - last) as u64);
            put_varint(&mut out, u64::from(n));
            last = i;
        }
        out
    }

    /// Reads [`Hist::encode`]'s form; a malformed tail is ignored.
    pub fn decode(bytes: &[u8]) -> Self {
        let mut h = Hist::default();
        h.merge_encoded(bytes);
        h
    }

    /// Adds the counts of an encoded histogram (touching only its non-empty buckets).
    pub fn merge_encoded(&mut self, mut bytes: &[u8]) {
        let mut at = 0u64;
        while let (Some(d), Some(n)) = (get_varint(&mut bytes), get_varint(&mut bytes)) {
            at += d;
            let i = at.min(u64::from(HIST_MAX)) as usize;
            let c = &mut self.counts()[i];
            *c = c.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }

    /// The nearest-rank p50 and p95 in one pass.
    fn p50_p95(&self) -> (Option<f64>, Option<f64>) {
        let n = self.count();
        if n == 0 {
            return (None, None);
        }
        let rank = |p: u64| (n * p).div_ceil(100).max(1);
        let (r50, r95) = (rank(50), rank(95));
        let (mut p50, mut seen) = (None, 0);
        for (i, &c) in self.0.iter().enumerate() {
            seen += u64::from(c);
            if p50.is_none() && seen >= r50 {
                p50 = Some(Self::value(i));
            }
            if seen >= r95 {
                return (p50, Some(Self::value(i)));
            }
        }
        (p50, None)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Totals of a set of requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agg {
    pub requests: u64,
    pub errors: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    pub latency: Hist,
    pub ttft: Hist,
}

impl Agg {
    fn add_row(&mut self, r: &RawRow) {
        self.add_values(
            r.tokens_in,
            r.tokens_out,
            r.cost_usd,
            r.total_ms,
            r.ttft_ms,
            r.error,
        );
    }

    /// Counts one request.
    fn add_values(
        &mut self,
        tokens_in: u64,
        tokens_out: u64,
        cost_usd: f64,
        total_ms: f64,
        ttft_ms: Option<f64>,
        error: bool,
    ) {
        self.requests += 1;
        self.errors += u64::from(error);
        self.tokens_in += tokens_in;
        self.tokens_out += tokens_out;
        self.cost_usd += cost_usd;
        self.latency.add(total_ms);
        if let Some(t) = ttft_ms {
            self.ttft.add(t);
        }
    }

    fn merge(&mut self, o: &Agg) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.tokens_in += o.tokens_in;
        self.tokens_out += o.tokens_out;
        self.cost_usd += o.cost_usd;
        self.latency.merge(&o.latency);
        self.ttft.merge(&o.ttft);
    }

    /// The figures the API reports.
    pub fn stats(&self) -> Stats {
        let (latency_p50_ms, latency_p95_ms) = self.latency.p50_p95();
        let (ttft_p50_ms, ttft_p95_ms) = self.ttft.p50_p95();
        Stats {
            requests: self.requests,
            errors: self.errors,
            tokens_in: self.tokens_in,
            tokens_out: self.tokens_out,
            cost_usd: self.cost_usd,
            latency_p50_ms,
            latency_p95_ms,
            ttft_p50_ms,
            ttft_p95_ms,
        }
    }

    /// Adds a rollup row read as `requests, errors, tokens_in, tokens_out, cost_usd,
    /// latency, ttft` from column 0, without decoding its histograms first.
    fn merge_row(&mut self, r: &rusqlite::Row<'_>) -> rusqlite::Result<()> {
        let u = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
        self.requests += u(0)?;
        self.errors += u(1)?;
        self.tokens_in += u(2)?;
        self.tokens_out += u(3)?;
        self.cost_usd += r.get::<_, f64>(4)?;
        self.latency.merge_encoded(r.get_ref(5)?.as_blob()?);
        self.ttft.merge_encoded(r.get_ref(6)?.as_blob()?);
        Ok(())
    }
}

/// Totals and percentiles of one bucket or group.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    /// Streams only.
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
}

/// One group's figures over the range.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupTotals {
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_alias: Option<String>,
    #[serde(flatten)]
    pub stats: Stats,
}

/// One group's figures per bucket.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupSeries {
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_alias: Option<String>,
    /// One entry per bucket of [`Series::times_ms`].
    pub points: Vec<Stats>,
}

/// The answer to a [`SeriesQuery`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Series {
    /// Start of each bucket, Unix ms.
    pub times_ms: Vec<i64>,
    /// The whole selection per bucket.
    pub all: Vec<Stats>,
    /// Per group (when grouped), the busiest first; the rest summed into `(other)`.
    pub series: Vec<GroupSeries>,
    /// Every group's totals, the busiest first.
    pub groups: Vec<GroupTotals>,
    pub total: Stats,
    /// Where the figures came from: `rollup` (hourly) or `rows`.
    pub source: &'static str,
}

/// The rollup's schema: per hour, one row of totals for each value of each dimension
/// (`all` with value `''`, `user`, `model`, `key` — `''` for the master key — and
/// `key_model`, the key and model joined by U+001F, so a key's own view splits by model).
/// Per dimension, not per combination of them: a combination table would hold about one
/// row per request when clients, models and keys mix freely. `upto_id` is the last
/// `requests.id` folded in.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage_rollup (
    dim TEXT NOT NULL,
    hour_ms INTEGER NOT NULL,
    value TEXT NOT NULL,
    key_alias TEXT,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    latency BLOB NOT NULL,
    ttft BLOB NOT NULL,
    PRIMARY KEY (dim, hour_ms, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_rollup_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    upto_id INTEGER NOT NULL
);
";

/// Joins a key and a model in the `key_model` dimension.
const SEP: char = '\u{1f}';

/// The fields of a `requests` row the rollup needs.
struct RawRow {
    ts_ms: i64,
    user_id: String,
    model: String,
    /// `''` for the master key / open mode.
    key_id: String,
    key_alias: Option<String>,
    tokens_in: u64,
    tokens_out: u64,
    cost_usd: f64,
    total_ms: f64,
    ttft_ms: Option<f64>,
    error: bool,
}

const RAW_COLUMNS: &str = "ts_ms, user_id, model, COALESCE(key_id, ''), key_alias, tokens_in, \
    tokens_out, COALESCE(cost_usd, 0), total_ms, ttft_ms, (status >= 400 OR error_type IS NOT NULL)";

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        ts_ms: r.get(0)?,
        user_id: r.get(1)?,
        model: r.get(2)?,
        key_id: r.get(3)?,
        key_alias: r.get(4)?,
        tokens_in: r.get::<_, i64>(5)?.max(0) as u64,
        tokens_out: r.get::<_, i64>(6)?.max(0) as u64,
        cost_usd: r.get(7)?,
        total_ms: r.get(8)?,
        ttft_ms: r.get(9)?,
        error: r.get(10)?,
    })
}

type RollupKey = (&'static str, i64, String);

/// (hour, client, model, key), names as interned indexes.
type Combo = (i64, usize, usize, usize);

/// Rows folded per read while catching up (bounds the memory a large catch-up takes).
const FOLD_CHUNK: i64 = 100_000;

/// Folds every `requests` row not yet in the rollup into it, in one transaction per chunk
/// of rows; returns how many rows it folded. The store calls it every few thousand rows
/// and before each time-series query, so the cost per row is a read and a hash-map update,
/// and rows written by an older build or another tool are picked up at the next fold.
pub fn fold_new(conn: &mut Connection) -> Result<u64, StoreError> {
    let mut folded = 0;
    loop {
        let tx = conn.transaction()?;
        let (n, done) = fold_chunk(&tx)?;
        tx.commit()?;
        folded += n;
        if done {
            return Ok(folded);
        }
    }
}

/// Folds up to [`FOLD_CHUNK`] rows; also returns whether none are left.
fn fold_chunk(conn: &Connection) -> Result<(u64, bool), StoreError> {
    let upto: i64 = conn
        .query_row(
            "SELECT upto_id FROM usage_rollup_state WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0);
    let max: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM requests", [], |r| {
        r.get(0)
    })?;
    if max <= upto {
        return Ok((0, true));
    }
    let end = max.min(upto + FOLD_CHUNK);
    // Rows are first summed per (hour, client, model, key), with the names interned, so a
    // row costs a few lookups and no allocation; the combinations are then spread over
    // the dimensions.
    let mut names: Vec<String> = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut intern = |s: &str| -> usize {
        if let Some(&i) = ids.get(s) {
            return i;
        }
        names.push(s.to_string());
        ids.insert(s.to_string(), names.len() - 1);
        names.len() - 1
    };
    let mut combos: HashMap<Combo, (Agg, Option<usize>)> = HashMap::new();
    let mut folded = 0;
    {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {RAW_COLUMNS} FROM requests WHERE id > ?1 AND id <= ?2"
        ))?;
        let mut rows = stmt.query(params![upto, end])?;
        while let Some(r) = rows.next()? {
            let opt_text = |i: usize| -> rusqlite::Result<Option<&str>> {
                Ok(r.get_ref(i)?.as_str_or_null()?)
            };
            let text = |i: usize| -> rusqlite::Result<&str> { Ok(opt_text(i)?.unwrap_or("")) };
            let ts_ms: i64 = r.get(0)?;
            let hour = ts_ms.div_euclid(HOUR_MS) * HOUR_MS;
            let (user, model, key) = (intern(text(1)?), intern(text(2)?), intern(text(3)?));
            let alias = opt_text(4)?.map(&mut intern);
            let e = combos.entry((hour, user, model, key)).or_default();
            e.0.add_values(
                r.get::<_, i64>(5)?.max(0) as u64,
                r.get::<_, i64>(6)?.max(0) as u64,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
            );
            e.1 = alias.or(e.1);
            folded += 1;
        }
    }
    let mut acc: HashMap<RollupKey, (Agg, Option<String>)> = HashMap::new();
    for ((hour, user, model, key), (agg, alias)) in combos {
        let key_model = format!("{}{SEP}{}", names[key], names[model]);
        for (dim, value) in [
            ("all", String::new()),
            ("user", names[user].clone()),
            ("model", names[model].clone()),
            ("key", names[key].clone()),
            ("key_model", key_model),
        ] {
            let e = acc.entry((dim, hour, value)).or_default();
            e.0.merge(&agg);
            if dim.starts_with("key") {
                if let Some(a) = alias {
                    e.1 = Some(names[a].clone());
                }
            }
        }
    }
    let mut read = conn.prepare_cached(
        "SELECT requests, errors, tokens_in, tokens_out, cost_usd, latency, ttft, key_alias \
         FROM usage_rollup WHERE dim = ?1 AND hour_ms = ?2 AND value = ?3",
    )?;
    let mut write = conn.prepare_cached(
        "INSERT OR REPLACE INTO usage_rollup (dim, hour_ms, value, key_alias, requests, errors, \
         tokens_in, tokens_out, cost_usd, latency, ttft) \
         VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
    )?;
    for ((dim, hour, value), (mut agg, mut alias)) in acc {
        let old = read
            .query_row(params![dim, hour, value], |r| {
                Ok((rollup_agg(r)?, r.get::<_, Option<String>>(7)?))
            })
            .optional()?;
        if let Some((old, old_alias)) = old {
            agg.merge(&old);
            alias = alias.or(old_alias);
        }
        write.execute(params![
            dim,
            hour,
            value,
            alias,
            agg.requests as i64,
            agg.errors as i64,
            agg.tokens_in as i64,
            agg.tokens_out as i64,
            agg.cost_usd,
            agg.latency.encode(),
            agg.ttft.encode(),
        ])?;
    }
    conn.execute(
        "INSERT OR REPLACE INTO usage_rollup_state (id, upto_id) VALUES (1, ?1)",
        [end],
    )?;
    Ok((folded, end == max))
}

/// The [`Agg`] of a rollup row read as `requests, errors, tokens_in, tokens_out, cost_usd,
/// latency, ttft` from column 0.
fn rollup_agg(r: &rusqlite::Row<'_>) -> rusqlite::Result<Agg> {
    let u = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
    Ok(Agg {
        requests: u(0)?,
        errors: u(1)?,
        tokens_in: u(2)?,
        tokens_out: u(3)?,
        cost_usd: r.get(4)?,
        latency: Hist::decode(&r.get::<_, Vec<u8>>(5)?),
        ttft: Hist::decode(&r.get::<_, Vec<u8>>(6)?),
    })
}

/// Groups folded into buckets.
struct Acc<'q> {
    q: &'q SeriesQuery,
    buckets: usize,
    all: Vec<Agg>,
    by_group: HashMap<String, (Agg, Vec<Agg>)>,
    aliases: HashMap<String, String>,
}

impl<'q> Acc<'q> {
    fn new(q: &'q SeriesQuery) -> Self {
        let buckets = ((q.to_ms - q.from_ms) / q.bucket_ms).max(0) as usize;
        Self {
            q,
            buckets,
            all: vec![Agg::default(); buckets],
            by_group: HashMap::new(),
            aliases: HashMap::new(),
        }
    }

    /// Whether a row of these dimensions is selected by the query's filters.
    fn selected(&self, user: &str, model: &str, key: &str) -> bool {
        self.q.user_id.as_deref().is_none_or(|u| u == user)
            && self.q.model.as_deref().is_none_or(|m| m == model)
            && self.q.key_id.as_deref().is_none_or(|k| k == key)
    }

    /// Adds totals at `ts_ms` (given as `merge`, which adds them to an [`Agg`]) to the whole
    /// and, when the query is split, to `group`.
    fn add(
        &mut self,
        ts_ms: i64,
        group: Option<&str>,
        alias: Option<String>,
        merge: impl Fn(&mut Agg) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<()> {
        let Ok(b) = usize::try_from((ts_ms - self.q.from_ms).div_euclid(self.q.bucket_ms)) else {
            return Ok(());
        };
        if b >= self.buckets {
            return Ok(());
        }
        merge(&mut self.all[b])?;
        let Some(group) = group.filter(|_| self.q.group_by != SeriesDim::None) else {
            return Ok(());
        };
        let group = if self.q.group_by == SeriesDim::Key && group.is_empty() {
            "(master)"
        } else {
            group
        };
        if let (SeriesDim::Key, Some(a)) = (self.q.group_by, alias) {
            self.aliases.insert(group.to_string(), a);
        }
        let buckets = self.buckets;
        let e = self
            .by_group
            .entry(group.to_string())
            .or_insert_with(|| (Agg::default(), vec![Agg::default(); buckets]));
        merge(&mut e.0)?;
        merge(&mut e.1[b])
    }

    fn finish(self, source: &'static str) -> Series {
        let mut total = Agg::default();
        self.all.iter().for_each(|a| total.merge(a));
        let mut groups: Vec<(String, (Agg, Vec<Agg>))> = self.by_group.into_iter().collect();
        groups.sort_by(|a, b| b.1 .0.requests.cmp(&a.1 .0.requests).then(a.0.cmp(&b.0)));
        let alias = |g: &str| self.aliases.get(g).cloned();
        let totals = groups
            .iter()
            .map(|(g, (agg, _))| GroupTotals {
                group: g.clone(),
                key_alias: alias(g),
                stats: agg.stats(),
            })
            .collect();
        let mut series: Vec<GroupSeries> = Vec::new();
        let mut other: Option<Vec<Agg>> = None;
        for (i, (g, (_, points))) in groups.into_iter().enumerate() {
            if i < self.q.top {
                series.push(GroupSeries {
                    key_alias: alias(&g),
                    group: g,
                    points: points.iter().map(Agg::stats).collect(),
                });
            } else {
                let o = other.get_or_insert_with(|| vec![Agg::default(); self.buckets]);
                o.iter_mut().zip(&points).for_each(|(a, p)| a.merge(p));
            }
        }
        if let Some(o) = other {
            series.push(GroupSeries {
                group: "(other)".into(),
                key_alias: None,
                points: o.iter().map(Agg::stats).collect(),
            });
        }
        Series {
            times_ms: (0..self.buckets as i64)
                .map(|i| self.q.from_ms + i * self.q.bucket_ms)
                .collect(),
            all: self.all.iter().map(Agg::stats).collect(),
            series,
            groups: totals,
            total: total.stats(),
            source,
        }
    }
}

/// Checks a query's range and buckets.
pub fn validate(q: &SeriesQuery) -> Result<(), String> {
    if q.bucket_ms <= 0 || q.to_ms <= q.from_ms {
        return Err("the range is empty".into());
    }
    if (q.to_ms - q.from_ms) / q.bucket_ms > MAX_BUCKETS {
        return Err(format!(
            "at most {MAX_BUCKETS} buckets; choose a larger bucket"
        ));
    }
    if q.bucket_ms % HOUR_MS != 0 && q.to_ms - q.from_ms > MAX_RAW_RANGE_MS {
        return Err("buckets shorter than an hour are for ranges of at most 48 hours".into());
    }
    Ok(())
}

/// Which rollup dimension answers a query: its name, the value (or, for `key_model`, the
/// key) its rows must have, if any; none when only the rows can answer.
fn rollup_plan(q: &SeriesQuery) -> Option<(&'static str, Option<&str>)> {
    if q.bucket_ms % HOUR_MS != 0 || q.from_ms % HOUR_MS != 0 {
        return None;
    }
    let dim = |d: SeriesDim| match d {
        SeriesDim::None => "all",
        SeriesDim::User => "user",
        SeriesDim::Model => "model",
        SeriesDim::Key => "key",
    };
    let filters: Vec<(SeriesDim, &str)> = [
        (SeriesDim::User, q.user_id.as_deref()),
        (SeriesDim::Model, q.model.as_deref()),
        (SeriesDim::Key, q.key_id.as_deref()),
    ]
    .into_iter()
    .filter_map(|(d, v)| v.map(|v| (d, v)))
    .collect();
    match filters[..] {
        [] => Some((dim(q.group_by), None)),
        [(d, v)] if q.group_by == SeriesDim::None || q.group_by == d => Some((dim(d), Some(v))),
        [(SeriesDim::Key, k)] if q.group_by == SeriesDim::Model => Some(("key_model", Some(k))),
        _ => None,
    }
}

/// Runs a time-series query (see the module docs). Filters the rollup has no dimension for
/// (two at once, or a client's usage split by model) are answered from the rows.
pub fn query(conn: &Connection, q: &SeriesQuery) -> Result<Series, StoreError> {
    validate(q).map_err(StoreError::Invalid)?;
    let mut acc = Acc::new(q);
    if let Some((dim, want)) = rollup_plan(q) {
        let mut stmt = conn.prepare_cached(
            "SELECT requests, errors, tokens_in, tokens_out, cost_usd, latency, ttft, key_alias, \
             hour_ms, value FROM usage_rollup WHERE dim = ?1 AND hour_ms >= ?2 AND hour_ms < ?3",
        )?;
        let mut rows = stmt.query(params![dim, q.from_ms, q.to_ms])?;
        while let Some(r) = rows.next()? {
            let value: String = r.get(9)?;
            let group = if dim == "key_model" {
                match value.split_once(SEP) {
                    Some((k, model)) if want == Some(k) => model.to_string(),
                    _ => continue,
                }
            } else {
                if want.is_some_and(|w| w != value) {
                    continue;
                }
                value
            };
            acc.add(r.get(8)?, Some(&group), r.get(7)?, |a| a.merge_row(r))?;
        }
        return Ok(acc.finish("rollup"));
    }
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RAW_COLUMNS} FROM requests WHERE ts_ms >= ?1 AND ts_ms < ?2"
    ))?;
    let mut rows = stmt.query(params![q.from_ms, q.to_ms])?;
    while let Some(r) = rows.next()? {
        let row = raw_row(r)?;
        if !acc.selected(&row.user_id, &row.model, &row.key_id) {
            continue;
        }
        let mut one = Agg::default();
        one.add_row(&row);
        let group = match q.group_by {
            SeriesDim::None => None,
            SeriesDim::User => Some(row.user_id.as_str()),
            SeriesDim::Model => Some(row.model.as_str()),
            SeriesDim::Key => Some(row.key_id.as_str()),
        };
        acc.add(row.ts_ms, group, row.key_alias.clone(), |a| {
            a.merge(&one);
            Ok(())
        })?;
    }
    Ok(acc.finish("rows"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::sqlite::SqliteStore;
    use crate::analytics::{AnalyticsStore, Record};

    const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % (24 * HOUR_MS);

    fn row(i: i64, user: &str, model: &str) -> Record {
        Record {
            ts_ms: T0 + i * 60_000,
            request_id: format!("r{i}"),
            user_id: user.into(),
            model: model.into(),
            endpoint: "chat".into(),
            tokens_in: 10,
            tokens_out: 2,
            cost_usd: Some(0.5),
            total_ms: i as f64 + 1.0,
            ttft_ms: (i % 2 == 0).then_some(5.0),
            status: if i % 10 == 9 { 502 } else { 200 },
            ..Default::default()
        }
    }

    fn q(bucket_ms: i64, group_by: SeriesDim) -> SeriesQuery {
        SeriesQuery {
            from_ms: T0,
            to_ms: T0 + 4 * HOUR_MS,
            bucket_ms,
            group_by,
            user_id: None,
            model: None,
            key_id: None,
            top: 1,
        }
    }

    #[test]
    fn the_rollup_answers_like_the_rows_and_catches_up_with_rows_written_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path()).unwrap();
        // 200 requests over 200 minutes, two users, written in batches.
        let rows: Vec<Record> = (0..200)
            .map(|i| row(i, if i % 4 == 0 { "bob" } else { "alice" }, "gpt"))
            .collect();
        for b in rows.chunks(30) {
            s.insert_records(b).unwrap();
        }
        let hourly = s.timeseries(&q(HOUR_MS, SeriesDim::User)).unwrap();
        assert_eq!(hourly.source, "rollup");
        assert_eq!(hourly.times_ms.len(), 4);
        assert_eq!(
            hourly.all.iter().map(|p| p.requests).collect::<Vec<_>>(),
            [60, 60, 60, 20]
        );
        assert_eq!(hourly.total.requests, 200);
        assert_eq!(hourly.total.errors, 20);
        assert_eq!(hourly.total.tokens_in, 2000);
        assert!((hourly.total.cost_usd - 100.0).abs() < 1e-9);
        let p50 = hourly.total.latency_p50_ms.unwrap();
        assert!((p50 / 100.0 - 1.0).abs() < 0.03, "{p50}");
        assert!((hourly.total.ttft_p95_ms.unwrap() / 5.0 - 1.0).abs() < 0.03);
        // Top 1 group charted, the other summed; both in the totals, busiest first.
        let names: Vec<_> = hourly.series.iter().map(|g| g.group.as_str()).collect();
        assert_eq!(names, ["alice", "(other)"]);
        assert_eq!(hourly.groups[0].stats.requests, 150);
        assert_eq!(hourly.groups[1].stats.requests, 50);

        let fine = s.timeseries(&q(5 * 60_000, SeriesDim::None)).unwrap();
        assert_eq!(fine.source, "rows");
        assert_eq!(fine.times_ms.len(), 48);
        assert_eq!(fine.total, hourly.total, "rows and rollup agree");

        let mut only_bob = q(HOUR_MS, SeriesDim::None);
        only_bob.user_id = Some("bob".into());
        assert_eq!(s.timeseries(&only_bob).unwrap().total.requests, 50);
        // A key's own view split by model reads the key × model rows.
        let mut own_key = q(HOUR_MS, SeriesDim::Model);
        own_key.key_id = Some(String::new());
        let by_model = s.timeseries(&own_key).unwrap();
        assert_eq!(by_model.source, "rollup");
        assert_eq!(by_model.groups[0].group, "gpt");
        assert_eq!(by_model.groups[0].stats.requests, 200);
        own_key.key_id = Some("other-key".into());
        assert_eq!(s.timeseries(&own_key).unwrap().total.requests, 0);
        // A combination the rollup has no dimension for is answered from the rows.
        only_bob.group_by = SeriesDim::Model;
        let from_rows = s.timeseries(&only_bob).unwrap();
        assert_eq!(from_rows.source, "rows");
        assert_eq!(from_rows.total.requests, 50);

        // Rows written by another tool (or an older build) are folded in at the next open.
        drop(s);
        let conn = Connection::open(dir.path().join(crate::analytics::sqlite::DB_FILE)).unwrap();
        conn.execute(
            "INSERT INTO requests (ts_ms, request_id, user_id, endpoint, model, stream, \
             tokens_in, tokens_out, tokens_cached, tokens_reasoning, total_ms, overhead_ms, \
             status, memories_injected, tool_rounds, attempts) \
             VALUES (?1, 'x', 'carol', 'chat', 'gpt', 0, 1, 1, 0, 0, 3.0, 1.0, 200, 0, 0, 1)",
            [T0 + 10],
        )
        .unwrap();
        drop(conn);
        let mut s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(
            s.timeseries(&q(HOUR_MS, SeriesDim::None))
                .unwrap()
                .total
                .requests,
            201
        );

        let mut bad = q(60_000, SeriesDim::None);
        bad.to_ms = T0 + 72 * HOUR_MS;
        assert!(matches!(s.timeseries(&bad), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn histogram_percentiles_are_within_a_few_percent_and_round_trip() {
        let mut h = Hist::default();
        for i in 1..=1000 {
            h.add(f64::from(i));
        }
        let p50 = h.percentile(50.0).unwrap();
        let p95 = h.percentile(95.0).unwrap();
        assert!((p50 / 500.0 - 1.0).abs() < 0.03, "{p50}");
        assert!((p95 / 950.0 - 1.0).abs() < 0.03, "{p95}");
        assert_eq!(Hist::decode(&h.encode()), h);
        assert_eq!(Hist::default().percentile(50.0), None);
        let mut z = Hist::default();
        z.add(0.0);
        z.add(f64::NAN);
        z.add(1e12);
        assert_eq!(z.count(), 3);
        assert_eq!(Hist::decode(&z.encode()), z);
        assert_eq!(
            Hist::decode(&[0xff]).count(),
            0,
            "a truncated varint is ignored"
        );
    }
}
