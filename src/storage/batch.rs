//! The one batched writer every store that writes in the background uses: usage rows
//! (`analytics`), captured memories (`memory::queue`) and stored responses (embedded and
//! PostgreSQL). A [`Batcher`] owns a [`Sink`] on a thread of its own (at a lower priority
//! than request threads, so a batch write does not show up as request latency) and hands
//! it what is queued, a batch at a time.
//!
//! - **Never blocks a request**: [`Batcher::push`] takes a slot of the queue's bound
//!   or, past it, drops the item, counts it and logs (at most once a second).
//! - **Nothing lost while the store is away**: a batch the sink refuses with
//!   [`Failure::Retry`] (PostgreSQL restarting, a full disk) is kept and written again
//!   with backoff, for [`Options::retry_for`]; meanwhile new items keep queueing up to the
//!   bound (an item holds its slot until written or given up). [`Failure::Lost`] (the
//!   database refused the rows) gives the batch up at once. Either way a lost item is
//!   counted and logged, never silent.
//! - **Order**: items are written in the order pushed; [`Batcher::call`] runs a job on the
//!   sink (a query, a delete) after every item pushed before it was attempted.
//! - [`Batcher::flush`] waits until what was pushed before it is written or, while the
//!   store fails, until the failing batch's next attempt (the batch stays and is retried,
//!   but a flush does not wait minutes for it); [`Batcher::shutdown`] refuses new items,
//!   writes what is left (trying a failing store for at most [`SHUTDOWN_RETRY`]) and
//!   stops the thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Semaphore};

/// How long a failing batch is retried once the writer is shutting down.
pub const SHUTDOWN_RETRY: Duration = Duration::from_secs(10);

/// Waits between attempts at a failing batch: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Why a sink did not write a batch.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The store cannot be reached or refuses writes for now: keep the batch, try again.
    Retry(String),
    /// The store refused these items: give them up (counted and logged).
    Lost(String),
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Failure::Retry(m) | Failure::Lost(m) => m,
        }
    }
}

/// Where a batcher writes: a store's write side, run on the batcher's thread.
pub trait Sink: Send + 'static {
    type Item: Send + 'static;
    /// Writes `batch`, in order, as one unit (a transaction). Called again with the same
    /// batch after [`Failure::Retry`].
    fn write(&mut self, batch: &[Self::Item]) -> Result<(), Failure>;
    /// The batch is done with: written, or given up (`written` false).
    fn done(&mut self, _batch: &[Self::Item], _written: bool) {}
    /// Housekeeping, every [`Options::idle_every`] (purging expired rows).
    fn idle(&mut self) {}
}

/// How a batcher queues and writes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The thread's name and the writer's name in logs (`memproxy-…`).
    pub name: &'static str,
    /// Items queued or waiting for a retry at most; more are dropped.
    pub capacity: usize,
    /// Items written in one batch at most.
    pub batch_size: usize,
    /// How long the thread waits after an item arrives before writing what is queued, so
    /// that items are written in batches even under light load.
    pub linger: Duration,
    /// How long a batch the sink refuses with [`Failure::Retry`] is tried again before it
    /// is given up; `None`: for as long as its items fit the bound.
    pub retry_for: Option<Duration>,
    /// How often [`Sink::idle`] runs; `None`: never.
    pub idle_every: Option<Duration>,
}

/// A snapshot of a batcher's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Items queued or waiting for a retry.
    pub depth: usize,
    pub written: u64,
    /// Items refused because the queue was full (or the writer had stopped).
    pub dropped_full: u64,
    /// Items the store failed to write and that were given up.
    pub dropped_failed: u64,
    /// The last write succeeded (or none failed yet).
    pub ok: bool,
}

/// Counters shared by the pushing side, the thread and the readers of [`Stats`].
#[derive(Default)]
struct Status {
    written: AtomicU64,
    dropped_full: AtomicU64,
    dropped_failed: AtomicU64,
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Unix ms of the last "queue full" warning.
    last_full_warning_ms: AtomicI64,
}

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

enum Msg<S: Sink> {
    Item(S::Item),
    Run(Job<S>),
    Flush(oneshot::Sender<()>),
    Stop,
}

/// The handle of a batched writer (see the module docs).
pub struct Batcher<S: Sink> {
    name: &'static str,
    capacity: usize,
    tx: mpsc::Sender<Msg<S>>,
    /// One permit per free slot of the queue's bound.
    room: Arc<Semaphore>,
    status: Arc<Status>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<S: Sink> Batcher<S> {
    /// Starts the writer's thread with `sink`.
    pub fn start(sink: S, opts: Options) -> Self {
        let capacity = opts.capacity.max(1);
        let (tx, rx) = mpsc::channel();
        let room = Arc::new(Semaphore::new(capacity));
        let status = Arc::new(Status::default());
        let worker = Worker {
            sink,
            rx,
            queued: VecDeque::new(),
            held: Vec::with_capacity(opts.batch_size.max(1)),
            retry: None,
            room: room.clone(),
            status: status.clone(),
            last_idle: Instant::now(),
            opts: Options {
                capacity,
                batch_size: opts.batch_size.max(1),
                ..opts.clone()
            },
        };
        let thread = std::thread::Builder::new()
            .name(opts.name.into())
            .spawn(move || worker.run())
            .map_err(
                |e| tracing::error!(writer = opts.name, error = %e, "cannot start a writer thread"),
            )
            .ok();
        Self {
            name: opts.name,
            capacity,
            tx,
            room,
            status,
            closed: AtomicBool::new(false),
            thread: Mutex::new(thread),
        }
    }

    /// Queues an item without waiting; false (counted and logged) when it was dropped
    /// because the queue is full or the writer has stopped.
    pub fn push(&self, item: S::Item) -> bool {
        match self.room.try_acquire() {
            Ok(permit) if !self.closed.load(Ordering::Acquire) => {
                permit.forget();
                self.send_item(item)
            }
            _ => {
                self.dropped_full();
                false
            }
        }
    }

    /// Queues an item, waiting for room when the queue is full (bulk loads; the request
    /// path uses [`Self::push`]). False when the writer is shut down.
    pub async fn push_wait(&self, item: S::Item) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        match self.room.acquire().await {
            Ok(permit) => {
                permit.forget();
                self.send_item(item)
            }
            Err(_) => false,
        }
    }

    fn send_item(&self, item: S::Item) -> bool {
        if self.tx.send(Msg::Item(item)).is_err() {
            self.room.add_permits(1);
            self.dropped_full();
            return false;
        }
        true
    }

    fn dropped_full(&self) {
        let total = self.status.dropped_full.fetch_add(1, Ordering::Relaxed) + 1;
        let now = crate::analytics::timefmt::now_ms();
        let last = self.status.last_full_warning_ms.load(Ordering::Relaxed);
        if now - last >= 1000
            && self
                .status
                .last_full_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                writer = self.name,
                dropped_total = total,
                capacity = self.capacity,
                "write queue is full or closed; items are dropped"
            );
        }
    }

    /// Runs `f` on the sink, on the writer's thread, once every item pushed before it has
    /// been attempted; `None` when the writer has stopped.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job<S> = Box::new(move |sink| {
            let _ = tx.send(f(sink));
        });
        self.tx.send(Msg::Run(job)).ok()?;
        rx.await.ok()
    }

    /// Waits until every item pushed before this call is written, or given up, or, while
    /// the store fails, until the failing batch's next attempt.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Refuses further items, writes what is queued (a failing store is tried for at most
    /// [`SHUTDOWN_RETRY`], then what is left is counted lost) and stops the thread.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.tx.send(Msg::Stop);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }

    /// Marks the store as failing (a store that could not be opened at start).
    pub fn set_failing(&self, error: &str) {
        self.status.fail(error);
    }

    /// The last store error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.status.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let s = &self.status;
        Stats {
            depth: self.capacity - self.room.available_permits().min(self.capacity),
            written: s.written.load(Ordering::Relaxed),
            dropped_full: s.dropped_full.load(Ordering::Relaxed),
            dropped_failed: s.dropped_failed.load(Ordering::Relaxed),
            ok: !s.failing.load(Ordering::Relaxed),
        }
    }
}

impl Status {
    fn fail(&self, error: &str) {
        self.failing.store(true, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_string());
        }
    }
}

/// A failing batch's retry: when it is due, the wait after it, since when it fails.
#[derive(Clone, Copy)]
struct Retry {
    at: Instant,
    delay: Duration,
    since: Instant,
}

/// The thread's state.
struct Worker<S: Sink> {
    sink: S,
    rx: mpsc::Receiver<Msg<S>>,
    /// Items received and not yet in a batch.
    queued: VecDeque<S::Item>,
    /// The batch being written (or retried).
    held: Vec<S::Item>,
    retry: Option<Retry>,
    room: Arc<Semaphore>,
    status: Arc<Status>,
    last_idle: Instant,
    opts: Options,
}

impl<S: Sink> Worker<S> {
    fn run(mut self) {
        lower_priority();
        'outer: loop {
            let first = match self.next_wake() {
                None => match self.rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
                Some(wait) => match self.rx.recv_timeout(wait) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        self.write_all();
                        self.maybe_idle();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let an_item = matches!(first, Msg::Item(_));
            if !self.handle(first) {
                break;
            }
            if an_item && !self.opts.linger.is_zero() {
                std::thread::sleep(self.opts.linger);
            }
            loop {
                match self.rx.try_recv() {
                    Ok(m) => {
                        if !self.handle(m) {
                            break 'outer;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => break 'outer,
                }
            }
            self.write_all();
            self.maybe_idle();
        }
        self.finish();
    }

    /// Handles one message; false on `Stop`.
    fn handle(&mut self, m: Msg<S>) -> bool {
        match m {
            Msg::Item(i) => {
                self.queued.push_back(i);
                if self.queued.len() >= self.opts.batch_size {
                    self.write_all();
                }
            }
            Msg::Run(job) => {
                self.write_all();
                job(&mut self.sink);
            }
            Msg::Flush(done) => {
                // While the store fails this answers after one more attempt.
                if let Some(r) = &mut self.retry {
                    r.at = Instant::now();
                }
                self.write_all();
                let _ = done.send(());
            }
            Msg::Stop => return false,
        }
        true
    }

    /// How long to wait for messages before a retry or housekeeping is due.
    fn next_wake(&self) -> Option<Duration> {
        let now = Instant::now();
        let retry = self.retry.map(|r| r.at.saturating_duration_since(now));
        let idle = self
            .opts
            .idle_every
            .map(|every| (self.last_idle + every).saturating_duration_since(now));
        match (retry, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn maybe_idle(&mut self) {
        if let Some(every) = self.opts.idle_every {
            if self.last_idle.elapsed() >= every {
                self.last_idle = Instant::now();
                self.sink.idle();
            }
        }
    }

    /// Writes batches until nothing is queued, or a failing batch's retry is not due (or
    /// failed again); true when nothing is left.
    fn write_all(&mut self) -> bool {
        loop {
            if self.held.is_empty() {
                let n = self.queued.len().min(self.opts.batch_size);
                self.held.extend(self.queued.drain(..n));
            }
            if self.held.is_empty() {
                return true;
            }
            if self.retry.is_some_and(|r| Instant::now() < r.at) {
                return false;
            }
            if !self.attempt() {
                return false;
            }
        }
    }

    /// One attempt at the held batch; false when it is kept for a retry.
    fn attempt(&mut self) -> bool {
        let n = self.held.len();
        match self.sink.write(&self.held) {
            Ok(()) => {
                self.status.written.fetch_add(n as u64, Ordering::Relaxed);
                if self.status.failing.swap(false, Ordering::Relaxed) || self.retry.is_some() {
                    tracing::info!(
                        writer = self.opts.name,
                        items = n,
                        "store writable again; waiting items written"
                    );
                }
                self.retry = None;
                self.release(true);
                true
            }
            Err(Failure::Retry(e)) => {
                self.status.fail(&e);
                let now = Instant::now();
                let r = match self.retry {
                    None => {
                        tracing::warn!(writer = self.opts.name, items = n, error = %e,
                            "store unreachable; the batch is kept and written when it returns");
                        Retry {
                            at: now + BACKOFF.0,
                            delay: BACKOFF.0,
                            since: now,
                        }
                    }
                    Some(r) => {
                        let delay = (r.delay * 2).min(BACKOFF.1);
                        Retry {
                            at: now + delay,
                            delay,
                            since: r.since,
                        }
                    }
                };
                let given_up = self
                    .opts
                    .retry_for
                    .is_some_and(|limit| r.since.elapsed() + r.delay > limit);
                if given_up {
                    self.lose(&Failure::Retry(e));
                    return true;
                }
                self.retry = Some(r);
                false
            }
            Err(lost) => {
                self.status.fail(lost.message());
                self.lose(&lost);
                true
            }
        }
    }

    /// Gives the held batch up: counted, logged, its slots freed.
    fn lose(&mut self, why: &Failure) {
        let n = self.held.len();
        self.status
            .dropped_failed
            .fetch_add(n as u64, Ordering::Relaxed);
        tracing::error!(
            writer = self.opts.name,
            items = n,
            error = why.message(),
            "a batch could not be written and is lost"
        );
        self.retry = None;
        self.release(false);
    }

    fn release(&mut self, written: bool) {
        self.sink.done(&self.held, written);
        self.room.add_permits(self.held.len());
        self.held.clear();
    }

    /// The last writes: a failing store is tried for [`SHUTDOWN_RETRY`] (or what is left of
    /// [`Options::retry_for`]), then what is left is counted lost.
    fn finish(&mut self) {
        // Messages sent before the stop (items, flushes) are still handled.
        while let Ok(m) = self.rx.try_recv() {
            match m {
                Msg::Stop => {}
                m => {
                    self.handle(m);
                }
            }
        }
        let deadline = Instant::now() + SHUTDOWN_RETRY;
        while !self.write_all() {
            let at = self.retry.map_or_else(Instant::now, |r| r.at);
            if at >= deadline {
                self.queued.drain(..).for_each(|i| self.held.push(i));
                self.lose(&Failure::Lost(format!(
                    "the store was still failing at shutdown: {}",
                    self.status
                        .last_error
                        .lock()
                        .ok()
                        .and_then(|e| e.clone())
                        .unwrap_or_default()
                )));
                return;
            }
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
        }
    }
}

/// Lowers the calling thread's scheduling priority (nice 10), so that on a busy CPU the
/// request threads preempt a background writer. Linux only; elsewhere a no-op.
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
            tracing::debug!("could not lower a writer thread's priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps what it writes; fails while `outages` lasts (retry) or when `refuse` (lost).
    #[derive(Default, Clone)]
    struct Log {
        written: Arc<Mutex<Vec<u32>>>,
        batches: Arc<Mutex<Vec<usize>>>,
        outages: Arc<Mutex<usize>>,
        refuse: bool,
        done: Arc<Mutex<Vec<(u32, bool)>>>,
    }

    impl Sink for Log {
        type Item = u32;
        fn write(&mut self, batch: &[u32]) -> Result<(), Failure> {
            if self.refuse {
                return Err(Failure::Lost("refused".into()));
            }
            let mut outages = self.outages.lock().unwrap();
            if *outages > 0 {
                *outages -= 1;
                return Err(Failure::Retry("unreachable".into()));
            }
            self.batches.lock().unwrap().push(batch.len());
            self.written.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }
        fn done(&mut self, batch: &[u32], written: bool) {
            let mut d = self.done.lock().unwrap();
            d.extend(batch.iter().map(|&i| (i, written)));
        }
    }

    fn opts(capacity: usize, batch_size: usize) -> Options {
        Options {
            name: "memproxy-test-writer",
            capacity,
            batch_size,
            linger: Duration::from_millis(1),
            retry_for: None,
            idle_every: None,
        }
    }

    #[tokio::test]
    async fn items_are_written_in_order_in_bounded_batches() {
        let log = Log::default();
        let b = Batcher::start(log.clone(), opts(1000, 16));
        for i in 0..100 {
            assert!(b.push(i));
        }
        b.flush().await;
        assert_eq!(*log.written.lock().unwrap(), (0..100).collect::<Vec<_>>());
        assert!(log.batches.lock().unwrap().iter().all(|&n| n <= 16));
        let s = b.stats();
        assert_eq!(
            (s.written, s.depth, s.dropped_full, s.ok),
            (100, 0, 0, true)
        );
        // A job sees every item pushed before it.
        b.push(100);
        let seen = b.call(|s: &mut Log| s.written.lock().unwrap().len()).await;
        assert_eq!(seen, Some(101));
        b.shutdown().await;
        assert!(!b.push(1), "a stopped writer refuses items");
        assert_eq!(b.call(|_| ()).await, None);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let log = Log::default();
        let b = Batcher::start(log.clone(), opts(3, 10));
        // Hold the thread inside a job: pushed items keep their slots.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let held = futures_util::FutureExt::now_or_never(b.call(move |_| {
            let _ = gate.recv();
        }));
        assert!(held.is_none());
        let accepted = (0..10).filter(|&i| b.push(i)).count();
        assert_eq!(accepted, 3);
        assert_eq!((b.stats().depth, b.stats().dropped_full), (3, 7));
        release.send(()).unwrap();
        b.flush().await;
        assert_eq!(*log.written.lock().unwrap(), vec![0, 1, 2]);
        assert_eq!(b.stats().depth, 0);
    }

    #[tokio::test]
    async fn a_failing_batch_is_kept_and_written_when_the_store_returns() {
        let log = Log {
            outages: Arc::new(Mutex::new(3)),
            ..Default::default()
        };
        let b = Batcher::start(log.clone(), opts(100, 10));
        for i in 0..25 {
            b.push(i);
        }
        // Each flush makes one more attempt: three outages, then the items land.
        for _ in 0..4 {
            b.flush().await;
        }
        let s = b.stats();
        assert_eq!(
            (s.written, s.depth, s.dropped_failed, s.ok),
            (25, 0, 0, true)
        );
        assert_eq!(*log.written.lock().unwrap(), (0..25).collect::<Vec<_>>());
        assert!(log.done.lock().unwrap().iter().all(|&(_, w)| w));
    }

    #[tokio::test]
    async fn refused_batches_are_counted_lost_not_silently() {
        let log = Log {
            refuse: true,
            ..Default::default()
        };
        let b = Batcher::start(log.clone(), opts(100, 10));
        for i in 0..25 {
            b.push(i);
        }
        b.flush().await;
        let s = b.stats();
        assert_eq!(
            (s.written, s.dropped_failed, s.depth, s.ok),
            (0, 25, 0, false)
        );
        assert_eq!(b.last_error().as_deref(), Some("refused"));
        assert_eq!(log.done.lock().unwrap().len(), 25);
    }

    #[tokio::test]
    async fn a_batch_failing_past_its_retry_window_is_given_up() {
        let log = Log {
            outages: Arc::new(Mutex::new(usize::MAX)),
            ..Default::default()
        };
        let mut o = opts(100, 10);
        o.retry_for = Some(Duration::ZERO);
        let b = Batcher::start(log.clone(), o);
        b.push(1);
        b.flush().await;
        let s = b.stats();
        assert_eq!((s.dropped_failed, s.depth), (1, 0));
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_queued() {
        let log = Log::default();
        let b = Batcher::start(log.clone(), opts(1000, 7));
        for i in 0..50 {
            b.push(i);
        }
        b.shutdown().await;
        assert_eq!(log.written.lock().unwrap().len(), 50);
    }

    #[tokio::test]
    async fn idle_housekeeping_runs_while_nothing_is_written() {
        #[derive(Clone, Default)]
        struct Idle(Arc<tokio::sync::Notify>);
        impl Sink for Idle {
            type Item = ();
            fn write(&mut self, _: &[()]) -> Result<(), Failure> {
                Ok(())
            }
            fn idle(&mut self) {
                self.0.notify_one();
            }
        }
        let idle = Idle::default();
        let mut o = opts(10, 10);
        o.idle_every = Some(Duration::from_millis(10));
        let b = Batcher::start(idle.clone(), o);
        idle.0.notified().await;
        idle.0.notified().await;
        b.shutdown().await;
    }
}
