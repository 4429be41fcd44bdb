//! Stored Responses API answers in `memproxy_responses`, so that a `previous_response_id`
//! made on one instance continues on another.
//!
//! As in the embedded store, a put never waits: the record is served from memory until
//! its write lands, and a background task writes what is queued in one transaction. While
//! PostgreSQL is unreachable the task retries the same batch with backoff and the records
//! stay readable here; only past [`QUEUE`] waiting changes are puts dropped (counted in
//! `memproxy_storage_dropped_total{store="responses"}` and logged).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};

use super::{Pg, PgError};
use crate::responses_store::{BoxFuture, ResponseStore, StoreError, StoredResponse, RETENTION};

/// Changes waiting for the writer at most.
const QUEUE: usize = 10_000;

/// Changes written in one transaction at most.
const BATCH: usize = 256;

/// Longest wait of a graceful shutdown for records PostgreSQL does not take.
const FLUSH_LIMIT: Duration = Duration::from_secs(10);

type Key = (String, String);

enum Change {
    Put(Arc<StoredResponse>),
    Delete(Key, oneshot::Sender<Result<bool, StoreError>>),
}

#[derive(Default)]
struct Shared {
    pending: Mutex<HashMap<Key, Arc<StoredResponse>>>,
    written: Notify,
    dropped: AtomicU64,
}

/// The PostgreSQL response store.
pub struct PgResponses {
    pg: Pg,
    tx: mpsc::Sender<Change>,
    shared: Arc<Shared>,
}

fn db_error(e: PgError) -> StoreError {
    StoreError::Db(e.to_string())
}

fn now_secs() -> i64 {
    crate::protocol::ir::now_secs() as i64
}

impl PgResponses {
    /// Starts the writer task on the current runtime.
    pub fn start(pg: Pg) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared::default());
        tokio::spawn(write_loop(pg.clone(), rx, shared.clone()));
        Self { pg, tx, shared }
    }

    /// Puts dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl ResponseStore for PgResponses {
    fn put(&self, rec: StoredResponse) {
        let key = (rec.user_id.clone(), rec.id.clone());
        let rec = Arc::new(rec);
        if let Ok(mut p) = self.shared.pending.lock() {
            p.insert(key.clone(), rec.clone());
        }
        if self.tx.try_send(Change::Put(rec)).is_err() {
            if let Ok(mut p) = self.shared.pending.lock() {
                p.remove(&key);
            }
            let n = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::counter!("memproxy_storage_dropped_total", "store" => "responses")
                .increment(1);
            tracing::error!(
                response_id = %key.1,
                dropped_total = n,
                "stored-response queue is full (PostgreSQL unreachable?); a response is dropped"
            );
        }
    }

    fn get<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>, StoreError>> {
        Box::pin(async move {
            let key = (user_id.to_string(), id.to_string());
            let pending = self
                .shared
                .pending
                .lock()
                .ok()
                .and_then(|p| p.get(&key).cloned());
            if let Some(rec) = pending {
                return Ok(Some((*rec).clone()));
            }
            let c = self.pg.get().await.map_err(db_error)?;
            let cutoff = now_secs() - RETENTION.as_secs() as i64;
            let row = c
                .query_opt(
                    "SELECT created_at, native_deployment, input_items, response
                     FROM memproxy_responses WHERE user_id = $1 AND id = $2 AND created_at >= $3",
                    &[&user_id, &id, &cutoff],
                )
                .await
                .map_err(|e| db_error(e.into()))?;
            Ok(row.map(|r| StoredResponse {
                id: id.to_string(),
                user_id: user_id.to_string(),
                created_at: r.get::<_, i64>(0).max(0) as u64,
                native_deployment: r.get(1),
                input_items: r.get(2),
                response: r.get(3),
            }))
        })
    }

    fn delete<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let key = (user_id.to_string(), id.to_string());
            let was_pending = self
                .shared
                .pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&key))
                .is_some();
            let (tx, rx) = oneshot::channel();
            self.tx
                .send(Change::Delete(key, tx))
                .await
                .map_err(|_| StoreError::Db("the response writer has stopped".into()))?;
            let deleted = rx
                .await
                .map_err(|_| StoreError::Db("the response writer has stopped".into()))??;
            Ok(deleted || was_pending)
        })
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + FLUSH_LIMIT;
            loop {
                let notified = self.shared.written.notified();
                let left = self.shared.pending.lock().map_or(0, |p| p.len());
                if left == 0 {
                    return;
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    tracing::error!(
                        responses = left,
                        "stored responses could not be written to PostgreSQL before shutdown; \
                         they are lost"
                    );
                    return;
                }
            }
        })
    }
}

/// Applies a batch in one transaction; the result of each delete, in order.
async fn apply(pg: &Pg, batch: &[Change]) -> Result<Vec<bool>, PgError> {
    let mut c = pg.get().await?;
    let tx = c.transaction().await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO memproxy_responses
                 (user_id, id, created_at, native_deployment, input_items, response)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (user_id, id) DO UPDATE SET created_at = EXCLUDED.created_at,
                 native_deployment = EXCLUDED.native_deployment,
                 input_items = EXCLUDED.input_items, response = EXCLUDED.response",
        )
        .await?;
    let delete = tx
        .prepare_cached("DELETE FROM memproxy_responses WHERE user_id = $1 AND id = $2")
        .await?;
    let mut deleted = Vec::new();
    for change in batch {
        match change {
            Change::Put(r) => {
                tx.execute(
                    &insert,
                    &[
                        &r.user_id,
                        &r.id,
                        &(r.created_at as i64),
                        &r.native_deployment,
                        &r.input_items,
                        &r.response,
                    ],
                )
                .await?;
            }
            Change::Delete((user, id), _) => {
                deleted.push(tx.execute(&delete, &[user, id]).await? > 0);
            }
        }
    }
    tx.commit().await?;
    Ok(deleted)
}

async fn purge_expired(pg: &Pg) -> Result<u64, PgError> {
    let cutoff = now_secs() - RETENTION.as_secs() as i64;
    Ok(pg
        .get()
        .await?
        .execute(
            "DELETE FROM memproxy_responses WHERE created_at < $1",
            &[&cutoff],
        )
        .await?)
}

/// How often expired responses are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Retry delays while PostgreSQL is unreachable: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

async fn write_loop(pg: Pg, mut rx: mpsc::Receiver<Change>, shared: Arc<Shared>) {
    let mut purge = tokio::time::interval(PURGE_EVERY);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            c = rx.recv() => match c {
                Some(c) => c,
                None => return,
            },
            _ = purge.tick() => {
                if let Err(e) = purge_expired(&pg).await {
                    tracing::warn!(error = %e, "expired stored responses could not be deleted");
                }
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let mut delay = BACKOFF.0;
        loop {
            match apply(&pg, &batch).await {
                Ok(deleted) => {
                    finish(&shared, batch, Some(deleted));
                    break;
                }
                Err(e) if e.is_transient() => {
                    // Deletes are answered now (the client sees the error); puts wait.
                    let (puts, deletes): (Vec<Change>, Vec<Change>) =
                        batch.into_iter().partition(|c| matches!(c, Change::Put(_)));
                    for d in deletes {
                        if let Change::Delete(_, answer) = d {
                            let _ = answer.send(Err(db_error(PgError::Unavailable(e.to_string()))));
                        }
                    }
                    batch = puts;
                    if batch.is_empty() {
                        break;
                    }
                    tracing::warn!(error = %e, responses = batch.len(), retry_ms = delay.as_millis() as u64,
                        "stored responses wait for PostgreSQL");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(BACKOFF.1);
                }
                Err(e) => {
                    tracing::error!(error = %e, changes = batch.len(),
                        "PostgreSQL refused stored responses; they are lost");
                    metrics::counter!("memproxy_storage_dropped_total", "store" => "responses")
                        .increment(
                            batch.iter().filter(|c| matches!(c, Change::Put(_))).count() as u64
                        );
                    finish(&shared, batch, None);
                    break;
                }
            }
        }
    }
}

/// Landed (or lost) puts leave the pending set, deletes get their answer, flush waiters
/// wake.
fn finish(shared: &Shared, batch: Vec<Change>, deleted: Option<Vec<bool>>) {
    if let Ok(mut pending) = shared.pending.lock() {
        for change in &batch {
            if let Change::Put(rec) = change {
                let key = (rec.user_id.clone(), rec.id.clone());
                if pending.get(&key).is_some_and(|p| Arc::ptr_eq(p, rec)) {
                    pending.remove(&key);
                }
            }
        }
    }
    let mut answers = deleted.map(Vec::into_iter);
    for change in batch {
        if let Change::Delete(_, answer) = change {
            let r = match answers.as_mut() {
                Some(a) => Ok(a.next().unwrap_or(false)),
                None => Err(StoreError::Db("PostgreSQL refused the change".into())),
            };
            let _ = answer.send(r);
        }
    }
    shared.written.notify_waiters();
}
