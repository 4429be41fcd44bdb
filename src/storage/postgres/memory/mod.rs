//! Memories, sessions and vectors in PostgreSQL: [`PgMemoryStore`], the
//! [`MemoryStore`] of many instances sharing one database.
//!
//! The layout follows the embedded store so that ranking is the same: each user's
//! memories are numbered in write order (`seq`), and each memory keeps the terms of the
//! gateway's own analyzer (the same stop words and Snowball stemmer as the embedded
//! store), indexed as a `tsvector` under GIN. Ranking runs in the gateway on candidates
//! PostgreSQL finds ([`read`]). Every statement names the user's `uid`,
//! resolved from the scope key it was given, so no query reaches another user's rows.
//!
//! Vectors are stored per memory (`bytea`, little-endian f32) and scored in the gateway
//! against a per-user index kept in memory, loaded from PostgreSQL on a user's first
//! semantic search and caught up on each later one (pgvector is not needed).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

mod capture;
mod read;

use super::{Pg, PgError};
use crate::memory::quota;
use crate::memory::retrieve::vector_to_bytes;
use crate::memory::scope::parse_key;
use crate::memory::store::{
    BoxFuture, Memory, MemoryStore, NewMemory, Page, ScoredMemory, SearchQuery, Session,
    SessionInfo, SessionMessage, StoreError, WriteOp,
};
use crate::memory::text::{content_hash, Analyzer};
use crate::memory::vectors::VectorIndex;
use crate::memory::Clock;

/// Statements prepared once per pooled connection: a batch of captures runs the same
/// few statements many times, and each would otherwise cost a round trip to prepare.
trait Cached {
    async fn cexec(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError>;
    async fn cone(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Row, StoreError>;
    async fn copt(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StoreError>;
    async fn cquery(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError>;
}

impl Cached for Transaction<'_> {
    async fn cexec(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let st = self.prepare_cached(sql).await.map_err(backend)?;
        self.execute(&st, p).await.map_err(backend)
    }

    async fn cone(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Row, StoreError> {
        let st = self.prepare_cached(sql).await.map_err(backend)?;
        self.query_one(&st, p).await.map_err(backend)
    }

    async fn copt(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>, StoreError> {
        let st = self.prepare_cached(sql).await.map_err(backend)?;
        self.query_opt(&st, p).await.map_err(backend)
    }

    async fn cquery(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let st = self.prepare_cached(sql).await.map_err(backend)?;
        self.query(&st, p).await.map_err(backend)
    }
}

/// How the store keeps sessions and what time it is (as the embedded store's options).
#[derive(Clone)]
pub struct Options {
    /// Sessions unused for longer are gone; zero keeps them forever.
    pub session_ttl: Duration,
    /// Messages kept per session (the newest).
    pub session_max_messages: usize,
    pub clock: Arc<dyn Clock>,
    /// Memories one user (all their scopes) may keep; 0: no limit.
    pub max_memories_per_user: u64,
}

/// The PostgreSQL memory store (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct PgMemoryStore {
    pub(super) pg: Pg,
    pub(super) opts: Options,
    pub(super) vectors: Arc<VectorIndex>,
    /// What searches read of each memory they rank (see [`read::Lights`]).
    lights: Arc<read::Lights>,
}

/// A PostgreSQL failure as the memory layer sees it: one that may pass (the connection,
/// a restart, resources: [`PgError::is_transient`]) is [`StoreError::Unavailable`] (the
/// write queue keeps the batch and tries again, the memory API answers 503); a refusal of
/// the statement or its data is [`StoreError::Backend`].
pub(super) fn backend(e: impl Into<PgError>) -> StoreError {
    let e = e.into();
    if e.is_transient() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

impl PgMemoryStore {
    /// A store on the shared pool; the schema is already migrated.
    pub fn new(pg: Pg, opts: Options) -> Self {
        Self {
            pg,
            opts,
            vectors: Arc::new(VectorIndex::new(crate::memory::vectors::DEFAULT_LIMIT)),
            lights: Arc::new(read::lights_cache()),
        }
    }

    pub(super) fn live_cutoff(&self) -> i64 {
        let ttl = self.opts.session_ttl.as_millis() as i64;
        if ttl == 0 {
            i64::MIN
        } else {
            self.opts.clock.now_ms() - ttl
        }
    }
}

/// Runs `$body` (an expression awaiting a `Result<_, StoreError>`, with the transaction
/// bound to `$tx`) in one transaction on a pooled connection, inside an async fn or block
/// that returns `Result<_, StoreError>`.
macro_rules! in_tx {
    ($store:expr, $tx:ident => $body:expr) => {{
        let mut conn = $store.pg.get().await.map_err(backend)?;
        let $tx = conn.transaction().await.map_err(backend)?;
        let out = $body?;
        $tx.commit().await.map_err(backend)?;
        out
    }};
}

/// A user's `uid`, if the user has ever stored anything.
pub(super) async fn uid_of(
    c: &impl tokio_postgres::GenericClient,
    user_id: &str,
) -> Result<Option<i64>, StoreError> {
    let row = c
        .query_opt(
            "SELECT uid FROM memproxy_memory_users WHERE user_id = $1",
            &[&user_id],
        )
        .await
        .map_err(backend)?;
    Ok(row.map(|r| r.get(0)))
}

/// [`uid_of`] inside a write transaction (statement prepared once per connection).
async fn uid_in(tx: &Transaction<'_>, user_id: &str) -> Result<Option<i64>, StoreError> {
    let row = tx
        .copt(
            "SELECT uid FROM memproxy_memory_users WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

async fn ensure_uid(tx: &Transaction<'_>, user_id: &str) -> Result<i64, StoreError> {
    if let Some(uid) = uid_in(tx, user_id).await? {
        return Ok(uid);
    }
    let row = tx
        .cone(
            "INSERT INTO memproxy_memory_users (user_id) VALUES ($1)
             ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id RETURNING uid",
            &[&user_id],
        )
        .await?;
    Ok(row.get(0))
}

/// A memory as it is inserted: the id and time are given, so that the migrate command
/// keeps them.
pub(crate) struct Insert<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub content: &'a str,
    pub metadata: &'a crate::memory::Metadata,
    pub session_id: Option<&'a str>,
    pub created_at_ms: i64,
}

/// Inserts a memory as the user's next one; returns its `(uid, seq)`, or `None` when a
/// memory with this id exists already (the migrate command, resumed).
pub(crate) async fn insert_memory(
    tx: &Transaction<'_>,
    analyzer: &Analyzer,
    m: Insert<'_>,
) -> Result<Option<(i64, i64)>, StoreError> {
    if m.content.trim().is_empty() {
        return Err(StoreError::Invalid("content must not be empty".into()));
    }
    let terms = analyzer.terms(m.content);
    let nterms = terms.len() as i64;
    let row = tx
        .cone(
            "INSERT INTO memproxy_memory_users (user_id, next_seq, doc_count, term_count)
             VALUES ($1, 1, 1, $2)
             ON CONFLICT (user_id) DO UPDATE SET
                 next_seq = memproxy_memory_users.next_seq + 1,
                 doc_count = memproxy_memory_users.doc_count + 1,
                 term_count = memproxy_memory_users.term_count + $2
             RETURNING uid, next_seq",
            &[&m.user_id, &nterms],
        )
        .await?;
    let (uid, seq): (i64, i64) = (row.get(0), row.get(1));
    let metadata = super::json(&serde_json::Value::Object(m.metadata.clone()));
    let (content, session_id) = (super::text(m.content), m.session_id.map(super::text));
    let inserted = tx
        .cexec(
            "INSERT INTO memproxy_memories
                 (uid, seq, id, content, metadata, session_id, created_at, terms, nterms, hash, lexemes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, array_to_tsvector($11::text[]))
             ON CONFLICT (id) DO NOTHING",
            &[
                &uid,
                &seq,
                &m.id,
                &content,
                &metadata,
                &session_id,
                &m.created_at_ms,
                &terms.join(" "),
                &(nterms as i32),
                &content_hash(m.content),
                &terms,
            ],
        )
        .await?;
    if inserted > 0 {
        add_postings(tx, uid, seq, &terms).await?;
    }
    if inserted == 0 {
        // Give back the number and the counts taken above.
        tx.cexec(
            "UPDATE memproxy_memory_users SET next_seq = next_seq - 1, doc_count = doc_count - 1,
                 term_count = term_count - $2 WHERE uid = $1 AND next_seq = $3",
            &[&uid, &nterms, &seq],
        )
        .await?;
        return Ok(None);
    }
    Ok(Some((uid, seq)))
}

/// The memory's distinct terms, each with its `(uid, seq)`, into the posting table the
/// lexical search reads (`memproxy_memory_terms`).
async fn add_postings(
    tx: &Transaction<'_>,
    uid: i64,
    seq: i64,
    terms: &[String],
) -> Result<(), StoreError> {
    let mut distinct: Vec<&str> = terms.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    tx.cexec(
        "INSERT INTO memproxy_memory_terms (uid, term, seq)
         SELECT $1, t, $2 FROM unnest($3::text[]) AS t ON CONFLICT DO NOTHING",
        &[&uid, &seq, &distinct],
    )
    .await?;
    Ok(())
}

/// The memories kept by the owner of the store key `user_id`, in all their scopes (their
/// own and each project's `user#project`). `COLLATE "C"` makes the range bytewise.
async fn owner_count(tx: &Transaction<'_>, user_id: &str) -> Result<u64, StoreError> {
    let (owner, _) = parse_key(user_id);
    let (lo, hi) = quota::project_key_range(owner);
    let row = tx
        .cone(
            "SELECT coalesce(sum(doc_count), 0)::bigint FROM memproxy_memory_users
             WHERE user_id = $1 OR (user_id COLLATE \"C\" >= $2 AND user_id COLLATE \"C\" < $3)",
            &[&owner, &lo, &hi],
        )
        .await?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

impl PgMemoryStore {
    /// Applies a write batch in order, except that the captures between two other
    /// memory writes are written together ([`capture`]); session turns, which no
    /// memory depends on, are written as they come.
    async fn apply_ops(
        &self,
        tx: &Transaction<'_>,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Memory>, StoreError> {
        let analyzer = Analyzer::default();
        let mut created = Vec::new();
        let mut run = Vec::new();
        for op in ops {
            if !matches!(op, WriteOp::Capture(_) | WriteOp::Turns { .. }) {
                self.write_captures(tx, &analyzer, &mut run, &mut created)
                    .await?;
            }
            match op {
                WriteOp::Capture(m) => run.push(m),
                WriteOp::Memory(m) => {
                    let kept = owner_count(tx, &m.user_id).await?;
                    quota::check(self.opts.max_memories_per_user, &m.user_id, kept)?;
                    created.push(self.new_memory(tx, &analyzer, m).await?)
                }
                WriteOp::Turns {
                    user_id,
                    session_id,
                    messages,
                } => {
                    self.append_turns(tx, &user_id, &session_id, &messages)
                        .await?
                }
                WriteOp::Embeddings {
                    user_id,
                    model,
                    vectors,
                } => put_vectors(tx, &user_id, &model, &vectors).await?,
            }
        }
        self.write_captures(tx, &analyzer, &mut run, &mut created)
            .await?;
        Ok(created)
    }

    async fn write_captures(
        &self,
        tx: &Transaction<'_>,
        analyzer: &Analyzer,
        run: &mut Vec<NewMemory>,
        created: &mut Vec<Memory>,
    ) -> Result<(), StoreError> {
        if run.is_empty() {
            return Ok(());
        }
        let max = self.opts.max_memories_per_user;
        let now = self.opts.clock.now_ms();
        capture::write_run(tx, analyzer, max, now, std::mem::take(run), created).await
    }

    async fn new_memory(
        &self,
        tx: &Transaction<'_>,
        analyzer: &Analyzer,
        m: NewMemory,
    ) -> Result<Memory, StoreError> {
        let now = self.opts.clock.now_ms();
        let id = format!("mem_{}", uuid::Uuid::new_v4().simple());
        insert_memory(
            tx,
            analyzer,
            Insert {
                id: &id,
                user_id: &m.user_id,
                content: &m.content,
                metadata: &m.metadata,
                session_id: m.session_id.as_deref(),
                created_at_ms: now,
            },
        )
        .await?;
        Ok(Memory {
            id,
            user_id: m.user_id,
            content: m.content,
            metadata: m.metadata,
            session_id: m.session_id,
            created_at_ms: now,
            created_at: now.div_euclid(1000),
        })
    }

    async fn append_turns(
        &self,
        tx: &Transaction<'_>,
        user_id: &str,
        session_id: &str,
        messages: &[(String, String)],
    ) -> Result<(), StoreError> {
        let now = self.opts.clock.now_ms();
        let session_id = &*super::text(session_id);
        let uid = ensure_uid(tx, user_id).await?;
        let created = tx
            .cexec(
                "INSERT INTO memproxy_sessions (uid, session_id, created_at, updated_at)
                 VALUES ($1, $2, $3, $3) ON CONFLICT (uid, session_id) DO NOTHING",
                &[&uid, &session_id, &now],
            )
            .await?;
        let row = tx
            .cone(
                "SELECT sid, updated_at FROM memproxy_sessions WHERE uid = $1 AND session_id = $2
                 FOR UPDATE",
                &[&uid, &session_id],
            )
            .await?;
        let (sid, updated): (i64, i64) = (row.get(0), row.get(1));
        if created == 0 {
            let ttl = self.opts.session_ttl.as_millis() as i64;
            if ttl > 0 && updated < now - ttl {
                // Expired: the old conversation is gone; the session starts afresh.
                tx.cexec(
                    "DELETE FROM memproxy_session_messages WHERE sid = $1",
                    &[&sid],
                )
                .await?;
                tx.cexec(
                    "UPDATE memproxy_sessions SET created_at = $2, updated_at = $2 WHERE sid = $1",
                    &[&sid, &now],
                )
                .await?;
            } else {
                tx.cexec(
                    "UPDATE memproxy_sessions SET updated_at = $2 WHERE sid = $1",
                    &[&sid, &now],
                )
                .await?;
            }
        }
        let roles: Vec<&str> = messages.iter().map(|m| m.0.as_str()).collect();
        let contents: Vec<std::borrow::Cow<'_, str>> =
            messages.iter().map(|m| super::text(&m.1)).collect();
        tx.cexec(
            "INSERT INTO memproxy_session_messages (sid, role, content, created_at)
             SELECT $1, r, c, $4 FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS t(r, c, i)
             ORDER BY i",
            &[&sid, &roles, &contents, &now],
        )
        .await?;
        let keep = self.opts.session_max_messages as i64;
        tx.cexec(
            "DELETE FROM memproxy_session_messages WHERE sid = $1 AND mid <= (
                 SELECT mid FROM memproxy_session_messages WHERE sid = $1
                 ORDER BY mid DESC LIMIT 1 OFFSET $2)",
            &[&sid, &keep],
        )
        .await?;
        Ok(())
    }
}

async fn put_vectors(
    tx: &Transaction<'_>,
    user_id: &str,
    model: &str,
    vectors: &[(String, Vec<f32>)],
) -> Result<(), StoreError> {
    let Some(uid) = uid_in(tx, user_id).await? else {
        return Ok(());
    };
    let ids: Vec<&str> = vectors.iter().map(|v| v.0.as_str()).collect();
    let blobs: Vec<Vec<u8>> = vectors.iter().map(|v| vector_to_bytes(&v.1)).collect();
    tx.execute(
        "INSERT INTO memproxy_memory_vectors (uid, seq, model, vec)
         SELECT m.uid, m.seq, $2, v.vec
         FROM unnest($3::text[], $4::bytea[]) AS v(id, vec)
         JOIN memproxy_memories m ON m.id = v.id AND m.uid = $1
         ON CONFLICT (uid, seq) DO UPDATE SET model = EXCLUDED.model, vec = EXCLUDED.vec,
             version = nextval('memproxy_memory_vectors_version')",
        &[&uid, &model, &ids, &blobs],
    )
    .await
    .map_err(backend)?;
    Ok(())
}

async fn delete_one(
    tx: &Transaction<'_>,
    user_id: &str,
    id: &str,
) -> Result<(i64, i64), StoreError> {
    let uid = uid_in(tx, user_id).await?.ok_or(StoreError::NotFound)?;
    let row = tx
        .query_opt(
            "DELETE FROM memproxy_memories WHERE uid = $1 AND id = $2 RETURNING seq, nterms, terms",
            &[&uid, &id],
        )
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
    let (seq, nterms): (i64, i32) = (row.get(0), row.get(1));
    let terms: Vec<&str> = row.get::<_, &str>(2).split(' ').collect();
    tx.execute(
        "DELETE FROM memproxy_memory_terms WHERE uid = $1 AND term = ANY($2) AND seq = $3",
        &[&uid, &terms, &seq],
    )
    .await
    .map_err(backend)?;
    tx.execute(
        "DELETE FROM memproxy_memory_vectors WHERE uid = $1 AND seq = $2",
        &[&uid, &seq],
    )
    .await
    .map_err(backend)?;
    tx.execute(
        "UPDATE memproxy_memory_users SET doc_count = doc_count - 1,
             term_count = term_count - $2 WHERE uid = $1",
        &[&uid, &i64::from(nterms)],
    )
    .await
    .map_err(backend)?;
    Ok((uid, seq))
}

async fn delete_user(
    tx: &Transaction<'_>,
    user_id: &str,
) -> Result<(Option<i64>, u64), StoreError> {
    let Some(uid) = uid_in(tx, user_id).await? else {
        return Ok((None, 0));
    };
    // The user row is locked first, so that writes of the user wait for the deletion.
    tx.execute(
        "SELECT 1 FROM memproxy_memory_users WHERE uid = $1 FOR UPDATE",
        &[&uid],
    )
    .await
    .map_err(backend)?;
    tx.execute(
        "DELETE FROM memproxy_memory_vectors WHERE uid = $1",
        &[&uid],
    )
    .await
    .map_err(backend)?;
    tx.execute("DELETE FROM memproxy_memory_terms WHERE uid = $1", &[&uid])
        .await
        .map_err(backend)?;
    let n = tx
        .execute("DELETE FROM memproxy_memories WHERE uid = $1", &[&uid])
        .await
        .map_err(backend)?;
    tx.execute(
        "DELETE FROM memproxy_session_messages WHERE sid IN
             (SELECT sid FROM memproxy_sessions WHERE uid = $1)",
        &[&uid],
    )
    .await
    .map_err(backend)?;
    tx.execute("DELETE FROM memproxy_sessions WHERE uid = $1", &[&uid])
        .await
        .map_err(backend)?;
    // `next_seq` stays: numbers are never reused (cached vectors are keyed by them).
    tx.execute(
        "UPDATE memproxy_memory_users SET doc_count = 0, term_count = 0 WHERE uid = $1",
        &[&uid],
    )
    .await
    .map_err(backend)?;
    Ok((Some(uid), n))
}

async fn delete_session(
    tx: &Transaction<'_>,
    user_id: Option<&str>,
    session_id: &str,
) -> Result<(), StoreError> {
    let sids: Vec<i64> = match user_id {
        Some(u) => {
            let uid = uid_in(tx, u).await?.ok_or(StoreError::NotFound)?;
            tx.query(
                "SELECT sid FROM memproxy_sessions WHERE uid = $1 AND session_id = $2",
                &[&uid, &session_id],
            )
            .await
        }
        None => {
            tx.query(
                "SELECT sid FROM memproxy_sessions WHERE session_id = $1",
                &[&session_id],
            )
            .await
        }
    }
    .map_err(backend)?
    .iter()
    .map(|r| r.get(0))
    .collect();
    match sids.as_slice() {
        [] => Err(StoreError::NotFound),
        [sid] => {
            tx.execute(
                "DELETE FROM memproxy_session_messages WHERE sid = $1",
                &[sid],
            )
            .await
            .map_err(backend)?;
            tx.execute("DELETE FROM memproxy_sessions WHERE sid = $1", &[sid])
                .await
                .map_err(backend)?;
            Ok(())
        }
        _ => Err(StoreError::Ambiguous(session_id.to_string())),
    }
}

impl MemoryStore for PgMemoryStore {
    fn apply(&self, ops: Vec<WriteOp>) -> BoxFuture<'_, Result<Vec<Memory>, StoreError>> {
        Box::pin(async move { Ok(in_tx!(self, tx => self.apply_ops(&tx, ops).await)) })
    }

    fn get<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Memory, StoreError>> {
        Box::pin(read::get(self, user_id, id))
    }

    fn list<'a>(
        &'a self,
        user_id: &'a str,
        limit: usize,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Page, StoreError>> {
        Box::pin(read::list(self, user_id, limit, cursor))
    }

    fn unembedded<'a>(
        &'a self,
        model: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, StoreError>> {
        Box::pin(read::unembedded(self, model, cursor, limit))
    }

    fn count_unembedded<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(read::count_unembedded(self, model))
    }

    fn search<'a>(
        &'a self,
        user_id: &'a str,
        query: &'a SearchQuery,
    ) -> BoxFuture<'a, Result<Vec<ScoredMemory>, StoreError>> {
        Box::pin(read::search(self, user_id, query))
    }

    fn delete<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let (uid, seq) = in_tx!(self, tx => delete_one(&tx, user_id, id).await);
            self.vectors.forget(uid, Some(seq));
            self.lights.remove(&(uid, seq));
            Ok(())
        })
    }

    fn delete_user<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let (uid, n) = in_tx!(self, tx => delete_user(&tx, user_id).await);
            if let Some(uid) = uid {
                self.vectors.forget(uid, None);
            }
            Ok(n)
        })
    }

    fn user_ids_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(read::user_ids_with_prefix(self, prefix))
    }

    fn session_messages<'a>(
        &'a self,
        user_id: &'a str,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionMessage>, StoreError>> {
        Box::pin(read::session_messages(self, user_id, session_id))
    }

    fn list_sessions<'a>(
        &'a self,
        user_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, StoreError>> {
        Box::pin(read::list_sessions(self, user_id))
    }

    fn get_session<'a>(
        &'a self,
        user_id: Option<&'a str>,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Session, StoreError>> {
        Box::pin(read::get_session(self, user_id, session_id))
    }

    fn delete_session<'a>(
        &'a self,
        user_id: Option<&'a str>,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            in_tx!(self, tx => delete_session(&tx, user_id, session_id).await);
            Ok(())
        })
    }

    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let ttl = self.opts.session_ttl.as_millis() as i64;
            if ttl == 0 {
                return Ok(0);
            }
            let cutoff = self.opts.clock.now_ms() - ttl;
            let purged = in_tx!(self, tx => async {
                tx.execute(
                    "DELETE FROM memproxy_session_messages WHERE sid IN
                         (SELECT sid FROM memproxy_sessions WHERE updated_at < $1)",
                    &[&cutoff],
                )
                .await
                .map_err(backend)?;
                tx.execute(
                    "DELETE FROM memproxy_sessions WHERE updated_at < $1",
                    &[&cutoff],
                )
                .await
                .map_err(backend)
            }
            .await);
            Ok(purged)
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.pg.check().await.map_err(backend) })
    }
}
