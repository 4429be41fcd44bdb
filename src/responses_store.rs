//! Stored Responses API answers (`store: true`), so that `previous_response_id` works on
//! every deployment, bridged ones included, and `GET`/`DELETE /v1/responses/{id}` answer.
//! One embedded SQLite file, `<data_dir>/responses.db`, opened on first use. Every row
//! belongs to one user scope: lookups name the user, so one user never reads another's.
//!
//! Writes are queued off the async threads; until a write has landed, the record is
//! served from memory, so a follow-up sent the moment an answer ends finds it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{Notify, OnceCell};

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

type Pending = Mutex<HashMap<(String, String), Arc<StoredResponse>>>;

/// The response store (see the module docs).
pub struct ResponseStore {
    path: PathBuf,
    db: OnceCell<Result<Arc<Mutex<Connection>>, StoreError>>,
    /// Records whose write has not landed yet.
    pending: Arc<Pending>,
    /// Signalled after every finished write (for [`ResponseStore::flush`]).
    written: Notify,
}

impl ResponseStore {
    /// A store in `data_dir/responses.db`; nothing is opened until it is used.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("responses.db"),
            db: OnceCell::new(),
            pending: Arc::new(Mutex::new(HashMap::new())),
            written: Notify::new(),
        }
    }

    /// Waits until every record put so far is written (graceful shutdown).
    pub async fn flush(&self) {
        loop {
            let notified = self.written.notified();
            if self.pending.lock().map_or(true, |p| p.is_empty()) {
                return;
            }
            notified.await;
        }
    }

    async fn db(&self) -> Result<Arc<Mutex<Connection>>, StoreError> {
        let path = self.path.clone();
        self.db
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || open(&path))
                    .await
                    .map_err(|e| StoreError::Db(e.to_string()))
                    .and_then(|r| r)
                    .map(|c| Arc::new(Mutex::new(c)))
            })
            .await
            .clone()
    }

    /// Stores `rec`, replacing a record with the same id in the same scope. The record
    /// is readable at once; the write itself happens on a blocking thread (the handle
    /// says when it has landed).
    pub fn put(self: &Arc<Self>, rec: StoredResponse) -> tokio::task::JoinHandle<()> {
        let key = (rec.user_id.clone(), rec.id.clone());
        let rec = Arc::new(rec);
        if let Ok(mut p) = self.pending.lock() {
            p.insert(key.clone(), rec.clone());
        }
        let store = self.clone();
        tokio::spawn(async move {
            let result = match store.db().await {
                Ok(db) => tokio::task::spawn_blocking(move || insert(&db, &rec))
                    .await
                    .map_err(|e| StoreError::Db(e.to_string()))
                    .and_then(|r| r),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::error!(error = %e, response_id = %key.1, "could not store a response");
            }
            if let Ok(mut p) = store.pending.lock() {
                p.remove(&key);
            }
            store.written.notify_waiters();
        })
    }

    /// The response `id` of `user_id`, if stored (and not expired).
    pub async fn get(&self, user_id: &str, id: &str) -> Result<Option<StoredResponse>, StoreError> {
        let key = (user_id.to_string(), id.to_string());
        if let Some(rec) = self.pending.lock().ok().and_then(|p| p.get(&key).cloned()) {
            return Ok(Some((*rec).clone()));
        }
        let db = self.db().await?;
        tokio::task::spawn_blocking(move || select(&db, &key.0, &key.1))
            .await
            .map_err(|e| StoreError::Db(e.to_string()))?
    }

    /// Deletes the response `id` of `user_id`; whether it existed.
    pub async fn delete(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let key = (user_id.to_string(), id.to_string());
        let was_pending = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&key))
            .is_some();
        let db = self.db().await?;
        let deleted = tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
            let conn = db.lock().map_err(|e| StoreError::Db(e.to_string()))?;
            let n = conn.execute(
                "DELETE FROM responses WHERE user_id = ?1 AND id = ?2",
                params![key.0, key.1],
            )?;
            Ok(n > 0)
        })
        .await
        .map_err(|e| StoreError::Db(e.to_string()))??;
        Ok(deleted || was_pending)
    }
}

fn now_secs() -> u64 {
    crate::protocol::ir::now_secs()
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let fail = |message: String| StoreError::Open {
        path: path.display().to_string(),
        message,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    let conn = Connection::open(path).map_err(|e| fail(e.to_string()))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;
         CREATE TABLE IF NOT EXISTS responses (
             user_id TEXT NOT NULL,
             id TEXT NOT NULL,
             created_at INTEGER NOT NULL,
             native_deployment TEXT,
             input_items TEXT NOT NULL,
             response TEXT NOT NULL,
             PRIMARY KEY (user_id, id)
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at);",
    )
    .map_err(|e| fail(e.to_string()))?;
    let cutoff = now_secs().saturating_sub(RETENTION.as_secs());
    conn.execute(
        "DELETE FROM responses WHERE created_at < ?1",
        params![cutoff as i64],
    )
    .map_err(|e| fail(e.to_string()))?;
    Ok(conn)
}

fn insert(db: &Mutex<Connection>, rec: &StoredResponse) -> Result<(), StoreError> {
    let conn = db.lock().map_err(|e| StoreError::Db(e.to_string()))?;
    conn.execute(
        "INSERT OR REPLACE INTO responses
             (user_id, id, created_at, native_deployment, input_items, response)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            rec.user_id,
            rec.id,
            rec.created_at as i64,
            rec.native_deployment,
            rec.input_items,
            rec.response
        ],
    )?;
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
        let store = Arc::new(ResponseStore::new(dir.path()));
        store.put(rec("alice", "resp_1"));
        // Readable at once, before the write lands.
        assert!(store.get("alice", "resp_1").await.unwrap().is_some());
        assert!(store.get("bob", "resp_1").await.unwrap().is_none());
        store.flush().await;
        assert!(store.pending.lock().unwrap().is_empty());
        drop(store);

        let store = Arc::new(ResponseStore::new(dir.path()));
        let got = store.get("alice", "resp_1").await.unwrap().unwrap();
        assert_eq!(got.response, rec("alice", "resp_1").response);
        assert!(store.get("bob", "resp_1").await.unwrap().is_none());
        assert!(!store.delete("bob", "resp_1").await.unwrap());
        assert!(store.delete("alice", "resp_1").await.unwrap());
        assert!(store.get("alice", "resp_1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn expired_rows_are_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ResponseStore::new(dir.path()));
        let mut old = rec("alice", "resp_old");
        old.created_at = now_secs() - RETENTION.as_secs() - 10;
        store.put(old).await.unwrap();
        assert!(store.get("alice", "resp_old").await.unwrap().is_none());
    }
}
