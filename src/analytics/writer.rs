//! The analytics store's write side, a [`Sink`] of the batched writer
//! ([`crate::storage::batch`]): it owns the [`AnalyticsStore`] on the writer's thread,
//! writes queued rows in batches (one transaction each), and runs queries there in queue
//! order, so a query sees every row queued before it. Nothing here runs on an async
//! worker thread.
//!
//! A store that cannot be reached ([`StoreError::Unavailable`]: a PostgreSQL restart, a
//! store that has not opened yet) loses nothing: the batcher keeps the rows and tries
//! again with backoff, and rows keep counting against the queue's bound until written.
//! Other failures (the database refused the rows) give the batch up, counted and logged.

use std::time::{Duration, Instant};

use super::store::{AnalyticsStore, Record, StoreError};
use crate::storage::batch::{Failure, Sink};

/// Opens (or reopens) the store; called on the writer's thread.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn AnalyticsStore>, StoreError> + Send>;

/// How long the writer waits between attempts to reopen a store that failed to open.
const REOPEN_INTERVAL: Duration = Duration::from_secs(5);

/// The store, opened (and reopened after a failure) on the writer's thread.
pub struct AnalyticsSink {
    store: Option<Box<dyn AnalyticsStore>>,
    opener: Opener,
    last_open_attempt: Instant,
    /// Why the store is not open.
    open_error: Option<String>,
}

impl AnalyticsSink {
    /// A sink with the store opened at start, or why it could not be.
    pub fn new(store: Result<Box<dyn AnalyticsStore>, StoreError>, opener: Opener) -> Self {
        let (store, open_error) = match store {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(reason(&e))),
        };
        Self {
            store,
            opener,
            last_open_attempt: Instant::now(),
            open_error,
        }
    }

    /// The store, reopened when it failed to open and the last attempt is old enough;
    /// otherwise why it is not there.
    pub fn store(&mut self) -> Result<&mut dyn AnalyticsStore, StoreError> {
        if self.store.is_none() && self.last_open_attempt.elapsed() >= REOPEN_INTERVAL {
            self.last_open_attempt = Instant::now();
            match (self.opener)() {
                Ok(s) => {
                    tracing::info!("analytics store opened");
                    self.store = Some(s);
                    self.open_error = None;
                }
                Err(e) => self.open_error = Some(reason(&e)),
            }
        }
        match self.store.as_deref_mut() {
            Some(s) => Ok(s),
            None => Err(StoreError::Unavailable(
                self.open_error.clone().unwrap_or_else(|| "not open".into()),
            )),
        }
    }
}

/// Why a store is unavailable, without the error's own prefix.
fn reason(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable(m) => m.clone(),
        e => e.to_string(),
    }
}

impl Sink for AnalyticsSink {
    type Item = Record;

    fn write(&mut self, batch: &[Record]) -> Result<(), Failure> {
        match self.store()?.insert_records(batch) {
            Ok(()) => Ok(()),
            Err(e @ StoreError::Unavailable(_)) => Err(Failure::Retry(e.to_string())),
            Err(e) => {
                let first = &batch[0];
                Err(Failure::Lost(format!(
                    "{e} (first request {} at {})",
                    first.request_id,
                    super::timefmt::format_ms(first.ts_ms)
                )))
            }
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Failure::Retry(e.to_string()),
            e => Failure::Lost(e.to_string()),
        }
    }
}
