//! `memproxy storage migrate`: an embedded install copied into PostgreSQL — memories with
//! their vectors, keys, usage rows, stored responses — resumed after an interruption
//! without duplicates, checked by counts, and searched alike afterwards.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::pg::TestDb;
use memproxy::analytics::{AnalyticsStore, Record};
use memproxy::keys::{KeyRow, KeyStore};
use memproxy::memory::retrieve::{Embedder, HashEmbedder};
use memproxy::memory::{ManualClock, MemoryStore, NewMemory, QueryEmbedding, SearchQuery, WriteOp};
use memproxy::responses_store::{ResponseStore, StoredResponse};
use memproxy::storage::copy::{self, CopyError};
use memproxy::storage::embedded::memory::{SqliteOptions, SqliteStore};
use memproxy::storage::embedded::responses::SqliteResponseStore;
use memproxy::storage::postgres::{memory::Options, memory::PgMemoryStore, PgUrl};

const MEMORIES: usize = 1_300;
const REQUESTS: usize = 1_100;

async fn embedded_install(dir: &std::path::Path) -> Arc<dyn MemoryStore> {
    let clock = Arc::new(ManualClock::at(1_700_000_000_000));
    let store: Arc<dyn MemoryStore> = Arc::new(
        SqliteStore::open(
            dir,
            SqliteOptions {
                session_ttl: Duration::ZERO,
                session_max_messages: 10,
                clock,
                max_memories_per_user: 0,
            },
        )
        .unwrap(),
    );
    let e = HashEmbedder::new(32);
    let batch: Vec<NewMemory> = (0..MEMORIES)
        .map(|i| NewMemory {
            user_id: format!("user-{}", i % 3),
            content: format!(
                "turn {i}: we talked about topic {} and thing {}",
                i % 17,
                i % 5
            ),
            metadata: serde_json::json!({"n": i}).as_object().unwrap().clone(),
            session_id: Some(format!("s{}", i / 40)),
        })
        .collect();
    let made = store.add(batch).await.unwrap();
    // Vectors for two users of three.
    for user in ["user-0", "user-1"] {
        let vectors = made
            .iter()
            .filter(|m| m.user_id == user)
            .map(|m| (m.id.clone(), e.vector(&m.content)))
            .collect();
        store
            .apply(vec![WriteOp::Embeddings {
                user_id: user.into(),
                model: e.model().into(),
                vectors,
            }])
            .await
            .unwrap();
    }
    let keys = memproxy::storage::embedded::keys::SqliteKeys::new(dir.to_path_buf());
    for i in 0..3 {
        keys.insert(&KeyRow {
            hash: format!("{i:064x}"),
            created_ms: i,
            preview: "sk-...0000".into(),
            metadata: serde_json::json!({}),
            spend: 0.5 * i as f64,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let path = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut a = memproxy::storage::embedded::analytics::SqliteStore::open(&path).unwrap();
        let rows: Vec<Record> = (0..REQUESTS)
            .map(|i| Record {
                ts_ms: 1_700_000_000_000 + i as i64,
                request_id: format!("req-{i}"),
                user_id: "user-0".into(),
                endpoint: "chat".into(),
                model: "m".into(),
                tokens_in: i as u64,
                total_ms: 1.0,
                status: 200,
                ..Default::default()
            })
            .collect();
        a.insert_records(&rows).unwrap();
        a.set_feedback(&memproxy::analytics::Feedback {
            request_id: "req-7".into(),
            score: Some(0.5),
            comment: Some("ok".into()),
            key_id: None,
        })
        .unwrap();
    })
    .await
    .unwrap();
    let responses = SqliteResponseStore::new(dir);
    for i in 0..20 {
        responses.put(StoredResponse {
            id: format!("resp_{i}"),
            user_id: "user-0".into(),
            created_at: memproxy::protocol::ir::now_secs(),
            native_deployment: None,
            input_items: "[]".into(),
            response: "{}".into(),
        });
    }
    responses.flush().await;
    store
}

#[tokio::test]
async fn an_embedded_install_is_copied_resumably_and_searches_alike() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = embedded_install(dir.path()).await;
    let db = TestDb::create().await;
    let url = PgUrl::parse(&db.url).unwrap();

    // Interrupted after the second chunk of memories.
    let mut chunks = 0;
    let mut stop_early = |kind: &str, _done: u64, _total: u64| {
        if kind == "memories" {
            chunks += 1;
        }
        chunks <= 2
    };
    let first = copy::run(dir.path(), &url, &mut stop_early).await;
    assert!(matches!(first, Err(CopyError::Stopped)), "{first:?}");

    // Resumed: everything is there, nothing twice.
    let mut seen = Vec::new();
    let mut record = |kind: &str, done: u64, total: u64| {
        seen.push((kind.to_string(), done, total));
        true
    };
    let counts = copy::run(dir.path(), &url, &mut record).await.unwrap();
    let by_kind = |k: &str| counts.iter().find(|c| c.kind == k).cloned().unwrap();
    for c in &counts {
        assert!(c.complete(), "{c:?}");
    }
    assert_eq!(by_kind("memories").source, MEMORIES as u64);
    assert_eq!(
        by_kind("memories").copied_now,
        MEMORIES as u64 - 1000,
        "resumed after 2 chunks"
    );
    assert_eq!(by_kind("vectors").source, by_kind("vectors").target);
    assert!(by_kind("vectors").source > 800);
    assert_eq!(by_kind("keys").target, 3);
    assert_eq!(by_kind("requests").target, REQUESTS as u64);
    assert_eq!(by_kind("responses").target, 20);
    assert!(seen
        .iter()
        .any(|(k, done, total)| k == "memories" && done == total));

    // A third run copies nothing more.
    let again = copy::run(dir.path(), &url, &mut |_: &str, _: u64, _: u64| true)
        .await
        .unwrap();
    assert!(
        again.iter().all(|c| c.copied_now == 0 && c.complete()),
        "{again:?}"
    );
    let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows: i64 = c
        .query_one("SELECT count(*) FROM memproxy_requests", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, REQUESTS as i64, "no usage row twice");
    let fb: Option<f64> = c
        .query_one(
            "SELECT feedback_score FROM memproxy_requests WHERE request_id = 'req-7'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fb, Some(0.5));
    let spend: f64 = c
        .query_one("SELECT sum(spend) FROM memproxy_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert!((spend - 1.5).abs() < 1e-9);

    // The copy ranks as the original: same ids, order and metadata, lexical and hybrid.
    let pg = PgMemoryStore::new(
        url.pool().unwrap(),
        Options {
            session_ttl: Duration::ZERO,
            session_max_messages: 10,
            clock: Arc::new(ManualClock::at(0)),
            max_memories_per_user: 0,
        },
    );
    let e = HashEmbedder::new(32);
    for (user, q) in [
        ("user-0", "topic 3 thing 4"),
        ("user-1", "we talked about topic 11"),
        ("user-2", "turn 5"),
    ] {
        for semantic in [false, true] {
            let query = SearchQuery {
                text: q.into(),
                limit: 10,
                embedding: semantic.then(|| QueryEmbedding {
                    model: e.model().into(),
                    vector: e.vector(q),
                    alone_floor: memproxy::memory::retrieve::MIN_COSINE,
                }),
            };
            let a = embedded.search(user, &query).await.unwrap();
            let b = pg.search(user, &query).await.unwrap();
            let ids = |v: &[memproxy::memory::ScoredMemory]| {
                v.iter().map(|h| h.memory.clone()).collect::<Vec<_>>()
            };
            assert_eq!(ids(&a), ids(&b), "{user}: {q} (semantic: {semantic})");
        }
    }
    let page = pg.list("user-2", 5, None).await.unwrap();
    assert_eq!(
        page.items,
        embedded.list("user-2", 5, None).await.unwrap().items
    );
}
