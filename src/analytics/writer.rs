//! The store's own thread: it owns the [`AnalyticsStore`], drains queued rows in batches
//! (one transaction each) and runs queries in queue order, so a query sees every row
//! queued before it. Nothing here runs on an async worker thread.
//!
//! A store that cannot be reached ([`StoreError::Unavailable`]: a PostgreSQL restart, a
//! store that has not opened yet) loses nothing: the rows stay with the thread, which
//! tries again with backoff, and rows keep counting against the queue's capacity until
//! written, so only past that bound are new rows dropped. Other failures (the database
//! refused the rows) drop the batch, counted and logged.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::store::{AnalyticsStore, Record, StoreError};
use super::timefmt;

/// Opens (or reopens) the store; called on the store thread.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn AnalyticsStore>, StoreError> + Send>;

/// A job for the store thread.
pub type Job = Box<dyn FnOnce(Option<&mut dyn AnalyticsStore>) + Send>;

/// What the store thread is asked to do, in queue order.
pub enum Command {
    Record(Box<Record>),
    /// Run a query or update against the store (after writing earlier rows).
    Call(Job),
    /// Write every earlier row, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Write every earlier row and stop.
    Shutdown,
}

/// Counters shared between the request path, the store thread and `/metrics`.
#[derive(Default)]
pub struct Shared {
    /// Rows queued or waiting for a retry, not yet written.
    pub depth: AtomicUsize,
    pub written: AtomicU64,
    /// Rows refused because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Rows lost because the store failed.
    pub dropped_store_error: AtomicU64,
    /// The last store operation succeeded.
    pub store_ok: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    /// Unix ms of the last "queue full" warning (they are logged at most once a second).
    pub last_full_warning_ms: AtomicI64,
}

impl Shared {
    pub fn fail(&self, e: &StoreError) {
        self.store_ok.store(false, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e.to_string());
        }
    }

    pub fn succeed(&self) {
        self.store_ok.store(true, Ordering::Relaxed);
    }
}

/// How long the thread waits between attempts to reopen a store that failed to open.
const REOPEN_INTERVAL: Duration = Duration::from_secs(5);

/// Waits before writing again rows an unreachable store refused: doubling from the first
/// to the last.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// How long the last write at shutdown keeps trying an unreachable store.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(10);

struct Worker<'a> {
    store: Option<Box<dyn AnalyticsStore>>,
    opener: Opener,
    last_open_attempt: Instant,
    shared: &'a Shared,
    batch: Vec<Record>,
    /// Set while the store is unreachable: the batch is kept and written again then.
    retry: Option<(Instant, Duration)>,
}

impl Worker<'_> {
    fn store(&mut self) -> Option<&mut dyn AnalyticsStore> {
        if self.store.is_none() && self.last_open_attempt.elapsed() >= REOPEN_INTERVAL {
            self.last_open_attempt = Instant::now();
            match (self.opener)() {
                Ok(s) => {
                    tracing::info!("analytics store opened");
                    self.shared.succeed();
                    self.store = Some(s);
                }
                Err(e) => self.shared.fail(&e),
            }
        }
        self.store
            .as_deref_mut()
            .map(|s| s as &mut dyn AnalyticsStore)
    }

    /// Writes the batch unless a retry is not due yet; true when nothing is left.
    fn write_batch(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        if self.retry.is_some_and(|(at, _)| Instant::now() < at) {
            return false;
        }
        let batch = std::mem::take(&mut self.batch);
        let n = batch.len() as u64;
        let result = match self.store() {
            Some(s) => s.insert_records(&batch),
            None => Err(StoreError::Unavailable(
                self.shared
                    .last_error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone())
                    .unwrap_or_else(|| "not open".into()),
            )),
        };
        match result {
            Ok(()) => {
                self.shared.written.fetch_add(n, Ordering::Relaxed);
                self.shared.depth.fetch_sub(n as usize, Ordering::Relaxed);
                self.shared.succeed();
                if self.retry.take().is_some() {
                    tracing::info!(
                        rows = n,
                        "analytics store reachable again; waiting rows written"
                    );
                }
            }
            Err(e @ StoreError::Unavailable(_)) => {
                self.shared.fail(&e);
                let wait = self
                    .retry
                    .map_or(RETRY_BACKOFF.0, |(_, d)| (d * 2).min(RETRY_BACKOFF.1));
                if self.retry.is_none() {
                    tracing::warn!(rows = n, error = %e,
                        "analytics store unreachable; rows are kept and written when it returns");
                }
                self.retry = Some((Instant::now() + wait, wait));
                self.batch = batch;
                return false;
            }
            Err(e) => {
                self.shared.depth.fetch_sub(n as usize, Ordering::Relaxed);
                self.shared
                    .dropped_store_error
                    .fetch_add(n, Ordering::Relaxed);
                self.shared.fail(&e);
                let first = &batch[0];
                tracing::error!(
                    rows = n,
                    first_request_id = %first.request_id,
                    first_time = %timefmt::format_ms(first.ts_ms),
                    error = %e,
                    "analytics rows could not be written and are lost"
                );
            }
        }
        self.batch = batch;
        self.batch.clear();
        true
    }

    /// How long to wait for commands before the next retry is due.
    fn until_retry(&self) -> Option<Duration> {
        self.retry
            .filter(|_| !self.batch.is_empty())
            .map(|(at, _)| at.saturating_duration_since(Instant::now()))
    }

    /// The last write: an unreachable store is tried for [`SHUTDOWN_RETRY`], then what is
    /// left is counted lost.
    fn finish(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_RETRY;
        while !self.write_batch() {
            match self.until_retry() {
                Some(wait) if Instant::now() + wait < deadline => std::thread::sleep(wait),
                _ => {
                    let n = self.batch.len() as u64;
                    self.shared
                        .dropped_store_error
                        .fetch_add(n, Ordering::Relaxed);
                    self.shared.depth.fetch_sub(n as usize, Ordering::Relaxed);
                    tracing::error!(
                        rows = n,
                        "analytics store unreachable at shutdown; waiting rows are lost"
                    );
                    self.batch.clear();
                    return;
                }
            }
        }
    }
}

impl Worker<'_> {
    /// Handles one command; false on `Shutdown`.
    fn handle(&mut self, cmd: Command, batch_size: usize) -> bool {
        match cmd {
            Command::Record(r) => {
                self.batch.push(*r);
                if self.batch.len() >= batch_size {
                    self.write_batch();
                }
            }
            Command::Call(job) => {
                self.write_batch();
                job(self.store());
            }
            Command::Flush(done) => {
                // While the store is unreachable this answers after one more attempt.
                self.retry = self.retry.map(|(_, d)| (Instant::now(), d));
                self.write_batch();
                let _ = done.send(());
            }
            Command::Shutdown => return false,
        }
        true
    }
}

/// Lowers the calling thread's scheduling priority (nice 10), so that on a busy CPU the
/// request threads preempt the writer and a batch write does not show up as request
/// latency. Linux only; elsewhere a no-op. Every store's writer thread calls it.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority on our own thread id changes only
        // this thread's nice value and reports failure through its return value.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10)
        };
        if rc != 0 {
            tracing::debug!("could not lower the analytics thread's priority");
        }
    }
}

/// The store thread's loop; returns after `Shutdown` or when every sender is gone.
///
/// After a row arrives the thread sleeps `linger` before draining the queue, so rows are
/// written in batches even under light load, and senders rarely have to wake it (a send to
/// a thread that is not waiting on the channel is only a queue push).
pub fn run(
    rx: Receiver<Command>,
    store: Option<Box<dyn AnalyticsStore>>,
    opener: Opener,
    shared: &Shared,
    batch_size: usize,
    linger: Duration,
) {
    lower_priority();
    let mut w = Worker {
        store,
        opener,
        last_open_attempt: Instant::now(),
        shared,
        batch: Vec::with_capacity(batch_size),
        retry: None,
    };
    'outer: loop {
        let first = match w.until_retry() {
            None => match rx.recv() {
                Ok(c) => c,
                Err(_) => break,
            },
            Some(wait) => match rx.recv_timeout(wait) {
                Ok(c) => c,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    w.write_batch();
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        let a_row = matches!(first, Command::Record(_));
        if !w.handle(first, batch_size) {
            break;
        }
        if a_row && !linger.is_zero() {
            std::thread::sleep(linger);
        }
        loop {
            match rx.try_recv() {
                Ok(cmd) => {
                    if !w.handle(cmd, batch_size) {
                        break 'outer;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => break 'outer,
            }
        }
        w.write_batch();
    }
    w.finish();
}
