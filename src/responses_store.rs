//! Stored Responses API answers (`store: true`), so that `previous_response_id` works on
//! every deployment, bridged ones included, and `GET`/`DELETE /v1/responses/{id}` answer.
//! [`ResponseStore`] is the interface; every row belongs to one user scope: lookups name
//! the user, so one user never reads another's. The backends are in the storage layer:
//! `storage::embedded::responses` (one SQLite file, `<data_dir>/responses.db`) and
//! `storage::postgres::responses`.
//!
//! Both write through [`QueuedWrites`]: puts go to the batched writer
//! ([`crate::storage::batch`]), which writes what is queued in one transaction at a time
//! (off the async threads, at a lower priority than request threads, kept and retried
//! while the store is away); until a record's write has landed it is served from memory,
//! so a follow-up sent the moment an answer ends finds it. Deletes run on the writer's
//! thread after the puts queued before them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::storage::batch::{Batcher, Failure, Options, Sink};

/// How long stored responses are kept (OpenAI keeps them 30 days).
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Responses waiting to be written at most; more are dropped (counted and logged).
const QUEUE: usize = 10_000;

/// Responses written in one transaction at most.
const BATCH: usize = 256;

/// How long the writer waits after a put before writing what is queued.
const LINGER: Duration = Duration::from_millis(5);

/// How often expired responses are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

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
    /// Waits until every record put so far is written or, while the store fails, until
    /// its next attempt.
    fn flush(&self) -> BoxFuture<'_, ()>;
    /// Writes what is queued (trying a failing store for a few seconds, then counting
    /// what is left lost) and stops the writer (graceful shutdown).
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// A response store's write side, run on the batched writer's thread.
pub trait ResponseWriter: Send + 'static {
    /// Writes (inserts or replaces) `batch` in one transaction.
    fn put(&mut self, batch: &[&StoredResponse]) -> Result<(), Failure>;
    /// Deletes one response; whether it existed.
    fn delete(&mut self, user_id: &str, id: &str) -> Result<bool, StoreError>;
    /// Deletes the responses older than [`RETENTION`].
    fn purge(&mut self);
}

/// Records whose write has not landed yet, by scope and id.
type Pending = Arc<Mutex<HashMap<Key, Arc<StoredResponse>>>>;

/// What every response backend shares (see the module docs): the records not yet
/// written, served from memory, and the batched writer.
pub struct QueuedWrites<W: ResponseWriter> {
    pending: Pending,
    writer: Batcher<PendingSink<W>>,
}

/// The batcher's sink: writes a batch's records that are still the latest of their key
/// (a record deleted or replaced since it was put is not written), then forgets them.
struct PendingSink<W> {
    backend: W,
    pending: Pending,
}

impl<W: ResponseWriter> Sink for PendingSink<W> {
    type Item = Arc<StoredResponse>;

    fn write(&mut self, batch: &[Arc<StoredResponse>]) -> Result<(), Failure> {
        let live: Vec<&StoredResponse> = {
            let pending = self
                .pending
                .lock()
                .map_err(|e| Failure::Lost(e.to_string()))?;
            batch
                .iter()
                .filter(|rec| {
                    pending
                        .get(&(rec.user_id.clone(), rec.id.clone()))
                        .is_some_and(|p| Arc::ptr_eq(p, rec))
                })
                .map(|rec| &**rec)
                .collect()
        };
        if live.is_empty() {
            return Ok(());
        }
        self.backend.put(&live)
    }

    fn done(&mut self, batch: &[Arc<StoredResponse>], _written: bool) {
        if let Ok(mut pending) = self.pending.lock() {
            for rec in batch {
                let key = (rec.user_id.clone(), rec.id.clone());
                // A newer record under the same key stays until its own write lands.
                if pending.get(&key).is_some_and(|p| Arc::ptr_eq(p, rec)) {
                    pending.remove(&key);
                }
            }
        }
    }

    fn idle(&mut self) {
        self.backend.purge();
    }
}

impl<W: ResponseWriter> QueuedWrites<W> {
    /// Starts the writer (a thread named `name`) over `backend`.
    pub fn start(backend: W, name: &'static str) -> Self {
        let pending = Pending::default();
        let writer = Batcher::start(
            PendingSink {
                backend,
                pending: pending.clone(),
            },
            Options {
                name,
                capacity: QUEUE,
                batch_size: BATCH,
                linger: LINGER,
                retry_for: None,
                idle_every: Some(PURGE_EVERY),
            },
        );
        Self { pending, writer }
    }

    /// Serves `rec` from memory until the writer has written it.
    pub fn put(&self, rec: StoredResponse) {
        let key = (rec.user_id.clone(), rec.id.clone());
        let rec = Arc::new(rec);
        if let Ok(mut p) = self.pending.lock() {
            p.insert(key.clone(), rec.clone());
        }
        if !self.writer.push(rec.clone()) {
            if let Ok(mut p) = self.pending.lock() {
                if p.get(&key).is_some_and(|p| Arc::ptr_eq(p, &rec)) {
                    p.remove(&key);
                }
            }
            metrics::counter!("memproxy_storage_dropped_total", "store" => "responses")
                .increment(1);
        }
    }

    /// The record of `user_id` and `id` whose write has not landed yet.
    pub fn pending(&self, user_id: &str, id: &str) -> Option<StoredResponse> {
        let key = (user_id.to_string(), id.to_string());
        self.pending
            .lock()
            .ok()
            .and_then(|p| p.get(&key).map(|r| (**r).clone()))
    }

    /// Deletes after any write of it still queued; whether it existed.
    pub async fn delete(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let key = (user_id.to_string(), id.to_string());
        let was_pending = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&key))
            .is_some();
        let deleted = self
            .writer
            .call(move |sink| sink.backend.delete(&key.0, &key.1))
            .await
            .ok_or_else(|| StoreError::Db("the response writer has stopped".into()))??;
        Ok(deleted || was_pending)
    }

    /// Nothing waits to be written.
    pub fn is_idle(&self) -> bool {
        self.pending.lock().is_ok_and(|p| p.is_empty())
    }

    /// See [`ResponseStore::flush`].
    pub async fn flush(&self) {
        self.writer.flush().await
    }

    /// See [`ResponseStore::shutdown`].
    pub async fn shutdown(&self) {
        self.writer.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(user: &str, id: &str) -> StoredResponse {
        StoredResponse {
            id: id.into(),
            user_id: user.into(),
            created_at: crate::protocol::ir::now_secs(),
            native_deployment: None,
            input_items: "[]".into(),
            response: r#"{"id":"x","output":[]}"#.into(),
        }
    }

    /// A backend that is unreachable for its first `outages` writes, then keeps them.
    struct Flaky {
        outages: usize,
        rows: Arc<Mutex<HashMap<Key, String>>>,
    }

    impl ResponseWriter for Flaky {
        fn put(&mut self, batch: &[&StoredResponse]) -> Result<(), Failure> {
            if self.outages > 0 {
                self.outages -= 1;
                return Err(Failure::Retry("connection refused".into()));
            }
            let mut rows = self.rows.lock().unwrap();
            for r in batch {
                rows.insert((r.user_id.clone(), r.id.clone()), r.response.clone());
            }
            Ok(())
        }
        fn delete(&mut self, user_id: &str, id: &str) -> Result<bool, StoreError> {
            let key = (user_id.to_string(), id.to_string());
            Ok(self.rows.lock().unwrap().remove(&key).is_some())
        }
        fn purge(&mut self) {}
    }

    #[tokio::test]
    async fn puts_wait_out_an_outage_and_a_delete_meanwhile_is_not_undone() {
        let rows = Arc::new(Mutex::new(HashMap::new()));
        let q = QueuedWrites::start(
            Flaky {
                outages: 2,
                rows: rows.clone(),
            },
            "memproxy-test-responses",
        );
        q.put(rec("alice", "resp_kept"));
        q.put(rec("alice", "resp_deleted"));
        // The first attempt fails: both wait, readable from memory.
        q.flush().await;
        assert!(q.pending("alice", "resp_kept").is_some());
        assert!(q.delete("alice", "resp_deleted").await.unwrap());
        // The store returns: the kept one lands, the deleted one is not written back.
        for _ in 0..3 {
            q.flush().await;
        }
        let rows = rows.lock().unwrap().clone();
        let keys: Vec<&str> = rows.keys().map(|k| k.1.as_str()).collect();
        assert_eq!(keys, vec!["resp_kept"]);
        assert!(q.pending("alice", "resp_kept").is_none());
    }
}
