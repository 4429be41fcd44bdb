//! The embedded database's schema and its versioned migrations (`PRAGMA user_version`).
//!
//! Row ids of memories are `(uid << 32) | seq`: every user's memories occupy one
//! contiguous rowid range, so that listing, lexical search (FTS5 with a rowid range) and
//! brute-force vector search touch only that user's rows, and neighbouring memories of a
//! user are neighbouring row ids.

use rusqlite::{params, Transaction};

use crate::memory::retrieve::vector_from_bytes;
use crate::memory::vectors::Quantized;
use crate::storage::sqlite::{Migration, Step};

/// Migrations in order; entry `i` brings the schema from version `i` to `i + 1`
/// (applied by [`crate::storage::sqlite::open`]).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        description: "users, memories, their full-text index, vectors and sessions",
        apply: Step::Sql(
            r#"
CREATE TABLE users (
    uid        INTEGER PRIMARY KEY,
    user_id    TEXT NOT NULL UNIQUE,
    next_seq   INTEGER NOT NULL DEFAULT 0,
    doc_count  INTEGER NOT NULL DEFAULT 0,
    term_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE memories (
    rid        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    uid        INTEGER NOT NULL,
    content    TEXT NOT NULL,
    metadata   TEXT NOT NULL,
    session_id TEXT,
    created_at INTEGER NOT NULL,
    terms      TEXT NOT NULL,
    nterms     INTEGER NOT NULL,
    hash       INTEGER NOT NULL
);
CREATE VIRTUAL TABLE memories_fts USING fts5(
    terms, content='', contentless_delete=1,
    tokenize='unicode61 remove_diacritics 0'
);
CREATE TABLE embeddings (
    rid   INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    vec   BLOB NOT NULL
);
CREATE TABLE sessions (
    sid        INTEGER PRIMARY KEY,
    uid        INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (uid, session_id)
);
CREATE INDEX sessions_by_id ON sessions (session_id);
CREATE INDEX sessions_by_update ON sessions (updated_at);
CREATE TABLE session_messages (
    mid        INTEGER PRIMARY KEY,
    sid        INTEGER NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX session_messages_by_session ON session_messages (sid, mid);
"#,
        ),
    },
    Migration {
        description: "captures skip a content the user already has (`WriteOp::Capture`)",
        apply: Step::Sql("CREATE INDEX memories_by_hash ON memories (hash);"),
    },
    Migration {
        description: "vectors stored quantized, as the vector index holds them",
        apply: Step::Code(quantize_vectors),
    },
];

/// Moves `embeddings` (little-endian f32 vectors) to `vectors` (each in the int8 form of
/// [`Quantized::to_bytes`], a quarter of the bytes): a search of a scope the vector index
/// does not hold reads every vector of the scope, and with 1M memories over 1000 users
/// those page reads were a third of a search's time. Searches score the int8 form anyway.
fn quantize_vectors(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE vectors (
             rid   INTEGER PRIMARY KEY,
             model TEXT NOT NULL,
             vec   BLOB NOT NULL
         );",
    )?;
    {
        let mut read = tx.prepare("SELECT rid, model, vec FROM embeddings ORDER BY rid")?;
        let mut write = tx.prepare("INSERT INTO vectors (rid, model, vec) VALUES (?1, ?2, ?3)")?;
        let mut rows = read.query([])?;
        while let Some(r) = rows.next()? {
            let vector = vector_from_bytes(&r.get::<_, Vec<u8>>(2)?);
            write.execute(params![
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                Quantized::of(&vector).to_bytes()
            ])?;
        }
    }
    tx.execute_batch("DROP TABLE embeddings;")
}

/// The row-id range of a user's memories.
pub fn rid_range(uid: i64) -> (i64, i64) {
    (uid << 32, (uid << 32) | 0xFFFF_FFFF)
}
