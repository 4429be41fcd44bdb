//! Captured exchanges written a batch at a time: the captures that follow one another in
//! a write batch cost a handful of statements per user (which of them are stored already,
//! the user's count for the quota, their numbers, the rows, the postings) instead of as
//! many per memory. One memory at a time, the memory writer kept up with about a thousand
//! captures a second in a debug build, fewer than a busy instance makes; past its queue's
//! bound captures were dropped.
//!
//! The outcome is the one of writing the captures one by one: a capture whose text the
//! user keeps already (stored, or earlier in the batch) is skipped, the quota is applied
//! in order, and each user's memories are numbered in the order they were captured.

use std::borrow::Cow;
use std::collections::HashSet;

use deadpool_postgres::Transaction;

use super::{owner_count, uid_in, Cached};
use crate::memory::quota;
use crate::memory::store::{Memory, NewMemory, StoreError};
use crate::memory::text::{content_hash, Analyzer};
use crate::storage::postgres::{json, text};

/// A capture that will be stored, with what is computed once for it.
struct Fresh {
    memory: NewMemory,
    id: String,
    terms: Vec<String>,
    hash: i64,
}

/// Writes `run` (consecutive captures of a batch) and appends the memories it created to
/// `created`, in order per user.
pub(super) async fn write_run(
    tx: &Transaction<'_>,
    analyzer: &Analyzer,
    max_per_user: u64,
    now_ms: i64,
    run: Vec<NewMemory>,
    created: &mut Vec<Memory>,
) -> Result<(), StoreError> {
    for (user_id, captures) in by_user(run) {
        let fresh = admitted(tx, analyzer, max_per_user, &user_id, captures).await?;
        if fresh.is_empty() {
            continue;
        }
        insert(tx, &user_id, now_ms, &fresh).await?;
        created.extend(fresh.into_iter().map(|f| Memory {
            id: f.id,
            user_id: f.memory.user_id,
            content: f.memory.content,
            metadata: f.memory.metadata,
            session_id: f.memory.session_id,
            created_at_ms: now_ms,
            created_at: now_ms.div_euclid(1000),
        }));
    }
    Ok(())
}

/// The captures grouped by user, users in order of first appearance, each user's in order.
fn by_user(run: Vec<NewMemory>) -> Vec<(String, Vec<NewMemory>)> {
    let mut groups: Vec<(String, Vec<NewMemory>)> = Vec::new();
    for m in run {
        match groups.iter_mut().find(|(u, _)| *u == m.user_id) {
            Some((_, ms)) => ms.push(m),
            None => groups.push((m.user_id.clone(), vec![m])),
        }
    }
    groups
}

/// The captures of one user that are stored: not empty, not a text the user keeps
/// already, within the quota.
async fn admitted(
    tx: &Transaction<'_>,
    analyzer: &Analyzer,
    max_per_user: u64,
    user_id: &str,
    captures: Vec<NewMemory>,
) -> Result<Vec<Fresh>, StoreError> {
    let hashes: Vec<i64> = captures.iter().map(|m| content_hash(&m.content)).collect();
    let mut seen: HashSet<i64> = match uid_in(tx, user_id).await? {
        Some(uid) => tx
            .cquery(
                "SELECT hash FROM memproxy_memories WHERE uid = $1 AND hash = ANY($2)",
                &[&uid, &hashes],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect(),
        None => HashSet::new(),
    };
    let mut kept = owner_count(tx, user_id).await?;
    let mut fresh = Vec::with_capacity(captures.len());
    for (memory, hash) in captures.into_iter().zip(hashes) {
        if memory.content.trim().is_empty() || !seen.insert(hash) {
            continue;
        }
        if !quota::admits_capture(max_per_user, user_id, kept) {
            continue;
        }
        kept += 1;
        fresh.push(Fresh {
            terms: analyzer.terms(&memory.content),
            id: format!("mem_{}", uuid::Uuid::new_v4().simple()),
            memory,
            hash,
        });
    }
    Ok(fresh)
}

/// Numbers `fresh` as the user's next memories and inserts them with their postings.
async fn insert(
    tx: &Transaction<'_>,
    user_id: &str,
    now_ms: i64,
    fresh: &[Fresh],
) -> Result<(), StoreError> {
    let n = fresh.len() as i64;
    let nterms: i64 = fresh.iter().map(|f| f.terms.len() as i64).sum();
    let row = tx
        .cone(
            "INSERT INTO memproxy_memory_users (user_id, next_seq, doc_count, term_count)
             VALUES ($1, $2, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET
                 next_seq = memproxy_memory_users.next_seq + $2,
                 doc_count = memproxy_memory_users.doc_count + $2,
                 term_count = memproxy_memory_users.term_count + $3
             RETURNING uid, next_seq",
            &[&user_id, &n, &nterms],
        )
        .await?;
    let (uid, last): (i64, i64) = (row.get(0), row.get(1));
    let seqs: Vec<i64> = (last - n + 1..=last).collect();
    let ids: Vec<&str> = fresh.iter().map(|f| f.id.as_str()).collect();
    let contents: Vec<Cow<'_, str>> = fresh.iter().map(|f| text(&f.memory.content)).collect();
    let metadata: Vec<serde_json::Value> = fresh
        .iter()
        .map(|f| json(&serde_json::Value::Object(f.memory.metadata.clone())))
        .collect();
    let sessions: Vec<Option<Cow<'_, str>>> = fresh
        .iter()
        .map(|f| f.memory.session_id.as_deref().map(text))
        .collect();
    let terms: Vec<String> = fresh.iter().map(|f| f.terms.join(" ")).collect();
    let counts: Vec<i32> = fresh.iter().map(|f| f.terms.len() as i32).collect();
    let hashes: Vec<i64> = fresh.iter().map(|f| f.hash).collect();
    tx.cexec(
        "INSERT INTO memproxy_memories
             (uid, seq, id, content, metadata, session_id, created_at, terms, nterms, hash, lexemes)
         SELECT $1, s, i, c, md, sid, $2, t, nt, h, array_to_tsvector(string_to_array(t, ' '))
         FROM unnest($3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::text[], $8::text[],
                     $9::int[], $10::bigint[]) AS x(s, i, c, md, sid, t, nt, h)",
        &[
            &uid, &now_ms, &seqs, &ids, &contents, &metadata, &sessions, &terms, &counts, &hashes,
        ],
    )
    .await?;
    // Each memory's distinct terms, as (term, seq) pairs.
    let mut posting_terms: Vec<&str> = Vec::new();
    let mut posting_seqs: Vec<i64> = Vec::new();
    for (f, &seq) in fresh.iter().zip(&seqs) {
        let mut distinct: Vec<&str> = f.terms.iter().map(String::as_str).collect();
        distinct.sort_unstable();
        distinct.dedup();
        posting_seqs.extend(std::iter::repeat_n(seq, distinct.len()));
        posting_terms.extend(distinct);
    }
    tx.cexec(
        "INSERT INTO memproxy_memory_terms (uid, term, seq)
         SELECT $1, t, s FROM unnest($2::text[], $3::bigint[]) AS x(t, s) ON CONFLICT DO NOTHING",
        &[&uid, &posting_terms, &posting_seqs],
    )
    .await?;
    Ok(())
}
