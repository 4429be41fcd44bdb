//! Long-term memory and sessions (SPEC §4): storage behind one trait, ranking, the
//! write queue, and the pure functions that build queries, inject memories and decide
//! what to capture.
//!
//! # Layout
//! - [`store`]: the [`MemoryStore`] trait and its records; every call is scoped by user.
//! - The backends are in the storage layer: `storage::embedded::memory` (one file, WAL,
//!   FTS5, vectors as blobs), `storage::postgres::memory`, `storage::supermemory`.
//! - [`scope`]: memory scopes (user, or user and project) and their store keys.
//! - [`text`]: the analyzer shared by indexing and querying (stop words, stemming).
//! - [`retrieve`]: BM25, neighbour context, cosine, rank fusion, the [`Embedder`] trait.
//! - [`queue`]: the bounded, batched write queue for captured exchanges.
//! - [`quota`]: how many memories one user may keep.
//! - [`inject`]: query strategies, injection strategies, marker stripping, capture,
//!   session prepend.
//! - [`vectors`]: the in-memory vector index both stores score semantic searches with.
//! - [`recall`]: the memory stage of a model request, the one interface the request path
//!   edits memory through (history, search, injection; capture of the finished exchange).
//!
//! # Using it from the request path
//! [`MemoryService`] (in `AppState::memory` when memory is enabled) is the entry point;
//! the request path goes through [`recall`] only: `server::pipeline::run` calls
//! [`recall::recall`] before routing (session history, retrieval, injection into the IR
//! and into a native Anthropic or Responses body) and hands a [`recall::Capture`] to the
//! completion hook, which captures the exchange once the answer is complete (streams
//! included). `serve` calls [`MemoryService::shutdown`] after the last request, which
//! writes what the queue holds.

pub mod context;
pub mod embed;
pub mod inject;
pub mod lexicon;
pub mod queue;
pub mod quota;
pub mod recall;
pub mod reembed;
pub mod retrieve;
pub mod scope;
pub mod scopes;
pub mod store;
pub mod text;
pub mod vectors;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub use inject::Captured;
pub use queue::{QueueOptions, WriteQueue};
pub use retrieve::{Embedder, HashEmbedder};
pub use store::{
    Memory, MemoryStore, Metadata, NewMemory, Page, QueryEmbedding, ScoredMemory, SearchQuery,
    Session, SessionInfo, SessionMessage, StoreError, WriteOp,
};

use crate::config::MemorySettings;

pub use crate::clock::{Clock, ManualClock, SystemClock};

/// Who and what a captured exchange belongs to.
#[derive(Debug, Clone, Copy)]
pub struct CaptureMeta<'a> {
    pub user_id: &'a str,
    pub session_id: Option<&'a str>,
    pub model: &'a str,
    pub request_id: &'a str,
}

/// Memory as the server uses it: a store, the write queue and the optional embedder.
pub struct MemoryService {
    store: Arc<dyn MemoryStore>,
    queue: WriteQueue,
    embedder: Option<Arc<dyn Embedder>>,
    settings: MemorySettings,
}

impl MemoryService {
    /// Starts the write queue over `store` (the storage layer's choice of backend:
    /// `storage::Storage::memory_store`).
    pub fn with_store(
        store: Arc<dyn MemoryStore>,
        settings: &MemorySettings,
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Self {
        let queue = WriteQueue::start(
            store.clone(),
            embedder.clone(),
            QueueOptions {
                capacity: settings.queue_size,
                batch_size: settings.batch_size,
                purge_every: Duration::from_secs(600),
                embed_timeout: settings.embed_timeout,
            },
        );
        Self {
            store,
            queue,
            embedder,
            settings: settings.clone(),
        }
    }

    /// Starts [`reembed::run`] in the background when an embedder is configured: the
    /// memories stored without a vector of its model get one.
    pub fn start_reembedding(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<u64>> {
        self.embedder.as_ref()?;
        Some(tokio::spawn(reembed::run(Arc::downgrade(self))))
    }

    /// The store, for the memory API.
    pub fn store(&self) -> &Arc<dyn MemoryStore> {
        &self.store
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &MemorySettings {
        &self.settings
    }

    /// Searches `user_id`'s memories (hybrid when an embedder is set; lexical if the
    /// embedder fails or is slow).
    pub async fn try_search(
        &self,
        user_id: &str,
        text: &str,
        limit: usize,
    ) -> Result<Vec<ScoredMemory>, StoreError> {
        let query = self.query(text, limit).await;
        self.store.search(user_id, &query).await
    }

    /// Searches several scopes' memories (store keys, [`scope`]) with one query
    /// embedding, concurrently; one result list per key, in order.
    pub async fn try_search_in(
        &self,
        keys: &[&str],
        text: &str,
        limit: usize,
    ) -> Result<Vec<Vec<ScoredMemory>>, StoreError> {
        let query = self.query(text, limit).await;
        futures_util::future::try_join_all(keys.iter().map(|k| self.store.search(k, &query))).await
    }

    /// The search query for `text`, with its embedding when an embedder answers in time.
    async fn query(&self, text: &str, limit: usize) -> SearchQuery {
        let embedding = match &self.embedder {
            Some(e) => {
                let texts = [text.to_string()];
                match tokio::time::timeout(self.settings.embed_timeout, e.embed(&texts)).await {
                    Ok(Ok(mut v)) if v.len() == 1 => Some(QueryEmbedding {
                        model: e.model().to_string(),
                        vector: v.remove(0),
                        alone_floor: e.alone_floor(),
                    }),
                    Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
                        tracing::warn!("query embedding failed; searching lexically only");
                        None
                    }
                }
            }
            None => None,
        };
        SearchQuery {
            text: text.to_string(),
            limit,
            embedding,
        }
    }

    /// [`Self::try_search`] for the request path: a failing store yields no memories
    /// (logged), never a failed request.
    pub async fn search(&self, user_id: &str, text: &str, limit: usize) -> Vec<ScoredMemory> {
        self.try_search(user_id, text, limit)
            .await
            .unwrap_or_else(|e| {
                metrics::counter!("memproxy_memory_search_errors_total").increment(1);
                tracing::warn!(error = %e, "memory search failed; answering without memories");
                vec![]
            })
    }

    /// Stores one memory now (durable when this returns); its vector follows in the
    /// background, computed by the write queue with the next batch.
    pub async fn add(&self, new: NewMemory) -> Result<Memory, StoreError> {
        let created = self.store.add(vec![new]).await?;
        if self.embedder.is_some() && !self.queue.embed_later(created.clone()).await {
            tracing::warn!("memory write queue is closed; a new memory gets no vector");
        }
        created
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Backend("store created nothing".into()))
    }

    /// Queues a finished exchange: one long-term memory and, with a session, its two
    /// turns. Never waits; false when capture is off or the queue dropped it.
    pub fn capture(&self, meta: CaptureMeta<'_>, captured: Captured) -> bool {
        if !self.settings.capture {
            return false;
        }
        let mut metadata = Metadata::new();
        metadata.insert("source".into(), Value::from("conversation"));
        metadata.insert("model".into(), Value::from(meta.model));
        metadata.insert("request_id".into(), Value::from(meta.request_id));
        let mut ok = self.queue.push(WriteOp::Capture(NewMemory {
            user_id: meta.user_id.to_string(),
            content: captured.memory_text(),
            metadata,
            session_id: meta.session_id.map(str::to_string),
        }));
        if let Some(sid) = meta.session_id {
            ok &= self.queue.push(WriteOp::Turns {
                user_id: meta.user_id.to_string(),
                session_id: sid.to_string(),
                messages: vec![
                    ("user".into(), captured.user),
                    ("assistant".into(), captured.assistant),
                ],
            });
        }
        ok
    }

    /// Captured writes dropped because the queue was full.
    pub fn dropped_writes(&self) -> u64 {
        self.queue.dropped()
    }

    /// False while the store refuses writes (its last batch failed): readiness fails.
    pub fn writes_ok(&self) -> bool {
        self.queue.writes_ok()
    }

    /// Waits until every capture queued so far is committed, and every memory stored so
    /// far has its vector (or its embedding failed or timed out).
    pub async fn flush(&self) {
        self.queue.flush().await;
    }

    /// Flushes and stops the write queue (graceful shutdown).
    pub async fn shutdown(&self) {
        self.queue.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::retrieve::EmbedError;
    use crate::memory::store::BoxFuture;
    use std::sync::atomic::Ordering;

    /// [`HashEmbedder`] answering after a delay, like a remote model; counts its calls.
    struct SlowEmbedder(HashEmbedder, std::sync::atomic::AtomicUsize);

    impl Embedder for SlowEmbedder {
        fn model(&self) -> &str {
            self.0.model()
        }

        fn embed<'a>(
            &'a self,
            texts: &'a [String],
        ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, EmbedError>> {
            Box::pin(async move {
                self.1.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.0.embed(texts).await
            })
        }
    }

    /// The built-in defaults with a data dir of their own (kept while the dir lives).
    fn defaults() -> (tempfile::TempDir, crate::config::Config) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::load(
            None,
            &crate::config::Overrides {
                data_dir: Some(dir.path().to_string_lossy().into_owned()),
                ..Default::default()
            },
            &|_| None,
        )
        .unwrap();
        (dir, cfg)
    }

    #[tokio::test]
    async fn memories_stored_before_vectors_were_on_are_embedded_in_the_background() {
        let (_dir, cfg) = defaults();
        let store =
            crate::storage::Storage::embedded_memory(&cfg.memory, Arc::new(SystemClock)).unwrap();
        // Lexical only: 300 memories of two users, stored without vectors.
        let lexical = Arc::new(MemoryService::with_store(store.clone(), &cfg.memory, None));
        assert!(
            lexical.start_reembedding().is_none(),
            "nothing to embed with"
        );
        for i in 0..300 {
            let user = if i % 2 == 0 { "u" } else { "v" };
            let content = match i {
                100 => "I prefer tabs over spaces".to_string(),
                i => format!("filler number {i}"),
            };
            lexical
                .add(NewMemory {
                    user_id: user.into(),
                    content,
                    metadata: Metadata::new(),
                    session_id: None,
                })
                .await
                .unwrap();
        }
        lexical.shutdown().await;
        // Vectors turned on: the walk embeds every one of them, page by page.
        let embedder: Arc<dyn Embedder> = Arc::new(HashEmbedder::new(64));
        let model = embedder.model().to_string();
        assert_eq!(store.count_unembedded(&model).await.unwrap(), 300);
        let hybrid = Arc::new(MemoryService::with_store(
            store.clone(),
            &cfg.memory,
            Some(embedder),
        ));
        let walked = hybrid.start_reembedding().unwrap().await.unwrap();
        assert_eq!(walked, 300);
        assert_eq!(store.count_unembedded(&model).await.unwrap(), 0);
        let q = SearchQuery {
            text: "zzz".into(),
            limit: 5,
            embedding: Some(QueryEmbedding {
                model: model.clone(),
                vector: HashEmbedder::new(64).vector("tabs spaces prefer"),
                alone_floor: crate::memory::retrieve::MIN_COSINE,
            }),
        };
        let hits = hybrid.store().search("u", &q).await.unwrap();
        assert!(
            hits.iter().any(|h| h.memory.content.contains("tabs")),
            "found through the vector it was given"
        );
        assert!(hybrid
            .store()
            .search("v", &q)
            .await
            .unwrap()
            .iter()
            .all(|h| !h.memory.content.contains("tabs")));
        // A second start finds nothing left to do.
        assert_eq!(hybrid.start_reembedding().unwrap().await.unwrap(), 0);
        hybrid.shutdown().await;
    }

    #[tokio::test]
    async fn added_memories_are_embedded_in_batches_and_flush_waits_for_them() {
        let (_dir, cfg) = defaults();
        let slow = Arc::new(SlowEmbedder(HashEmbedder::new(64), Default::default()));
        let embedder: Arc<dyn Embedder> = slow.clone();
        let store =
            crate::storage::Storage::embedded_memory(&cfg.memory, Arc::new(SystemClock)).unwrap();
        let mem = MemoryService::with_store(store, &cfg.memory, Some(embedder.clone()));
        let add = |content: String| {
            mem.add(NewMemory {
                user_id: "u".into(),
                content,
                metadata: Metadata::new(),
                session_id: None,
            })
        };
        for i in 0..100 {
            add(format!("filler number {i}")).await.unwrap();
        }
        add("I prefer tabs over spaces".into()).await.unwrap();
        // Found only through its vector: no query term matches lexically.
        let semantic_only = || async {
            let q = SearchQuery {
                text: "zzz".into(),
                limit: 5,
                embedding: Some(QueryEmbedding {
                    model: embedder.model().to_string(),
                    vector: HashEmbedder::new(64).vector("tabs spaces prefer"),
                    alone_floor: crate::memory::retrieve::MIN_COSINE,
                }),
            };
            let hits = mem.store().search("u", &q).await.unwrap();
            hits.iter().any(|h| h.memory.content.contains("tabs"))
        };
        assert!(!semantic_only().await, "the vector is not stored yet");
        mem.flush().await;
        assert!(semantic_only().await, "flush waited for the vector");
        // A bulk of adds does not make one embedding call each (the store's writes take
        // far less than the embedder's 300 ms, so they pile up behind a call).
        let calls = slow.1.load(Ordering::SeqCst);
        assert!(calls <= 5, "{calls} embedding calls for 101 memories");
        mem.shutdown().await;
    }
}
