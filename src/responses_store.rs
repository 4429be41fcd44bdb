//! Stored Responses API answers (`store: true`), so that `previous_response_id` works on
//! every deployment, bridged ones included, and `GET`/`DELETE /v1/responses/{id}` answer.
//! [`ResponseStore`] is the interface; every row belongs to one user scope: lookups name
//! the user, so one user never reads another's. The embedded backend,
//! [`SqliteResponseStore`], is one SQLite file, `<data_dir>/responses.db`, opened on
//! first use; the PostgreSQL one is in `storage::postgres::responses`.
//!
//! Writes and deletes go, in order, to the store's own thread, which applies what is
//! queued in one transaction at a time (batches under load, off the async threads and
//! at a lower priority than request threads). Until a write has landed the record is
//! served from memory, so a follow-up sent the moment an answer ends finds it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{oneshot, Notify, OnceCell};

/// How long stored responses are kept (OpenAI keeps them 30 days).
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why the store could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the response store at {path} cannot be opened: {message}")]
    Open { path: String, message: String },
    #[error("response store error: {0}")]
    Db(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

/// One stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The response id (`resp_…`; a native upstream's own id when it answered).
    pub id: String,
    /// The user scope it belongs to.
    pub user_id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The native deployment that made (and stores) it, by [`crate::providers::deployment_key`];
    /// `None` when the answer was bridged.
    pub native_deployment: Option<String>,
    /// The conversation's input items (a JSON array), earlier turns included.
    pub input_items: String,
    /// The response object as JSON.
    pub response: String,
}

type Key = (String, String);

/// A boxed future, so that `Arc<dyn ResponseStore>` works.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where stored responses are kept (chosen once at start: embedded or PostgreSQL).
pub trait ResponseStore: Send + Sync {
    /// Stores `rec`, replacing a record with the same id in the same scope. Never waits:
    /// the record is readable at once and written in the background.
    fn put(&self, rec: StoredResponse);
    /// The response `id` of `user_id`, if stored (and not expired).
    fn get<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>, StoreError>>;
    /// Deletes the response `id` of `user_id`; whether it existed.
    fn delete<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Waits until every record put so far is written (graceful shutdown).
    fn flush(&self) -> BoxFuture<'_, ()>;
}

/// What the request side and the store thread share.
#[derive(Default)]
struct Shared {
    /// Records whose write has not landed yet.
    pending: Mutex<HashMap<Key, Arc<StoredResponse>>>,
    /// Signalled after every applied batch (for [`ResponseStore::flush`]).
    written: Notify,
    /// Held while a connection opens the file: the reading and the writing connection
    /// may be opened at the same moment, and one of them creates or migrates the schema.
    opening: Mutex<()>,
}

/// A change for the store thread.
enum Change {
    Put(Arc<StoredResponse>),
    Delete(Key, oneshot::Sender<Result<bool, StoreError>>),
}

/// How long the store thread waits after a write before applying what is queued.
const LINGER: Duration = Duration::from_millis(5);

/// The embedded response store (see the module docs).
pub struct SqliteResponseStore {
    path: PathBuf,
    /// The connection reads use (opened on first use).
    reader: OnceCell<Result<Arc<Mutex<Connection>>, StoreError>>,
    /// The store thread's queue (started on first change).
    writer: OnceLock<Sender<Change>>,
    shared: Arc<Shared>,
}

impl SqliteResponseStore {
    /// A store in `data_dir/responses.db`; nothing is opened until it is used.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("responses.db"),
            reader: OnceCell::new(),
            writer: OnceLock::new(),
            shared: Arc::default(),
        }
    }

    /// Waits until every record put so far is written (graceful shutdown).
    async fn flush_pending(&self) {
        loop {
            let notified = self.shared.written.notified();
            if self.shared.pending.lock().map_or(true, |p| p.is_empty()) {
                return;
            }
            notified.await;
        }
    }

    async fn reader(&self) -> Result<Arc<Mutex<Connection>>, StoreError> {
        let (path, shared) = (self.path.clone(), self.shared.clone());
        self.reader
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || open(&path, &shared))
                    .await
                    .map_err(|e| StoreError::Db(e.to_string()))
                    .and_then(|r| r)
                    .map(|c| Arc::new(Mutex::new(c)))
            })
            .await
            .clone()
    }

    fn send(&self, change: Change) {
        let tx = self.writer.get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            let (path, shared) = (self.path.clone(), self.shared.clone());
            let spawned = std::thread::Builder::new()
                .name("memproxy-responses".into())
                .spawn(move || write_loop(&path, &shared, rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the response store's thread");
            }
            tx
        });
        if let Err(mpsc::SendError(change)) = tx.send(change) {
            let e = StoreError::Db("the response store's thread is gone".into());
            finish(&self.shared, Err(e), vec![change]);
        }
    }

    fn put_record(&self, rec: StoredResponse) {
        let key = (rec.user_id.clone(), rec.id.clone());
        let rec = Arc::new(rec);
        if let Ok(mut p) = self.shared.pending.lock() {
            p.insert(key, rec.clone());
        }
        self.send(Change::Put(rec));
    }

    async fn get_record(
        &self,
        user_id: &str,
        id: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let key = (user_id.to_string(), id.to_string());
        if let Some(rec) = self
            .shared
            .pending
            .lock()
            .ok()
            .and_then(|p| p.get(&key).cloned())
        {
            return Ok(Some((*rec).clone()));
        }
        let db = self.reader().await?;
        tokio::task::spawn_blocking(move || select(&db, &key.0, &key.1))
            .await
            .map_err(|e| StoreError::Db(e.to_string()))?
    }

    /// Deletes after any write of it still queued.
    async fn delete_record(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let key = (user_id.to_string(), id.to_string());
        let was_pending = self
            .shared
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&key))
            .is_some();
        let (tx, rx) = oneshot::channel();
        self.send(Change::Delete(key, tx));
        let deleted = rx
            .await
            .map_err(|_| StoreError::Db("the response store's thread is gone".into()))??;
        Ok(deleted || was_pending)
    }
}

impl ResponseStore for SqliteResponseStore {
    fn put(&self, rec: StoredResponse) {
        self.put_record(rec)
    }

    fn get<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>, StoreError>> {
        Box::pin(self.get_record(user_id, id))
    }

    fn delete<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.delete_record(user_id, id))
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.flush_pending())
    }
}

/// The store thread: opens the file, then applies queued changes a batch at a time until
/// every sender is gone.
fn write_loop(path: &Path, shared: &Shared, rx: Receiver<Change>) {
    crate::analytics::lower_thread_priority();
    let mut conn = open(path, shared);
    match &conn {
        Ok(c) => {
            if let Err(e) = purge_expired(c) {
                tracing::warn!(error = %e, "expired stored responses could not be deleted");
            }
        }
        Err(e) => tracing::error!(error = %e, "stored responses cannot be written"),
    }
    while let Ok(first) = rx.recv() {
        if matches!(first, Change::Put(_)) {
            std::thread::sleep(LINGER);
        }
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let result = match &mut conn {
            Ok(c) => apply(c, &batch),
            Err(e) => Err(e.clone()),
        };
        finish(shared, result, batch);
    }
}

/// Applies a batch in one transaction; the result of each delete, in order.
fn apply(conn: &mut Connection, batch: &[Change]) -> Result<Vec<bool>, StoreError> {
    let tx = conn.transaction()?;
    let mut deleted = Vec::new();
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO responses
                 (user_id, id, created_at, native_deployment, input_items, response)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut delete =
            tx.prepare_cached("DELETE FROM responses WHERE user_id = ?1 AND id = ?2")?;
        for change in batch {
            match change {
                Change::Put(rec) => {
                    insert.execute(params![
                        rec.user_id,
                        rec.id,
                        rec.created_at as i64,
                        rec.native_deployment,
                        rec.input_items,
                        rec.response
                    ])?;
                }
                Change::Delete((user, id), _) => {
                    deleted.push(delete.execute(params![user, id])? > 0);
                }
            }
        }
    }
    tx.commit()?;
    Ok(deleted)
}

/// Reports an applied (or failed) batch: landed records leave the pending set, deletes
/// get their answer, and flush waiters wake.
fn finish(shared: &Shared, result: Result<Vec<bool>, StoreError>, batch: Vec<Change>) {
    if let Err(e) = &result {
        let puts = batch.iter().filter(|c| matches!(c, Change::Put(_))).count();
        if puts > 0 {
            tracing::error!(error = %e, responses = puts, "could not store responses; they are lost");
        }
    }
    let mut deleted = result.as_ref().ok().map(|d| d.iter());
    if let Ok(mut pending) = shared.pending.lock() {
        for change in &batch {
            if let Change::Put(rec) = change {
                let key = (rec.user_id.clone(), rec.id.clone());
                // A newer record under the same key stays until its own write lands.
                if pending.get(&key).is_some_and(|p| Arc::ptr_eq(p, rec)) {
                    pending.remove(&key);
                }
            }
        }
    }
    for change in batch {
        if let Change::Delete(_, answer) = change {
            let r = match (&result, deleted.as_mut().and_then(Iterator::next)) {
                (Ok(_), Some(d)) => Ok(*d),
                (Err(e), _) => Err(e.clone()),
                (Ok(_), None) => Ok(false),
            };
            let _ = answer.send(r);
        }
    }
    shared.written.notify_waiters();
}

fn now_secs() -> u64 {
    crate::protocol::ir::now_secs()
}

fn open(path: &Path, shared: &Shared) -> Result<Connection, StoreError> {
    let fail = |message: String| StoreError::Open {
        path: path.display().to_string(),
        message,
    };
    let _opening = shared.opening.lock().map_err(|e| fail(e.to_string()))?;
    // A 2 MiB page cache per connection (SQLite's default size): with 8 MiB, appending
    // ~11k responses of ~1 KB (the benchmark's bridged Responses stream, 1 connection,
    // 4 s) filled the writer's cache and added ~9 MiB to the proxy's RSS for good.
    let settings = crate::storage::sqlite::Settings {
        cache_kib: Some(2048),
        ..Default::default()
    };
    crate::storage::sqlite::open(path, settings, MIGRATIONS).map_err(|e| match e {
        crate::storage::sqlite::OpenError::Unavailable { message, .. }
        | crate::storage::sqlite::OpenError::Schema { message, .. } => fail(message),
    })
}

/// Deletes the responses older than [`RETENTION`] (the store thread, once at start).
/// Rows are in insertion order, so the expired ones are a prefix of the table: it is read
/// up to the first row still kept, not scanned whole.
fn purge_expired(conn: &Connection) -> Result<(), StoreError> {
    let cutoff = now_secs().saturating_sub(RETENTION.as_secs());
    conn.execute(
        "DELETE FROM responses WHERE seq < coalesce(
             (SELECT seq FROM responses WHERE created_at >= ?1 ORDER BY seq LIMIT 1),
             (SELECT max(seq) + 1 FROM responses))",
        params![cutoff as i64],
    )?;
    Ok(())
}

/// The schema's steps, in `PRAGMA user_version` ([`crate::storage::sqlite::open`]).
///
/// Version 2 keeps rows in a rowid table, in insertion order (a write appends to the
/// table's last pages), found by a unique index on `(user_id, id)`. Version 1 (0 in
/// `user_version`: older builds did not count it) clustered the ~1 KB rows by that random
/// key (`WITHOUT ROWID`): every insert dirtied a random page, the file grew by ~5 KB a
/// response, and the commits and checkpoints of a busy minute cost the store thread whole
/// milliseconds at a time.
const MIGRATIONS: &[crate::storage::sqlite::Migration] = &[
    crate::storage::sqlite::Migration {
        description: "the clustered table of version 1 (made by older builds, if at all)",
        apply: crate::storage::sqlite::Step::Sql(""),
    },
    crate::storage::sqlite::Migration {
        description: "responses in insertion order, found by (user_id, id)",
        apply: crate::storage::sqlite::Step::Code(to_insertion_order),
    },
];

/// The schema's version.
#[cfg(test)]
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Makes the version-2 table, moving the rows of a version-1 one into it.
fn to_insertion_order(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let old: bool = tx.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'responses'",
        [],
        |r| r.get(0),
    )?;
    if old {
        tx.execute_batch(
            "DROP INDEX IF EXISTS responses_created;
             ALTER TABLE responses RENAME TO responses_v1;",
        )?;
    }
    tx.execute_batch(
        "CREATE TABLE responses (
             seq INTEGER PRIMARY KEY,
             user_id TEXT NOT NULL,
             id TEXT NOT NULL,
             created_at INTEGER NOT NULL,
             native_deployment TEXT,
             input_items TEXT NOT NULL,
             response TEXT NOT NULL
         );
         CREATE UNIQUE INDEX responses_key ON responses (user_id, id);",
    )?;
    if old {
        tx.execute_batch(
            "INSERT INTO responses (user_id, id, created_at, native_deployment, input_items, response)
                 SELECT user_id, id, created_at, native_deployment, input_items, response
                 FROM responses_v1 ORDER BY created_at;
             DROP TABLE responses_v1;",
        )?;
    }
    Ok(())
}

fn select(
    db: &Mutex<Connection>,
    user_id: &str,
    id: &str,
) -> Result<Option<StoredResponse>, StoreError> {
    let conn = db.lock().map_err(|e| StoreError::Db(e.to_string()))?;
    let cutoff = now_secs().saturating_sub(RETENTION.as_secs());
    let rec = conn
        .query_row(
            "SELECT created_at, native_deployment, input_items, response FROM responses
             WHERE user_id = ?1 AND id = ?2 AND created_at >= ?3",
            params![user_id, id, cutoff as i64],
            |row| {
                Ok(StoredResponse {
                    id: id.to_string(),
                    user_id: user_id.to_string(),
                    created_at: row.get::<_, i64>(0)? as u64,
                    native_deployment: row.get(1)?,
                    input_items: row.get(2)?,
                    response: row.get(3)?,
                })
            },
        )
        .optional()?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(user: &str, id: &str) -> StoredResponse {
        StoredResponse {
            id: id.into(),
            user_id: user.into(),
            created_at: now_secs(),
            native_deployment: None,
            input_items: "[]".into(),
            response: r#"{"id":"x","output":[]}"#.into(),
        }
    }

    #[tokio::test]
    async fn scoped_by_user_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteResponseStore::new(dir.path()));
        store.put(rec("alice", "resp_1"));
        // Readable at once, before the write lands.
        assert!(store.get("alice", "resp_1").await.unwrap().is_some());
        assert!(store.get("bob", "resp_1").await.unwrap().is_none());
        store.flush().await;
        assert!(store.shared.pending.lock().unwrap().is_empty());
        drop(store);

        let store = Arc::new(SqliteResponseStore::new(dir.path()));
        let got = store.get("alice", "resp_1").await.unwrap().unwrap();
        assert_eq!(got.response, rec("alice", "resp_1").response);
        assert!(store.get("bob", "resp_1").await.unwrap().is_none());
        assert!(!store.delete("bob", "resp_1").await.unwrap());
        assert!(store.delete("alice", "resp_1").await.unwrap());
        assert!(store.get("alice", "resp_1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_delete_right_after_a_put_is_not_undone_by_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteResponseStore::new(dir.path());
        store.put(rec("alice", "resp_1"));
        let mut newer = rec("alice", "resp_2");
        store.put(newer.clone());
        newer.response = r#"{"id":"y","output":[]}"#.into();
        store.put(newer.clone());
        assert!(store.delete("alice", "resp_1").await.unwrap());
        store.flush().await;
        assert!(store.get("alice", "resp_1").await.unwrap().is_none());
        assert_eq!(
            store
                .get("alice", "resp_2")
                .await
                .unwrap()
                .unwrap()
                .response,
            newer.response
        );
        assert!(!store.delete("alice", "resp_1").await.unwrap());
    }

    #[tokio::test]
    async fn a_file_of_the_first_layout_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("responses.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE responses (
                     user_id TEXT NOT NULL, id TEXT NOT NULL, created_at INTEGER NOT NULL,
                     native_deployment TEXT, input_items TEXT NOT NULL, response TEXT NOT NULL,
                     PRIMARY KEY (user_id, id)
                 ) WITHOUT ROWID;
                 CREATE INDEX responses_created ON responses (created_at);",
            )
            .unwrap();
            let r = rec("alice", "resp_old");
            conn.execute(
                "INSERT INTO responses VALUES (?1, ?2, ?3, NULL, ?4, ?5)",
                params![
                    r.user_id,
                    r.id,
                    r.created_at as i64,
                    r.input_items,
                    r.response
                ],
            )
            .unwrap();
        }
        let store = SqliteResponseStore::new(dir.path());
        let got = store.get("alice", "resp_old").await.unwrap().unwrap();
        assert_eq!(got, rec("alice", "resp_old"));
        store.put(rec("alice", "resp_new"));
        store.put(rec("alice", "resp_old"));
        store.flush().await;
        drop(store);
        let conn = Connection::open(dir.path().join("responses.db")).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM responses", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2, "a put of an existing id replaces it");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn the_expired_prefix_is_purged() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("responses.db"), &Shared::default()).unwrap();
        let old = now_secs() - RETENTION.as_secs() - 10;
        let insert = |id: &str, at: u64| {
            conn.execute(
                "INSERT INTO responses (user_id, id, created_at, input_items, response)
                 VALUES ('alice', ?1, ?2, '[]', '{}')",
                params![id, at as i64],
            )
            .unwrap();
        };
        let count = || -> i64 {
            conn.query_row("SELECT count(*) FROM responses", [], |r| r.get(0))
                .unwrap()
        };
        insert("resp_1", old);
        insert("resp_2", old);
        insert("resp_3", now_secs());
        purge_expired(&conn).unwrap();
        assert_eq!(count(), 1);
        insert("resp_4", old);
        conn.execute("DELETE FROM responses WHERE id = 'resp_3'", [])
            .unwrap();
        purge_expired(&conn).unwrap();
        assert_eq!(count(), 0, "every row expired");
        purge_expired(&conn).unwrap();
    }

    #[tokio::test]
    async fn expired_rows_are_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteResponseStore::new(dir.path()));
        let mut old = rec("alice", "resp_old");
        old.created_at = now_secs() - RETENTION.as_secs() - 10;
        store.put(old);
        store.flush().await;
        assert!(store.get("alice", "resp_old").await.unwrap().is_none());
    }
}
