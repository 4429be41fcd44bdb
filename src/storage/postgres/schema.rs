//! The PostgreSQL schema as versioned migrations, recorded in
//! `memproxy_schema_migrations` and applied at start in one transaction under an advisory
//! lock (several instances may start at once). A database whose schema is newer than
//! this binary knows is refused, never guessed at.
//!
//! Tables are prefixed `memproxy_` so that the database can be shared with other tools
//! (a LiteLLM install keeps its own `LiteLLM_*` tables).

use tokio_postgres::Client;

/// Migrations in order; entry `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "memories, sessions, usage rows, keys, stored responses",
        r#"
CREATE TABLE memproxy_memory_users (
    uid        BIGSERIAL PRIMARY KEY,
    user_id    TEXT NOT NULL UNIQUE,
    next_seq   BIGINT NOT NULL DEFAULT 0,
    doc_count  BIGINT NOT NULL DEFAULT 0,
    term_count BIGINT NOT NULL DEFAULT 0
);
-- A user's memories are numbered 1, 2, 3 ... (seq) in the order they were written: the
-- primary key keeps each user's rows together, and neighbouring turns are seq +- 1.
-- `terms` are the gateway's analyzed terms (stop words out, Snowball stems), the same as
-- the embedded store indexes; `lexemes` is their tsvector, for the GIN index.
CREATE TABLE memproxy_memories (
    uid        BIGINT NOT NULL REFERENCES memproxy_memory_users (uid),
    seq        BIGINT NOT NULL,
    id         TEXT NOT NULL UNIQUE,
    content    TEXT NOT NULL,
    metadata   JSONB NOT NULL,
    session_id TEXT,
    created_at BIGINT NOT NULL,
    terms      TEXT NOT NULL,
    nterms     INTEGER NOT NULL,
    hash       BIGINT NOT NULL,
    lexemes    TSVECTOR NOT NULL,
    PRIMARY KEY (uid, seq)
);
CREATE INDEX memproxy_memories_hash ON memproxy_memories (uid, hash);
-- With btree_gin (a contrib extension) the full-text index also holds the user, so a
-- term's matches are read for one user only; without it, the plain GIN index.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS btree_gin;
    CREATE INDEX memproxy_memories_lexemes ON memproxy_memories USING GIN (uid, lexemes);
EXCEPTION WHEN OTHERS THEN
    CREATE INDEX memproxy_memories_lexemes ON memproxy_memories USING GIN (lexemes);
END
$$;
-- One vector per memory (little-endian f32, as the embedded store keeps them); `version`
-- grows with every write, so an instance catches its in-memory index up by reading the
-- versions above the last one it saw.
CREATE SEQUENCE memproxy_memory_vectors_version;
CREATE TABLE memproxy_memory_vectors (
    uid     BIGINT NOT NULL,
    seq     BIGINT NOT NULL,
    model   TEXT NOT NULL,
    vec     BYTEA NOT NULL,
    version BIGINT NOT NULL DEFAULT nextval('memproxy_memory_vectors_version'),
    PRIMARY KEY (uid, seq)
);
CREATE INDEX memproxy_memory_vectors_catch_up ON memproxy_memory_vectors (uid, model, version);
CREATE TABLE memproxy_sessions (
    sid        BIGSERIAL PRIMARY KEY,
    uid        BIGINT NOT NULL REFERENCES memproxy_memory_users (uid),
    session_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (uid, session_id)
);
CREATE INDEX memproxy_sessions_by_id ON memproxy_sessions (session_id);
CREATE INDEX memproxy_sessions_by_update ON memproxy_sessions (updated_at);
CREATE TABLE memproxy_session_messages (
    mid        BIGSERIAL PRIMARY KEY,
    sid        BIGINT NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX memproxy_session_messages_by_session ON memproxy_session_messages (sid, mid);

CREATE TABLE memproxy_requests (
    id                BIGSERIAL PRIMARY KEY,
    ts_ms             BIGINT NOT NULL,
    request_id        TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    key_id            TEXT,
    key_alias         TEXT,
    endpoint          TEXT NOT NULL,
    model             TEXT NOT NULL,
    deployment        TEXT,
    upstream_model    TEXT,
    provider          TEXT,
    stream            BOOLEAN NOT NULL,
    tokens_in         BIGINT NOT NULL,
    tokens_out        BIGINT NOT NULL,
    tokens_cached     BIGINT NOT NULL,
    tokens_reasoning  BIGINT NOT NULL,
    cost_usd          DOUBLE PRECISION,
    total_ms          DOUBLE PRECISION NOT NULL,
    ttft_ms           DOUBLE PRECISION,
    upstream_ms       DOUBLE PRECISION,
    overhead_ms       DOUBLE PRECISION NOT NULL,
    status            INTEGER NOT NULL,
    error_type        TEXT,
    memories_injected INTEGER NOT NULL,
    tool_rounds       INTEGER NOT NULL,
    attempts          INTEGER NOT NULL,
    client            TEXT NOT NULL DEFAULT '',
    feedback_score    DOUBLE PRECISION,
    feedback_comment  TEXT,
    feedback_ts_ms    BIGINT
);
CREATE INDEX memproxy_requests_ts ON memproxy_requests (ts_ms);
CREATE INDEX memproxy_requests_request_id ON memproxy_requests (request_id);
CREATE TABLE memproxy_keys (
    hash       TEXT PRIMARY KEY,
    alias      TEXT,
    user_id    TEXT,
    models     JSONB NOT NULL,
    max_budget DOUBLE PRECISION,
    expires_ms BIGINT,
    rpm_limit  BIGINT,
    tpm_limit  BIGINT,
    metadata   JSONB NOT NULL,
    created_ms BIGINT NOT NULL,
    preview    TEXT NOT NULL,
    spend      DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE TABLE memproxy_responses (
    user_id           TEXT NOT NULL,
    id                TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    native_deployment TEXT,
    input_items       TEXT NOT NULL,
    response          TEXT NOT NULL,
    PRIMARY KEY (user_id, id)
);
CREATE INDEX memproxy_responses_created ON memproxy_responses (created_at);
-- `memproxy storage migrate`: how far each kind of an embedded install was copied.
CREATE TABLE memproxy_copy_progress (
    source  TEXT NOT NULL,
    kind    TEXT NOT NULL,
    last_id TEXT NOT NULL,
    copied  BIGINT NOT NULL,
    PRIMARY KEY (source, kind)
);
"#,
    ),
    (
        "the project a virtual key is bound to",
        "ALTER TABLE memproxy_keys ADD COLUMN project TEXT",
    ),
];

/// Each query term's newest `cap` postings of one user, as `(term's position, seq)`: a
/// backward scan of the posting table's primary key per term, which stops after `cap`
/// rows. Bitmap scans are off inside the function: when the planner's statistics
/// underestimate a term's matches (a table just filled by `storage migrate`, or grown since
/// its last ANALYZE) it would otherwise fetch and sort every match instead (measured over
/// 100k memories of one user: 45 ms instead of 2.4 ms for the benchmark's question).
/// PL/pgSQL keeps the plan per connection.
pub const SCAN_TERMS_FN: &str = "
CREATE OR REPLACE FUNCTION memproxy_scan_terms(p_uid BIGINT, p_terms TEXT[], p_cap INTEGER)
RETURNS TABLE (i BIGINT, seq BIGINT)
LANGUAGE plpgsql STABLE
SET enable_bitmapscan = off
AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT t.i, p.seq
    FROM unnest(p_terms) WITH ORDINALITY AS t(q, i)
    CROSS JOIN LATERAL (
        SELECT m.seq FROM memproxy_memory_terms m
        WHERE m.uid = p_uid AND m.term = t.q
        ORDER BY m.seq DESC LIMIT p_cap
    ) p;
END
$fn$;
-- The scan reads the newest postings, whose pages are the last to be marked all-visible:
-- vacuum after every 1% of inserts so index-only scans skip the heap.
ALTER TABLE memproxy_memory_terms SET (
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);";

/// The schema version this build writes.
pub const VERSION: i32 = 6;

/// Any constant: the advisory lock that serialises migrations of one database.
const LOCK_ID: i64 = 0x6d65_6d70_726f_7879; // "memproxy"

/// A PostgreSQL error as text: the server's own message when it sent one (the
/// driver's `Display` says only "db error").
fn why(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

/// Schema 5: the posting table, filled from the stored terms, replacing the GIN index.
const POSTING_TABLE: &str = "CREATE TABLE IF NOT EXISTS memproxy_memory_terms (
         uid  BIGINT NOT NULL,
         term TEXT NOT NULL,
         seq  BIGINT NOT NULL,
         PRIMARY KEY (uid, term, seq)
     );
     INSERT INTO memproxy_memory_terms (uid, term, seq)
         SELECT DISTINCT m.uid, t.term, m.seq
         FROM memproxy_memories m, unnest(string_to_array(m.terms, ' ')) AS t(term)
         WHERE t.term <> ''
         ON CONFLICT DO NOTHING;
     DROP INDEX IF EXISTS memproxy_memories_lexemes;";

/// Applies one schema step and records it, inside the migration's transaction.
async fn step(
    tx: &tokio_postgres::Transaction<'_>,
    version: i32,
    description: &str,
    sql: &str,
) -> Result<(), String> {
    tx.batch_execute(sql)
        .await
        .map_err(|e| format!("migration to schema version {version}: {}", why(&e)))?;
    tx.execute(
        "INSERT INTO memproxy_schema_migrations (version, description) VALUES ($1, $2)",
        &[&version, &description],
    )
    .await
    .map_err(|e| format!("recording schema version {version}: {e}"))?;
    Ok(())
}

/// Brings the database to [`VERSION`]; refuses one that is newer. Returns the version
/// found before.
pub async fn migrate(client: &mut Client) -> Result<i32, String> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| format!("migration: {e}"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_ID])
        .await
        .map_err(|e| format!("migration lock: {e}"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS memproxy_schema_migrations (
             version     INTEGER PRIMARY KEY,
             description TEXT NOT NULL,
             applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(|e| format!("migration table: {e}"))?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM memproxy_schema_migrations",
            &[],
        )
        .await
        .map_err(|e| format!("reading the schema version: {e}"))?
        .get(0);
    if current > VERSION {
        return Err(format!(
            "the PostgreSQL database has memproxy schema version {current}, newer than this \
             build's {VERSION} (a newer memproxy migrated it); upgrade memproxy, or point \
             database_url at another database"
        ));
    }
    for (i, (description, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        step(&tx, i as i32 + 1, description, sql).await?;
    }
    // Numbered steps after the list (kept apart so that steps added on other branches
    // merge cleanly): 3, the usage rollups (filled by step 4).
    if current < 3 {
        let about = "usage rollups per minute and hour";
        step(&tx, 3, about, super::rollup::SCHEMA_V3).await?;
    }
    // 4: each usage row's project and injected memories; the project as a rollup
    // dimension, the rollups filled afresh from the rows already stored.
    if current < 4 {
        let sql = format!(
            "{}{}",
            super::rollup::SCHEMA_V4,
            super::rollup::backfill_sql()
        );
        let about = "usage rows' project and injected memories; project in the rollups";
        step(&tx, 4, about, &sql).await?;
    }
    // 5: the lexical search's posting table, filled from the memories' terms; the GIN
    // index it replaces goes (the `lexemes` column stays, for SQL of the operator's own).
    if current < 5 {
        let about = "posting table of the memories' terms for lexical search";
        step(&tx, 5, about, POSTING_TABLE).await?;
    }
    // 6: the term scan as a function that plans without bitmap scans (see
    // [`SCAN_TERMS_FN`]).
    if current < 6 {
        let about = "the lexical search's term scan as a function with a fixed plan shape";
        step(&tx, 6, about, SCAN_TERMS_FN).await?;
    }
    tx.commit()
        .await
        .map_err(|e| format!("migration commit: {e}"))?;
    Ok(current)
}
