//! A memory store that fails or hangs never fails a request: retrieval is skipped, the
//! answer says so (`x-memproxy-memory: skipped`) and `/metrics` counts it.

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use memproxy::memory::store::BoxFuture;
use memproxy::memory::{
    Memory, MemoryService, MemoryStore, Page, ScoredMemory, SearchQuery, Session, SessionInfo,
    SessionMessage, StoreError, SystemClock, WriteOp,
};
use memproxy::storage::embedded::memory::{SqliteOptions, SqliteStore};

const OK: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// The embedded store, whose reads fail or hang on demand; its writes wait for
/// `release` in mode [`HOLD`], and a batch holding a memory that says "REFUSED" is
/// refused as PostgreSQL refuses a value it cannot store.
struct Faulty {
    inner: SqliteStore,
    mode: AtomicU8,
    release: tokio::sync::Notify,
}

const HOLD: u8 = 3;

impl Faulty {
    /// An embedded store in `dir`, starting in `mode`.
    fn open(dir: &std::path::Path, mode: u8) -> Arc<Self> {
        let opts = SqliteOptions {
            session_ttl: Duration::ZERO,
            session_max_messages: 10,
            clock: Arc::new(SystemClock),
            max_memories_per_user: 0,
        };
        Arc::new(Faulty {
            inner: SqliteStore::open(dir, opts).unwrap(),
            mode: AtomicU8::new(mode),
            release: tokio::sync::Notify::new(),
        })
    }

    fn read<'a, T: Send + 'a>(
        &'a self,
        f: BoxFuture<'a, Result<T, StoreError>>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        Box::pin(async move {
            match self.mode.load(Ordering::SeqCst) {
                FAIL => Err(StoreError::Backend("connection refused".into())),
                HANG => std::future::pending().await,
                _ => f.await,
            }
        })
    }
}

impl MemoryStore for Faulty {
    fn apply(&self, ops: Vec<WriteOp>) -> BoxFuture<'_, Result<Vec<Memory>, StoreError>> {
        Box::pin(async move {
            if self.mode.load(Ordering::SeqCst) == HOLD {
                self.release.notified().await;
            }
            let refused = ops.iter().any(|op| {
                matches!(op, WriteOp::Capture(m) | WriteOp::Memory(m) if m.content.contains("REFUSED"))
            });
            if refused {
                return Err(StoreError::Backend("invalid byte sequence".into()));
            }
            self.inner.apply(ops).await
        })
    }
    fn get<'a>(&'a self, u: &'a str, id: &'a str) -> BoxFuture<'a, Result<Memory, StoreError>> {
        self.inner.get(u, id)
    }
    fn list<'a>(
        &'a self,
        u: &'a str,
        limit: usize,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Page, StoreError>> {
        self.inner.list(u, limit, cursor)
    }
    fn search<'a>(
        &'a self,
        u: &'a str,
        q: &'a SearchQuery,
    ) -> BoxFuture<'a, Result<Vec<ScoredMemory>, StoreError>> {
        self.read(self.inner.search(u, q))
    }
    fn delete<'a>(&'a self, u: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.delete(u, id)
    }
    fn delete_user<'a>(&'a self, u: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.delete_user(u)
    }
    fn session_messages<'a>(
        &'a self,
        u: &'a str,
        s: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionMessage>, StoreError>> {
        self.read(self.inner.session_messages(u, s))
    }
    fn list_sessions<'a>(
        &'a self,
        u: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, StoreError>> {
        self.inner.list_sessions(u)
    }
    fn get_session<'a>(
        &'a self,
        u: Option<&'a str>,
        s: &'a str,
    ) -> BoxFuture<'a, Result<Session, StoreError>> {
        self.inner.get_session(u, s)
    }
    fn delete_session<'a>(
        &'a self,
        u: Option<&'a str>,
        s: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.delete_session(u, s)
    }
    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.purge_expired()
    }
    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.health()
    }
}

#[tokio::test]
async fn a_failing_or_hanging_memory_store_skips_retrieval_not_the_request() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "model_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/gpt-4o, api_base: '{}', api_key: k}}\nrouter_settings: {{num_retries: 0}}\ncontext_retrieval: {{enabled: true}}\n",
        mock.url()
    );
    let cfg = memproxy::config::parse(
        &yaml,
        "test.yaml",
        &memproxy::config::Overrides {
            data_dir: Some(dir.path().to_string_lossy().into_owned()),
            ..Default::default()
        },
        &|_| None,
    )
    .unwrap();
    let store = Faulty::open(&dir.path().join("faulty"), OK);
    let mut state = memproxy::AppState::new(cfg).unwrap();
    let st = Arc::get_mut(&mut state).unwrap();
    st.memory = Some(Arc::new(MemoryService::with_store(
        store.clone(),
        &st.config.memory,
        None,
    )));
    let proxy = start_state(state).await;
    let send = |session: Option<&'static str>| {
        let mut req = client()
            .post(proxy.url("/v1/chat/completions"))
            .header("x-memory-user-id", "faulty-user")
            .json(&chat_body("gpt", "what do I like?"));
        if let Some(s) = session {
            req = req.header("x-session-id", s);
        }
        req.send()
    };
    let resp = send(None).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-memproxy-memory").is_none());

    store.mode.store(FAIL, Ordering::SeqCst);
    let resp = send(None).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-memproxy-memory"], "skipped");

    store.mode.store(HANG, Ordering::SeqCst);
    let started = Instant::now();
    let resp = send(Some("sess-1")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-memproxy-memory"], "skipped");
    // History and search each wait at most a second.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    let metrics = client()
        .get(proxy.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("memproxy_memory_retrieval_skipped_total 2"),
        "{metrics}"
    );
}

/// A write the store refuses (its data, not an outage) is lost alone: the batch it
/// shared with other users' captures is written again one write at a time.
#[tokio::test]
async fn a_refused_write_is_lost_alone_not_with_its_batch() {
    use memproxy::memory::{NewMemory, QueueOptions, WriteQueue};
    let dir = tempfile::tempdir().unwrap();
    let store = Faulty::open(dir.path(), HOLD);
    let q = WriteQueue::start(
        store.clone(),
        None,
        QueueOptions {
            capacity: 100,
            batch_size: 64,
            purge_every: Duration::from_secs(3600),
            embed_timeout: Duration::from_secs(1),
        },
    );
    let capture = |user: &str, content: &str| {
        WriteOp::Capture(NewMemory {
            user_id: user.into(),
            content: content.into(),
            metadata: Default::default(),
            session_id: None,
        })
    };
    // The writer waits in its first write while the others queue up behind it: they
    // are written together, in one batch.
    assert!(q.push(capture("u1", "first")));
    for (user, content) in [("u2", "kept"), ("u3", "REFUSED"), ("u4", "kept too")] {
        assert!(q.push(capture(user, content)));
    }
    store.mode.store(OK, Ordering::SeqCst);
    store.release.notify_one();
    q.flush().await;
    let count = |user: &'static str| {
        let store = store.clone();
        async move { store.list(user, 10, None).await.unwrap().items.len() }
    };
    assert_eq!(count("u1").await, 1);
    assert_eq!(count("u2").await, 1);
    assert_eq!(count("u3").await, 0, "the refused write is lost");
    assert_eq!(count("u4").await, 1, "the writes of its batch are not");
    q.shutdown().await;
}
