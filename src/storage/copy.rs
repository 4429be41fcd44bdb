//! `memproxy storage migrate --from sqlite:DIR --to postgres://…`: an embedded install
//! (the SQLite files of one data dir) copied into PostgreSQL — memories with their
//! vectors, virtual keys (with their spend), usage rows (with feedback) and stored
//! responses. Sessions are not copied: they are short-lived conversation state.
//!
//! Each kind is read in id order in chunks; a chunk is written in one transaction
//! together with how far the copy got (`memproxy_copy_progress`, per source and kind), so
//! an interrupted copy resumes after the last chunk written, never writing a row twice.
//! Progress goes to stderr. At the end every kind is counted on both sides.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::postgres::memory::{insert_memory, Insert};
use super::postgres::{analytics::Columns, schema, Pg, PgUrl};
use crate::analytics::Record;
use crate::memory::retrieve::vector_to_bytes;
use crate::memory::text::Analyzer;
use crate::memory::vectors::Quantized;
use crate::memory::Metadata;

/// Rows read and written per transaction.
const CHUNK: i64 = 500;

/// What was copied of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// `memories`, `vectors`, `keys`, `requests`, `responses`.
    pub kind: &'static str,
    /// Rows in the embedded install.
    pub source: u64,
    /// Of those, rows found in PostgreSQL after the copy.
    pub target: u64,
    /// Rows written by this run (the rest were copied by an earlier, interrupted one).
    pub copied_now: u64,
}

impl Counted {
    /// Whether every source row is in PostgreSQL.
    pub fn complete(&self) -> bool {
        self.target == self.source
    }
}

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("source {0}")]
    Source(String),
    #[error("PostgreSQL: {0}")]
    Target(String),
    #[error("stopped")]
    Stopped,
}

fn src(e: impl std::fmt::Display) -> CopyError {
    CopyError::Source(e.to_string())
}

fn tgt(e: impl std::fmt::Display) -> CopyError {
    CopyError::Target(e.to_string())
}

/// `sqlite:DIR` (or a plain DIR) → the data dir.
pub fn parse_source(from: &str) -> Result<PathBuf, String> {
    let dir = from.strip_prefix("sqlite:").unwrap_or(from);
    let dir = dir.strip_prefix("//").unwrap_or(dir);
    let path = PathBuf::from(dir);
    if !path.is_dir() {
        return Err(format!(
            "`{from}` is not a data dir (sqlite:DIR, the directory holding memproxy.db, \
             analytics.db and responses.db)"
        ));
    }
    Ok(path)
}

fn open_source(dir: &Path, file: &str) -> Result<Option<Connection>, CopyError> {
    let path = dir.join(file);
    if !path.exists() {
        return Ok(None);
    }
    let c = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| src(format!("{}: {e}", path.display())))?;
    c.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(src)?;
    Ok(Some(c))
}

fn has_table(c: &Connection, table: &str) -> Result<bool, CopyError> {
    c.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get(0),
    )
    .map_err(src)
}

fn count(c: &Connection, sql: &str) -> Result<u64, CopyError> {
    c.query_row(sql, [], |r| r.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
        .map_err(src)
}

/// Progress reports: kind, rows done, rows in all; returning false stops the copy after
/// the chunk written last (as an interruption would: the next run resumes there).
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64) -> bool;

struct Copier<'a> {
    pg: Pg,
    source: String,
    progress: Progress<'a>,
}

impl Copier<'_> {
    /// How far `kind` was copied: the last source id written and the rows written.
    async fn resume_point(&self, kind: &str) -> Result<(Option<String>, u64), CopyError> {
        let c = self.pg.get().await.map_err(tgt)?;
        let row = c
            .query_opt(
                "SELECT last_id, copied FROM memproxy_copy_progress WHERE source = $1 AND kind = $2",
                &[&self.source, &kind],
            )
            .await
            .map_err(tgt)?;
        Ok(row.map_or((None, 0), |r| {
            (Some(r.get(0)), r.get::<_, i64>(1).max(0) as u64)
        }))
    }

    async fn save_point(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        kind: &str,
        last_id: &str,
        copied: u64,
    ) -> Result<(), CopyError> {
        tx.execute(
            "INSERT INTO memproxy_copy_progress (source, kind, last_id, copied)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, kind) DO UPDATE SET last_id = EXCLUDED.last_id,
                 copied = memproxy_copy_progress.copied + EXCLUDED.copied",
            &[&self.source, &kind, &last_id, &(copied as i64)],
        )
        .await
        .map_err(tgt)?;
        Ok(())
    }

    async fn memories(&mut self, db: &Connection) -> Result<Vec<Counted>, CopyError> {
        let total = count(db, "SELECT count(*) FROM memories")?;
        let vectors = count(db, "SELECT count(*) FROM vectors")?;
        let (last, _) = self.resume_point("memories").await?;
        let mut after: i64 = last.and_then(|l| l.parse().ok()).unwrap_or(i64::MIN);
        let mut done = count_before(db, "SELECT count(*) FROM memories WHERE rid <= ?1", after)?;
        let (mut now, mut vectors_now) = (0, 0);
        let analyzer = Analyzer::default();
        let mut stmt = db
            .prepare(
                "SELECT m.rid, m.id, u.user_id, m.content, m.metadata, m.session_id,
                        m.created_at, e.model, e.vec
                 FROM memories m JOIN users u ON u.uid = m.uid
                 LEFT JOIN vectors e ON e.rid = m.rid
                 WHERE m.rid > ?1 ORDER BY m.rid LIMIT ?2",
            )
            .map_err(src)?;
        type Row = (
            i64,
            String,
            String,
            String,
            String,
            Option<String>,
            i64,
            Option<String>,
            Option<Vec<u8>>,
        );
        loop {
            if !(self.progress)("memories", done, total) {
                return Err(CopyError::Stopped);
            }
            let rows: Vec<Row> = stmt
                .query_map(rusqlite::params![after, CHUNK], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ))
                })
                .and_then(|rows| rows.collect())
                .map_err(src)?;
            let Some(last) = rows.last().map(|r| r.0) else {
                break;
            };
            let mut c = self.pg.get().await.map_err(tgt)?;
            let tx = c.transaction().await.map_err(tgt)?;
            let mut written = 0u64;
            for (_, id, user_id, content, metadata, session_id, created_at, model, vec) in &rows {
                let metadata: Metadata = serde_json::from_str(metadata).unwrap_or_default();
                let placed = insert_memory(
                    &tx,
                    &analyzer,
                    Insert {
                        id,
                        user_id,
                        content,
                        metadata: &metadata,
                        session_id: session_id.as_deref(),
                        created_at_ms: *created_at,
                    },
                )
                .await
                .map_err(tgt)?;
                let vector = vec.as_deref().and_then(Quantized::from_bytes);
                if let (Some((uid, seq)), Some(model), Some(v)) = (placed, model, vector) {
                    // PostgreSQL keeps little-endian f32: the unit vector the int8 form of
                    // the embedded store stands for.
                    let vec = vector_to_bytes(&v.unit());
                    vectors_now += tx
                        .execute(
                            "INSERT INTO memproxy_memory_vectors (uid, seq, model, vec)
                             VALUES ($1, $2, $3, $4) ON CONFLICT (uid, seq) DO NOTHING",
                            &[&uid, &seq, model, &vec],
                        )
                        .await
                        .map_err(tgt)?;
                }
                written += u64::from(placed.is_some());
            }
            self.save_point(&tx, "memories", &last.to_string(), written)
                .await?;
            tx.commit().await.map_err(tgt)?;
            after = last;
            done += rows.len() as u64;
            now += written;
        }
        // Count check: every source id is in PostgreSQL, and so is every vector.
        let ids: Vec<String> = db
            .prepare("SELECT id FROM memories")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(src)?;
        let c = self.pg.get().await.map_err(tgt)?;
        let (mut found, mut found_vectors) = (0u64, 0u64);
        for chunk in ids.chunks(5000) {
            let r = c
                .query_one(
                    "SELECT count(*), count(v.seq) FROM memproxy_memories m
                     LEFT JOIN memproxy_memory_vectors v ON v.uid = m.uid AND v.seq = m.seq
                     WHERE m.id = ANY($1)",
                    &[&chunk],
                )
                .await
                .map_err(tgt)?;
            found += r.get::<_, i64>(0) as u64;
            found_vectors += r.get::<_, i64>(1) as u64;
        }
        Ok(vec![
            Counted {
                kind: "memories",
                source: total,
                target: found,
                copied_now: now,
            },
            Counted {
                kind: "vectors",
                source: vectors,
                target: found_vectors,
                copied_now: vectors_now,
            },
        ])
    }

    async fn keys(&mut self, db: &Connection) -> Result<Counted, CopyError> {
        let rows = crate::storage::embedded::analytics::load_keys(db).map_err(src)?;
        let total = rows.len() as u64;
        if !(self.progress)("keys", 0, total) {
            return Err(CopyError::Stopped);
        }
        let mut c = self.pg.get().await.map_err(tgt)?;
        let tx = c.transaction().await.map_err(tgt)?;
        let mut now = 0;
        for k in &rows {
            now += u64::from(super::postgres::keys::insert(&*tx, k).await.map_err(tgt)?);
        }
        self.save_point(&tx, "keys", "", now).await?;
        tx.commit().await.map_err(tgt)?;
        let _ = (self.progress)("keys", total, total);
        let hashes: Vec<&str> = rows.iter().map(|k| k.hash.as_str()).collect();
        let found: i64 = c
            .query_one(
                "SELECT count(*) FROM memproxy_keys WHERE hash = ANY($1)",
                &[&hashes],
            )
            .await
            .map_err(tgt)?
            .get(0);
        Ok(Counted {
            kind: "keys",
            source: total,
            target: found as u64,
            copied_now: now,
        })
    }

    async fn requests(&mut self, db: &Connection) -> Result<Counted, CopyError> {
        let total = count(db, "SELECT count(*) FROM requests")?;
        let (last, copied_before) = self.resume_point("requests").await?;
        let mut after: i64 = last.and_then(|l| l.parse().ok()).unwrap_or(i64::MIN);
        let mut done = count_before(db, "SELECT count(*) FROM requests WHERE id <= ?1", after)?;
        let mut now = 0;
        let mut stmt = db
            .prepare(&format!(
                "SELECT id, feedback_score, feedback_comment, feedback_ts_ms, {}
                 FROM requests WHERE id > ?1 ORDER BY id LIMIT ?2",
                crate::storage::embedded::analytics::RECORD_COLUMNS
            ))
            .map_err(src)?;
        type Fb = (Option<f64>, Option<String>, Option<i64>);
        loop {
            if !(self.progress)("requests", done, total) {
                return Err(CopyError::Stopped);
            }
            let rows: Vec<(i64, Fb, Record)> = stmt
                .query_map(rusqlite::params![after, CHUNK], |r| {
                    Ok((
                        r.get(0)?,
                        (r.get(1)?, r.get(2)?, r.get(3)?),
                        crate::storage::embedded::analytics::record_from_row(r, 4)?,
                    ))
                })
                .and_then(|rows| rows.collect())
                .map_err(src)?;
            let Some(last) = rows.last().map(|r| r.0) else {
                break;
            };
            let records: Vec<Record> = rows.iter().map(|r| r.2.clone()).collect();
            let cols = Columns::of(&records);
            let score: Vec<Option<f64>> = rows.iter().map(|r| r.1 .0).collect();
            let comment: Vec<Option<String>> = rows.iter().map(|r| r.1 .1.clone()).collect();
            let at: Vec<Option<i64>> = rows.iter().map(|r| r.1 .2).collect();
            let mut params = cols.params();
            params.extend([
                &score as &(dyn tokio_postgres::types::ToSql + Sync),
                &comment,
                &at,
            ]);
            let mut c = self.pg.get().await.map_err(tgt)?;
            let tx = c.transaction().await.map_err(tgt)?;
            tx.execute(COPY_REQUESTS, &params).await.map_err(tgt)?;
            self.save_point(&tx, "requests", &last.to_string(), rows.len() as u64)
                .await?;
            tx.commit().await.map_err(tgt)?;
            after = last;
            done += rows.len() as u64;
            now += rows.len() as u64;
        }
        // Rows carry no unique id: each chunk was written with its progress row, so the
        // copied count is exact.
        Ok(Counted {
            kind: "requests",
            source: total,
            target: copied_before + now,
            copied_now: now,
        })
    }

    async fn responses(&mut self, db: &Connection) -> Result<Counted, CopyError> {
        let total = count(db, "SELECT count(*) FROM responses")?;
        let (last, _) = self.resume_point("responses").await?;
        let mut after: i64 = last.and_then(|l| l.parse().ok()).unwrap_or(i64::MIN);
        let mut done = count_before(db, "SELECT count(*) FROM responses WHERE seq <= ?1", after)?;
        let mut now = 0;
        let mut stmt = db
            .prepare(
                "SELECT seq, user_id, id, created_at, native_deployment, input_items, response
                 FROM responses WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(src)?;
        type Row = (i64, String, String, i64, Option<String>, String, String);
        loop {
            if !(self.progress)("responses", done, total) {
                return Err(CopyError::Stopped);
            }
            let rows: Vec<Row> = stmt
                .query_map(rusqlite::params![after, CHUNK], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })
                .and_then(|rows| rows.collect())
                .map_err(src)?;
            let Some(last) = rows.last().map(|r| r.0) else {
                break;
            };
            let mut c = self.pg.get().await.map_err(tgt)?;
            let tx = c.transaction().await.map_err(tgt)?;
            let mut written = 0;
            for (_, user, id, created, native, input, response) in &rows {
                written += tx
                    .execute(
                        "INSERT INTO memproxy_responses
                             (user_id, id, created_at, native_deployment, input_items, response)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, id) DO NOTHING",
                        &[user, id, created, native, input, response],
                    )
                    .await
                    .map_err(tgt)?;
            }
            self.save_point(&tx, "responses", &last.to_string(), written)
                .await?;
            tx.commit().await.map_err(tgt)?;
            after = last;
            done += rows.len() as u64;
            now += written;
        }
        let keys: Vec<(String, String)> = db
            .prepare("SELECT user_id, id FROM responses")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(src)?;
        let c = self.pg.get().await.map_err(tgt)?;
        let mut found = 0u64;
        for chunk in keys.chunks(5000) {
            let users: Vec<&str> = chunk.iter().map(|k| k.0.as_str()).collect();
            let ids: Vec<&str> = chunk.iter().map(|k| k.1.as_str()).collect();
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM memproxy_responses r
                     JOIN unnest($1::text[], $2::text[]) AS k(u, i) ON r.user_id = k.u AND r.id = k.i",
                    &[&users, &ids],
                )
                .await
                .map_err(tgt)?
                .get(0);
            found += n as u64;
        }
        Ok(Counted {
            kind: "responses",
            source: total,
            target: found,
            copied_now: now,
        })
    }
}

fn count_before(db: &Connection, sql: &str, after: i64) -> Result<u64, CopyError> {
    db.query_row(sql, [after], |r| r.get::<_, i64>(0))
        .optional()
        .map(|n| n.unwrap_or(0).max(0) as u64)
        .map_err(src)
}

/// The usage-row statement of the copy: [`Columns`]' 28 arrays and the feedback.
const COPY_REQUESTS: &str = "INSERT INTO memproxy_requests (ts_ms, request_id, user_id, key_id, \
    key_alias, endpoint, model, deployment, upstream_model, provider, stream, tokens_in, \
    tokens_out, tokens_cached, tokens_reasoning, cost_usd, total_ms, ttft_ms, upstream_ms, \
    overhead_ms, status, error_type, memories_injected, tool_rounds, attempts, client, project, \
    injected, feedback_score, feedback_comment, feedback_ts_ms) \
    SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], \
    $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bool[], $12::int8[], \
    $13::int8[], $14::int8[], $15::int8[], $16::float8[], $17::float8[], $18::float8[], \
    $19::float8[], $20::float8[], $21::int4[], $22::text[], $23::int4[], $24::int4[], \
    $25::int4[], $26::text[], $27::text[], $28::text[], $29::float8[], $30::text[], \
    $31::int8[])";

/// Copies the embedded install in `dir` into the database at `to` (migrating its schema
/// first), reporting progress; returns the count check of every kind.
pub async fn run(
    dir: &Path,
    to: &PgUrl,
    progress: Progress<'_>,
) -> Result<Vec<Counted>, CopyError> {
    let mut client = to.connect().await.map_err(tgt)?;
    schema::migrate(&mut client)
        .await
        .map_err(CopyError::Target)?;
    drop(client);
    let source = std::fs::canonicalize(dir)
        .map_err(src)?
        .to_string_lossy()
        .into_owned();
    let mut copier = Copier {
        pg: to.pool().map_err(CopyError::Target)?,
        source,
        progress,
    };
    let mut out = Vec::new();
    if dir.join("analytics.db").exists() {
        // Bring an older file to this binary's schema first, as starting memproxy on it
        // would (columns added since, such as `client`).
        crate::storage::embedded::analytics::SqliteStore::open(dir)
            .map_err(|e| src(format!("analytics.db: {e}")))?;
    }
    if let Some(db) = open_source(dir, "analytics.db")? {
        if has_table(&db, "keys")? {
            out.push(copier.keys(&db).await?);
        }
        if has_table(&db, "requests")? {
            out.push(copier.requests(&db).await?);
        }
    }
    if let Some(db) = open_source(dir, crate::storage::embedded::memory::DB_FILE)? {
        if has_table(&db, "memories")? {
            out.extend(copier.memories(&db).await?);
        }
    }
    if let Some(db) = open_source(dir, "responses.db")? {
        if has_table(&db, "responses")? && has_table_column(&db, "responses", "seq")? {
            out.push(copier.responses(&db).await?);
        }
    }
    // A bulk copy leaves the planner's statistics and the visibility map behind the
    // tables: gather them now rather than at autovacuum's next turn, so the first
    // requests get index-only scans and plans made for the real sizes.
    let client = to.connect().await.map_err(tgt)?;
    client
        .batch_execute(
            "VACUUM (ANALYZE) memproxy_memories, memproxy_memory_terms, memproxy_memory_users, \
             memproxy_memory_vectors, memproxy_requests, memproxy_keys, memproxy_responses",
        )
        .await
        .map_err(tgt)?;
    Ok(out)
}

fn has_table_column(c: &Connection, table: &str, column: &str) -> Result<bool, CopyError> {
    c.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get(0),
    )
    .map_err(src)
}
