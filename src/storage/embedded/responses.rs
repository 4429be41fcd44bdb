//! The embedded response store: stored Responses API answers in one SQLite file,
//! `<data_dir>/responses.db`, opened on first use, written through
//! [`QueuedWrites`] (the batched writer), read on a connection of its own.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::OnceCell;

use crate::responses_store::{
    BoxFuture, QueuedWrites, ResponseStore, ResponseWriter, StoreError, StoredResponse, RETENTION,
};
use crate::storage::batch::Failure;

/// The embedded response store (see the module docs).
pub struct SqliteResponseStore {
    path: PathBuf,
    /// The connection reads use (opened on first use).
    reader: OnceCell<Result<Arc<Mutex<Connection>>, StoreError>>,
    writes: QueuedWrites<SqliteWriter>,
    /// Held while a connection opens the file: the reading and the writing connection
    /// may be opened at the same moment, and one of them creates or migrates the schema.
    opening: Arc<Mutex<()>>,
}

impl SqliteResponseStore {
    /// A store in `data_dir/responses.db`; the file is opened on first use.
    pub fn new(data_dir: &Path) -> Self {
        let path = data_dir.join("responses.db");
        let opening = Arc::new(Mutex::new(()));
        let writer = SqliteWriter {
            path: path.clone(),
            opening: opening.clone(),
            conn: None,
        };
        Self {
            path,
            reader: OnceCell::new(),
            writes: QueuedWrites::start(writer, "memproxy-responses"),
            opening,
        }
    }

    async fn reader(&self) -> Result<Arc<Mutex<Connection>>, StoreError> {
        let (path, opening) = (self.path.clone(), self.opening.clone());
        self.reader
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || open(&path, &opening))
                    .await
                    .map_err(|e| StoreError::Db(e.to_string()))
                    .and_then(|r| r)
                    .map(|c| Arc::new(Mutex::new(c)))
            })
            .await
            .clone()
    }

    async fn get_record(
        &self,
        user_id: &str,
        id: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        if let Some(rec) = self.writes.pending(user_id, id) {
            return Ok(Some(rec));
        }
        let db = self.reader().await?;
        let key = (user_id.to_string(), id.to_string());
        tokio::task::spawn_blocking(move || select(&db, &key.0, &key.1))
            .await
            .map_err(|e| StoreError::Db(e.to_string()))?
    }
}

impl ResponseStore for SqliteResponseStore {
    fn put(&self, rec: StoredResponse) {
        self.writes.put(rec)
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
        Box::pin(self.writes.delete(user_id, id))
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.writes.flush())
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.writes.shutdown())
    }
}

/// The embedded store's write side: its own connection, opened on the first write.
struct SqliteWriter {
    path: PathBuf,
    opening: Arc<Mutex<()>>,
    conn: Option<Connection>,
}

impl SqliteWriter {
    fn conn(&mut self) -> Result<&mut Connection, StoreError> {
        if self.conn.is_none() {
            let c = open(&self.path, &self.opening)?;
            if let Err(e) = purge_expired(&c) {
                tracing::warn!(error = %e, "expired stored responses could not be deleted");
            }
            self.conn = Some(c);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| StoreError::Db("not open".into()))
    }
}

impl ResponseWriter for SqliteWriter {
    fn put(&mut self, batch: &[&StoredResponse]) -> Result<(), Failure> {
        // A file that cannot be opened or a disk that refuses writes (full, read-only)
        // keeps the batch for a retry; anything else is the rows' own fault.
        let conn = self.conn().map_err(|e| Failure::Retry(e.to_string()))?;
        insert(conn, batch).map_err(|e| {
            use rusqlite::ErrorCode::*;
            match e.sqlite_error_code() {
                Some(DiskFull | ReadOnly | SystemIoFailure | CannotOpen | DatabaseBusy) => {
                    Failure::Retry(e.to_string())
                }
                _ => Failure::Lost(e.to_string()),
            }
        })
    }

    fn delete(&mut self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let n = self.conn()?.execute(
            "DELETE FROM responses WHERE user_id = ?1 AND id = ?2",
            params![user_id, id],
        )?;
        Ok(n > 0)
    }

    fn purge(&mut self) {
        if let Some(c) = &self.conn {
            if let Err(e) = purge_expired(c) {
                tracing::warn!(error = %e, "expired stored responses could not be deleted");
            }
        }
    }
}

/// Inserts (or replaces) a batch in one transaction.
fn insert(conn: &mut Connection, batch: &[&StoredResponse]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO responses
                 (user_id, id, created_at, native_deployment, input_items, response)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for rec in batch {
            insert.execute(params![
                rec.user_id,
                rec.id,
                rec.created_at as i64,
                rec.native_deployment,
                rec.input_items,
                rec.response
            ])?;
        }
    }
    tx.commit()
}

fn now_secs() -> u64 {
    crate::protocol::ir::now_secs()
}

fn open(path: &Path, opening: &Mutex<()>) -> Result<Connection, StoreError> {
    let fail = |message: String| StoreError::Open {
        path: path.display().to_string(),
        message,
    };
    let _opening = opening.lock().map_err(|e| fail(e.to_string()))?;
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
        assert!(store.writes.is_idle());
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
        let conn = open(&dir.path().join("responses.db"), &Mutex::new(())).unwrap();
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
