//! Queries on a read connection: memories by id and by page, search (FTS5 candidates
//! inside the user's row-id range, re-ranked by [`crate::memory::retrieve`]), sessions.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::schema::rid_range;
use super::{backend, SqliteOptions};
use crate::memory::retrieve::{
    cosine, dedup, rrf, sort_desc, vector_from_bytes, with_neighbours, Bm25, Candidate,
    CorpusStats, NEIGHBOUR_WEIGHT, RRF_K,
};
use crate::memory::store::{
    Memory, Metadata, Page, ScoredMemory, SearchQuery, Session, SessionInfo, SessionMessage,
    StoreError,
};
use crate::memory::text::Analyzer;

/// Lexical candidates taken from FTS5 before re-ranking (and vector candidates kept).
const MIN_POOL: usize = 50;

/// Best-scored candidates whose neighbours are looked at; a neighbour gets a fifth of a
/// candidate's score, so those of low-ranked candidates rarely reach the top.
const NEIGHBOUR_SOURCES: usize = 50;

struct User {
    uid: i64,
    stats: CorpusStats,
}

fn user(conn: &Connection, user_id: &str) -> Result<Option<User>, StoreError> {
    conn.prepare_cached("SELECT uid, doc_count, term_count FROM users WHERE user_id = ?1")
        .and_then(|mut s| {
            s.query_row([user_id], |r| {
                Ok(User {
                    uid: r.get(0)?,
                    stats: CorpusStats {
                        docs: r.get::<_, i64>(1)?.max(0) as u64,
                        terms: r.get::<_, i64>(2)?.max(0) as u64,
                    },
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

/// Light data of a memory needed for ranking.
struct Light {
    session_id: Option<String>,
    hash: i64,
    terms: String,
    len: u32,
}

fn light(conn: &Connection, rid: i64) -> Result<Option<Light>, StoreError> {
    conn.prepare_cached("SELECT session_id, hash, terms, nterms FROM memories WHERE rid = ?1")
        .and_then(|mut s| {
            s.query_row([rid], |r| {
                Ok(Light {
                    session_id: r.get(0)?,
                    hash: r.get(1)?,
                    terms: r.get(2)?,
                    len: r.get::<_, i64>(3)?.clamp(0, u32::MAX as i64) as u32,
                })
            })
            .optional()
        })
        .map_err(backend)
}

fn fts_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Lexical ranking of `user`'s memories: FTS5 picks candidates in the user's rowid range,
/// BM25 with per-user statistics re-ranks them, neighbours add context.
fn lexical(
    conn: &Connection,
    u: &User,
    terms: &[String],
    pool: usize,
    known: &mut HashMap<i64, Light>,
) -> Result<Vec<(i64, f64)>, StoreError> {
    if terms.is_empty() || u.stats.docs == 0 {
        return Ok(vec![]);
    }
    let (lo, hi) = rid_range(u.uid);
    let expr = fts_query(terms);
    let rids: Vec<i64> = conn
        .prepare_cached(
            "SELECT rowid FROM memories_fts WHERE memories_fts MATCH ?1 AND rowid BETWEEN ?2 AND ?3
             ORDER BY rank LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(params![expr, lo, hi, pool as i64], |r| r.get(0))?
                .collect()
        })
        .map_err(backend)?;
    let mut candidates = Vec::with_capacity(rids.len());
    for &rid in &rids {
        if let Some(l) = light(conn, rid)? {
            candidates.push(Candidate {
                key: rid,
                terms: l.terms.clone(),
                len: l.len,
            });
            known.insert(rid, l);
        }
    }
    // Document frequencies within this user: exact from the candidates when FTS5 returned
    // every match, otherwise counted per term.
    let mut df: HashMap<String, u64> = HashMap::new();
    if rids.len() < pool {
        for c in &candidates {
            let mut seen: Vec<&str> = c.terms.split_ascii_whitespace().collect();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(q) = terms.iter().find(|q| q.as_str() == t) {
                    *df.entry(q.clone()).or_default() += 1;
                }
            }
        }
    } else {
        let mut stmt = conn
            .prepare_cached(
                "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?1 AND rowid BETWEEN ?2 AND ?3",
            )
            .map_err(backend)?;
        for t in terms {
            let n: i64 = stmt
                .query_row(params![fts_query(std::slice::from_ref(t)), lo, hi], |r| {
                    r.get(0)
                })
                .map_err(backend)?;
            df.insert(t.clone(), n.max(0) as u64);
        }
    }
    let mut scores = Bm25::default().score(terms, &df, u.stats, &candidates);
    sort_desc(&mut scores);
    // Neighbours: the adjacent memories of the same user and session.
    for &(rid, _) in scores.iter().take(NEIGHBOUR_SOURCES) {
        if known.get(&rid).is_none_or(|l| l.session_id.is_none()) {
            continue;
        }
        for n in [rid - 1, rid + 1] {
            if (lo..=hi).contains(&n) && !known.contains_key(&n) {
                if let Some(l) = light(conn, n)? {
                    known.insert(n, l);
                }
            }
        }
    }
    // Only memories of one named session are neighbours: adjacent memories without a
    // session (API writes, captures without `x-session-id`) need not be related.
    let session = |rid: i64| known.get(&rid).and_then(|l| l.session_id.as_deref());
    let sources: std::collections::HashSet<i64> =
        scores.iter().take(NEIGHBOUR_SOURCES).map(|x| x.0).collect();
    Ok(with_neighbours(
        &scores,
        |rid| {
            if !sources.contains(&rid) {
                return vec![];
            }
            [rid - 1, rid + 1]
                .into_iter()
                .filter(|n| session(*n).is_some() && session(*n) == session(rid))
                .collect()
        },
        NEIGHBOUR_WEIGHT,
    ))
}

fn semantic(
    conn: &Connection,
    u: &User,
    model: &str,
    vector: &[f32],
    pool: usize,
) -> Result<Vec<(i64, f64)>, StoreError> {
    let (lo, hi) = rid_range(u.uid);
    let mut stmt = conn
        .prepare_cached(
            "SELECT rid, vec FROM embeddings WHERE rid BETWEEN ?1 AND ?2 AND model = ?3",
        )
        .map_err(backend)?;
    let mut rows = stmt.query(params![lo, hi, model]).map_err(backend)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(backend)? {
        let rid: i64 = r.get(0).map_err(backend)?;
        let blob = r.get_ref(1).map_err(backend)?;
        let v = vector_from_bytes(blob.as_blob().map_err(backend)?);
        let sim = cosine(vector, &v);
        if sim > 0.0 {
            out.push((rid, f64::from(sim)));
        }
    }
    sort_desc(&mut out);
    out.truncate(pool);
    Ok(out)
}

pub fn search(
    conn: &Connection,
    user_id: &str,
    query: &SearchQuery,
) -> Result<Vec<ScoredMemory>, StoreError> {
    let limit = query.limit.clamp(1, 100);
    let Some(u) = user(conn, user_id)? else {
        return Ok(vec![]);
    };
    let pool = MIN_POOL.max(limit * 5);
    let terms = Analyzer::default().query_terms(&query.text);
    let mut known: HashMap<i64, Light> = HashMap::new();
    let lexical = lexical(conn, &u, &terms, pool, &mut known)?;
    let semantic = match &query.embedding {
        Some(e) => semantic(conn, &u, &e.model, &e.vector, pool)?,
        None => vec![],
    };
    let ranked = if semantic.is_empty() {
        lexical
    } else {
        let lists = [
            lexical.iter().take(pool).map(|x| x.0).collect(),
            semantic.iter().map(|x| x.0).collect(),
        ];
        rrf(&lists, RRF_K)
    };
    // De-duplicate identical contents (hashes of semantic-only hits are looked up).
    let mut ranked_known = Vec::with_capacity(ranked.len());
    for (rid, s) in ranked {
        if let std::collections::hash_map::Entry::Vacant(slot) = known.entry(rid) {
            match light(conn, rid)? {
                Some(l) => {
                    slot.insert(l);
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
    Ok(out)
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
