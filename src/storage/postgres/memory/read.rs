//! Reads of [`super::PgMemoryStore`]: memories by id and by page, search, and
//! sessions.
//!
//! Search is the embedded store's algorithm over PostgreSQL: each query term's newest
//! matches in the user's rows (the GIN index; at most
//! [`TERM_SCAN_CAP`] per term, the document frequency extrapolated beyond) give the
//! candidates, pre-ranked by summed IDF; the best are scored by BM25 with the user's
//! statistics in the gateway, neighbouring turns and the session add context
//! ([`crate::memory::context`]), and the vector list (when the query has an embedding) is
//! fused by weighted scores — the same
//! functions ([`crate::memory::retrieve`]) with the same constants, so both backends
//! rank alike.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::ClientWrapper;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{backend, uid_of, PgMemoryStore};
use crate::memory::context::{self, Known, Light};
use crate::memory::retrieve::{
    dedup, fuse, fusion_candidates, vector_from_bytes, Bm25, CorpusStats, DENSE_WEIGHT,
};
use crate::memory::store::{
    Memory, Metadata, Page, ScoredMemory, SearchQuery, Session, SessionInfo, SessionMessage,
    StoreError,
};
use crate::memory::text::Analyzer;
use crate::memory::vectors::{self, VectorIndex, Vectors};
use crate::storage::embedded::memory::read::{extrapolated_df, MIN_POOL, TERM_SCAN_CAP};

/// Statements prepared once per pooled connection (a search makes several queries; each
/// would otherwise cost a second round trip to be prepared).
trait Cached {
    async fn cached(
        &self,
        sql: &str,
        p: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error>;
    async fn cached_opt(
        &self,
        sql: &str,
        p: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error>;
}

impl Cached for ClientWrapper {
    async fn cached(
        &self,
        sql: &str,
        p: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.query(&st, p).await
    }

    async fn cached_opt(
        &self,
        sql: &str,
        p: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let st = self.prepare_cached(sql).await?;
        self.query_opt(&st, p).await
    }
}

struct User {
    uid: i64,
    stats: CorpusStats,
    next_seq: i64,
}

async fn user(c: &ClientWrapper, user_id: &str) -> Result<Option<User>, StoreError> {
    let row = c
        .cached_opt(
            "SELECT uid, doc_count, term_count, next_seq FROM memproxy_memory_users
             WHERE user_id = $1",
            &[&user_id],
        )
        .await
        .map_err(backend)?;
    Ok(row.map(|r| User {
        uid: r.get(0),
        stats: CorpusStats {
            docs: r.get::<_, i64>(1).max(0) as u64,
            terms: r.get::<_, i64>(2).max(0) as u64,
        },
        next_seq: r.get(3),
    }))
}

const MEMORY_COLUMNS: &str = "id, content, metadata, session_id, created_at";

fn memory_from_row(r: &Row, user_id: &str) -> Memory {
    let created_at_ms: i64 = r.get(4);
    let metadata = match r.get::<_, serde_json::Value>(2) {
        serde_json::Value::Object(m) => m,
        _ => Metadata::new(),
    };
    Memory {
        id: r.get(0),
        user_id: user_id.to_string(),
        content: r.get(1),
        metadata,
        session_id: r.get(3),
        created_at_ms,
        created_at: created_at_ms.div_euclid(1000),
    }
}

pub(super) async fn get(s: &PgMemoryStore, user_id: &str, id: &str) -> Result<Memory, StoreError> {
    let c = s.pg.get().await.map_err(backend)?;
    let uid = uid_of(&**c, user_id).await?.ok_or(StoreError::NotFound)?;
    let row = c
        .cached_opt(
            &format!("SELECT {MEMORY_COLUMNS} FROM memproxy_memories WHERE uid = $1 AND id = $2"),
            &[&uid, &id],
        )
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound)?;
    Ok(memory_from_row(&row, user_id))
}

pub(super) async fn list(
    s: &PgMemoryStore,
    user_id: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Page, StoreError> {
    let before: i64 = match cursor {
        None => i64::MAX,
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|&n| (1..=0x1_0000_0000).contains(&n))
            .ok_or_else(|| StoreError::Invalid(format!("invalid cursor `{c}`")))?,
    };
    let c = s.pg.get().await.map_err(backend)?;
    let Some(uid) = uid_of(&**c, user_id).await? else {
        return Ok(Page {
            items: vec![],
            next_cursor: None,
        });
    };
    let limit = limit.clamp(1, 1000);
    let rows = c
        .cached(
            &format!(
                "SELECT {MEMORY_COLUMNS}, seq FROM memproxy_memories WHERE uid = $1 AND seq < $2
                 ORDER BY seq DESC LIMIT $3"
            ),
            &[&uid, &before, &(limit as i64 + 1)],
        )
        .await
        .map_err(backend)?;
    let more = rows.len() > limit;
    let items: Vec<Memory> = rows
        .iter()
        .take(limit)
        .map(|r| memory_from_row(r, user_id))
        .collect();
    let last_seq: Option<i64> = rows.iter().take(limit).last().map(|r| r.get(5));
    Ok(Page {
        items,
        next_cursor: if more {
            last_seq.map(|s| s.to_string())
        } else {
            None
        },
    })
}

/// The [`Light`]s a store's searches have read, by `(uid, seq)`, kept between searches: a
/// memory's light never changes and its number is never reused, so a kept one is never
/// wrong; one of a memory deleted on another instance leads to no row when the hits are
/// fetched. Bounded by bytes ([`LIGHTS_BYTES`]).
pub(super) type Lights = quick_cache::sync::Cache<(i64, i64), Light, LightWeight>;

/// What the kept lights may take (their texts and a fixed overhead each): 8 MiB, ~40k
/// lights of LoCoMo-sized turns.
const LIGHTS_BYTES: u64 = 8 << 20;

/// A light's weight in [`LIGHTS_BYTES`].
#[derive(Clone)]
pub(super) struct LightWeight;

impl quick_cache::Weighter<(i64, i64), Light> for LightWeight {
    fn weight(&self, _: &(i64, i64), l: &Light) -> u64 {
        (l.terms.len() + l.session_id.as_ref().map_or(0, String::len) + 64) as u64
    }
}

pub(super) fn lights_cache() -> Lights {
    Lights::with_weighter((LIGHTS_BYTES / 200) as usize, LIGHTS_BYTES, LightWeight)
}

/// [`Light`]s of the given memories of `uid` not known yet, into `known`: from the kept
/// ones, the others in one query (and kept).
async fn lights(
    c: &ClientWrapper,
    kept: &Lights,
    uid: i64,
    seqs: impl IntoIterator<Item = i64>,
    known: &mut Known<'_>,
) -> Result<(), StoreError> {
    let mut wanted: Vec<i64> = Vec::new();
    for seq in seqs {
        if known.contains_key(&seq) {
            continue;
        }
        match kept.get(&(uid, seq)) {
            Some(l) => {
                known.insert(seq, Cow::Owned(l));
            }
            None => wanted.push(seq),
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let rows = c
        .cached(
            "SELECT seq, session_id, hash, terms, nterms FROM memproxy_memories
             WHERE uid = $1 AND seq = ANY($2)",
            &[&uid, &wanted],
        )
        .await
        .map_err(backend)?;
    for r in rows {
        let light = Light {
            session_id: r.get(1),
            hash: r.get(2),
            terms: r.get(3),
            len: r.get::<_, i32>(4).max(0) as u32,
        };
        kept.insert((uid, r.get(0)), light.clone());
        known.insert(r.get(0), Cow::Owned(light));
    }
    Ok(())
}

/// Each term's newest matches among the user's memories, in one statement
/// ([`crate::storage::postgres::schema::SCAN_TERMS_FN`]: a backward scan of the posting table's primary key
/// `(uid, term, seq)` per term, which stops after 251 rows). (The GIN index over `lexemes`
/// that this replaced cannot return a term's matches in order: it fetched and sorted every
/// match, 34 ms for the benchmark's question and 129 ms for common terms over 100k
/// memories of one user.)
const SCAN_TERMS_SQL: &str = "SELECT i, seq FROM memproxy_scan_terms($1, $2, 251)";
const _: () = assert!(TERM_SCAN_CAP + 1 == 251, "SCAN_TERMS_SQL's LIMIT");
const _: () = assert!(CATCH_UP_PAGE == 4096, "the catch-up query's LIMIT");

async fn lexical(
    c: &ClientWrapper,
    kept: &Lights,
    u: &User,
    terms: &[String],
    known: &mut Known<'_>,
) -> Result<Vec<(i64, f64)>, StoreError> {
    if terms.is_empty() || u.stats.docs == 0 {
        return Ok(vec![]);
    }
    let rows = c
        .cached(SCAN_TERMS_SQL, &[&u.uid, &terms])
        .await
        .map_err(backend)?;
    let mut lists: Vec<Vec<i64>> = vec![Vec::new(); terms.len()];
    for r in rows {
        let i = r.get::<_, i64>(0) as usize;
        if let Some(l) = i.checked_sub(1).and_then(|i| lists.get_mut(i)) {
            l.push(r.get(1));
        }
    }
    let mut df: HashMap<String, u64> = HashMap::with_capacity(terms.len());
    let mut matches = Vec::with_capacity(terms.len());
    for (t, mut seqs) in terms.iter().zip(lists) {
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        let d = if seqs.len() <= TERM_SCAN_CAP {
            seqs.len() as u64
        } else {
            seqs.truncate(TERM_SCAN_CAP);
            extrapolated_df(seqs.last().copied().unwrap_or(1), u.next_seq, u.stats.docs)
        };
        matches.push((seqs, Bm25::idf(d, u.stats.docs)));
        df.insert(t.clone(), d);
    }
    let seqs = context::preselect(&matches);
    lights(c, kept, u.uid, seqs.iter().copied(), known).await?;
    let bm25 = Bm25::default();
    let own = context::own_scores(&bm25, terms, &df, u.stats, &seqs, known);
    let around = context::window_keys(&own, known)
        .into_iter()
        .filter(|n| *n >= 1);
    lights(c, kept, u.uid, around, known).await?;
    Ok(context::rank(&bm25, terms, &df, u.stats, &own, known))
}

pub(super) async fn search(
    s: &PgMemoryStore,
    user_id: &str,
    query: &SearchQuery,
) -> Result<Vec<ScoredMemory>, StoreError> {
    let limit = query.limit.clamp(1, 100);
    let c = s.pg.get().await.map_err(backend)?;
    let Some(u) = user(&c, user_id).await? else {
        return Ok(vec![]);
    };
    let pool = MIN_POOL.max(limit * 5);
    let terms = Analyzer::default().query_terms(&query.text);
    let mut known = Known::default();
    // The term scans and the vectors' catch-up are pipelined on the connection.
    let dense = async {
        match &query.embedding {
            Some(e) => scored(&s.vectors, &c, u.uid, &e.model, &e.vector, pool).await,
            None => Ok(vec![]),
        }
    };
    let (lexical, semantic) = tokio::join!(lexical(&c, &s.lights, &u, &terms, &mut known), dense);
    let (lexical, semantic) = (lexical?, semantic?);
    let ranked = match &query.embedding {
        Some(e) if !semantic.is_empty() => {
            let lexical = &lexical[..lexical.len().min(pool)];
            let keys = fusion_candidates(lexical, &semantic, query.alone_floor());
            let around = context::dense_window_keys(&keys, &known);
            let around = around.into_iter().filter(|n| *n >= 1);
            lights(&c, &s.lights, u.uid, around, &mut known).await?;
            let windows = context::dense_windows(&keys, &known);
            let cosines = match s.vectors.get(u.uid, &e.model) {
                Some(v) => vectors::lock(&v).window_cosines(&e.vector, &windows),
                None => vec![None; keys.len()],
            };
            fuse(lexical, &keys, &cosines, DENSE_WEIGHT)
        }
        _ => lexical,
    };
    // De-duplicate identical contents. Memories deleted on another instance since (a
    // stale vector or kept light) have no row: twice the limit is fetched, in order.
    let want = limit * 4;
    let mut ranked_known = Vec::with_capacity(want);
    for chunk in ranked.chunks(want) {
        lights(&c, &s.lights, u.uid, chunk.iter().map(|x| x.0), &mut known).await?;
        for &(seq, score) in chunk {
            if known.contains_key(&seq) && ranked_known.len() < want {
                ranked_known.push((seq, score));
            }
        }
        if ranked_known.len() >= want {
            break;
        }
    }
    let top: Vec<(i64, f64)> = dedup(ranked_known, |seq| known.get(seq).map(|l| l.hash))
        .into_iter()
        .take(limit * 2)
        .collect();
    let seqs: Vec<i64> = top.iter().map(|x| x.0).collect();
    let rows = c
        .cached(
            &format!(
                "SELECT {MEMORY_COLUMNS}, seq FROM memproxy_memories WHERE uid = $1 AND seq = ANY($2)"
            ),
            &[&u.uid, &seqs],
        )
        .await
        .map_err(backend)?;
    let mut by_seq: HashMap<i64, Memory> = rows
        .iter()
        .map(|r| (r.get::<_, i64>(5), memory_from_row(r, user_id)))
        .collect();
    Ok(top
        .into_iter()
        .filter_map(|(seq, score)| {
            by_seq
                .remove(&seq)
                .map(|memory| ScoredMemory { memory, score })
        })
        .take(limit)
        .collect())
}

/// Vector rows read per catch-up query: a scope's first search reads its vectors page by
/// page, each applied (quantized) before the next is read, instead of holding every row
/// of a large scope at once (100k vectors of 256 dimensions: ~100 MB of rows).
const CATCH_UP_PAGE: usize = 4096;

/// Applies vector rows (in version order) to a scope; rows a concurrent search applied
/// already are skipped.
fn apply(v: &mut Vectors, rows: Vec<Row>) {
    for r in rows {
        let version: i64 = r.get(2);
        if version > v.version {
            v.upsert(r.get(0), &vector_from_bytes(r.get::<_, &[u8]>(1)));
            v.version = version;
        }
    }
}

/// Catches the vectors of scope `uid` for `model` up with PostgreSQL (the rows written
/// since the version held, [`CATCH_UP_PAGE`] at a time; memories deleted through this
/// process were dropped at once, those deleted elsewhere drop out when their rows are
/// fetched), then scores them.
pub(super) async fn scored(
    index: &Arc<VectorIndex>,
    c: &ClientWrapper,
    uid: i64,
    model: &str,
    query: &[f32],
    pool: usize,
) -> Result<Vec<(i64, f64)>, StoreError> {
    let rows = loop {
        let since = index.update(uid, model, |v| v.version);
        let rows = c
            .cached(
                "SELECT seq, vec, version FROM memproxy_memory_vectors
                 WHERE uid = $1 AND model = $2 AND version > $3 ORDER BY version LIMIT 4096",
                &[&uid, &model, &since],
            )
            .await
            .map_err(backend)?;
        if rows.len() < CATCH_UP_PAGE {
            break rows;
        }
        index.update(uid, model, |v| apply(v, rows));
    };
    let catch_up_and_score = move |v: &mut Vectors, query: &[f32]| {
        apply(v, rows);
        v.scored(query, pool)
    };
    let large = index
        .get(uid, model)
        .is_some_and(|v| vectors::lock(&v).len() >= vectors::SCORE_APART_FROM);
    if !large {
        return Ok(index.update(uid, model, |v| catch_up_and_score(v, query)));
    }
    // Off the async thread, while the term scans' answer comes in.
    let (index, model, query) = (index.clone(), model.to_string(), query.to_vec());
    tokio::task::spawn_blocking(move || {
        index.update(uid, &model, |v| catch_up_and_score(v, &query))
    })
    .await
    .map_err(|e| StoreError::Backend(format!("vector scoring failed: {e}")))
}

async fn messages(
    c: &ClientWrapper,
    sid: i64,
    limit: usize,
) -> Result<Vec<SessionMessage>, StoreError> {
    let rows = c
        .cached(
            "SELECT role, content, created_at FROM memproxy_session_messages WHERE sid = $1
             ORDER BY mid DESC LIMIT $2",
            &[&sid, &(limit as i64)],
        )
        .await
        .map_err(backend)?;
    let mut out: Vec<SessionMessage> = rows
        .iter()
        .map(|r| SessionMessage {
            role: r.get(0),
            content: r.get(1),
            created_at_ms: r.get(2),
        })
        .collect();
    out.reverse();
    Ok(out)
}

pub(super) async fn session_messages(
    s: &PgMemoryStore,
    user_id: &str,
    session_id: &str,
) -> Result<Vec<SessionMessage>, StoreError> {
    let c = s.pg.get().await.map_err(backend)?;
    let row = c
        .cached_opt(
            "SELECT s.sid FROM memproxy_sessions s JOIN memproxy_memory_users u ON u.uid = s.uid
             WHERE u.user_id = $1 AND s.session_id = $2 AND s.updated_at >= $3",
            &[&user_id, &session_id, &s.live_cutoff()],
        )
        .await
        .map_err(backend)?;
    match row {
        Some(r) => messages(&c, r.get(0), s.opts.session_max_messages).await,
        None => Ok(vec![]),
    }
}

const SESSION_SELECT: &str = "SELECT s.sid, s.session_id, u.user_id, s.created_at, s.updated_at,
    (SELECT count(*) FROM memproxy_session_messages m WHERE m.sid = s.sid)
    FROM memproxy_sessions s JOIN memproxy_memory_users u ON u.uid = s.uid";

fn session_from_row(r: &Row) -> (i64, SessionInfo) {
    (
        r.get(0),
        SessionInfo {
            session_id: r.get(1),
            user_id: r.get(2),
            created_at_ms: r.get(3),
            updated_at_ms: r.get(4),
            message_count: r.get::<_, i64>(5).max(0) as u64,
        },
    )
}

/// Most sessions listed at once.
const MAX_SESSIONS_LISTED: i64 = 1000;

pub(super) async fn user_ids_with_prefix(
    s: &PgMemoryStore,
    prefix: &str,
) -> Result<Vec<String>, StoreError> {
    let c = s.pg.get().await.map_err(backend)?;
    let len = prefix.chars().count() as i32;
    let rows = c
        .cached(
            "SELECT user_id FROM memproxy_memory_users u WHERE left(user_id, $2) = $1
             AND (doc_count > 0 OR EXISTS (SELECT 1 FROM memproxy_sessions s WHERE s.uid = u.uid))
             ORDER BY user_id",
            &[&prefix, &len],
        )
        .await
        .map_err(backend)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Memories of every user without a vector of `model`, by `(uid, seq)` after `cursor`
/// (`uid:seq` of the previous page's last), at most `limit` (the background re-embedding).
pub(super) async fn unembedded(
    s: &PgMemoryStore,
    model: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Page, StoreError> {
    let (uid, seq): (i64, i64) = match cursor {
        None => (i64::MIN, i64::MIN),
        Some(c) => c
            .split_once(':')
            .and_then(|(u, q)| Some((u.parse().ok()?, q.parse().ok()?)))
            .ok_or_else(|| StoreError::Invalid(format!("invalid cursor `{c}`")))?,
    };
    let c = s.pg.get().await.map_err(backend)?;
    let rows = c
        .cached(
            "SELECT m.id, m.content, m.metadata, m.session_id, m.created_at, m.uid, m.seq,
                    u.user_id
             FROM memproxy_memories m JOIN memproxy_memory_users u ON u.uid = m.uid
             LEFT JOIN memproxy_memory_vectors v ON v.uid = m.uid AND v.seq = m.seq
             WHERE (m.uid, m.seq) > ($1, $2) AND (v.seq IS NULL OR v.model <> $3)
             ORDER BY m.uid, m.seq LIMIT $4",
            &[&uid, &seq, &model, &(limit as i64)],
        )
        .await
        .map_err(backend)?;
    let next_cursor = (rows.len() == limit)
        .then(|| {
            rows.last()
                .map(|r| format!("{}:{}", r.get::<_, i64>(5), r.get::<_, i64>(6)))
        })
        .flatten();
    Ok(Page {
        items: rows
            .iter()
            .map(|r| memory_from_row(r, r.get::<_, &str>(7)))
            .collect(),
        next_cursor,
    })
}

/// How many memories [`unembedded`] walks for `model`.
pub(super) async fn count_unembedded(s: &PgMemoryStore, model: &str) -> Result<u64, StoreError> {
    let c = s.pg.get().await.map_err(backend)?;
    let row = c
        .cached(
            "SELECT count(*) FROM memproxy_memories m
             LEFT JOIN memproxy_memory_vectors v ON v.uid = m.uid AND v.seq = m.seq
             WHERE v.seq IS NULL OR v.model <> $1",
            &[&model],
        )
        .await
        .map_err(backend)?;
    Ok(row.first().map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
}

pub(super) async fn list_sessions(
    s: &PgMemoryStore,
    user_id: Option<&str>,
) -> Result<Vec<SessionInfo>, StoreError> {
    let c = s.pg.get().await.map_err(backend)?;
    let rows = c
        .cached(
            &format!(
                "{SESSION_SELECT} WHERE s.updated_at >= $1 AND ($2::text IS NULL OR u.user_id = $2)
                 ORDER BY s.updated_at DESC LIMIT $3"
            ),
            &[&s.live_cutoff(), &user_id, &MAX_SESSIONS_LISTED],
        )
        .await
        .map_err(backend)?;
    Ok(rows.iter().map(|r| session_from_row(r).1).collect())
}

pub(super) async fn get_session(
    s: &PgMemoryStore,
    user_id: Option<&str>,
    session_id: &str,
) -> Result<Session, StoreError> {
    let c = s.pg.get().await.map_err(backend)?;
    let rows = c
        .cached(
            &format!(
                "{SESSION_SELECT} WHERE s.session_id = $1 AND s.updated_at >= $2
                 AND ($3::text IS NULL OR u.user_id = $3) LIMIT 2"
            ),
            &[&session_id, &s.live_cutoff(), &user_id],
        )
        .await
        .map_err(backend)?;
    let found: Vec<(i64, SessionInfo)> = rows.iter().map(session_from_row).collect();
    match found.as_slice() {
        [] => Err(StoreError::NotFound),
        [(sid, info)] => Ok(Session {
            info: info.clone(),
            messages: messages(&c, *sid, s.opts.session_max_messages).await?,
        }),
        _ => Err(StoreError::Ambiguous(session_id.to_string())),
    }
}
