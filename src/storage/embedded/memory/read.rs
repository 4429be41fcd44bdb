//! Queries on a read connection: memories by id and by page, search (FTS5 candidates
//! inside the user's row-id range, re-ranked by [`crate::memory::retrieve`]), sessions.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::schema::rid_range;
use super::{backend, SqliteOptions};
use crate::memory::context::{self, Known, Light};
use crate::memory::lexicon::{self, TermIndex, Terms};
use crate::memory::retrieve::{dedup, fuse, fusion_candidates, Bm25, CorpusStats, DENSE_WEIGHT};
use crate::memory::scopes;
use crate::memory::store::{
    Memory, Metadata, Page, ScoredMemory, SearchQuery, Session, SessionInfo, SessionMessage,
    StoreError,
};
use crate::memory::text::Analyzer;
use crate::memory::vectors::{self, VectorIndex, Vectors};

/// Lexical candidates taken from FTS5 before re-ranking (and vector candidates kept).
pub(crate) const MIN_POOL: usize = 50;

pub(super) struct User {
    uid: i64,
    stats: CorpusStats,
    /// The newest memory's sequence number (memories ever written; deletions leave gaps).
    next_seq: i64,
}

pub(super) fn user(conn: &Connection, user_id: &str) -> Result<Option<User>, StoreError> {
    conn.prepare_cached("SELECT uid, doc_count, term_count, next_seq FROM users WHERE user_id = ?1")
        .and_then(|mut s| {
            s.query_row([user_id], |r| {
                Ok(User {
                    uid: r.get(0)?,
                    stats: CorpusStats {
                        docs: r.get::<_, i64>(1)?.max(0) as u64,
                        terms: r.get::<_, i64>(2)?.max(0) as u64,
                    },
                    next_seq: r.get(3)?,
                })
            })
            .optional()
        })
        .map_err(backend)
}

const MEMORY_COLUMNS: &str = "id, content, metadata, session_id, created_at";

fn memory_from_row(row: &Row<'_>, user_id: &str) -> rusqlite::Result<Memory> {
    let metadata: String = row.get(2)?;
    let created_at_ms: i64 = row.get(4)?;
    Ok(Memory {
        id: row.get(0)?,
        user_id: user_id.to_string(),
        content: row.get(1)?,
        metadata: serde_json::from_str::<Metadata>(&metadata).unwrap_or_default(),
        session_id: row.get(3)?,
        created_at_ms,
        created_at: created_at_ms.div_euclid(1000),
    })
}

pub fn get(conn: &Connection, user_id: &str, id: &str) -> Result<Memory, StoreError> {
    let u = user(conn, user_id)?.ok_or(StoreError::NotFound)?;
    conn.prepare_cached(&format!(
        "SELECT {MEMORY_COLUMNS} FROM memories WHERE id = ?1 AND uid = ?2"
    ))
    .and_then(|mut s| {
        s.query_row(params![id, u.uid], |r| memory_from_row(r, user_id))
            .optional()
    })
    .map_err(backend)?
    .ok_or(StoreError::NotFound)
}

pub fn list(
    conn: &Connection,
    user_id: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Page, StoreError> {
    let before: i64 = match cursor {
        None => 0x1_0000_0000,
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|&n| (1..=0x1_0000_0000).contains(&n))
            .ok_or_else(|| StoreError::Invalid(format!("invalid cursor `{c}`")))?,
    };
    let Some(u) = user(conn, user_id)? else {
        return Ok(Page {
            items: vec![],
            next_cursor: None,
        });
    };
    let (lo, _) = rid_range(u.uid);
    let limit = limit.clamp(1, 1000);
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {MEMORY_COLUMNS}, rid FROM memories WHERE rid >= ?1 AND rid < ?2
             ORDER BY rid DESC LIMIT ?3"
        ))
        .map_err(backend)?;
    let rows: Vec<(Memory, i64)> = stmt
        .query_map(params![lo, lo + before, limit as i64 + 1], |r| {
            Ok((memory_from_row(r, user_id)?, r.get(5)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(backend)?;
    let more = rows.len() > limit;
    let mut items: Vec<Memory> = Vec::with_capacity(limit);
    let mut last_seq = None;
    for (m, rid) in rows.into_iter().take(limit) {
        last_seq = Some(rid - lo);
        items.push(m);
    }
    Ok(Page {
        items,
        next_cursor: if more {
            last_seq.map(|s| s.to_string())
        } else {
            None
        },
    })
}

/// A memory's light from a row of `rid, session_id, hash, terms, nterms`.
pub(super) fn light_from_row(r: &Row<'_>) -> rusqlite::Result<(i64, Light)> {
    Ok((
        r.get(0)?,
        Light {
            session_id: r.get(1)?,
            hash: r.get(2)?,
            terms: r.get(3)?,
            len: r.get::<_, i64>(4)?.clamp(0, u32::MAX as i64) as u32,
        },
    ))
}

/// Where lexical ranking reads a scope's memories: the term index when it holds the
/// scope whole, else the database (FTS5 and the memories' rows).
enum Source<'a> {
    Held(&'a Terms),
    Db(&'a Connection),
}

impl<'a> Source<'a> {
    /// Memory `rid`'s light, if it exists.
    fn light(&self, rid: i64) -> Result<Option<Light>, StoreError> {
        match self {
            Source::Held(t) => Ok(t.light(rid).cloned()),
            Source::Db(conn) => conn
                .prepare_cached(
                    "SELECT rid, session_id, hash, terms, nterms FROM memories WHERE rid = ?1",
                )
                .and_then(|mut s| s.query_row([rid], light_from_row).optional())
                .map(|l| l.map(|x| x.1))
                .map_err(backend),
        }
    }

    /// [`Self::light`] of many memories (those that exist), into `known`; from the
    /// database in one statement.
    fn lights(
        &self,
        rids: impl IntoIterator<Item = i64>,
        known: &mut Known<'a>,
    ) -> Result<(), StoreError> {
        let conn = match self {
            Source::Held(t) => {
                for rid in rids {
                    if let (Entry::Vacant(slot), Some(l)) = (known.entry(rid), t.light(rid)) {
                        slot.insert(Cow::Borrowed(l));
                    }
                }
                return Ok(());
            }
            Source::Db(conn) => conn,
        };
        let ids: Vec<i64> = rids
            .into_iter()
            .filter(|r| !known.contains_key(r))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let list = serde_json::to_string(&ids).map_err(backend)?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT rid, session_id, hash, terms, nterms FROM memories
                 WHERE rid IN (SELECT value FROM json_each(?1))",
            )
            .map_err(backend)?;
        let mut rows = stmt.query([list]).map_err(backend)?;
        while let Some(r) = rows.next().map_err(backend)? {
            let (rid, l) = light_from_row(r).map_err(backend)?;
            known.insert(rid, Cow::Owned(l));
        }
        Ok(())
    }

    /// One query term's matches in the user's memories, newest first: every match's
    /// count and the newest [`TERM_SCAN_CAP`] (the database's count is extrapolated past
    /// them).
    fn scan(&self, u: &User, term: &str) -> Result<TermScan, StoreError> {
        match self {
            Source::Held(t) => {
                let (df, rids) = t.matches(term, TERM_SCAN_CAP);
                Ok(TermScan { df, rids })
            }
            Source::Db(conn) => scan_term(conn, u, term),
        }
    }
}

fn fts_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Matches of one query term read at most (newest first). A term with more is common in
/// this user's memories: its document frequency is extrapolated from how far back its
/// newest matches reach, and only those newest matches become candidates through it.
/// 250 (1000 until 2026-12-03, then 500): each halving cut a search of 100k memories of
/// one user by ~20 %, and LoCoMo recall did not move (recall_any@5 0.650, @10 0.725;
/// its users have ~550 memories, so few terms reach the cap). The price is recency: a
/// memory reached only through common terms must be among their newest 250 matches.
pub(crate) const TERM_SCAN_CAP: usize = 250;

/// A term's newest matches in a rowid range. The limit (`TERM_SCAN_CAP` + 1) is written
/// into the statement: a bound `LIMIT` is a value FTS5's plan depends on, so SQLite
/// prepared the statement again at every search (~10 % of a search's time).
const SCAN_TERM_SQL: &str = "SELECT rowid FROM memories_fts
     WHERE memories_fts MATCH ?1 AND rowid BETWEEN ?2 AND ?3
     ORDER BY rowid DESC LIMIT 251";
const _: () = assert!(TERM_SCAN_CAP + 1 == 251, "SCAN_TERM_SQL's LIMIT");

/// One query term's matches in a user's rowid range, newest first.
pub(super) struct TermScan {
    /// Documents of the user containing the term (exact, or extrapolated when capped).
    pub(super) df: u64,
    pub(super) rids: Vec<i64>,
}

pub(super) fn scan_term(conn: &Connection, u: &User, term: &str) -> Result<TermScan, StoreError> {
    let (lo, hi) = rid_range(u.uid);
    let mut rids: Vec<i64> = conn
        .prepare_cached(SCAN_TERM_SQL)
        .and_then(|mut s| {
            s.query_map(params![fts_query(&[term.to_string()]), lo, hi], |r| {
                r.get(0)
            })?
            .collect()
        })
        .map_err(backend)?;
    if rids.len() <= TERM_SCAN_CAP {
        return Ok(TermScan {
            df: rids.len() as u64,
            rids,
        });
    }
    rids.truncate(TERM_SCAN_CAP);
    let oldest = rids.last().map_or(1, |r| r - lo);
    let df = extrapolated_df(oldest, u.next_seq, u.stats.docs);
    Ok(TermScan { df, rids })
}

/// The document frequency of a term whose newest [`TERM_SCAN_CAP`] matches reach back to
/// sequence number `oldest`, of a user whose newest memory is `next_seq`.
pub(crate) fn extrapolated_df(oldest: i64, next_seq: i64, docs: u64) -> u64 {
    // The newest TERM_SCAN_CAP matches lie in the sequence numbers [oldest, next_seq]: the
    // term occurs in TERM_SCAN_CAP of that span's memories, so about that share of all.
    let oldest = oldest.max(1);
    let span = (next_seq - oldest + 1).max(1) as u64;
    (TERM_SCAN_CAP as u64 * next_seq.max(1) as u64 / span)
        .clamp(TERM_SCAN_CAP as u64 + 1, docs.max(TERM_SCAN_CAP as u64 + 1))
}

/// Lexical ranking of `user`'s memories: each query term's matches in the user's rowid
/// range (FTS5) give its document frequency and the candidates, which are pre-ranked by
/// the summed IDF of their terms; the best [`context::RERANK`] are scored by BM25 with per-user
/// statistics, and neighbours and sessions add context ([`context::rank`]).
///
/// FTS5's own `ORDER BY rank` would score every match (~0.9 µs each: 170 ms for a user
/// with 1M memories and a query of common words); reading a term's row ids costs ~0.1 µs
/// each and is capped per term by [`TERM_SCAN_CAP`].
fn lexical<'a>(
    src: &Source<'a>,
    u: &User,
    terms: &[String],
    known: &mut Known<'a>,
) -> Result<Vec<(i64, f64)>, StoreError> {
    let stats = match src {
        Source::Held(t) => t.stats(),
        Source::Db(_) => u.stats,
    };
    if terms.is_empty() || stats.docs == 0 {
        return Ok(vec![]);
    }
    let (lo, hi) = rid_range(u.uid);
    let mut df: HashMap<String, u64> = HashMap::with_capacity(terms.len());
    let mut matches = Vec::with_capacity(terms.len());
    for t in terms {
        let scan = src.scan(u, t)?;
        matches.push((scan.rids, Bm25::idf(scan.df, stats.docs)));
        df.insert(t.clone(), scan.df);
    }
    let rids = context::preselect(&matches);
    src.lights(rids.iter().copied(), known)?;
    let bm25 = Bm25::default();
    let own = context::own_scores(&bm25, terms, &df, stats, &rids, known);
    // The neighbours whose windows are scored: row ids of this user only.
    let around = context::window_keys(&own, known)
        .into_iter()
        .filter(|n| (lo..=hi).contains(n));
    src.lights(around, known)?;
    Ok(context::rank(&bm25, terms, &df, stats, &own, known))
}

/// What a search came to: its hits, or the scope (and model) the indexes must load first.
pub enum Searched {
    Done(Vec<ScoredMemory>),
    /// Load the scope's terms, and its vectors of the model when given.
    Load(i64, Option<String>),
}

/// The in-memory indexes a search reads.
pub struct Indexes<'a> {
    pub vectors: &'a VectorIndex,
    pub terms: &'a TermIndex,
}

/// Reads every vector of scope `uid` for `model` into `v`.
pub(super) fn scope_vectors(
    conn: &Connection,
    uid: i64,
    model: &str,
    v: &mut Vectors,
) -> Result<(), StoreError> {
    let (lo, hi) = rid_range(uid);
    let mut stmt = conn
        .prepare_cached("SELECT rid, vec FROM vectors WHERE rid BETWEEN ?1 AND ?2 AND model = ?3")
        .map_err(backend)?;
    let mut rows = stmt.query(params![lo, hi, model]).map_err(backend)?;
    while let Some(r) = rows.next().map_err(backend)? {
        let rid: i64 = r.get(0).map_err(backend)?;
        let blob = r
            .get_ref(1)
            .and_then(|b| Ok(b.as_blob()?))
            .map_err(backend)?;
        v.upsert_stored(rid, blob);
    }
    Ok(())
}

/// A search. A scope of [`lexicon::HELD_FROM`] memories or more is read from the term
/// index and a semantic search's vectors are scored in the vector index; when either is
/// not loaded there the search asks for them (`may_load`) or, on the second try (evicted
/// meanwhile), reads the database and goes on lexically. A smaller scope is ranked in
/// FTS5, and its vectors, when not held, are read here and offered to the vector index.
pub fn search(
    conn: &Connection,
    user_id: &str,
    query: &SearchQuery,
    index: Indexes<'_>,
    may_load: bool,
) -> Result<Searched, StoreError> {
    let limit = query.limit.clamp(1, 100);
    // Before the read transaction's first statement (see `VectorIndex::offer`).
    let stamp = index.vectors.stamp();
    let Some(u) = user(conn, user_id)? else {
        return Ok(Searched::Done(vec![]));
    };
    let pool = MIN_POOL.max(limit * 5);
    let small = u.stats.docs < lexicon::HELD_FROM;
    let scope = match &query.embedding {
        None => None,
        Some(e) => match index.vectors.get(u.uid, &e.model) {
            Some(v) if vectors::lock(&v).loaded => Some((v, &e.vector)),
            _ if small => {
                let mut v = Vectors::default();
                scope_vectors(conn, u.uid, &e.model, &mut v)?;
                Some((index.vectors.offer(u.uid, &e.model, stamp, v), &e.vector))
            }
            _ => None,
        },
    };
    let held = index.terms.loaded(u.uid);
    let wanted = held.is_none() || (query.embedding.is_some() && scope.is_none());
    if may_load && !small && wanted {
        let model = query.embedding.as_ref().map(|e| e.model.clone());
        return Ok(Searched::Load(u.uid, model));
    }
    let held = held.as_ref().map(scopes::lock);
    let src = match &held {
        Some(t) => Source::Held(t),
        None => Source::Db(conn),
    };
    // Scored under the scope's lock; evicted meanwhile, the search goes on lexically.
    let dense = |v: &vectors::Shared, q: &[f32]| {
        let mut g = vectors::lock(v);
        if g.loaded {
            g.scored(q, pool)
        } else {
            vec![]
        }
    };
    let terms = Analyzer::default().query_terms(&query.text);
    let mut known = Known::default();
    let (semantic, lexical) = match &scope {
        // A large scope's vectors are scored on a second thread while this one ranks the
        // lexical candidates (at 100k vectors each part takes ~0.5 ms and more).
        Some((v, q)) if vectors::lock(v).len() >= vectors::SCORE_APART_FROM => {
            std::thread::scope(|s| {
                let semantic = s.spawn(|| dense(v, q));
                let lexical = lexical(&src, &u, &terms, &mut known);
                (semantic.join().unwrap_or_default(), lexical)
            })
        }
        Some((v, q)) => (dense(v, q), lexical(&src, &u, &terms, &mut known)),
        None => (vec![], lexical(&src, &u, &terms, &mut known)),
    };
    let lexical = lexical?;
    let ranked = match &scope {
        Some((v, q)) if !semantic.is_empty() => {
            let lexical = &lexical[..lexical.len().min(pool)];
            let keys = fusion_candidates(lexical, &semantic, query.alone_floor());
            let (lo, hi) = rid_range(u.uid);
            let around = context::dense_window_keys(&keys, &known);
            src.lights(
                around.into_iter().filter(|n| (lo..=hi).contains(n)),
                &mut known,
            )?;
            let cosines =
                vectors::lock(v).window_cosines(q, &context::dense_windows(&keys, &known));
            fuse(lexical, &keys, &cosines, DENSE_WEIGHT)
        }
        _ => lexical,
    };
    // De-duplicate identical contents (hashes of semantic-only hits are looked up: those
    // of the best at once, any further one by one).
    src.lights(ranked.iter().take(limit * 4).map(|x| x.0), &mut known)?;
    let mut ranked_known = Vec::with_capacity(ranked.len());
    for (rid, s) in ranked {
        if let Entry::Vacant(slot) = known.entry(rid) {
            match src.light(rid)? {
                Some(l) => {
                    slot.insert(Cow::Owned(l));
                }
                None => continue,
            }
        }
        ranked_known.push((rid, s));
        if ranked_known.len() >= limit * 4 {
            break;
        }
    }
    let top = dedup(ranked_known, |rid| known.get(rid).map(|l| l.hash));
    drop(known);
    drop(held);
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {MEMORY_COLUMNS} FROM memories WHERE rid = ?1"
        ))
        .map_err(backend)?;
    let mut out = Vec::with_capacity(limit);
    for (rid, score) in top.into_iter().take(limit) {
        if let Some(memory) = stmt
            .query_row([rid], |r| memory_from_row(r, user_id))
            .optional()
            .map_err(backend)?
        {
            out.push(ScoredMemory { memory, score });
        }
    }
    Ok(Searched::Done(out))
}

/// Memories of every user without a vector of `model`, by row id after `cursor` (the
/// previous page's last row id), at most `limit` (the background re-embedding's walk).
pub fn unembedded(
    conn: &Connection,
    model: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page, StoreError> {
    let after: i64 = match cursor {
        Some(c) => c
            .parse()
            .map_err(|_| StoreError::Invalid(format!("bad cursor `{c}`")))?,
        None => 0,
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT m.id, m.content, m.metadata, m.session_id, m.created_at, m.rid, u.user_id
             FROM memories m JOIN users u ON u.uid = m.uid
             LEFT JOIN vectors e ON e.rid = m.rid
             WHERE m.rid > ?1 AND (e.rid IS NULL OR e.model <> ?2)
             ORDER BY m.rid LIMIT ?3",
        )
        .map_err(backend)?;
    let rows: Vec<(Memory, i64)> = stmt
        .query_map(params![after, model, limit as i64], |r| {
            let user_id: String = r.get(6)?;
            Ok((memory_from_row(r, &user_id)?, r.get(5)?))
        })
        .and_then(|rows| rows.collect())
        .map_err(backend)?;
    let next_cursor = (rows.len() == limit)
        .then(|| rows.last().map(|(_, rid)| rid.to_string()))
        .flatten();
    Ok(Page {
        items: rows.into_iter().map(|(m, _)| m).collect(),
        next_cursor,
    })
}

/// How many memories [`unembedded`] walks through for `model`.
pub fn count_unembedded(conn: &Connection, model: &str) -> Result<u64, StoreError> {
    conn.prepare_cached(
        "SELECT count(*) FROM memories m LEFT JOIN vectors e ON e.rid = m.rid
         WHERE e.rid IS NULL OR e.model <> ?1",
    )
    .and_then(|mut s| s.query_row([model], |r| r.get::<_, i64>(0)))
    .map(|n| n.max(0) as u64)
    .map_err(backend)
}

fn live_cutoff(opts: &SqliteOptions) -> i64 {
    let ttl = opts.session_ttl.as_millis() as i64;
    if ttl == 0 {
        i64::MIN
    } else {
        opts.clock.now_ms() - ttl
    }
}

fn messages(conn: &Connection, sid: i64, limit: usize) -> Result<Vec<SessionMessage>, StoreError> {
    let mut rows: Vec<SessionMessage> = conn
        .prepare_cached(
            "SELECT role, content, created_at FROM session_messages WHERE sid = ?1
             ORDER BY mid DESC LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![sid, limit as i64], |r| {
                Ok(SessionMessage {
                    role: r.get(0)?,
                    content: r.get(1)?,
                    created_at_ms: r.get(2)?,
                })
            })?
            .collect()
        })
        .map_err(backend)?;
    rows.reverse();
    Ok(rows)
}

/// See [`crate::memory::MemoryStore::user_ids_with_prefix`].
pub fn user_ids_with_prefix(conn: &Connection, prefix: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT user_id FROM users u WHERE substr(user_id, 1, ?2) = ?1 \
             AND (doc_count > 0 OR EXISTS (SELECT 1 FROM sessions s WHERE s.uid = u.uid)) \
             ORDER BY user_id",
        )
        .map_err(backend)?;
    let rows = stmt
        .query_map(params![prefix, prefix.chars().count() as i64], |r| r.get(0))
        .and_then(|r| r.collect::<Result<Vec<String>, _>>())
        .map_err(backend)?;
    Ok(rows)
}

pub fn session_messages(
    conn: &Connection,
    opts: &SqliteOptions,
    user_id: &str,
    session_id: &str,
) -> Result<Vec<SessionMessage>, StoreError> {
    let sid: Option<i64> = conn
        .prepare_cached(
            "SELECT s.sid FROM sessions s JOIN users u ON u.uid = s.uid
             WHERE u.user_id = ?1 AND s.session_id = ?2 AND s.updated_at >= ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![user_id, session_id, live_cutoff(opts)], |r| {
                r.get(0)
            })
            .optional()
        })
        .map_err(backend)?;
    match sid {
        Some(sid) => messages(conn, sid, opts.session_max_messages),
        None => Ok(vec![]),
    }
}

const SESSION_SELECT: &str = "SELECT s.sid, s.session_id, u.user_id, s.created_at, s.updated_at,
    (SELECT count(*) FROM session_messages m WHERE m.sid = s.sid)
    FROM sessions s JOIN users u ON u.uid = s.uid";

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<(i64, SessionInfo)> {
    Ok((
        r.get(0)?,
        SessionInfo {
            session_id: r.get(1)?,
            user_id: r.get(2)?,
            created_at_ms: r.get(3)?,
            updated_at_ms: r.get(4)?,
            message_count: r.get::<_, i64>(5)?.max(0) as u64,
        },
    ))
}

/// Most sessions listed at once.
const MAX_SESSIONS_LISTED: i64 = 1000;

pub fn list_sessions(
    conn: &Connection,
    opts: &SqliteOptions,
    user_id: Option<&str>,
) -> Result<Vec<SessionInfo>, StoreError> {
    let sql = format!(
        "{SESSION_SELECT} WHERE s.updated_at >= ?1 AND (?2 IS NULL OR u.user_id = ?2)
         ORDER BY s.updated_at DESC LIMIT ?3"
    );
    conn.prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(
                params![live_cutoff(opts), user_id, MAX_SESSIONS_LISTED],
                |r| session_from_row(r).map(|x| x.1),
            )?
            .collect()
        })
        .map_err(backend)
}

pub fn get_session(
    conn: &Connection,
    opts: &SqliteOptions,
    user_id: Option<&str>,
    session_id: &str,
) -> Result<Session, StoreError> {
    let sql = format!(
        "{SESSION_SELECT} WHERE s.session_id = ?1 AND s.updated_at >= ?2
         AND (?3 IS NULL OR u.user_id = ?3) LIMIT 2"
    );
    let found: Vec<(i64, SessionInfo)> = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(
                params![session_id, live_cutoff(opts), user_id],
                session_from_row,
            )?
            .collect()
        })
        .map_err(backend)?;
    match found.as_slice() {
        [] => Err(StoreError::NotFound),
        [(sid, info)] => Ok(Session {
            info: info.clone(),
            messages: messages(conn, *sid, opts.session_max_messages)?,
        }),
        _ => Err(StoreError::Ambiguous(session_id.to_string())),
    }
}
