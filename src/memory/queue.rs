//! The write queue that takes captured exchanges off the request path: a bounded channel
//! drained by one background task that applies whatever is waiting as one batch (one
//! transaction), embeds new memories when an embedder is configured (with the memories
//! written elsewhere and handed over by [`WriteQueue::embed_later`], in one call per
//! batch), and purges expired sessions now and then.
//!
//! A full queue never blocks a request: the write is dropped, counted
//! ([`WriteQueue::dropped`]) and logged. A batch the store fails to write
//! ([`StoreError::Backend`]: PostgreSQL restarting, a full disk) is kept and written again
//! with backoff, while new writes wait in the queue up to its bound; only a batch that
//! still fails after [`RETRY_FOR`] is lost (counted and logged). [`WriteQueue::flush`]
//! waits until everything queued before it is committed, or, while the store fails,
//! until the failing batch's next attempt (the batch stays and is retried, but a flush
//! does not wait minutes for it); [`WriteQueue::shutdown`] flushes (retrying for at most
//! [`SHUTDOWN_RETRY`]) and stops the task.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::retrieve::Embedder;
use super::store::{Memory, MemoryStore, StoreError, WriteOp};

/// How long a failing batch is retried before it is given up.
pub const RETRY_FOR: Duration = Duration::from_secs(600);

/// How long a failing batch is retried once the queue is shutting down.
pub const SHUTDOWN_RETRY: Duration = Duration::from_secs(10);

/// Waits between attempts: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// How the queue drains.
#[derive(Debug, Clone, Copy)]
pub struct QueueOptions {
    /// Writes waiting at most; more are dropped.
    pub capacity: usize,
    /// Writes applied in one transaction at most.
    pub batch_size: usize,
    /// How often expired sessions are purged.
    pub purge_every: Duration,
    /// Longest wait for the embedder before memories are stored without vectors.
    pub embed_timeout: Duration,
}

enum Msg {
    Op(WriteOp),
    /// Memories already stored that need vectors.
    Embed(Vec<Memory>),
    Flush(oneshot::Sender<()>),
}

/// The queue's handle (see the module docs).
pub struct WriteQueue {
    tx: mpsc::Sender<Msg>,
    closed: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    /// The last batch write failed (disk full, read-only file, …); cleared by a success.
    failing: Arc<AtomicBool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl WriteQueue {
    /// Starts the drain task on the current tokio runtime.
    pub fn start(
        store: Arc<dyn MemoryStore>,
        embedder: Option<Arc<dyn Embedder>>,
        opts: QueueOptions,
    ) -> Self {
        let (tx, rx) = mpsc::channel(opts.capacity.max(1));
        let failing = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(drain(
            rx,
            store,
            embedder,
            opts,
            failing.clone(),
            closed.clone(),
        ));
        Self {
            tx,
            closed,
            dropped: Arc::new(AtomicU64::new(0)),
            failing,
            task: Mutex::new(Some(task)),
        }
    }

    /// Queues a write without waiting; returns false (and counts it) when it was dropped
    /// because the queue is full or shut down.
    pub fn push(&self, op: WriteOp) -> bool {
        if self.closed.load(Ordering::Acquire) || self.tx.try_send(Msg::Op(op)).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Log the first drop and then every 100th, not every one.
            if n == 1 || n.is_multiple_of(100) {
                tracing::warn!(
                    dropped_total = n,
                    "memory write queue is full or closed; a captured exchange was dropped"
                );
            }
            return false;
        }
        true
    }

    /// Queues a write, waiting for room when the queue is full (bulk loads such as the
    /// memory benchmark; the request path uses [`Self::push`], which never waits). False
    /// when the queue is shut down.
    pub async fn push_wait(&self, op: WriteOp) -> bool {
        !self.closed.load(Ordering::Acquire) && self.tx.send(Msg::Op(op)).await.is_ok()
    }

    /// Hands memories that were stored directly (the memory API) to the drain task, which
    /// embeds them with the next batch: one embedding call per batch instead of one per
    /// memory, so a bulk import cannot flood the embedding model (and time out). Waits for
    /// room; false when the queue is shut down.
    pub async fn embed_later(&self, memories: Vec<Memory>) -> bool {
        !self.closed.load(Ordering::Acquire) && self.tx.send(Msg::Embed(memories)).await.is_ok()
    }

    /// Writes dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// False while the store refuses writes (the last batch failed).
    pub fn writes_ok(&self) -> bool {
        !self.failing.load(Ordering::Relaxed)
    }

    /// Waits until every write queued before this call is committed or, while the store
    /// fails, until the failing batch's next attempt (the batch is kept and retried in
    /// the background; [`Self::writes_ok`] is false meanwhile).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Refuses further writes, flushes, and stops the drain task.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.flush().await;
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }
}

/// What the drain task has received and not yet handled.
struct Inbox {
    rx: mpsc::Receiver<Msg>,
    batch: Vec<WriteOp>,
    stored: Vec<Memory>,
    waiters: Vec<oneshot::Sender<()>>,
    /// Writes held outside the channel at most (its capacity): while a batch is retried,
    /// messages are taken from the channel only up to this, so the queue stays bounded.
    capacity: usize,
}

impl Inbox {
    fn take(&mut self, m: Msg) {
        match m {
            Msg::Op(op) => self.batch.push(op),
            Msg::Embed(ms) => self.stored.extend(ms),
            Msg::Flush(w) => self.waiters.push(w),
        }
    }

    fn has_room(&self) -> bool {
        self.batch.len() + self.stored.len() < self.capacity
    }

    fn answer_flushes(&mut self) {
        for w in self.waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

async fn drain(
    rx: mpsc::Receiver<Msg>,
    store: Arc<dyn MemoryStore>,
    embedder: Option<Arc<dyn Embedder>>,
    opts: QueueOptions,
    failing: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
) {
    let mut purge = tokio::time::interval(opts.purge_every.max(Duration::from_secs(1)));
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inbox = Inbox {
        rx,
        batch: Vec::with_capacity(opts.batch_size),
        stored: Vec::new(),
        waiters: Vec::new(),
        capacity: opts.capacity.max(1),
    };
    loop {
        // Messages taken while a failing batch was retried are handled first.
        if inbox.batch.is_empty() && inbox.stored.is_empty() && inbox.waiters.is_empty() {
            let first = tokio::select! {
                m = inbox.rx.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
                _ = purge.tick() => {
                    if let Err(e) = store.purge_expired().await {
                        tracing::warn!(error = %e, "purging expired sessions failed");
                    }
                    continue;
                }
            };
            inbox.take(first);
        }
        while inbox.batch.len() + inbox.stored.len() < opts.batch_size.max(1) {
            match inbox.rx.try_recv() {
                Ok(m) => inbox.take(m),
                Err(_) => break,
            }
        }
        let mut created = std::mem::take(&mut inbox.stored);
        if !inbox.batch.is_empty() {
            let ops = std::mem::take(&mut inbox.batch);
            if let Some(c) = apply_retrying(&*store, ops, &failing, &closed, &mut inbox).await {
                created.extend(c);
            }
        }
        if let Some(e) = &embedder {
            embed(&*store, &**e, &created, opts.embed_timeout).await;
        }
        if inbox.batch.is_empty() && inbox.stored.is_empty() {
            inbox.answer_flushes();
        }
    }
}

/// Applies a batch; a store failure ([`StoreError::Backend`]) is retried with backoff for
/// [`RETRY_FOR`] (or [`SHUTDOWN_RETRY`] once the queue is closing), so that a database
/// restart loses nothing. Meanwhile the channel is still read (up to the queue's
/// capacity): writes wait in `inbox` for the next batch, and a flush is answered after
/// the next attempt, whatever its outcome (unless the queue is shutting down: its flush
/// waits for the last attempt). The memories created, or `None` when the batch was lost.
async fn apply_retrying(
    store: &dyn MemoryStore,
    ops: Vec<WriteOp>,
    failing: &AtomicBool,
    closed: &AtomicBool,
    inbox: &mut Inbox,
) -> Option<Vec<Memory>> {
    let n = ops.len();
    let started = tokio::time::Instant::now();
    let mut delay = BACKOFF.0;
    loop {
        // The store takes the batch by value: it gets a copy, kept for a retry (cheap
        // next to a write: a batch is a few captured exchanges).
        let e = match store.apply(ops.clone()).await {
            Ok(c) => {
                if failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        writes = n,
                        "memory store writable again; waiting writes stored"
                    );
                }
                return Some(c);
            }
            Err(e) => e,
        };
        let limit = if closed.load(Ordering::Acquire) {
            SHUTDOWN_RETRY
        } else {
            RETRY_FOR
        };
        let retryable = matches!(e, StoreError::Backend(_) | StoreError::Unavailable(_));
        if !failing.swap(true, Ordering::Relaxed) && retryable {
            tracing::warn!(error = %e, writes = n, "memory store failed; the batch is kept and retried");
        }
        if !retryable || started.elapsed() + delay > limit {
            metrics::counter!("memproxy_memory_write_failures_total").increment(n as u64);
            tracing::error!(error = %e, writes = n, "memory batch write failed; the batch is lost");
            return None;
        }
        if !closed.load(Ordering::Acquire) {
            inbox.answer_flushes();
        }
        let wake = tokio::time::sleep(delay);
        tokio::pin!(wake);
        loop {
            let room = inbox.has_room();
            tokio::select! {
                _ = &mut wake => break,
                m = inbox.rx.recv(), if room => match m {
                    Some(m) => inbox.take(m),
                    // Every handle is gone: only the retry is left to do.
                    None => {
                        (&mut wake).await;
                        break;
                    }
                },
            }
        }
        delay = (delay * 2).min(BACKOFF.1);
    }
}

/// Computes and stores vectors for newly created memories; failures only cost semantic
/// ranking for those memories, lexical search still finds them.
pub async fn embed(
    store: &dyn MemoryStore,
    embedder: &dyn Embedder,
    created: &[Memory],
    timeout: Duration,
) {
    if created.is_empty() {
        return;
    }
    let texts: Vec<String> = created.iter().map(|m| m.content.clone()).collect();
    let vectors = match tokio::time::timeout(timeout, embedder.embed(&texts)).await {
        Ok(Ok(v)) if v.len() == created.len() => v,
        Ok(Ok(v)) => {
            tracing::warn!(
                expected = created.len(),
                got = v.len(),
                "embedder returned a wrong number of vectors"
            );
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "embedding new memories failed");
            return;
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "embedding new memories timed out"
            );
            return;
        }
    };
    // Group by user: one op per user.
    type Vectors = Vec<(String, Vec<f32>)>;
    let mut by_user: Vec<(String, Vectors)> = Vec::new();
    for (m, v) in created.iter().zip(vectors) {
        match by_user.iter_mut().find(|(u, _)| *u == m.user_id) {
            Some((_, list)) => list.push((m.id.clone(), v)),
            None => by_user.push((m.user_id.clone(), vec![(m.id.clone(), v)])),
        }
    }
    let ops = by_user
        .into_iter()
        .map(|(user_id, vectors)| WriteOp::Embeddings {
            user_id,
            model: embedder.model().to_string(),
            vectors,
        })
        .collect();
    if let Err(e) = store.apply(ops).await {
        tracing::warn!(error = %e, "storing embeddings failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::sqlite::{SqliteOptions, SqliteStore};
    use crate::memory::store::NewMemory;
    use crate::memory::SystemClock;

    fn op(i: usize) -> WriteOp {
        WriteOp::Memory(NewMemory {
            user_id: "u".into(),
            content: format!("capture {i}"),
            metadata: Default::default(),
            session_id: None,
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_drops_without_waiting_and_flush_commits_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MemoryStore> = Arc::new(
            SqliteStore::open(
                dir.path(),
                SqliteOptions {
                    session_ttl: Duration::ZERO,
                    session_max_messages: 10,
                    clock: Arc::new(SystemClock),
                    max_memories_per_user: 0,
                },
            )
            .unwrap(),
        );
        let q = WriteQueue::start(
            store.clone(),
            None,
            QueueOptions {
                capacity: 3,
                batch_size: 2,
                purge_every: Duration::from_secs(3600),
                embed_timeout: Duration::from_secs(1),
            },
        );
        // On a current-thread runtime the drain task has not run yet: the queue fills.
        let accepted = (0..10).filter(|&i| q.push(op(i))).count();
        assert_eq!(accepted, 3);
        assert_eq!(q.dropped(), 7);
        q.flush().await;
        let page = store.list("u", 100, None).await.unwrap();
        assert_eq!(page.items.len(), 3);
        q.shutdown().await;
        assert!(!q.push(op(99)), "closed queues refuse writes");
        assert_eq!(store.list("u", 100, None).await.unwrap().items.len(), 3);
    }
}
