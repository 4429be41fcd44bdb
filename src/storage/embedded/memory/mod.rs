//! The embedded memory backend: one SQLite file (`<data_dir>/memproxy.db`, WAL mode),
//! FTS5 for lexical search, f32 blobs for vectors. No server needed.
//!
//! No database work runs on async threads: writes go to one dedicated writer thread that
//! owns the only write connection and commits whatever is waiting as one transaction
//! (group commit, one savepoint per request so that one failure does not fail the
//! others); reads run under `spawn_blocking` on a small pool of read connections, which
//! WAL lets proceed while the writer writes.

pub(crate) mod read;
mod schema;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::memory::lexicon::TermIndex;
use crate::memory::store::{
    BoxFuture, Memory, MemoryStore, Page, ScoredMemory, SearchQuery, Session, SessionInfo,
    SessionMessage, StoreError, WriteOp,
};
use crate::memory::vectors::VectorIndex;
use crate::memory::Clock;

/// File name of the database inside the data dir.
pub const DB_FILE: &str = "memproxy.db";

/// Commands waiting at the writer are committed together, up to this many.
const MAX_GROUP: usize = 256;

/// Read connections at most: reads beyond wait for one (a permit) instead of opening
/// connections of their own. Measured with 50 concurrent searches of a user with 100k
/// memories: unbounded, every search beyond the pooled connections opened a fresh one
/// (schema parse, cold page cache) and search CPU per request grew several-fold.
const MAX_READERS: usize = 8;

/// How long a connection waits for a lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How the store keeps sessions and what time it is.
#[derive(Clone)]
pub struct SqliteOptions {
    /// Sessions unused for longer are gone; zero keeps them forever.
    pub session_ttl: Duration,
    /// Messages kept per session (the newest).
    pub session_max_messages: usize,
    pub clock: Arc<dyn Clock>,
    /// Memories one user (all their scopes) may keep; 0: no limit.
    pub max_memories_per_user: u64,
}

/// The embedded store (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Command>>>,
    readers: Mutex<Vec<Connection>>,
    /// One per read in progress, at most [`MAX_READERS`].
    read_permits: tokio::sync::Semaphore,
    opts: SqliteOptions,
    /// The scopes' vectors and terms, kept up to date by the writer.
    vectors: Arc<VectorIndex>,
    terms: Arc<TermIndex>,
}

/// A write request for the writer thread.
enum Command {
    Apply(
        Vec<WriteOp>,
        oneshot::Sender<Result<Vec<Memory>, StoreError>>,
    ),
    Delete {
        user_id: String,
        id: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    DeleteUser(String, oneshot::Sender<Result<u64, StoreError>>),
    /// Reads a scope into the term index (unless held) and, with a model, its vectors of
    /// that model into the vector index (after the writes before it have committed).
    Load {
        uid: i64,
        model: Option<String>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    DeleteSession {
        user_id: Option<String>,
        session_id: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Purge(oneshot::Sender<Result<u64, StoreError>>),
}

/// A store failure; a disk that refuses writes (full, read-only, failing) is
/// [`StoreError::Unavailable`] (the API answers 503, the write queue keeps its batch).
fn backend<E: std::fmt::Display + 'static>(e: E) -> StoreError {
    use rusqlite::ErrorCode::*;
    let code = (&e as &dyn std::any::Any)
        .downcast_ref::<rusqlite::Error>()
        .and_then(rusqlite::Error::sqlite_error_code);
    match code {
        Some(DiskFull | ReadOnly | SystemIoFailure | CannotOpen) => {
            StoreError::Unavailable(format!("the disk refuses writes ({e})"))
        }
        Some(DatabaseBusy | DatabaseLocked) => {
            StoreError::Unavailable(format!("another process holds the database ({e})"))
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

/// The writer's connection settings: every acknowledged write survives a power loss.
const SETTINGS: crate::storage::sqlite::Settings = crate::storage::sqlite::Settings {
    synchronous: "FULL",
    cache_kib: None,
    busy_timeout: BUSY_TIMEOUT,
};

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/memproxy.db`, migrates it and starts the
    /// writer thread. Blocking: call at start-up, not on a request path.
    pub fn open(data_dir: &Path, opts: SqliteOptions) -> Result<Self, StoreError> {
        let path = data_dir.join(DB_FILE);
        let conn = crate::storage::sqlite::open(&path, SETTINGS, schema::MIGRATIONS)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(backend)?;

        let (tx, rx) = mpsc::channel();
        let writer_opts = opts.clone();
        let vectors = Arc::new(VectorIndex::new(crate::memory::vectors::DEFAULT_LIMIT));
        let terms = Arc::new(TermIndex::new(crate::memory::lexicon::DEFAULT_LIMIT));
        std::thread::Builder::new()
            .name("memproxy-db-writer".into())
            .spawn({
                let (vectors, terms) = (vectors.clone(), terms.clone());
                move || writer_loop(conn, rx, writer_opts, vectors, terms)
            })
            .map_err(backend)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(Some(tx)),
                readers: Mutex::new(Vec::new()),
                read_permits: tokio::sync::Semaphore::new(MAX_READERS),
                vectors,
                terms,
                opts,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stops accepting writes; the writer thread finishes what it has and exits.
    pub fn close(&self) {
        if let Ok(mut w) = self.inner.writer.lock() {
            w.take();
        }
    }

    async fn write<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        {
            let guard = self.inner.writer.lock().map_err(|_| StoreError::Closed)?;
            let sender = guard.as_ref().ok_or(StoreError::Closed)?;
            sender.send(make(tx)).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &SqliteOptions) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        let _permit = self
            .inner
            .read_permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut p| p.pop());
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &inner.path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .map_err(backend)?;
                    c.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
                    c
                }
            };
            // One read transaction for all of the read's statements: one snapshot (a
            // search's statistics and matches agree with each other), and the WAL read
            // lock is taken once rather than around each statement (a search ran ~15,
            // each costing a pair of `fcntl` calls on the shared-memory file).
            let out = conn
                .unchecked_transaction()
                .map_err(backend)
                .and_then(|tx| {
                    let out = f(&tx, &inner.opts);
                    tx.commit().map_err(backend)?;
                    out
                });
            if let Ok(mut p) = inner.readers.lock() {
                if p.len() < MAX_READERS {
                    p.push(conn);
                }
            }
            out
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

/// How long the writer must have had nothing to do before it merges the full-text index.
const MERGE_IDLE: Duration = Duration::from_secs(1);

/// Index segments above which an idle writer merges them all into one. Every commit adds
/// a segment and FTS5's automerge keeps fewer than 4 per level, so a large index has a
/// few levels' worth (10 at 100k memories); a search seeks each term in every segment
/// (100k memories of one user: search p50 1.57 -> 1.25 ms after merging 10 into 1).
const MERGE_ABOVE_SEGMENTS: i64 = 4;

/// Index pages one merge step works on: a step takes milliseconds (up to ~50 ms seen at
/// 100k memories), and a write that arrives during one waits at most that long.
const MERGE_STEP_PAGES: i64 = 256;

fn index_segments(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT count(DISTINCT segid) FROM memories_fts_idx",
        [],
        |r| r.get(0),
    )
}

/// One step of merging every segment of the full-text index into one, when there are
/// more than [`MERGE_ABOVE_SEGMENTS`] (or a merge is under way); whether to go on.
fn merge_step(conn: &Connection, merging: bool) -> bool {
    let step = || -> rusqlite::Result<bool> {
        let segments = index_segments(conn)?;
        if segments <= 1 || (!merging && segments <= MERGE_ABOVE_SEGMENTS) {
            return Ok(false);
        }
        conn.execute(
            "INSERT INTO memories_fts(memories_fts, rank) VALUES('merge', ?1)",
            [-MERGE_STEP_PAGES],
        )?;
        Ok(true)
    };
    step().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "merging the memory search index failed");
        false
    })
}

/// The writer thread: takes a command, gathers whatever else is waiting, runs them all in
/// one transaction, and answers each only after the commit. When idle it merges the
/// full-text index ([`merge_step`]).
fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Command>,
    opts: SqliteOptions,
    vectors: Arc<VectorIndex>,
    terms: Arc<TermIndex>,
) {
    let mut w = write::Writer::new(opts.clone(), vectors.clone(), terms.clone());
    // Whether the index may need merging (it may, at start: earlier runs wrote it), and
    // whether a merge is under way.
    let (mut check_index, mut merging) = (true, false);
    loop {
        let first = if check_index {
            match rx.recv_timeout(if merging { Duration::ZERO } else { MERGE_IDLE }) {
                Ok(c) => c,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    merging = merge_step(&conn, merging);
                    check_index = merging;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(c) => c,
                Err(_) => break,
            }
        };
        check_index = true;
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        // A bug in a write (a panic) fails that group's writes, not the store: the
        // transaction rolls back as it unwinds, its callers get an error, the writer goes on.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            {
                Ok(tx) => tx,
                Err(e) => {
                    let err = backend(e);
                    for c in group {
                        fail(c, err.clone());
                    }
                    return;
                }
            };
            let mut replies: Vec<Box<dyn FnOnce(Option<StoreError>) + Send>> =
                Vec::with_capacity(group.len());
            for cmd in group {
                replies.push(w.run(&tx, cmd));
            }
            let committed = tx.commit().map_err(backend).err();
            w.committed(&conn, committed.is_none());
            for reply in replies {
                reply(committed.clone());
            }
        }));
        if outcome.is_err() {
            tracing::error!(
                "the memory writer failed on a group of writes (a bug): they are refused, \
                 the writer goes on"
            );
            metrics::counter!("memproxy_memory_writer_panics_total").increment(1);
            w = write::Writer::new(opts.clone(), vectors.clone(), terms.clone());
        }
    }
}

fn fail(cmd: Command, err: StoreError) {
    match cmd {
        Command::Apply(_, r) => drop(r.send(Err(err))),
        Command::Delete { reply, .. } | Command::DeleteSession { reply, .. } => {
            drop(reply.send(Err(err)))
        }
        Command::DeleteUser(_, r) | Command::Purge(r) => drop(r.send(Err(err))),
        Command::Load { reply, .. } => drop(reply.send(Err(err))),
    }
}

impl MemoryStore for SqliteStore {
    fn apply(&self, ops: Vec<WriteOp>) -> BoxFuture<'_, Result<Vec<Memory>, StoreError>> {
        Box::pin(self.write(|r| Command::Apply(ops, r)))
    }

    fn get<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Memory, StoreError>> {
        let (user_id, id) = (user_id.to_string(), id.to_string());
        Box::pin(self.read(move |c, _| read::get(c, &user_id, &id)))
    }

    fn list<'a>(
        &'a self,
        user_id: &'a str,
        limit: usize,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Page, StoreError>> {
        let (user_id, cursor) = (user_id.to_string(), cursor.map(str::to_string));
        Box::pin(self.read(move |c, _| read::list(c, &user_id, limit, cursor.as_deref())))
    }

    fn search<'a>(
        &'a self,
        user_id: &'a str,
        query: &'a SearchQuery,
    ) -> BoxFuture<'a, Result<Vec<ScoredMemory>, StoreError>> {
        let (user_id, query) = (Arc::<str>::from(user_id), Arc::new(query.clone()));
        Box::pin(async move {
            // A search reads the scope from the indexes: the writer loads it (after the
            // writes before), then the search runs again.
            let mut may_load = true;
            loop {
                let (u, q, inner) = (user_id.clone(), query.clone(), self.inner.clone());
                match self
                    .read(move |c, _| {
                        let indexes = read::Indexes {
                            vectors: &inner.vectors,
                            terms: &inner.terms,
                        };
                        read::search(c, &u, &q, indexes, may_load)
                    })
                    .await?
                {
                    read::Searched::Done(hits) => return Ok(hits),
                    read::Searched::Load(uid, model) => {
                        self.write(|reply| Command::Load { uid, model, reply })
                            .await?;
                        may_load = false;
                    }
                }
            }
        })
    }

    fn delete<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (user_id, id) = (user_id.to_string(), id.to_string());
        Box::pin(self.write(move |reply| Command::Delete { user_id, id, reply }))
    }

    fn delete_user<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        let user_id = user_id.to_string();
        Box::pin(self.write(move |r| Command::DeleteUser(user_id, r)))
    }

    fn unembedded<'a>(
        &'a self,
        model: &'a str,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, StoreError>> {
        let (model, cursor) = (model.to_string(), cursor.map(str::to_string));
        Box::pin(self.read(move |c, _| read::unembedded(c, &model, cursor.as_deref(), limit)))
    }

    fn count_unembedded<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        let model = model.to_string();
        Box::pin(self.read(move |c, _| read::count_unembedded(c, &model)))
    }

    fn user_ids_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        let prefix = prefix.to_string();
        Box::pin(self.read(move |c, _| read::user_ids_with_prefix(c, &prefix)))
    }

    fn session_messages<'a>(
        &'a self,
        user_id: &'a str,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionMessage>, StoreError>> {
        let (user_id, session_id) = (user_id.to_string(), session_id.to_string());
        Box::pin(self.read(move |c, o| read::session_messages(c, o, &user_id, &session_id)))
    }

    fn list_sessions<'a>(
        &'a self,
        user_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, StoreError>> {
        let user_id = user_id.map(str::to_string);
        Box::pin(self.read(move |c, o| read::list_sessions(c, o, user_id.as_deref())))
    }

    fn get_session<'a>(
        &'a self,
        user_id: Option<&'a str>,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Session, StoreError>> {
        let (user_id, session_id) = (user_id.map(str::to_string), session_id.to_string());
        Box::pin(self.read(move |c, o| read::get_session(c, o, user_id.as_deref(), &session_id)))
    }

    fn delete_session<'a>(
        &'a self,
        user_id: Option<&'a str>,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (user_id, session_id) = (user_id.map(str::to_string), session_id.to_string());
        Box::pin(self.write(move |reply| Command::DeleteSession {
            user_id,
            session_id,
            reply,
        }))
    }

    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.write(Command::Purge))
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.read(|c, _| {
            c.query_row("SELECT count(*) FROM users", [], |r| r.get::<_, i64>(0))
                .map(|_| ())
                .map_err(backend)
        }))
    }
}

#[cfg(test)]
mod tests;
