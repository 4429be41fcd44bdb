//! The write queue that takes captured exchanges off the request path: a
//! [`Batcher`] (the batched writer every background store write uses) whose sink applies
//! whatever is waiting as one batch (one transaction), embeds new memories when an
//! embedder is configured (with the memories written elsewhere and handed over by
//! [`WriteQueue::embed_later`], in one call per batch), and purges expired sessions now
//! and then.
//!
//! A full queue never blocks a request: the write is dropped, counted
//! ([`WriteQueue::dropped`]) and logged. A batch the store cannot write for now
//! ([`StoreError::Unavailable`]: PostgreSQL restarting, a full or read-only disk, a locked
//! file) is kept and written again with backoff, while new writes wait in the queue up to
//! its bound; only a batch that still fails after [`RETRY_FOR`] is lost (counted in
//! `memproxy_memory_write_failures_total` and logged). A batch the store refuses
//! ([`StoreError::Backend`]: a statement or a value it rejects) is written again one
//! write at a time, so that only the writes refused alone are lost (counted, logged),
//! never the other users' writes that shared their batch. [`WriteQueue::flush`] waits until
//! everything queued before it is committed or, while the store fails, until the failing
//! batch's next attempt; [`WriteQueue::shutdown`] writes what is left and stops.

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use super::retrieve::Embedder;
use super::store::{Memory, MemoryStore, StoreError, WriteOp};
use crate::storage::batch::{Batcher, Failure, Options, Sink};

/// How long a failing batch is retried before it is given up.
pub const RETRY_FOR: Duration = Duration::from_secs(600);

/// How long the writer waits after a write arrives before it writes what is queued. With
/// no wait, every capture under load was a batch of its own: three thread wake-ups (this
/// writer, the store's writer, the reply) and a transaction per request. A capture is
/// searchable this much later.
pub const LINGER: Duration = Duration::from_millis(10);

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

/// What waits in the queue.
pub enum Queued {
    Op(WriteOp),
    /// Memories already stored that need vectors.
    Embed(Vec<Memory>),
}

/// The queue's handle (see the module docs).
pub struct WriteQueue {
    writer: Batcher<MemorySink>,
}

impl WriteQueue {
    /// Starts the writer; its store calls run on the current tokio runtime.
    pub fn start(
        store: Arc<dyn MemoryStore>,
        embedder: Option<Arc<dyn Embedder>>,
        opts: QueueOptions,
    ) -> Self {
        let sink = MemorySink {
            store,
            embedder,
            embed_timeout: opts.embed_timeout,
            runtime: Handle::current(),
        };
        let writer = Batcher::start(
            sink,
            Options {
                name: "memproxy-memory-writer",
                capacity: opts.capacity,
                batch_size: opts.batch_size,
                linger: LINGER,
                retry_for: Some(RETRY_FOR),
                idle_every: Some(opts.purge_every.max(Duration::from_secs(1))),
            },
        );
        Self { writer }
    }

    /// Queues a write without waiting; returns false (and counts it) when it was dropped
    /// because the queue is full or shut down.
    pub fn push(&self, op: WriteOp) -> bool {
        self.writer.push(Queued::Op(op))
    }

    /// Queues a write, waiting for room when the queue is full (bulk loads such as the
    /// memory benchmark; the request path uses [`Self::push`], which never waits). False
    /// when the queue is shut down.
    pub async fn push_wait(&self, op: WriteOp) -> bool {
        self.writer.push_wait(Queued::Op(op)).await
    }

    /// Hands memories that were stored directly (the memory API) to the writer, which
    /// embeds them with the next batch: one embedding call per batch instead of one per
    /// memory, so a bulk import cannot flood the embedding model (and time out). Waits for
    /// room; false when the queue is shut down.
    pub async fn embed_later(&self, memories: Vec<Memory>) -> bool {
        self.writer.push_wait(Queued::Embed(memories)).await
    }

    /// Writes dropped so far because the queue was full or shut down.
    pub fn dropped(&self) -> u64 {
        self.writer.stats().dropped_full
    }

    /// False while the store refuses writes (the last batch failed).
    pub fn writes_ok(&self) -> bool {
        self.writer.stats().ok
    }

    /// Waits until every write queued before this call is committed or, while the store
    /// fails, until the failing batch's next attempt (the batch is kept and retried in
    /// the background; [`Self::writes_ok`] is false meanwhile).
    pub async fn flush(&self) {
        self.writer.flush().await
    }

    /// Refuses further writes, writes what is queued, and stops the writer.
    pub async fn shutdown(&self) {
        self.writer.shutdown().await
    }
}

/// The memory store's write side, on the writer's thread.
struct MemorySink {
    store: Arc<dyn MemoryStore>,
    embedder: Option<Arc<dyn Embedder>>,
    embed_timeout: Duration,
    /// The server's runtime, which the store's and the embedder's futures run on.
    runtime: Handle,
}

impl Sink for MemorySink {
    type Item = Queued;

    fn write(&mut self, batch: &[Queued]) -> Result<(), Failure> {
        // The store takes the batch by value: it gets a copy, kept for a retry (cheap
        // next to a write: a batch is a few captured exchanges).
        let ops: Vec<WriteOp> = batch
            .iter()
            .filter_map(|q| match q {
                Queued::Op(op) => Some(op.clone()),
                Queued::Embed(_) => None,
            })
            .collect();
        let mut created = Vec::new();
        if !ops.is_empty() {
            created = match self.runtime.block_on(self.store.apply(ops.clone())) {
                Ok(c) => c,
                // The store refused the batch's statements or data: one of its writes may
                // be at fault, so each is tried alone and only those refused are lost.
                Err(StoreError::Backend(e)) if ops.len() > 1 => self.one_by_one(ops, &e)?,
                Err(e @ StoreError::Unavailable(_)) => return Err(Failure::Retry(e.to_string())),
                Err(e) => return Err(Failure::Lost(e.to_string())),
            };
        }
        for q in batch {
            if let Queued::Embed(ms) = q {
                created.extend(ms.iter().cloned());
            }
        }
        if let Some(e) = &self.embedder {
            let store = &*self.store;
            self.runtime
                .block_on(embed(store, &**e, &created, self.embed_timeout));
        }
        Ok(())
    }

    fn done(&mut self, batch: &[Queued], written: bool) {
        if !written {
            let ops = batch.iter().filter(|q| matches!(q, Queued::Op(_))).count();
            metrics::counter!("memproxy_memory_write_failures_total").increment(ops as u64);
        }
    }

    fn idle(&mut self) {
        if let Err(e) = self.runtime.block_on(self.store.purge_expired()) {
            tracing::warn!(error = %e, "purging expired sessions failed");
        }
    }
}

impl MemorySink {
    /// Writes `ops` one at a time after the store refused them together (`why`): a write
    /// refused alone is lost (counted and logged), the others are kept. A store that
    /// becomes unavailable meanwhile gets the whole batch again later (a capture already
    /// written is then skipped as a duplicate; session turns may be appended twice).
    fn one_by_one(&self, ops: Vec<WriteOp>, why: &str) -> Result<Vec<Memory>, Failure> {
        tracing::warn!(
            error = why,
            writes = ops.len(),
            "the memory store refused a batch; writing its writes one at a time"
        );
        let mut created = Vec::new();
        for op in ops {
            match self.runtime.block_on(self.store.apply(vec![op])) {
                Ok(c) => created.extend(c),
                Err(e @ StoreError::Unavailable(_)) => return Err(Failure::Retry(e.to_string())),
                Err(e) => {
                    metrics::counter!("memproxy_memory_write_failures_total").increment(1);
                    tracing::error!(error = %e, "a memory write was refused and is lost");
                }
            }
        }
        Ok(created)
    }
}

/// Computes and stores vectors for newly created memories; failures only cost semantic
/// ranking for those memories, lexical search still finds them.
async fn embed(
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
    use crate::memory::store::NewMemory;
    use crate::memory::SystemClock;
    use crate::storage::embedded::memory::{SqliteOptions, SqliteStore};

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
        // Hold the writer inside a job: queued writes keep their slots, the queue fills.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let held = futures_util::FutureExt::now_or_never(q.writer.call(move |_| {
            let _ = gate.recv();
        }));
        assert!(held.is_none());
        let accepted = (0..10).filter(|&i| q.push(op(i))).count();
        assert_eq!(accepted, 3);
        assert_eq!(q.dropped(), 7);
        release.send(()).unwrap();
        q.flush().await;
        let page = store.list("u", 100, None).await.unwrap();
        assert_eq!(page.items.len(), 3);
        q.shutdown().await;
        assert!(!q.push(op(99)), "closed queues refuse writes");
        assert_eq!(store.list("u", 100, None).await.unwrap().items.len(), 3);
    }
}
