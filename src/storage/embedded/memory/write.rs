//! Everything the writer thread does to the database: inserting memories (and their
//! index terms), session turns and embeddings; deletions; expiry.

use rusqlite::{params, OptionalExtension, Transaction};
use tokio::sync::oneshot;

use std::sync::Arc;

use super::schema::rid_range;
use super::{backend, Command, SqliteOptions};
use crate::memory::context::Light;
use crate::memory::lexicon::TermIndex;
use crate::memory::quota;
use crate::memory::scope::parse_key;
use crate::memory::store::{Memory, NewMemory, StoreError, WriteOp};
use crate::memory::text::{content_hash, Analyzer};
use crate::memory::vectors::{Quantized, VectorIndex};

/// Sends a command's result once the transaction's fate is known.
type Reply = Box<dyn FnOnce(Option<StoreError>) + Send>;

/// What a command changed in the in-memory indexes (vectors, terms), applied once its
/// transaction committed.
pub enum Effect {
    /// A new memory's light, for the term index.
    Indexed {
        uid: i64,
        rid: i64,
        light: Light,
    },
    Put {
        uid: i64,
        rid: i64,
        model: String,
        vector: Vec<f32>,
    },
    Remove {
        uid: i64,
        rid: i64,
    },
    RemoveScope(i64),
}

/// The writer thread's state.
pub struct Writer {
    analyzer: Analyzer,
    opts: SqliteOptions,
    vectors: Arc<VectorIndex>,
    terms: Arc<TermIndex>,
    /// Index changes of the transaction under way.
    effects: Vec<Effect>,
    /// Scopes to load into the indexes after the transaction.
    loads: Vec<Load>,
}

/// A scope (uid) whose terms (when not held) and vectors of a model (when given) are to
/// be loaded, and who waits for it.
type Load = (i64, Option<String>, oneshot::Sender<Result<(), StoreError>>);

fn reply<T: Send + 'static>(
    tx: oneshot::Sender<Result<T, StoreError>>,
    result: Result<T, StoreError>,
) -> Reply {
    Box::new(move |commit_err| {
        let _ = tx.send(match commit_err {
            Some(e) => Err(e),
            None => result,
        });
    })
}

/// Runs `f` inside a savepoint: on error only its own changes are rolled back.
fn isolated<T>(
    tx: &Transaction<'_>,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    tx.execute_batch("SAVEPOINT op").map_err(backend)?;
    match f(tx) {
        Ok(v) => {
            tx.execute_batch("RELEASE op").map_err(backend)?;
            Ok(v)
        }
        Err(e) => {
            let _ = tx.execute_batch("ROLLBACK TO op; RELEASE op");
            Err(e)
        }
    }
}

fn user_uid(tx: &Transaction<'_>, user_id: &str) -> Result<Option<i64>, StoreError> {
    tx.query_row("SELECT uid FROM users WHERE user_id = ?1", [user_id], |r| {
        r.get(0)
    })
    .optional()
    .map_err(backend)
}

/// Whether `user_id` has a memory whose normalised content hashes to `hash`.
fn has_content(tx: &Transaction<'_>, user_id: &str, hash: i64) -> Result<bool, StoreError> {
    let Some(uid) = user_uid(tx, user_id)? else {
        return Ok(false);
    };
    let (lo, hi) = rid_range(uid);
    tx.prepare_cached("SELECT 1 FROM memories WHERE hash = ?1 AND rid BETWEEN ?2 AND ?3 LIMIT 1")
        .and_then(|mut s| s.exists(params![hash, lo, hi]))
        .map_err(backend)
}

/// The memories kept by the owner of the store key `user_id`, in all their scopes (their
/// own and each project's `user#project`): one range of the users index.
fn owner_count(tx: &Transaction<'_>, user_id: &str) -> Result<u64, StoreError> {
    let (owner, _) = parse_key(user_id);
    let (lo, hi) = quota::project_key_range(owner);
    tx.prepare_cached(
        "SELECT coalesce(sum(doc_count), 0) FROM users
         WHERE user_id = ?1 OR (user_id >= ?2 AND user_id < ?3)",
    )
    .and_then(|mut s| s.query_row(params![owner, lo, hi], |r| r.get::<_, i64>(0)))
    .map(|n| n.max(0) as u64)
    .map_err(backend)
}

fn ensure_uid(tx: &Transaction<'_>, user_id: &str) -> Result<i64, StoreError> {
    if let Some(uid) = user_uid(tx, user_id)? {
        return Ok(uid);
    }
    tx.execute("INSERT INTO users (user_id) VALUES (?1)", [user_id])
        .map_err(backend)?;
    Ok(tx.last_insert_rowid())
}

impl Writer {
    pub fn new(opts: SqliteOptions, vectors: Arc<VectorIndex>, terms: Arc<TermIndex>) -> Self {
        Self {
            analyzer: Analyzer::default(),
            opts,
            vectors,
            terms,
            effects: Vec::new(),
            loads: Vec::new(),
        }
    }

    /// Runs one command in `tx` and returns how to answer it.
    pub fn run(&mut self, tx: &Transaction<'_>, cmd: Command) -> Reply {
        let mark = self.effects.len();
        let answer = self.run_one(tx, cmd);
        if answer.1 {
            // Rolled back: what it would have changed in the index is not done.
            self.effects.truncate(mark);
        }
        answer.0
    }

    /// After the transaction: its changes go to the indexes when it committed, then the
    /// scopes asked for are loaded (from committed data: nothing is written between).
    pub fn committed(&mut self, conn: &rusqlite::Connection, ok: bool) {
        for e in self.effects.drain(..) {
            if !ok {
                continue;
            }
            match e {
                Effect::Indexed { uid, rid, light } => {
                    self.terms.insert_if_loaded(uid, rid, light);
                }
                Effect::Put {
                    uid,
                    rid,
                    model,
                    vector,
                } => {
                    // Only into a loaded scope: one not held is read whole when searched.
                    self.vectors.put_if_loaded(uid, &model, rid, &vector);
                }
                Effect::Remove { uid, rid } => {
                    self.vectors.forget(uid, Some(rid));
                    self.terms.forget(uid, Some(rid));
                }
                Effect::RemoveScope(uid) => {
                    self.vectors.forget(uid, None);
                    self.terms.forget(uid, None);
                }
            }
        }
        for (uid, model, r) in std::mem::take(&mut self.loads) {
            let loaded = load_terms(conn, &self.terms, uid).and_then(|()| match &model {
                Some(m) => load_vectors(conn, &self.vectors, uid, m),
                None => Ok(()),
            });
            let _ = r.send(loaded);
        }
    }

    /// Runs one command; whether its changes were rolled back.
    fn run_one(&mut self, tx: &Transaction<'_>, cmd: Command) -> (Reply, bool) {
        fn done<T: Send + 'static>(
            r: oneshot::Sender<Result<T, StoreError>>,
            result: Result<T, StoreError>,
        ) -> (Reply, bool) {
            let failed = result.is_err();
            (reply(r, result), failed)
        }
        match cmd {
            Command::Apply(ops, r) => {
                let result = isolated(tx, |tx| self.apply(tx, ops));
                done(r, result)
            }
            Command::Delete {
                user_id,
                id,
                reply: r,
            } => done(
                r,
                isolated(tx, |tx| delete(tx, &user_id, &id, &mut self.effects)),
            ),
            Command::DeleteUser(user_id, r) => done(
                r,
                isolated(tx, |tx| delete_user(tx, &user_id, &mut self.effects)),
            ),
            Command::Load { uid, model, reply } => {
                self.loads.push((uid, model, reply));
                (Box::new(|_| {}), false)
            }
            Command::DeleteSession {
                user_id,
                session_id,
                reply: r,
            } => done(
                r,
                isolated(tx, |tx| delete_session(tx, user_id.as_deref(), &session_id)),
            ),
            Command::Purge(r) => {
                let result = isolated(tx, |tx| self.purge(tx));
                done(r, result)
            }
        }
    }

    fn now(&self) -> i64 {
        self.opts.clock.now_ms()
    }

    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Memory>, StoreError> {
        let mut created = Vec::new();
        for op in ops {
            match op {
                WriteOp::Memory(m) => {
                    let kept = owner_count(tx, &m.user_id)?;
                    quota::check(self.opts.max_memories_per_user, &m.user_id, kept)?;
                    created.push(self.insert_memory(tx, m)?)
                }
                WriteOp::Capture(m) => {
                    if !has_content(tx, &m.user_id, content_hash(&m.content))? {
                        let kept = owner_count(tx, &m.user_id)?;
                        if quota::admits_capture(self.opts.max_memories_per_user, &m.user_id, kept)
                        {
                            created.push(self.insert_memory(tx, m)?);
                        }
                    }
                }
                WriteOp::Turns {
                    user_id,
                    session_id,
                    messages,
                } => self.append_turns(tx, &user_id, &session_id, &messages)?,
                WriteOp::Embeddings {
                    user_id,
                    model,
                    vectors,
                } => put_embeddings(tx, &user_id, &model, vectors, &mut self.effects)?,
            }
        }
        Ok(created)
    }

    fn insert_memory(&mut self, tx: &Transaction<'_>, m: NewMemory) -> Result<Memory, StoreError> {
        if m.content.trim().is_empty() {
            return Err(StoreError::Invalid("content must not be empty".into()));
        }
        let now = self.now();
        let uid = ensure_uid(tx, &m.user_id)?;
        let seq: i64 = tx
            .query_row(
                "UPDATE users SET next_seq = next_seq + 1 WHERE uid = ?1 RETURNING next_seq",
                [uid],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if seq > 0xFFFF_FFFF {
            return Err(StoreError::Invalid(
                "too many memories for this user".into(),
            ));
        }
        let rid = rid_range(uid).0 | seq;
        let terms = self.analyzer.terms(&m.content);
        let joined = terms.join(" ");
        let hash = content_hash(&m.content);
        let id = format!("mem_{}", uuid::Uuid::new_v4().simple());
        let metadata = serde_json::to_string(&m.metadata).map_err(backend)?;
        tx.prepare_cached(
            "INSERT INTO memories (rid, id, uid, content, metadata, session_id, created_at, terms, nterms, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .and_then(|mut s| {
            s.execute(params![
                rid,
                id,
                uid,
                m.content,
                metadata,
                m.session_id,
                now,
                joined,
                terms.len() as i64,
                hash
            ])
        })
        .map_err(backend)?;
        tx.prepare_cached("INSERT INTO memories_fts (rowid, terms) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![rid, joined]))
            .map_err(backend)?;
        self.effects.push(Effect::Indexed {
            uid,
            rid,
            light: Light {
                session_id: m.session_id.clone(),
                hash,
                terms: joined,
                len: terms.len() as u32,
            },
        });
        tx.prepare_cached(
            "UPDATE users SET doc_count = doc_count + 1, term_count = term_count + ?2 WHERE uid = ?1",
        )
        .and_then(|mut s| s.execute(params![uid, terms.len() as i64]))
        .map_err(backend)?;
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

    fn append_turns(
        &mut self,
        tx: &Transaction<'_>,
        user_id: &str,
        session_id: &str,
        messages: &[(String, String)],
    ) -> Result<(), StoreError> {
        let now = self.now();
        let uid = ensure_uid(tx, user_id)?;
        let existing: Option<(i64, i64)> = tx
            .query_row(
                "SELECT sid, updated_at FROM sessions WHERE uid = ?1 AND session_id = ?2",
                params![uid, session_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(backend)?;
        let sid = match existing {
            Some((sid, updated)) if !self.expired(updated, now) => {
                tx.execute(
                    "UPDATE sessions SET updated_at = ?2 WHERE sid = ?1",
                    params![sid, now],
                )
                .map_err(backend)?;
                sid
            }
            Some((sid, _)) => {
                // Expired: the old conversation is gone; the session starts afresh.
                tx.execute("DELETE FROM session_messages WHERE sid = ?1", [sid])
                    .map_err(backend)?;
                tx.execute(
                    "UPDATE sessions SET created_at = ?2, updated_at = ?2 WHERE sid = ?1",
                    params![sid, now],
                )
                .map_err(backend)?;
                sid
            }
            None => {
                tx.execute(
                    "INSERT INTO sessions (uid, session_id, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                    params![uid, session_id, now],
                )
                .map_err(backend)?;
                tx.last_insert_rowid()
            }
        };
        for (role, content) in messages {
            tx.prepare_cached(
                "INSERT INTO session_messages (sid, role, content, created_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![sid, role, content, now]))
            .map_err(backend)?;
        }
        let keep = self.opts.session_max_messages as i64;
        tx.execute(
            "DELETE FROM session_messages WHERE sid = ?1 AND mid <= (
                 SELECT mid FROM session_messages WHERE sid = ?1 ORDER BY mid DESC LIMIT 1 OFFSET ?2)",
            params![sid, keep],
        )
        .map_err(backend)?;
        Ok(())
    }

    fn expired(&self, updated_at: i64, now: i64) -> bool {
        let ttl = self.opts.session_ttl.as_millis() as i64;
        ttl > 0 && updated_at < now - ttl
    }

    fn purge(&mut self, tx: &Transaction<'_>) -> Result<u64, StoreError> {
        let ttl = self.opts.session_ttl.as_millis() as i64;
        if ttl == 0 {
            return Ok(0);
        }
        let cutoff = self.now() - ttl;
        tx.execute(
            "DELETE FROM session_messages WHERE sid IN (SELECT sid FROM sessions WHERE updated_at < ?1)",
            [cutoff],
        )
        .map_err(backend)?;
        let n = tx
            .execute("DELETE FROM sessions WHERE updated_at < ?1", [cutoff])
            .map_err(backend)?;
        Ok(n as u64)
    }
}

fn put_embeddings(
    tx: &Transaction<'_>,
    user_id: &str,
    model: &str,
    vectors: Vec<(String, Vec<f32>)>,
    effects: &mut Vec<Effect>,
) -> Result<(), StoreError> {
    let Some(uid) = user_uid(tx, user_id)? else {
        return Ok(());
    };
    for (id, v) in vectors {
        let rid: Option<i64> = tx
            .prepare_cached("SELECT rid FROM memories WHERE id = ?1 AND uid = ?2")
            .and_then(|mut s| s.query_row(params![id, uid], |r| r.get(0)).optional())
            .map_err(backend)?;
        if let Some(rid) = rid {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO vectors (rid, model, vec) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![rid, model, Quantized::of(&v).to_bytes()]))
            .map_err(backend)?;
            effects.push(Effect::Put {
                uid,
                rid,
                model: model.to_string(),
                vector: v,
            });
        }
    }
    Ok(())
}

fn remove_memory(
    tx: &Transaction<'_>,
    uid: i64,
    rid: i64,
    nterms: i64,
    effects: &mut Vec<Effect>,
) -> Result<(), StoreError> {
    effects.push(Effect::Remove { uid, rid });
    for sql in [
        "DELETE FROM memories WHERE rid = ?1",
        "DELETE FROM memories_fts WHERE rowid = ?1",
        "DELETE FROM vectors WHERE rid = ?1",
    ] {
        tx.prepare_cached(sql)
            .and_then(|mut s| s.execute([rid]))
            .map_err(backend)?;
    }
    tx.prepare_cached(
        "UPDATE users SET doc_count = doc_count - 1, term_count = term_count - ?2 WHERE uid = ?1",
    )
    .and_then(|mut s| s.execute(params![uid, nterms]))
    .map_err(backend)?;
    Ok(())
}

fn delete(
    tx: &Transaction<'_>,
    user_id: &str,
    id: &str,
    effects: &mut Vec<Effect>,
) -> Result<(), StoreError> {
    let uid = user_uid(tx, user_id)?.ok_or(StoreError::NotFound)?;
    let (rid, nterms): (i64, i64) = tx
        .query_row(
            "SELECT rid, nterms FROM memories WHERE id = ?1 AND uid = ?2",
            params![id, uid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
    remove_memory(tx, uid, rid, nterms, effects)
}

fn delete_user(
    tx: &Transaction<'_>,
    user_id: &str,
    effects: &mut Vec<Effect>,
) -> Result<u64, StoreError> {
    let Some(uid) = user_uid(tx, user_id)? else {
        return Ok(0);
    };
    let (lo, hi) = rid_range(uid);
    let rows: Vec<(i64, i64)> = tx
        .prepare("SELECT rid, nterms FROM memories WHERE rid BETWEEN ?1 AND ?2")
        .and_then(|mut s| {
            s.query_map(params![lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .map_err(backend)?;
    for &(rid, nterms) in &rows {
        remove_memory(tx, uid, rid, nterms, effects)?;
    }
    effects.push(Effect::RemoveScope(uid));
    tx.execute(
        "DELETE FROM session_messages WHERE sid IN (SELECT sid FROM sessions WHERE uid = ?1)",
        [uid],
    )
    .map_err(backend)?;
    tx.execute("DELETE FROM sessions WHERE uid = ?1", [uid])
        .map_err(backend)?;
    Ok(rows.len() as u64)
}

fn delete_session(
    tx: &Transaction<'_>,
    user_id: Option<&str>,
    session_id: &str,
) -> Result<(), StoreError> {
    let sids: Vec<i64> = match user_id {
        Some(u) => {
            let uid = user_uid(tx, u)?.ok_or(StoreError::NotFound)?;
            tx.query_row(
                "SELECT sid FROM sessions WHERE uid = ?1 AND session_id = ?2",
                params![uid, session_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?
            .into_iter()
            .collect()
        }
        None => tx
            .prepare("SELECT sid FROM sessions WHERE session_id = ?1")
            .and_then(|mut s| s.query_map([session_id], |r| r.get(0))?.collect())
            .map_err(backend)?,
    };
    match sids.as_slice() {
        [] => Err(StoreError::NotFound),
        [sid] => {
            tx.execute("DELETE FROM session_messages WHERE sid = ?1", [sid])
                .map_err(backend)?;
            tx.execute("DELETE FROM sessions WHERE sid = ?1", [sid])
                .map_err(backend)?;
            Ok(())
        }
        _ => Err(StoreError::Ambiguous(session_id.to_string())),
    }
}

/// Reads scope `uid`'s memories into the term index, unless it holds them already.
fn load_terms(conn: &rusqlite::Connection, index: &TermIndex, uid: i64) -> Result<(), StoreError> {
    if index.loaded(uid).is_some() {
        return Ok(());
    }
    let (lo, hi) = rid_range(uid);
    let mut stmt = conn
        .prepare_cached(
            "SELECT rid, session_id, hash, terms, nterms FROM memories WHERE rid BETWEEN ?1 AND ?2",
        )
        .map_err(backend)?;
    let mut rows = stmt.query(params![lo, hi]).map_err(backend)?;
    index.update(uid, |t| {
        while let Some(r) = rows.next().map_err(backend)? {
            let (rid, light) = super::read::light_from_row(r).map_err(backend)?;
            t.insert(rid, light);
        }
        t.loaded = true;
        Ok(())
    })
}

/// Reads every vector of scope `uid` for `model` into the index (marked loaded).
fn load_vectors(
    conn: &rusqlite::Connection,
    index: &VectorIndex,
    uid: i64,
    model: &str,
) -> Result<(), StoreError> {
    index.update(uid, model, |v| {
        if !v.loaded {
            super::read::scope_vectors(conn, uid, model, v)?;
            v.loaded = true;
        }
        Ok(())
    })
}
