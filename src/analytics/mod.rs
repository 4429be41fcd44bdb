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
//! - [`sqlite`]: the embedded backend (`<data_dir>/analytics.db`).
//! - [`pricing`]: the price table and per-deployment overrides.
//! - `writer`: the store thread.

pub mod pricing;
pub mod rollup;
pub mod sqlite;
mod sqlite_rollup;
pub mod store;
pub mod timefmt;
mod writer;

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use store::{
    AnalyticsStore, Feedback, GroupBy, Record, RequestsQuery, StoreError, StoredRecord, UsageGroup,
    UsageQuery,
};
pub use writer::{lower_priority as lower_thread_priority, Opener};

use crate::config::AnalyticsSettings;
use writer::{Command, Shared};

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
    capacity: usize,
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Analytics {
    /// Opens the embedded store in `settings.data_dir` and starts its thread. A store that
    /// cannot be opened is logged and retried later; requests never fail because of it.
    /// Also returns what `on_open` read from the freshly opened store (the virtual keys).
    pub fn open<T: Default>(
        settings: &AnalyticsSettings,
        on_open: impl FnOnce(&mut dyn AnalyticsStore) -> Result<T, StoreError>,
    ) -> (Self, T) {
        let dir = settings.data_dir.clone();
        let opener: Opener = Box::new(move || {
            sqlite::SqliteStore::open(&dir).map(|s| Box::new(s) as Box<dyn AnalyticsStore>)
        });
        Self::with_opener(settings, opener, on_open)
    }

    /// Like [`Analytics::open`] with any backend (tests use failing ones).
    pub fn with_opener<T: Default>(
        settings: &AnalyticsSettings,
        mut opener: Opener,
        on_open: impl FnOnce(&mut dyn AnalyticsStore) -> Result<T, StoreError>,
    ) -> (Self, T) {
        let shared = Arc::new(Shared::default());
        let mut loaded = T::default();
        let store = match opener() {
            Ok(mut s) => match on_open(s.as_mut()) {
                Ok(v) => {
                    loaded = v;
                    shared.succeed();
                    Some(s)
                }
                Err(e) => {
                    shared.fail(&e);
                    tracing::error!(error = %e, "cannot read the analytics store; continuing without it");
                    None
                }
            },
            Err(e) => {
                shared.fail(&e);
                tracing::error!(
                    error = %e,
                    data_dir = %settings.data_dir.display(),
                    "cannot open the analytics store; requests are served, rows are counted as lost \
                     until it opens"
                );
                None
            }
        };
        let (tx, rx) = mpsc::channel();
        let thread_shared = shared.clone();
        let (batch_size, linger) = (settings.batch_size, settings.flush_interval);
        let thread = std::thread::Builder::new()
            .name("memproxy-analytics".into())
            .spawn(move || writer::run(rx, store, opener, &thread_shared, batch_size, linger))
            .map_err(|e| tracing::error!(error = %e, "cannot start the analytics thread"))
            .ok();
        (
            Self {
                enabled: settings.enabled,
                capacity: settings.queue_size,
                tx,
                shared,
                thread: Mutex::new(thread),
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
        if !self.enabled {
            return;
        }
        let depth = self.shared.depth.fetch_add(1, Ordering::Relaxed);
        if depth >= self.capacity {
            self.shared.depth.fetch_sub(1, Ordering::Relaxed);
            self.lost_full(&record);
            return;
        }
        if let Err(mpsc::SendError(cmd)) = self.tx.send(Command::Record(Box::new(record))) {
            self.shared.depth.fetch_sub(1, Ordering::Relaxed);
            self.shared
                .dropped_store_error
                .fetch_add(1, Ordering::Relaxed);
            if let Command::Record(r) = cmd {
                tracing::error!(request_id = %r.request_id, "analytics thread is gone; row lost");
            }
        }
    }

    fn lost_full(&self, record: &Record) {
        let total = self
            .shared
            .dropped_queue_full
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let now = timefmt::now_ms();
        let last = self.shared.last_full_warning_ms.load(Ordering::Relaxed);
        if now - last >= 1000
            && self
                .shared
                .last_full_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                request_id = %record.request_id,
                dropped_total = total,
                capacity = self.capacity,
                "analytics queue is full; rows are dropped"
            );
        }
    }

    /// Runs `f` on the store thread after every row queued before it is written.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn AnalyticsStore) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = self.shared.clone();
        let job: writer::Job = Box::new(move |store| {
            let result = match store {
                Some(s) => f(s),
                None => Err(StoreError::Unavailable(
                    shared
                        .last_error
                        .lock()
                        .ok()
                        .and_then(|e| e.clone())
                        .unwrap_or_else(|| "not open".into()),
                )),
            };
            let _ = tx.send(result);
        });
        self.tx
            .send(Command::Call(job))
            .map_err(|_| StoreError::Unavailable("the analytics thread has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the analytics thread has stopped".into()))?
    }

    /// Waits until every row queued before this call has been written (or counted lost).
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Command::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Writes everything queued and stops the store thread (graceful shutdown).
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    /// Queue and loss counters.
    pub fn stats(&self) -> AnalyticsStats {
        let s = &self.shared;
        AnalyticsStats {
            queue_depth: s.depth.load(Ordering::Relaxed),
            written: s.written.load(Ordering::Relaxed),
            dropped_queue_full: s.dropped_queue_full.load(Ordering::Relaxed),
            dropped_store_error: s.dropped_store_error.load(Ordering::Relaxed),
            store_ok: s.store_ok.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
