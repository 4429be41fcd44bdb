//! The embedded store's usage rollups (see [`crate::analytics::rollup`]): tables `usage_minute`,
//! `usage_hour` and `usage_day`, kept up to date in the same transaction as the rows they sum, and read
//! by the timeseries query.

use rusqlite::{params, Connection, OptionalExtension};

use crate::analytics::rollup::{
    self, Histogram, RollupKey, RollupValue, Timeseries, TimeseriesQuery, DAY_MS, HOUR_MS,
    MINUTE_MS,
};
use crate::analytics::store::{Record, StoreError};

/// The rollup tables as of schema version 4 (the project is a dimension), made afresh
/// (the tables of version 3 dropped) and then filled from the rows by [`backfill`].
pub const SCHEMA: &str = "
DROP TABLE IF EXISTS usage_minute;
DROP TABLE IF EXISTS usage_hour;
DROP TABLE IF EXISTS usage_day;
CREATE TABLE usage_minute (
    bucket_ms INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    client TEXT NOT NULL,
    model TEXT NOT NULL,
    key_id TEXT NOT NULL,
    project TEXT NOT NULL,
    requests INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    errors INTEGER NOT NULL,
    latency BLOB NOT NULL,
    ttft BLOB NOT NULL,
    PRIMARY KEY (bucket_ms, user_id, client, model, key_id, project)
) WITHOUT ROWID;
CREATE TABLE usage_hour (
    bucket_ms INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    client TEXT NOT NULL,
    model TEXT NOT NULL,
    key_id TEXT NOT NULL,
    project TEXT NOT NULL,
    requests INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    errors INTEGER NOT NULL,
    latency BLOB NOT NULL,
    ttft BLOB NOT NULL,
    PRIMARY KEY (bucket_ms, user_id, client, model, key_id, project)
) WITHOUT ROWID;
CREATE TABLE usage_day (
    bucket_ms INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    client TEXT NOT NULL,
    model TEXT NOT NULL,
    key_id TEXT NOT NULL,
    project TEXT NOT NULL,
    requests INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    errors INTEGER NOT NULL,
    latency BLOB NOT NULL,
    ttft BLOB NOT NULL,
    PRIMARY KEY (bucket_ms, user_id, client, model, key_id, project)
) WITHOUT ROWID;
";

const TABLES: [(&str, i64); 3] = [
    ("usage_minute", MINUTE_MS),
    ("usage_hour", HOUR_MS),
    ("usage_day", DAY_MS),
];

/// The table of a bucket width.
fn table_of(width: i64) -> &'static str {
    TABLES
        .iter()
        .find(|(_, w)| *w == width)
        .map_or("usage_minute", |(t, _)| t)
}

/// Adds a batch of rows to both rollup tables (inside the caller's transaction).
pub fn add(conn: &Connection, rows: &[Record]) -> rusqlite::Result<()> {
    for (table, width) in TABLES {
        let folded = rollup::fold(rows, width);
        let mut read = conn.prepare_cached(&format!(
            "SELECT requests, tokens_in, tokens_out, cost_usd, errors, latency, ttft FROM {table} \
             WHERE bucket_ms = ?1 AND user_id = ?2 AND client = ?3 AND model = ?4 AND key_id = ?5 \
             AND project = ?6"
        ))?;
        let mut write = conn.prepare_cached(&format!(
            "INSERT OR REPLACE INTO {table} (bucket_ms, user_id, client, model, key_id, project, \
             requests, tokens_in, tokens_out, cost_usd, errors, latency, ttft) \
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)"
        ))?;
        for (k, mut v) in folded {
            let old = read
                .query_row(
                    params![
                        k.bucket_ms,
                        k.user_id,
                        k.client,
                        k.model,
                        k.key_id,
                        k.project
                    ],
                    value_at(0),
                )
                .optional()?;
            if let Some(old) = old {
                v.merge(&old);
            }
            write_row(&mut write, &k, &v)?;
        }
    }
    Ok(())
}

fn write_row(
    stmt: &mut rusqlite::CachedStatement<'_>,
    k: &RollupKey,
    v: &RollupValue,
) -> rusqlite::Result<()> {
    stmt.execute(params![
        k.bucket_ms,
        k.user_id,
        k.client,
        k.model,
        k.key_id,
        k.project,
        v.requests,
        v.tokens_in,
        v.tokens_out,
        v.cost_usd,
        v.errors,
        v.latency.to_blob(),
        v.ttft.to_blob(),
    ])?;
    Ok(())
}

/// Reads a [`RollupValue`] from 7 columns starting at `at`.
fn value_at(at: usize) -> impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<RollupValue> {
    move |r| {
        Ok(RollupValue {
            requests: r.get(at)?,
            tokens_in: r.get(at + 1)?,
            tokens_out: r.get(at + 2)?,
            cost_usd: r.get(at + 3)?,
            errors: r.get(at + 4)?,
            latency: Histogram::from_blob(&r.get::<_, Vec<u8>>(at + 5)?),
            ttft: Histogram::from_blob(&r.get::<_, Vec<u8>>(at + 6)?),
        })
    }
}

/// Fills the rollups from the request rows already stored (migration to version 4),
/// reading them in pages.
pub fn backfill(conn: &Connection) -> rusqlite::Result<()> {
    let mut after = 0i64;
    loop {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id, {} FROM requests WHERE id > ?1 ORDER BY id LIMIT 20000",
            super::RECORD_COLUMNS
        ))?;
        let rows = stmt
            .query_map([after], |r| {
                Ok((r.get::<_, i64>(0)?, super::record_from_row(r, 1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let Some(last) = rows.last().map(|r| r.0) else {
            return Ok(());
        };
        after = last;
        let records: Vec<Record> = rows.into_iter().map(|r| r.1).collect();
        add(conn, &records)?;
    }
}

/// The timeseries of a range, from the minute or the hour table.
pub fn timeseries(conn: &Connection, q: &TimeseriesQuery) -> Result<Timeseries, StoreError> {
    let (from, to, _, width) = q.window();
    let table = table_of(width);
    let col = q.group_by.column();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {col}, bucket_ms, requests, tokens_in, tokens_out, cost_usd, errors, latency, \
         ttft FROM {table} WHERE bucket_ms >= ?1 AND bucket_ms < ?2 \
         AND (?3 IS NULL OR user_id = ?3) AND (?4 IS NULL OR key_id = ?4) \
         AND (?5 IS NULL OR project = ?5)"
    ))?;
    let read = value_at(2);
    let rows = stmt
        .query_map(params![from, to, q.user_id, q.key_id, q.project], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, read(r)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rollup::assemble(q, rows))
}
