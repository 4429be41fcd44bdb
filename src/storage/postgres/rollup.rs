//! The usage rollups in PostgreSQL (see [`crate::analytics::rollup`]):
//! `memproxy_usage_minute`, `_hour` and `_day`, upserted in the transaction that
//! writes the rows (histograms added element-wise, so instances writing at once add up),
//! and read by the timeseries query.

use std::fmt::Write as _;

use tokio_postgres::{Client, Transaction};

use crate::analytics::rollup::{
    self, Histogram, RollupValue, Timeseries, TimeseriesQuery, BINS, DAY_MS, HOUR_MS, MINUTE_MS,
};
use crate::analytics::Record;

/// Schema version 3: the rollup tables.
pub const SCHEMA_V3: &str = "
CREATE TABLE IF NOT EXISTS memproxy_usage_minute (
    bucket_ms  BIGINT NOT NULL,
    user_id    TEXT NOT NULL,
    client     TEXT NOT NULL,
    model      TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    requests   BIGINT NOT NULL,
    tokens_in  BIGINT NOT NULL,
    tokens_out BIGINT NOT NULL,
    cost_usd   DOUBLE PRECISION NOT NULL,
    errors     BIGINT NOT NULL,
    latency    BIGINT[] NOT NULL,
    ttft       BIGINT[] NOT NULL,
    PRIMARY KEY (bucket_ms, user_id, client, model, key_id)
);
CREATE TABLE IF NOT EXISTS memproxy_usage_hour (LIKE memproxy_usage_minute INCLUDING ALL);
CREATE TABLE IF NOT EXISTS memproxy_usage_day (LIKE memproxy_usage_minute INCLUDING ALL);
";

const TABLES: [(&str, i64); 3] = [
    ("memproxy_usage_minute", MINUTE_MS),
    ("memproxy_usage_hour", HOUR_MS),
    ("memproxy_usage_day", DAY_MS),
];

/// The SQL bin of a duration column, as [`rollup::bin_of`] computes it.
fn bin_sql(col: &str) -> String {
    format!(
        "CASE WHEN {col} IS NULL THEN NULL WHEN {col} < 1 THEN 0 \
         ELSE LEAST({}, floor(ln({col}) / ln(1.3::float8))::int + 1) END",
        BINS - 1
    )
}

/// Schema version 4: the project as a rollup dimension (rows from before have none).
pub const SCHEMA_V4: &str = "
ALTER TABLE memproxy_requests ADD COLUMN IF NOT EXISTS project TEXT NOT NULL DEFAULT '';
ALTER TABLE memproxy_requests ADD COLUMN IF NOT EXISTS injected TEXT;
ALTER TABLE memproxy_usage_minute ADD COLUMN project TEXT NOT NULL DEFAULT '',
    DROP CONSTRAINT memproxy_usage_minute_pkey,
    ADD PRIMARY KEY (bucket_ms, user_id, client, model, key_id, project);
ALTER TABLE memproxy_usage_hour ADD COLUMN project TEXT NOT NULL DEFAULT '',
    DROP CONSTRAINT memproxy_usage_hour_pkey,
    ADD PRIMARY KEY (bucket_ms, user_id, client, model, key_id, project);
ALTER TABLE memproxy_usage_day ADD COLUMN project TEXT NOT NULL DEFAULT '',
    DROP CONSTRAINT memproxy_usage_day_pkey,
    ADD PRIMARY KEY (bucket_ms, user_id, client, model, key_id, project);
TRUNCATE memproxy_usage_minute, memproxy_usage_hour, memproxy_usage_day;
";

/// SQL filling the tables afresh from the rows already stored (the migration to
/// version 4, which made the project a dimension).
pub fn backfill_sql() -> String {
    let mut sql = String::new();
    for (table, width) in TABLES {
        let hist = |col: &str| {
            let parts: Vec<String> = (0..BINS)
                .map(|i| format!("count(*) FILTER (WHERE {col} = {i})"))
                .collect();
            format!("ARRAY[{}]::int8[]", parts.join(", "))
        };
        let _ = writeln!(
            sql,
            "INSERT INTO {table} (bucket_ms, user_id, client, model, key_id, project, requests, \
             tokens_in, tokens_out, cost_usd, errors, latency, ttft) \
             SELECT bk, user_id, client, model, k, project, count(*), \
             coalesce(sum(tokens_in), 0), coalesce(sum(tokens_out), 0), coalesce(sum(cost), 0), \
             sum(err), {}, {} FROM (SELECT (ts_ms / {width}) * {width} AS bk, user_id, client, \
             model, coalesce(key_id, '') AS k, project, tokens_in, tokens_out, coalesce(cost_usd, 0) AS cost, \
             (status >= 400 OR error_type IS NOT NULL)::int AS err, {} AS lb, {} AS tb \
             FROM memproxy_requests) r GROUP BY bk, user_id, client, model, k, project \
             ON CONFLICT DO NOTHING;",
            hist("lb"),
            hist("tb"),
            bin_sql("total_ms"),
            bin_sql("ttft_ms"),
        );
    }
    sql
}

fn merge_hist(col: &str) -> String {
    format!(
        "{col} = (SELECT array_agg(a + b ORDER BY i) FROM unnest(u.{col}, excluded.{col}) \
         WITH ORDINALITY AS t(a, b, i))"
    )
}

/// Adds a batch of rows to both tables (inside the caller's transaction).
pub async fn add(tx: &Transaction<'_>, rows: &[Record]) -> Result<(), tokio_postgres::Error> {
    for (table, width) in TABLES {
        let folded = rollup::fold(rows, width);
        let n = folded.len();
        let mut bucket = Vec::with_capacity(n);
        let mut text: [Vec<String>; 5] = Default::default();
        let mut ints: [Vec<i64>; 4] = Default::default();
        let mut cost = Vec::with_capacity(n);
        let (mut lat, mut ttft) = (Vec::with_capacity(n * BINS), Vec::with_capacity(n * BINS));
        for (k, v) in folded {
            bucket.push(k.bucket_ms);
            for (col, s) in text
                .iter_mut()
                .zip([k.user_id, k.client, k.model, k.key_id, k.project])
            {
                col.push(s);
            }
            for (col, x) in ints
                .iter_mut()
                .zip([v.requests, v.tokens_in, v.tokens_out, v.errors])
            {
                col.push(x);
            }
            cost.push(v.cost_usd);
            lat.extend_from_slice(&v.latency.0);
            ttft.extend_from_slice(&v.ttft.0);
        }
        let sql = format!(
            "INSERT INTO {table} AS u (bucket_ms, user_id, client, model, key_id, project, \
             requests, tokens_in, tokens_out, cost_usd, errors, latency, ttft) \
             SELECT b, us, c, m, k, p, n, ti, tout, cost, e, \
                    h.lat[(o - 1) * {BINS} + 1 : o * {BINS}], h.tt[(o - 1) * {BINS} + 1 : o * {BINS}] \
             FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                         $7::int8[], $8::int8[], $9::int8[], $10::float8[], $11::int8[]) \
                  WITH ORDINALITY AS v(b, us, c, m, k, p, n, ti, tout, cost, e, o), \
                  (SELECT $12::int8[] AS lat, $13::int8[] AS tt) h \
             ON CONFLICT (bucket_ms, user_id, client, model, key_id, project) DO UPDATE SET \
               requests = u.requests + excluded.requests, \
               tokens_in = u.tokens_in + excluded.tokens_in, \
               tokens_out = u.tokens_out + excluded.tokens_out, \
               cost_usd = u.cost_usd + excluded.cost_usd, \
               errors = u.errors + excluded.errors, {}, {}",
            merge_hist("latency"),
            merge_hist("ttft"),
        );
        tx.execute(
            &sql,
            &[
                &bucket, &text[0], &text[1], &text[2], &text[3], &text[4], &ints[0], &ints[1],
                &ints[2], &cost, &ints[3], &lat, &ttft,
            ],
        )
        .await?;
    }
    Ok(())
}

/// The timeseries of a range, from the minute or the hour table.
pub async fn timeseries(
    client: &Client,
    q: &TimeseriesQuery,
) -> Result<Timeseries, tokio_postgres::Error> {
    let (from, to, _, width) = q.window();
    let table = TABLES
        .iter()
        .find(|(_, w)| *w == width)
        .map_or("memproxy_usage_minute", |(t, _)| t);
    let col = q.group_by.column();
    let sql = format!(
        "SELECT {col}::text, bucket_ms, requests, tokens_in, tokens_out, cost_usd, errors, \
         latency, ttft FROM {table} WHERE bucket_ms >= $1 AND bucket_ms < $2 \
         AND ($3::text IS NULL OR user_id = $3) AND ($4::text IS NULL OR key_id = $4) \
         AND ($5::text IS NULL OR project = $5)"
    );
    let rows = client
        .query(&sql, &[&from, &to, &q.user_id, &q.key_id, &q.project])
        .await?;
    let rows = rows
        .iter()
        .map(|r| {
            let v = RollupValue {
                requests: r.get(2),
                tokens_in: r.get(3),
                tokens_out: r.get(4),
                cost_usd: r.get(5),
                errors: r.get(6),
                latency: Histogram::from_slice(&r.get::<_, Vec<i64>>(7)),
                ttft: Histogram::from_slice(&r.get::<_, Vec<i64>>(8)),
            };
            (r.get::<_, String>(0), r.get::<_, i64>(1), v)
        })
        .collect();
    Ok(rollup::assemble(q, rows))
}
