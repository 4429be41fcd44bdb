//! The embedded backend of the operations store: one SQLite file (`analytics.db` in the
//! data dir) in WAL mode, holding the `requests` rows and the virtual `keys`.

mod rollup;

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use crate::storage::sqlite::{self, Migration, Step};

use crate::analytics::rollup::{Timeseries, TimeseriesQuery};
use crate::analytics::store::{
    AnalyticsStore, Feedback, GroupBy, Record, RequestsQuery, StoreError, StoredRecord, UsageGroup,
    UsageQuery,
};
use crate::analytics::timefmt;
use crate::keys::KeyRow;

/// File name inside the data dir.
pub const DB_FILE: &str = "analytics.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    key_id TEXT,
    key_alias TEXT,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    deployment TEXT,
    upstream_model TEXT,
    provider TEXT,
    stream INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    tokens_cached INTEGER NOT NULL,
    tokens_reasoning INTEGER NOT NULL,
    cost_usd REAL,
    total_ms REAL NOT NULL,
    ttft_ms REAL,
    upstream_ms REAL,
    overhead_ms REAL NOT NULL,
    status INTEGER NOT NULL,
    error_type TEXT,
    memories_injected INTEGER NOT NULL,
    tool_rounds INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    feedback_score REAL,
    feedback_comment TEXT,
    feedback_ts_ms INTEGER
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts_ms);
DROP INDEX IF EXISTS requests_user_ts;
DROP INDEX IF EXISTS requests_request_id;
DROP INDEX IF EXISTS requests_key_ts;
CREATE TABLE IF NOT EXISTS keys (
    hash TEXT PRIMARY KEY,
    alias TEXT,
    user_id TEXT,
    models TEXT NOT NULL,
    max_budget REAL,
    expires_ms INTEGER,
    rpm_limit INTEGER,
    tpm_limit INTEGER,
    metadata TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    preview TEXT NOT NULL,
    spend REAL NOT NULL DEFAULT 0
);
";

/// The schema's steps ([`crate::storage::sqlite::open`] applies those a file has not
/// had; its `PRAGMA user_version` counts them).
const MIGRATIONS: &[Migration] = &[
    Migration {
        // Files of the first releases have the base tables at version 0.
        description: "the base tables; the client program of each request",
        apply: Step::Code(|tx| {
            tx.execute_batch(SCHEMA)?;
            if tx.prepare("SELECT client FROM requests LIMIT 0").is_err() {
                tx.execute_batch(
                    "ALTER TABLE requests ADD COLUMN client TEXT NOT NULL DEFAULT ''",
                )?;
            }
            Ok(())
        }),
    },
    Migration {
        description: "the project a virtual key is bound to",
        apply: Step::Sql("ALTER TABLE keys ADD COLUMN project TEXT"),
    },
    Migration {
        // Version 3 had the rollups without the project; step 4 makes them afresh.
        description: "usage rollups (made by the next step)",
        apply: Step::Sql(""),
    },
    Migration {
        description: "each row's project and injected memories; rollups by project",
        apply: Step::Code(|tx| {
            if tx.prepare("SELECT project FROM requests LIMIT 0").is_err() {
                tx.execute_batch(
                    "ALTER TABLE requests ADD COLUMN project TEXT NOT NULL DEFAULT '';
                     ALTER TABLE requests ADD COLUMN injected TEXT;",
                )?;
            }
            tx.execute_batch(rollup::SCHEMA)?;
            rollup::backfill(tx)
        }),
    },
];

/// The schema version of `analytics.db` this build writes; a newer file is refused.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The SQLite store. Rows are indexed by time only: every further index multiplies the
/// cost of a write (measured: ~2 µs per row with the time index, ~11 µs with a
/// `(user_id, ts)` index as well, ~21 µs with one on the random request ids), and the
/// queries either group a time range or read newest first until a page is full.
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating) `<dir>/analytics.db` and its schema.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let conn = sqlite::open(&dir.join(DB_FILE), sqlite::Settings::default(), MIGRATIONS)
            .map_err(|e| match e {
                sqlite::OpenError::Unavailable { .. } => StoreError::Unavailable(e.to_string()),
                sqlite::OpenError::Schema { .. } => StoreError::Database(e.to_string()),
            })?;
        Ok(Self { conn })
    }
}

pub(crate) const RECORD_COLUMNS: &str =
    "ts_ms, request_id, user_id, key_id, key_alias, endpoint, model, \
    deployment, upstream_model, provider, stream, tokens_in, tokens_out, tokens_cached, \
    tokens_reasoning, cost_usd, total_ms, ttft_ms, upstream_ms, overhead_ms, status, error_type, \
    memories_injected, tool_rounds, attempts, client, project, injected";

pub(crate) fn record_from_row(r: &Row<'_>, at: usize) -> rusqlite::Result<Record> {
    let u = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(at + i)?.max(0) as u64) };
    Ok(Record {
        ts_ms: r.get(at)?,
        request_id: r.get(at + 1)?,
        user_id: r.get(at + 2)?,
        key_id: r.get(at + 3)?,
        key_alias: r.get(at + 4)?,
        endpoint: r.get(at + 5)?,
        model: r.get(at + 6)?,
        deployment: r.get(at + 7)?,
        upstream_model: r.get(at + 8)?,
        provider: r.get(at + 9)?,
        stream: r.get(at + 10)?,
        tokens_in: u(11)?,
        tokens_out: u(12)?,
        tokens_cached: u(13)?,
        tokens_reasoning: u(14)?,
        cost_usd: r.get(at + 15)?,
        total_ms: r.get(at + 16)?,
        ttft_ms: r.get(at + 17)?,
        upstream_ms: r.get(at + 18)?,
        overhead_ms: r.get(at + 19)?,
        status: r.get(at + 20)?,
        error_type: r.get(at + 21)?,
        memories_injected: r.get(at + 22)?,
        tool_rounds: r.get(at + 23)?,
        attempts: r.get(at + 24)?,
        client: r.get(at + 25)?,
        project: r.get(at + 26)?,
        injected: crate::analytics::store::injected_from_json(r.get(at + 27)?),
    })
}

/// WHERE clauses over `ts_ms` shared by the queries.
fn time_filter(from: Option<i64>, to: Option<i64>, sql: &mut Vec<String>, args: &mut Vec<i64>) {
    if let Some(f) = from {
        args.push(f);
        sql.push(format!("ts_ms >= ?{}", args.len()));
    }
    if let Some(t) = to {
        args.push(t);
        sql.push(format!("ts_ms < ?{}", args.len()));
    }
}

impl AnalyticsStore for SqliteStore {
    fn insert_records(&mut self, rows: &[Record]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let mut spend: HashMap<&str, f64> = HashMap::new();
        {
            let mut stmt = tx.prepare_cached(&format!(
                "INSERT INTO requests ({RECORD_COLUMNS}) VALUES \
                 (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24,?25,?26,?27,?28)"
            ))?;
            for r in rows {
                stmt.execute(params![
                    r.ts_ms,
                    r.request_id,
                    r.user_id,
                    r.key_id,
                    r.key_alias,
                    r.endpoint,
                    r.model,
                    r.deployment,
                    r.upstream_model,
                    r.provider,
                    r.stream,
                    r.tokens_in as i64,
                    r.tokens_out as i64,
                    r.tokens_cached as i64,
                    r.tokens_reasoning as i64,
                    r.cost_usd,
                    r.total_ms,
                    r.ttft_ms,
                    r.upstream_ms,
                    r.overhead_ms,
                    r.status,
                    r.error_type,
                    r.memories_injected,
                    r.tool_rounds,
                    r.attempts,
                    r.client,
                    r.project,
                    crate::analytics::store::injected_to_json(&r.injected),
                ])?;
                if let (Some(k), Some(c)) = (&r.key_id, r.cost_usd) {
                    *spend.entry(k.as_str()).or_default() += c;
                }
            }
            let mut upd =
                tx.prepare_cached("UPDATE keys SET spend = spend + ?1 WHERE hash = ?2")?;
            for (key, cost) in spend {
                upd.execute(params![cost, key])?;
            }
            rollup::add(&tx, rows)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn usage(&mut self, q: &UsageQuery) -> Result<Vec<UsageGroup>, StoreError> {
        let group = match q.group_by {
            GroupBy::User => "user_id",
            GroupBy::Model => "model",
            GroupBy::Key => "COALESCE(key_id, '(master)')",
            GroupBy::Day => "date(ts_ms / 1000, 'unixepoch')",
            GroupBy::Client => "client",
            GroupBy::Project => "project",
        };
        let mut clauses = Vec::new();
        let mut args = Vec::new();
        time_filter(q.from_ms, q.to_ms, &mut clauses, &mut args);
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        // Nearest-rank percentiles with window functions (PostgreSQL would use
        // percentile_disc); totals in the same pass.
        let sql = format!(
            "WITH f AS (SELECT {group} AS g, * FROM requests {filter}),
             r AS (SELECT f.*, ROW_NUMBER() OVER (PARTITION BY g ORDER BY total_ms) AS rn,
                          COUNT(*) OVER (PARTITION BY g) AS n FROM f)
             SELECT g, COUNT(*), SUM(tokens_in), SUM(tokens_out), TOTAL(cost_usd),
                    SUM(status >= 400 OR error_type IS NOT NULL),
                    MAX(CASE WHEN rn = (n * 50 + 99) / 100 THEN total_ms END),
                    MAX(CASE WHEN rn = (n * 95 + 99) / 100 THEN total_ms END),
                    MAX(key_alias)
             FROM r GROUP BY g ORDER BY g"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
            Ok(UsageGroup {
                group: r.get(0)?,
                requests: r.get::<_, i64>(1)? as u64,
                tokens_in: r.get::<_, Option<i64>>(2)?.unwrap_or(0) as u64,
                tokens_out: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u64,
                cost_usd: r.get(4)?,
                errors: r.get::<_, Option<i64>>(5)?.unwrap_or(0) as u64,
                latency_p50_ms: r.get::<_, Option<f64>>(6)?.unwrap_or(0.0),
                latency_p95_ms: r.get::<_, Option<f64>>(7)?.unwrap_or(0.0),
                key_alias: if q.group_by == GroupBy::Key {
                    r.get(8)?
                } else {
                    None
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn requests(&mut self, q: &RequestsQuery) -> Result<Vec<StoredRecord>, StoreError> {
        let mut clauses = Vec::new();
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut text = |col: &str, v: &Option<String>, clauses: &mut Vec<String>| {
            if let Some(v) = v {
                args.push(v.clone().into());
                clauses.push(format!("{col} = ?{}", args.len()));
            }
        };
        text("user_id", &q.user_id, &mut clauses);
        text("client", &q.client, &mut clauses);
        text("model", &q.model, &mut clauses);
        text("key_id", &q.key_id, &mut clauses);
        text("request_id", &q.request_id, &mut clauses);
        text("project", &q.project, &mut clauses);
        clauses.extend(q.status.map(|f| f.sql()));
        for (col, op, v) in [
            ("ts_ms", ">=", q.from_ms),
            ("ts_ms", "<", q.to_ms),
            ("id", "<", q.before_id),
        ] {
            if let Some(v) = v {
                args.push(v.into());
                clauses.push(format!("{col} {op} ?{}", args.len()));
            }
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        args.push((q.limit as i64).into());
        let sql = format!(
            "SELECT id, feedback_score, feedback_comment, {RECORD_COLUMNS} FROM requests {filter} \
             ORDER BY id DESC LIMIT ?{}",
            args.len()
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
            let record = record_from_row(r, 3)?;
            Ok(StoredRecord {
                id: r.get(0)?,
                time: timefmt::format_ms(record.ts_ms),
                feedback_score: r.get(1)?,
                feedback_comment: r.get(2)?,
                record,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_feedback(&mut self, fb: &Feedback) -> Result<bool, StoreError> {
        // No index on request ids (random ids make every insert pay for one): the scan
        // runs newest first and stops at the first match, so recent requests are found
        // at once.
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM requests WHERE request_id = ?1 \
                 AND (?2 IS NULL OR key_id = ?2) ORDER BY id DESC LIMIT 1",
                params![fb.request_id, fb.key_id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = id else { return Ok(false) };
        self.conn.execute(
            "UPDATE requests SET feedback_score = ?1, feedback_comment = ?2, feedback_ts_ms = ?3 \
             WHERE id = ?4",
            params![fb.score, fb.comment, timefmt::now_ms(), id],
        )?;
        Ok(true)
    }

    fn timeseries(&mut self, q: &TimeseriesQuery) -> Result<Timeseries, StoreError> {
        rollup::timeseries(&self.conn, q)
    }

    fn check(&mut self) -> Result<(), StoreError> {
        self.conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }
}

/// Every virtual key in `conn`, oldest first (the embedded key store, and
/// `memproxy storage migrate` on a read-only connection).
pub fn load_keys(conn: &Connection) -> Result<Vec<KeyRow>, StoreError> {
    // A file of an older memproxy, read without migrating it, has no `project` column.
    let project = if conn.prepare("SELECT project FROM keys LIMIT 0").is_ok() {
        "project"
    } else {
        "NULL"
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT hash, alias, user_id, models, max_budget, expires_ms, rpm_limit, tpm_limit, \
         metadata, created_ms, preview, spend, {project} FROM keys ORDER BY created_ms"
    ))?;
    let rows = stmt.query_map([], |r| {
        let models: String = r.get(3)?;
        let metadata: String = r.get(8)?;
        Ok(KeyRow {
            hash: r.get(0)?,
            alias: r.get(1)?,
            user_id: r.get(2)?,
            models: serde_json::from_str(&models).unwrap_or_default(),
            max_budget: r.get(4)?,
            expires_ms: r.get(5)?,
            rpm_limit: r.get::<_, Option<i64>>(6)?.map(|v| v.max(0) as u64),
            tpm_limit: r.get::<_, Option<i64>>(7)?.map(|v| v.max(0) as u64),
            metadata: serde_json::from_str(&metadata).unwrap_or_default(),
            created_ms: r.get(9)?,
            preview: r.get(10)?,
            spend: r.get(11)?,
            project: r.get(12)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The virtual keys kept in the same file (`crate::keys::KeyStore`'s embedded backend
/// calls these on a connection of its own).
impl SqliteStore {
    /// Every virtual key, oldest first, with its accumulated spend.
    pub fn load_keys(&mut self) -> Result<Vec<KeyRow>, StoreError> {
        load_keys(&self.conn)
    }

    /// Stores a new key.
    pub fn insert_key(&mut self, k: &KeyRow) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO keys (hash, alias, user_id, models, max_budget, expires_ms, rpm_limit, \
             tpm_limit, metadata, created_ms, preview, spend, project) \
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
            params![
                k.hash,
                k.alias,
                k.user_id,
                serde_json::to_string(&k.models).unwrap_or_else(|_| "[]".into()),
                k.max_budget,
                k.expires_ms,
                k.rpm_limit.map(|v| v as i64),
                k.tpm_limit.map(|v| v as i64),
                k.metadata.to_string(),
                k.created_ms,
                k.preview,
                k.spend,
                k.project,
            ],
        )?;
        Ok(())
    }

    /// Deletes keys by hash; returns the hashes that existed.
    pub fn delete_keys(&mut self, hashes: &[String]) -> Result<Vec<String>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut deleted = Vec::new();
        {
            let mut stmt = tx.prepare_cached("DELETE FROM keys WHERE hash = ?1")?;
            for h in hashes {
                if stmt.execute([h])? > 0 {
                    deleted.push(h.clone());
                }
            }
        }
        tx.commit()?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, model: &str, ts_ms: i64, total_ms: f64, cost: f64) -> Record {
        Record {
            ts_ms,
            request_id: format!("r-{user}-{ts_ms}"),
            user_id: user.into(),
            endpoint: "chat".into(),
            model: model.into(),
            tokens_in: 10,
            tokens_out: 5,
            cost_usd: Some(cost),
            total_ms,
            status: 200,
            ..Default::default()
        }
    }

    #[test]
    fn usage_groups_totals_and_percentiles() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path()).unwrap();
        let mut rows: Vec<Record> = (1..=100)
            .map(|i| row("alice", "gpt", 1_700_000_000_000 + i, i as f64, 0.01))
            .collect();
        let mut failed = row("bob", "claude", 1_700_086_400_000, 7.0, 0.5);
        failed.status = 502;
        failed.error_type = Some("upstream_status".into());
        rows.push(failed);
        s.insert_records(&rows).unwrap();

        let by_user = s
            .usage(&UsageQuery {
                group_by: GroupBy::User,
                from_ms: None,
                to_ms: None,
            })
            .unwrap();
        assert_eq!(by_user.len(), 2);
        let alice = &by_user[0];
        assert_eq!(
            (
                alice.group.as_str(),
                alice.requests,
                alice.tokens_in,
                alice.errors
            ),
            ("alice", 100, 1000, 0)
        );
        assert!((alice.cost_usd - 1.0).abs() < 1e-9);
        assert_eq!((alice.latency_p50_ms, alice.latency_p95_ms), (50.0, 95.0));
        assert_eq!(by_user[1].errors, 1);

        let by_day = s
            .usage(&UsageQuery {
                group_by: GroupBy::Day,
                from_ms: None,
                to_ms: None,
            })
            .unwrap();
        let days: Vec<_> = by_day
            .iter()
            .map(|g| (g.group.as_str(), g.requests))
            .collect();
        assert_eq!(days, [("2023-11-14", 100), ("2023-11-15", 1)]);

        let later = s
            .usage(&UsageQuery {
                group_by: GroupBy::Model,
                from_ms: Some(1_700_086_400_000),
                to_ms: None,
            })
            .unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].group, "claude");
    }

    #[test]
    fn old_files_gain_the_client_column_and_group_by_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A file as memproxy wrote it before migrations: the base schema, version 0.
            let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute(
                "INSERT INTO requests (ts_ms, request_id, user_id, endpoint, model, stream, \
                 tokens_in, tokens_out, tokens_cached, tokens_reasoning, total_ms, overhead_ms, \
                 status, memories_injected, tool_rounds, attempts) \
                 VALUES (1, 'old', 'u', 'chat', 'm', 0, 1, 1, 0, 0, 1.0, 1.0, 200, 0, 0, 1)",
                [],
            )
            .unwrap();
        }
        let mut s = SqliteStore::open(dir.path()).unwrap();
        let mut new = row("u", "m", 2, 1.0, 0.1);
        new.client = "claude-code".into();
        s.insert_records(&[new]).unwrap();
        let all = s
            .requests(&RequestsQuery {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        let clients: Vec<_> = all.iter().map(|r| r.record.client.as_str()).collect();
        assert_eq!(clients, ["claude-code", ""]);
        let only = s
            .requests(&RequestsQuery {
                client: Some("claude-code".into()),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(only.len(), 1);
        let groups = s
            .usage(&UsageQuery {
                group_by: GroupBy::Client,
                from_ms: None,
                to_ms: None,
            })
            .unwrap();
        let groups: Vec<_> = groups
            .iter()
            .map(|g| (g.group.as_str(), g.requests))
            .collect();
        assert_eq!(groups, [("", 1), ("claude-code", 1)]);
        drop(s);
        // Opening again applies nothing twice.
        let version: i64 = SqliteStore::open(dir.path())
            .unwrap()
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn rows_keep_their_project_and_injected_memories() {
        use crate::analytics::store::{Injected, StatusFilter};
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path()).unwrap();
        let mut a = row("u", "m", 1, 1.0, 0.1);
        a.project = "web".into();
        a.injected = vec![Injected {
            id: "mem-1".into(),
            position: 1,
            scope: "project".into(),
            score: 0.8,
            share: 1.0,
            age_s: 42,
            truncated: true,
        }];
        a.memories_injected = 1;
        let mut b = row("u", "m", 2, 1.0, 0.1);
        b.status = 502;
        s.insert_records(&[a.clone(), b]).unwrap();
        // Row 1 answered, row 2 failed with 502.
        for (filter, want) in [
            (StatusFilter::Errors, vec![2]),
            (StatusFilter::Ok, vec![1]),
            (StatusFilter::Code(502), vec![2]),
            (StatusFilter::Code(404), vec![]),
        ] {
            let rows = s
                .requests(&RequestsQuery {
                    status: Some(filter),
                    limit: 10,
                    ..Default::default()
                })
                .unwrap();
            let ts: Vec<i64> = rows.iter().map(|r| r.record.ts_ms).collect();
            assert_eq!(ts, want, "{filter:?}");
        }
        let web = s
            .requests(&RequestsQuery {
                project: Some("web".into()),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(web.len(), 1);
        assert_eq!(web[0].record, a);
        let none = s
            .requests(&RequestsQuery {
                project: Some(String::new()),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(none.len(), 1);
        assert!(none[0].record.injected.is_empty());
        let groups = s
            .usage(&UsageQuery {
                group_by: GroupBy::Project,
                from_ms: None,
                to_ms: None,
            })
            .unwrap();
        let groups: Vec<_> = groups
            .iter()
            .map(|g| (g.group.as_str(), g.requests))
            .collect();
        assert_eq!(groups, [("", 1), ("web", 1)]);
    }

    #[test]
    fn a_file_of_a_newer_memproxy_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = SqliteStore::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("newer than this build"), "{err}");
    }

    #[test]
    fn pages_feedback_and_key_spend() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path()).unwrap();
        s.insert_key(&KeyRow {
            hash: "h1".into(),
            alias: Some("ci".into()),
            created_ms: 1,
            preview: "sk-...abcd".into(),
            metadata: serde_json::json!({}),
            ..Default::default()
        })
        .unwrap();
        let mut rows: Vec<Record> = (0..5).map(|i| row("u", "m", i, 1.0, 0.25)).collect();
        for r in &mut rows {
            r.key_id = Some("h1".into());
        }
        s.insert_records(&rows).unwrap();
        assert_eq!(s.load_keys().unwrap()[0].spend, 1.25);

        let page = s
            .requests(&RequestsQuery {
                limit: 2,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page.len(), 2);
        assert_eq!(page[0].record.ts_ms, 4);
        let next = s
            .requests(&RequestsQuery {
                limit: 10,
                before_id: Some(page[1].id),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            next.iter().map(|r| r.record.ts_ms).collect::<Vec<_>>(),
            [2, 1, 0]
        );

        let fb = |id: &str, key: Option<&str>| Feedback {
            request_id: id.into(),
            score: Some(1.0),
            comment: Some("good".into()),
            key_id: key.map(str::to_string),
        };
        assert!(s.set_feedback(&fb("r-u-3", None)).unwrap());
        assert!(!s.set_feedback(&fb("nope", None)).unwrap());
        assert!(!s.set_feedback(&fb("r-u-3", Some("other"))).unwrap());
        let got = s
            .requests(&RequestsQuery {
                request_id: Some("r-u-3".into()),
                limit: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(got[0].feedback_comment.as_deref(), Some("good"));
        assert_eq!(s.delete_keys(&["h1".into(), "h2".into()]).unwrap(), ["h1"]);
    }
}

#[cfg(test)]
mod throughput {
    use super::*;

    /// Cost of writing rows, for tuning: `cargo test --release --lib insert_throughput --
    /// --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn insert_throughput() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(dir.path()).unwrap();
        let batch: Vec<Record> = (0..100)
            .map(|i| Record {
                ts_ms: 1_700_000_000_000 + i,
                request_id: uuid::Uuid::new_v4().to_string(),
                user_id: format!("conn-{}", i % 50),
                endpoint: "chat".into(),
                model: "bench".into(),
                deployment: Some("bench".into()),
                upstream_model: Some("gpt-4o-mini".into()),
                provider: Some("openai".into()),
                tokens_in: 9,
                tokens_out: 16,
                cost_usd: Some(0.0000113),
                total_ms: 0.2,
                upstream_ms: Some(0.05),
                overhead_ms: 0.15,
                status: 200,
                attempts: 1,
                ..Default::default()
            })
            .collect();
        let rounds = 300;
        let started = std::time::Instant::now();
        let mut batch = batch;
        for round in 0..rounds {
            for (i, r) in batch.iter_mut().enumerate() {
                r.ts_ms = 1_700_000_000_000 + (round * 100 + i) as i64;
            }
            s.insert_records(&batch).unwrap();
        }
        let per_row = started.elapsed().as_secs_f64() * 1e6 / (rounds * batch.len()) as f64;
        eprintln!("{per_row:.2} µs per row in batches of {}", batch.len());
    }
}
