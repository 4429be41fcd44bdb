//! The analytics databank (SPEC §5): one [`Record`] per model request, queued without
//! blocking the request and written in batches by the store's own thread; the usage
//! queries, feedback and the virtual keys go through the same thread.
//!
//! Loss is never silent: a full queue or a failing store counts the rows it could not
//! take ([`AnalyticsStats`], exported on `/metrics`) and logs them. [`Analytics::flush`]
//! waits until everything queued before it is written; [`Analytics::shutdown`] does the
//! same and stops the thread (graceful shutdown).
//!
//! - [`store`]: the record and query types and the [`AnalyticsStore`] backend trait.
//! - The backends are in the storage layer: `storage::embedded::analytics`
//!   (`<data_dir>/analytics.db`) and `storage::postgres::analytics`.
//! - [`pricing`]: the price table and per-deployment overrides.
//! - `writer`: the store's write side on the batched writer ([`crate::storage::batch`]).

pub mod pricing;
pub mod record;
pub mod rollup;
pub mod store;
pub mod timefmt;
mod writer;

pub use store::{
    AnalyticsStore, Feedback, GroupBy, Record, RequestsQuery, StoreError, StoredRecord, UsageGroup,
    UsageQuery,
};
pub use writer::Opener;

use crate::config::AnalyticsSettings;
use crate::storage::batch::{Batcher, Options};
use writer::AnalyticsSink;

/// A snapshot of the queue and loss counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalyticsStats {
    pub queue_depth: usize,
    pub written: u64,
    pub dropped_queue_full: u64,
    pub dropped_store_error: u64,
    pub store_ok: bool,
}

/// The handle the server holds: enqueue rows, run queries, flush.
pub struct Analytics {
    enabled: bool,
    writer: Batcher<AnalyticsSink>,
}

impl Analytics {
    /// Opens the store with `opener` (the storage layer's choice of backend: see
    /// `storage::Storage::analytics`; tests use failing ones) and starts its writer. A
    /// store that cannot be opened is logged and retried later; requests never fail
    /// because of it. Also returns what `on_open` read from the freshly opened store.
    pub fn with_opener<T: Default>(
        settings: &AnalyticsSettings,
        mut opener: Opener,
        on_open: impl FnOnce(&mut dyn AnalyticsStore) -> Result<T, StoreError>,
    ) -> (Self, T) {
        let mut loaded = T::default();
        let store = match opener() {
            Ok(mut s) => match on_open(s.as_mut()) {
                Ok(v) => {
                    loaded = v;
                    Ok(s)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the analytics store; continuing without it");
                    Err(e)
                }
            },
            Err(e) => {
                tracing::error!(
                    error = %e,
                    data_dir = %settings.data_dir.display(),
                    "cannot open the analytics store; requests are served, rows wait (within the \
                     queue's bound) until it opens"
                );
                Err(e)
            }
        };
        let failed = store.as_ref().err().map(|e| e.to_string());
        let writer = Batcher::start(
            AnalyticsSink::new(store, opener),
            Options {
                name: "memproxy-analytics",
                capacity: settings.queue_size,
                batch_size: settings.batch_size,
                linger: settings.flush_interval,
                retry_for: None,
                idle_every: None,
            },
        );
        if let Some(e) = failed {
            writer.set_failing(&e);
        }
        (
            Self {
                enabled: settings.enabled,
                writer,
            },
            loaded,
        )
    }

    /// Whether rows are recorded (`analytics.enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Queues a row; never blocks. A full queue drops the row, counts it, and warns (at
    /// most once a second).
    pub fn record(&self, record: Record) {
        if self.enabled {
            self.writer.push(record);
        }
    }

    /// Runs `f` on the store (on the writer's thread) after every row queued before it
    /// was written.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn AnalyticsStore) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.writer
            .call(move |sink| sink.store().and_then(f))
            .await
            .unwrap_or_else(|| {
                Err(StoreError::Unavailable(
                    "the analytics writer has stopped".into(),
                ))
            })
    }

    /// Waits until every row queued before this call has been written (or counted lost).
    pub async fn flush(&self) {
        self.writer.flush().await
    }

    /// Writes everything queued and stops the writer (graceful shutdown).
    pub async fn shutdown(&self) {
        self.writer.shutdown().await
    }

    /// Queue and loss counters.
    pub fn stats(&self) -> AnalyticsStats {
        let s = self.writer.stats();
        AnalyticsStats {
            queue_depth: s.depth,
            written: s.written,
            dropped_queue_full: s.dropped_full,
            dropped_store_error: s.dropped_failed,
            store_ok: s.ok,
        }
    }
}

#[cfg(test)]
mod tests;
