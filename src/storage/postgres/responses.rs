//! Stored Responses API answers in `memproxy_responses`, so that a `previous_response_id`
//! made on one instance continues on another.
//!
//! As in the embedded store ([`QueuedWrites`]), a put never waits: the record is served
//! from memory until its write lands, and the batched writer writes what is queued in
//! one transaction. While PostgreSQL is unreachable the writer retries the same batch
//! with backoff and the records stay readable here; only past the queue's bound are puts
//! dropped (counted in `memproxy_storage_dropped_total{store="responses"}` and logged).

use tokio::runtime::Handle;

use super::{Pg, PgError};
use crate::responses_store::{
    BoxFuture, QueuedWrites, ResponseStore, ResponseWriter, StoreError, StoredResponse, RETENTION,
};
use crate::storage::batch::Failure;

/// The PostgreSQL response store.
pub struct PgResponses {
    pg: Pg,
    writes: QueuedWrites<PgWriter>,
}

fn db_error(e: PgError) -> StoreError {
    StoreError::Db(e.to_string())
}

fn now_secs() -> i64 {
    crate::protocol::ir::now_secs() as i64
}

impl PgResponses {
    /// Starts the writer; its queries run on the current tokio runtime.
    pub fn start(pg: Pg) -> Self {
        let writer = PgWriter {
            pg: pg.clone(),
            runtime: Handle::current(),
        };
        Self {
            pg,
            writes: QueuedWrites::start(writer, "memproxy-pg-responses"),
        }
    }
}

impl ResponseStore for PgResponses {
    fn put(&self, rec: StoredResponse) {
        self.writes.put(rec)
    }

    fn get<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredResponse>, StoreError>> {
        Box::pin(async move {
            if let Some(rec) = self.writes.pending(user_id, id) {
                return Ok(Some(rec));
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
        Box::pin(self.writes.delete(user_id, id))
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.writes.flush())
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.writes.shutdown())
    }
}

/// The write side, on the batched writer's thread: PostgreSQL's futures run on the
/// server's runtime.
struct PgWriter {
    pg: Pg,
    runtime: Handle,
}

impl ResponseWriter for PgWriter {
    fn put(&mut self, batch: &[&StoredResponse]) -> Result<(), Failure> {
        self.runtime
            .block_on(insert(&self.pg, batch))
            .map_err(|e| match e.is_transient() {
                true => Failure::Retry(e.to_string()),
                false => Failure::Lost(e.to_string()),
            })
    }

    fn delete(&mut self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        self.runtime.block_on(async {
            let n = self
                .pg
                .get()
                .await
                .map_err(db_error)?
                .execute(
                    "DELETE FROM memproxy_responses WHERE user_id = $1 AND id = $2",
                    &[&user_id, &id],
                )
                .await
                .map_err(|e| db_error(e.into()))?;
            Ok(n > 0)
        })
    }

    fn purge(&mut self) {
        let cutoff = now_secs() - RETENTION.as_secs() as i64;
        let purged = self.runtime.block_on(async {
            self.pg
                .get()
                .await?
                .execute(
                    "DELETE FROM memproxy_responses WHERE created_at < $1",
                    &[&cutoff],
                )
                .await
                .map_err(PgError::from)
        });
        if let Err(e) = purged {
            tracing::warn!(error = %e, "expired stored responses could not be deleted");
        }
    }
}

/// Inserts (or replaces) a batch in one transaction.
async fn insert(pg: &Pg, batch: &[&StoredResponse]) -> Result<(), PgError> {
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
    for r in batch {
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
    tx.commit().await?;
    Ok(())
}
