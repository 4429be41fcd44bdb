//! One store test suite, run over every backend of each storage trait (embedded SQLite and
//! PostgreSQL), so the backends cannot drift: [`MemoryStore`], [`KeyStore`],
//! [`ResponseStore`] and [`AnalyticsStore`]. Each PostgreSQL test gets a database of its
//! own (`common::pg::TestDb`), dropped afterwards; an unreachable server fails them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use memproxy::analytics::{AnalyticsStore, Feedback, GroupBy, Record, RequestsQuery, UsageQuery};
use memproxy::keys::{KeyRow, KeyStore};
use memproxy::memory::retrieve::{Embedder, HashEmbedder};
use memproxy::memory::{
    ManualClock, MemoryStore, NewMemory, QueryEmbedding, SearchQuery, StoreError, WriteOp,
};
use memproxy::responses_store::{ResponseStore, StoredResponse};
use serde_json::json;

use common::pg::TestDb;

const T0: i64 = 1_700_000_000_000;

/// Stores of one backend for one test; whatever they live in goes when it drops.
struct Stores {
    memory: Arc<dyn MemoryStore>,
    keys: Arc<dyn KeyStore>,
    responses: Arc<dyn ResponseStore>,
    /// Opens an analytics store (blocking: call it off the async threads).
    analytics: Box<dyn Fn() -> Box<dyn AnalyticsStore> + Send + Sync>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
    _db: Option<TestDb>,
}

fn memory_opts(clock: Arc<ManualClock>) -> (Duration, usize, Arc<ManualClock>) {
    (Duration::from_secs(3600), 4, clock)
}

fn sqlite() -> Stores {
    sqlite_with(0)
}

/// The embedded stores, with at most `quota` memories per user (0: no limit).
fn sqlite_with(quota: u64) -> Stores {
    use memproxy::storage::embedded::memory::{SqliteOptions, SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T0));
    let (session_ttl, session_max_messages, c) = memory_opts(clock.clone());
    let memory = SqliteStore::open(
        dir.path(),
        SqliteOptions {
            session_ttl,
            session_max_messages,
            clock: c,
            max_memories_per_user: quota,
        },
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    Stores {
        memory: Arc::new(memory),
        keys: Arc::new(memproxy::storage::embedded::keys::SqliteKeys::new(
            path.clone(),
        )),
        responses: Arc::new(
            memproxy::storage::embedded::responses::SqliteResponseStore::new(&path),
        ),
        analytics: Box::new(move || {
            Box::new(memproxy::storage::embedded::analytics::SqliteStore::open(&path).unwrap())
        }),
        clock,
        _dir: dir,
        _db: None,
    }
}

async fn postgres() -> Stores {
    postgres_with(0).await
}

/// The PostgreSQL stores, with at most `quota` memories per user (0: no limit).
async fn postgres_with(quota: u64) -> Stores {
    use memproxy::storage::postgres::{self as pg, memory::Options};
    let db = TestDb::create().await;
    let pool = db.pool();
    let clock = Arc::new(ManualClock::at(T0));
    let (session_ttl, session_max_messages, c) = memory_opts(clock.clone());
    let memory = pg::memory::PgMemoryStore::new(
        pool.clone(),
        Options {
            session_ttl,
            session_max_messages,
            clock: c,
            max_memories_per_user: quota,
        },
    );
    let url = pool.url().clone();
    Stores {
        memory: Arc::new(memory),
        keys: Arc::new(pg::keys::PgKeys::new(pool.clone())),
        responses: Arc::new(pg::responses::PgResponses::start(pool)),
        analytics: Box::new(move || Box::new(pg::analytics::PgAnalytics::open(&url).unwrap())),
        clock,
        _dir: tempfile::tempdir().unwrap(),
        _db: Some(db),
    }
}

fn new(user: &str, content: &str) -> NewMemory {
    NewMemory {
        user_id: user.into(),
        content: content.into(),
        metadata: Default::default(),
        session_id: None,
    }
}

fn query(text: &str, limit: usize) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        limit,
        embedding: None,
    }
}

fn contents(hits: &[memproxy::memory::ScoredMemory]) -> Vec<&str> {
    hits.iter().map(|h| h.memory.content.as_str()).collect()
}

// ---- MemoryStore ----

async fn memory_users_never_see_each_other(s: Stores) {
    let m = &s.memory;
    let a = m
        .add(vec![new("alice", "I prefer tabs over spaces")])
        .await
        .unwrap();
    m.add(vec![new("bob", "I like spaces, four of them")])
        .await
        .unwrap();
    let a_id = &a[0].id;
    for q in ["tabs", "tabs over spaces", "prefer", "alice tabs"] {
        let hits = m.search("bob", &query(q, 10)).await.unwrap();
        assert!(
            hits.iter()
                .all(|h| h.memory.user_id == "bob" && !h.memory.content.contains("tabs")),
            "{q}"
        );
    }
    assert!(matches!(
        m.get("bob", a_id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        m.delete("bob", a_id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        m.get("carol", a_id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        m.get("alice", a_id).await.unwrap().content,
        "I prefer tabs over spaces"
    );
    assert_eq!(m.list("bob", 10, None).await.unwrap().items.len(), 1);
    assert_eq!(m.delete_user("bob").await.unwrap(), 1);
    assert_eq!(m.list("alice", 10, None).await.unwrap().items.len(), 1);
    assert!(m
        .search("bob", &query("spaces", 5))
        .await
        .unwrap()
        .is_empty());
    let hits = m
        .search("alice", &query("which do I prefer, tabs?", 5))
        .await
        .unwrap();
    assert_eq!(hits[0].memory.id, *a_id);
    m.delete("alice", a_id).await.unwrap();
    assert!(matches!(
        m.get("alice", a_id).await,
        Err(StoreError::NotFound)
    ));
    assert!(m
        .search("alice", &query("tabs", 5))
        .await
        .unwrap()
        .is_empty());
}

/// A scope searched once (the embedded store may then hold it in memory) follows every
/// later write: additions are found, deletions and a deleted user's
/// memories are gone at once, a user added back is read again, and other users stay apart.
async fn memory_searches_follow_writes_after_the_first(s: Stores) {
    let m = &s.memory;
    m.add(vec![new("dora", "I keep bees on the roof")])
        .await
        .unwrap();
    m.add(vec![new("eve", "My bees swarmed in May")])
        .await
        .unwrap();
    assert_eq!(
        contents(&m.search("dora", &query("bees", 5)).await.unwrap()),
        ["I keep bees on the roof"]
    );
    let later = m
        .add(vec![new("dora", "The bees made twenty jars of honey")])
        .await
        .unwrap();
    let hits = m.search("dora", &query("bees honey", 5)).await.unwrap();
    assert_eq!(contents(&hits)[0], "The bees made twenty jars of honey");
    assert_eq!(hits.len(), 2);
    m.delete("dora", &later[0].id).await.unwrap();
    assert_eq!(
        contents(&m.search("dora", &query("honey bees", 5)).await.unwrap()),
        ["I keep bees on the roof"]
    );
    assert_eq!(m.delete_user("dora").await.unwrap(), 1);
    assert!(m
        .search("dora", &query("bees", 5))
        .await
        .unwrap()
        .is_empty());
    m.add(vec![new("dora", "Back with new bees")])
        .await
        .unwrap();
    assert_eq!(
        contents(&m.search("dora", &query("bees", 5)).await.unwrap()),
        ["Back with new bees"]
    );
    assert_eq!(
        contents(&m.search("eve", &query("bees", 5)).await.unwrap()),
        ["My bees swarmed in May"]
    );
}

/// A user's project scopes (`user#project` keys) are listed by prefix, exactly: `_` and
/// `%` in ids are not wildcards, and a scope without memories is not listed.
async fn memory_project_scopes_are_listed(s: Stores) {
    let m = &s.memory;
    for user in [
        "alice",
        "alice#web",
        "alice#api",
        "aliceb#x",
        "alic_#y",
        "bob#web",
    ] {
        m.add(vec![new(user, "a fact")]).await.unwrap();
    }
    assert_eq!(
        m.user_ids_with_prefix("alice#").await.unwrap(),
        ["alice#api", "alice#web"]
    );
    assert_eq!(m.user_ids_with_prefix("alic_#").await.unwrap(), ["alic_#y"]);
    m.delete_user("alice#api").await.unwrap();
    assert_eq!(
        m.user_ids_with_prefix("alice#").await.unwrap(),
        ["alice#web"]
    );
    assert!(m.user_ids_with_prefix("carol#").await.unwrap().is_empty());
}

async fn memory_records_come_back_unchanged(s: Stores) {
    let meta = json!({"dia_id": "D1:3", "nested": {"list": [1, 2.5, null, "x"]}, "ok": true});
    let mut n = new("u", "hello");
    n.metadata = meta.as_object().unwrap().clone();
    n.session_id = Some("s1".into());
    let created = s.memory.add(vec![n]).await.unwrap().remove(0);
    let got = s.memory.get("u", &created.id).await.unwrap();
    assert_eq!(serde_json::Value::Object(got.metadata.clone()), meta);
    assert_eq!(got.session_id.as_deref(), Some("s1"));
    assert_eq!(got.created_at_ms, T0);
    assert_eq!(got, created);
    assert!(matches!(
        s.memory.add(vec![new("u", "  ")]).await,
        Err(StoreError::Invalid(_))
    ));
}

async fn memory_captures_are_not_stored_twice(s: Stores) {
    let m = &s.memory;
    let capture = |user: &str, text: &str| WriteOp::Capture(new(user, text));
    let made = m
        .apply(vec![
            capture("u", "user: tabs or spaces?\nassistant: Tabs."),
            capture("u", "User:  Tabs or spaces?\nassistant:   tabs."),
            capture("v", "user: tabs or spaces?\nassistant: Tabs."),
        ])
        .await
        .unwrap();
    assert_eq!(made.len(), 2);
    assert!(m
        .apply(vec![capture(
            "u",
            "user: tabs or spaces?\nassistant: Tabs."
        )])
        .await
        .unwrap()
        .is_empty());
    m.add(vec![new("u", "user: tabs or spaces?\nassistant: Tabs.")])
        .await
        .unwrap();
    assert_eq!(m.list("u", 10, None).await.unwrap().items.len(), 2);
    m.delete_user("u").await.unwrap();
    assert_eq!(
        m.apply(vec![capture(
            "u",
            "user: tabs or spaces?\nassistant: Tabs."
        )])
        .await
        .unwrap()
        .len(),
        1
    );
}

/// Captures of several users in one batch, among other writes (the PostgreSQL store
/// writes a batch's captures together): each user's memories are numbered in the order
/// they were written, a text stored earlier in the batch is not stored again, and every
/// memory is found by search.
async fn memory_batched_captures_keep_each_users_order(s: Stores) {
    let m = &s.memory;
    let capture = |user: &str, text: &str| WriteOp::Capture(new(user, text));
    let made = m
        .apply(vec![
            capture("a", "alpha one"),
            capture("b", "beta one"),
            WriteOp::Turns {
                user_id: "a".into(),
                session_id: "s".into(),
                messages: vec![("user".into(), "hello".into())],
            },
            capture("a", "alpha two"),
            WriteOp::Memory(new("a", "alpha three")),
            capture("a", "alpha three"),
            capture("a", "alpha four"),
            capture("b", "beta two"),
            capture("b", "beta one"),
        ])
        .await
        .unwrap();
    assert_eq!(made.len(), 6);
    let listed = |user: &'static str| async move {
        let page = m.list(user, 10, None).await.unwrap();
        page.items
            .into_iter()
            .map(|x| x.content)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed("a").await,
        ["alpha four", "alpha three", "alpha two", "alpha one"]
    );
    assert_eq!(listed("b").await, ["beta two", "beta one"]);
    assert_eq!(m.search("a", &query("alpha", 10)).await.unwrap().len(), 4);
    assert_eq!(m.search("b", &query("beta", 10)).await.unwrap().len(), 2);
    assert_eq!(m.session_messages("a", "s").await.unwrap().len(), 1);
}

/// A NUL in a client's text (JSON `"\u0000"`, which PostgreSQL's text cannot hold) does
/// not fail the write it is in: the memory, its metadata and its session turn are stored
/// (PostgreSQL keeps U+FFFD in its place), and the other writes of the batch with it.
async fn memory_texts_with_nul_are_stored(s: Stores) {
    let m = &s.memory;
    let mut odd = new("n", "my secret is a\0b");
    odd.metadata
        .insert("model".into(), serde_json::json!("gpt\0x"));
    odd.session_id = Some("s\0".into());
    let made = m
        .apply(vec![
            WriteOp::Capture(new("n", "a plain memory")),
            WriteOp::Capture(odd),
            WriteOp::Turns {
                user_id: "n".into(),
                session_id: "s".into(),
                messages: vec![("user".into(), "hello \0 there".into())],
            },
        ])
        .await
        .unwrap();
    assert_eq!(made.len(), 2);
    let same = |stored: &str, sent: &str| stored.replace('\u{FFFD}', "\0") == sent;
    let listed = m.list("n", 10, None).await.unwrap().items;
    assert_eq!(listed.len(), 2);
    assert!(same(&listed[0].content, "my secret is a\0b"), "{listed:?}");
    assert!(same(
        listed[0].metadata["model"].as_str().unwrap(),
        "gpt\0x"
    ));
    let turns = m.session_messages("n", "s").await.unwrap();
    assert!(same(&turns[0].content, "hello \0 there"), "{turns:?}");
}

async fn memory_lists_newest_first_by_cursor(s: Stores) {
    let m = &s.memory;
    m.add((0..5).map(|i| new("u", &format!("note {i}"))).collect())
        .await
        .unwrap();
    let p1 = m.list("u", 2, None).await.unwrap();
    assert_eq!(
        p1.items
            .iter()
            .map(|x| x.content.as_str())
            .collect::<Vec<_>>(),
        ["note 4", "note 3"]
    );
    let p2 = m.list("u", 2, p1.next_cursor.as_deref()).await.unwrap();
    assert_eq!(p2.items[0].content, "note 2");
    let p3 = m.list("u", 2, p2.next_cursor.as_deref()).await.unwrap();
    assert_eq!(p3.items.len(), 1);
    assert!(p3.next_cursor.is_none());
    assert!(matches!(
        m.list("u", 2, Some("zzz")).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(m.list("nobody", 2, None).await.unwrap().items.is_empty());
}

async fn memory_search_stems_dedups_and_uses_neighbours(s: Stores) {
    let m = &s.memory;
    let mut turns: Vec<NewMemory> = [
        "Caroline: I went to a support group yesterday",
        "Melanie: How was it?",
        "Caroline: Wonderful, everyone was kind.",
        "Melanie: I painted a sunrise last week",
        "Melanie: I painted a sunrise last week",
        "Caroline: The weather is nice today",
    ]
    .iter()
    .map(|t| NewMemory {
        session_id: Some("conv".into()),
        ..new("u", t)
    })
    .collect();
    turns.push(new("u", "unrelated other session about groups"));
    m.add(turns).await.unwrap();
    let hits = m
        .search("u", &query("When did Melanie paint a sunrise?", 10))
        .await
        .unwrap();
    assert_eq!(
        hits[0].memory.content,
        "Melanie: I painted a sunrise last week"
    );
    assert_eq!(
        contents(&hits)
            .iter()
            .filter(|c| c.contains("sunrise"))
            .count(),
        1
    );
    let hits = m.search("u", &query("support group", 10)).await.unwrap();
    assert!(
        contents(&hits).contains(&"Melanie: How was it?"),
        "{:?}",
        contents(&hits)
    );
    // Two turns after the question, the answer names no word of it but its speaker: the
    // window of its session's neighbours and the named subject find it.
    let pets: Vec<NewMemory> = [
        "Melanie: What kind of pet did you finally get?",
        "Melanie: Go on, tell me!",
        "Caroline: A golden retriever puppy named Max",
    ]
    .iter()
    .map(|t| NewMemory {
        session_id: Some("pets".into()),
        ..new("u", t)
    })
    .collect();
    m.add(pets).await.unwrap();
    let hits = m
        .search("u", &query("What pet did Caroline get?", 3))
        .await
        .unwrap();
    assert!(
        contents(&hits).contains(&"Caroline: A golden retriever puppy named Max"),
        "{:?}",
        contents(&hits)
    );
    assert!(m
        .search("u", &query("the and of", 10))
        .await
        .unwrap()
        .is_empty());
    assert!(m
        .search("nobody", &query("sunrise", 10))
        .await
        .unwrap()
        .is_empty());
}

async fn memory_common_terms_do_not_hide_rare_ones(s: Stores) {
    let m = &s.memory;
    // More matches of "alpha" than a term scan reads: the old memory with the rare
    // term is still found first.
    let mut batch = vec![new("u", "alpha needle")];
    batch.extend((0..800).map(|i| {
        new(
            "u",
            &format!("{} filler {i}", if i % 2 == 0 { "alpha" } else { "beta" }),
        )
    }));
    m.add(batch).await.unwrap();
    let hits = m.search("u", &query("alpha needle", 3)).await.unwrap();
    assert_eq!(hits[0].memory.content, "alpha needle");
    let mut batch: Vec<NewMemory> = (0..150)
        .map(|i| new("v", &format!("common filler {i}")))
        .collect();
    batch.push(new("v", "common rare"));
    m.add(batch).await.unwrap();
    assert_eq!(
        m.search("v", &query("common rare", 3)).await.unwrap()[0]
            .memory
            .content,
        "common rare"
    );
}

async fn memory_hybrid_search_uses_vectors_of_one_model(s: Stores) {
    let m = &s.memory;
    let e = HashEmbedder::new(64);
    let created = m
        .add(vec![new("u", "tabs are better"), new("u", "cats and dogs")])
        .await
        .unwrap();
    let vectors = created
        .iter()
        .map(|x| (x.id.clone(), e.vector(&x.content)))
        .collect();
    m.apply(vec![WriteOp::Embeddings {
        user_id: "u".into(),
        model: e.model().into(),
        vectors,
    }])
    .await
    .unwrap();
    let mut q = query("zzz", 5);
    q.embedding = Some(QueryEmbedding {
        model: e.model().into(),
        vector: e.vector("dogs"),
        alone_floor: memproxy::memory::retrieve::MIN_COSINE,
    });
    let hits = m.search("u", &q).await.unwrap();
    assert_eq!(
        hits[0].memory.content, "cats and dogs",
        "found through its vector only"
    );
    // A vector stored later is found too (the PostgreSQL index catches up).
    let later = m.add(vec![new("u", "parrots sing")]).await.unwrap();
    m.apply(vec![WriteOp::Embeddings {
        user_id: "u".into(),
        model: e.model().into(),
        vectors: vec![(later[0].id.clone(), e.vector("parrots sing"))],
    }])
    .await
    .unwrap();
    q.embedding.as_mut().unwrap().vector = e.vector("parrots");
    assert_eq!(
        m.search("u", &q).await.unwrap()[0].memory.content,
        "parrots sing"
    );
    // Deleted memories are gone from semantic results.
    m.delete("u", &later[0].id).await.unwrap();
    assert!(!contents(&m.search("u", &q).await.unwrap()).contains(&"parrots sing"));
    q.embedding.as_mut().unwrap().model = "other".into();
    assert!(m.search("u", &q).await.unwrap().is_empty());
    assert!(m.search("v", &q).await.unwrap().is_empty());
    // A deleted user's vectors are gone with them.
    q.embedding.as_mut().unwrap().model = e.model().into();
    q.embedding.as_mut().unwrap().vector = e.vector("dogs");
    assert_eq!(m.delete_user("u").await.unwrap(), 2);
    assert!(m.search("u", &q).await.unwrap().is_empty());
}

/// A scope large enough for its vectors to be scored apart from the lexical part of a
/// search (another thread, or the blocking pool): the same hits, deletions seen, and
/// still one user's vectors only.
async fn memory_large_scopes_are_scored_apart(s: Stores) {
    let m = &s.memory;
    let e = HashEmbedder::new(64);
    let n = memproxy::memory::vectors::SCORE_APART_FROM + 100;
    let text = |i: usize| format!("note {i} about subject{i} and word{}", i % 97);
    // Written as captures: one batched write on both backends.
    let created = m
        .apply(
            (0..n)
                .map(|i| WriteOp::Capture(new("big", &text(i))))
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(created.len(), n);
    let vectors = created
        .iter()
        .map(|x| (x.id.clone(), e.vector(&x.content)))
        .collect();
    m.apply(vec![WriteOp::Embeddings {
        user_id: "big".into(),
        model: e.model().into(),
        vectors,
    }])
    .await
    .unwrap();
    let semantic = |words: &str, vector_of: &str| {
        let mut q = query(words, 5);
        q.embedding = Some(QueryEmbedding {
            model: e.model().into(),
            vector: e.vector(vector_of),
            alone_floor: memproxy::memory::retrieve::MIN_COSINE,
        });
        q
    };
    // Through the vector only, and through both parts.
    let q = semantic("zzz", &text(4321));
    assert_eq!(
        m.search("big", &q).await.unwrap()[0].memory.content,
        text(4321)
    );
    let q = semantic("subject77", &text(77));
    assert_eq!(
        m.search("big", &q).await.unwrap()[0].memory.content,
        text(77)
    );
    // A deleted memory is gone from the next search; another user finds nothing.
    m.delete("big", &created[4321].id).await.unwrap();
    let q = semantic("zzz", &text(4321));
    assert!(!contents(&m.search("big", &q).await.unwrap()).contains(&text(4321).as_str()));
    // A scope this large is ranked from the term index: a write after it was loaded is
    // found lexically at once, and gone once deleted.
    let quokka = m
        .add(vec![new("big", "a quokka took the ferry")])
        .await
        .unwrap();
    let hits = m.search("big", &query("quokka", 5)).await.unwrap();
    assert_eq!(contents(&hits), vec!["a quokka took the ferry"]);
    m.delete("big", &quokka[0].id).await.unwrap();
    assert!(m
        .search("big", &query("quokka", 5))
        .await
        .unwrap()
        .is_empty());
    m.add(vec![new("small", "hello there")]).await.unwrap();
    let theirs = m.search("small", &q).await.unwrap();
    assert!(
        contents(&theirs).iter().all(|c| *c == "hello there"),
        "{:?}",
        contents(&theirs)
    );
}

/// The re-embedding's walk: every memory without a vector of the model, of every user,
/// once, page by page; those with one (of that model) are skipped.
async fn memory_unembedded_walks_every_user_once(s: Stores) {
    let m = &s.memory;
    let mut made = m
        .add(vec![new("u", "one"), new("v", "two"), new("u", "three")])
        .await
        .unwrap();
    made.extend(
        m.add(vec![new("v", "four"), new("w", "five")])
            .await
            .unwrap(),
    );
    let e = HashEmbedder::new(8);
    let embed = |i: usize, model: &str| WriteOp::Embeddings {
        user_id: made[i].user_id.clone(),
        model: model.into(),
        vectors: vec![(made[i].id.clone(), e.vector(&made[i].content))],
    };
    m.apply(vec![embed(0, "m1"), embed(1, "m0")]).await.unwrap();
    assert_eq!(m.count_unembedded("m1").await.unwrap(), 4);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = m.unembedded("m1", cursor.as_deref(), 2).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(
            page.items
                .iter()
                .map(|x| (x.user_id.clone(), x.content.clone())),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    seen.sort();
    let want: Vec<(String, String)> = [("u", "three"), ("v", "four"), ("v", "two"), ("w", "five")]
        .iter()
        .map(|(u, c)| (u.to_string(), c.to_string()))
        .collect();
    assert_eq!(seen, want);
    assert!(m.unembedded("m1", Some("bad cursor"), 2).await.is_err());
    m.apply(vec![
        embed(1, "m1"),
        embed(2, "m1"),
        embed(3, "m1"),
        embed(4, "m1"),
    ])
    .await
    .unwrap();
    assert_eq!(m.count_unembedded("m1").await.unwrap(), 0);
    assert!(m.unembedded("m1", None, 10).await.unwrap().items.is_empty());
}

async fn memory_sessions_keep_the_newest_and_expire(s: Stores) {
    let m = &s.memory;
    let turns = |n: usize| WriteOp::Turns {
        user_id: "u".into(),
        session_id: "s".into(),
        messages: (0..n).map(|i| ("user".into(), format!("m{i}"))).collect(),
    };
    m.apply(vec![turns(3)]).await.unwrap();
    m.apply(vec![turns(3)]).await.unwrap();
    let msgs = m.session_messages("u", "s").await.unwrap();
    assert_eq!(
        msgs.iter().map(|x| x.content.as_str()).collect::<Vec<_>>(),
        ["m2", "m0", "m1", "m2"]
    );
    assert!(m.session_messages("v", "s").await.unwrap().is_empty());
    assert_eq!(m.list_sessions(Some("u")).await.unwrap().len(), 1);
    assert_eq!(
        m.list_sessions(Some("u")).await.unwrap()[0].message_count,
        4
    );
    assert!(m.list_sessions(Some("v")).await.unwrap().is_empty());
    assert_eq!(m.get_session(None, "s").await.unwrap().messages.len(), 4);
    s.clock.advance(Duration::from_secs(3601));
    assert!(m.session_messages("u", "s").await.unwrap().is_empty());
    assert!(m.list_sessions(None).await.unwrap().is_empty());
    assert!(matches!(
        m.get_session(None, "s").await,
        Err(StoreError::NotFound)
    ));
    m.apply(vec![turns(1)]).await.unwrap();
    assert_eq!(m.session_messages("u", "s").await.unwrap().len(), 1);
    s.clock.advance(Duration::from_secs(3601));
    assert_eq!(m.purge_expired().await.unwrap(), 1);
}

async fn memory_shared_session_ids_need_a_user(s: Stores) {
    let m = &s.memory;
    for u in ["a", "b"] {
        m.apply(vec![WriteOp::Turns {
            user_id: u.into(),
            session_id: "same".into(),
            messages: vec![("user".into(), format!("from {u}"))],
        }])
        .await
        .unwrap();
    }
    assert!(matches!(
        m.get_session(None, "same").await,
        Err(StoreError::Ambiguous(_))
    ));
    assert!(matches!(
        m.delete_session(None, "same").await,
        Err(StoreError::Ambiguous(_))
    ));
    assert_eq!(
        m.get_session(Some("b"), "same").await.unwrap().messages[0].content,
        "from b"
    );
    m.delete_session(Some("a"), "same").await.unwrap();
    assert_eq!(m.get_session(None, "same").await.unwrap().info.user_id, "b");
    assert!(matches!(
        m.delete_session(Some("a"), "same").await,
        Err(StoreError::NotFound)
    ));
    m.health().await.unwrap();
}

// ---- KeyStore ----

fn key(hash: &str, created_ms: i64) -> KeyRow {
    KeyRow {
        hash: hash.into(),
        alias: Some(format!("alias-{hash}")),
        user_id: Some("u".into()),
        project: Some("web".into()),
        models: vec!["gpt-*".into()],
        max_budget: Some(2.5),
        expires_ms: Some(T0 + 1000),
        rpm_limit: Some(10),
        tpm_limit: None,
        metadata: json!({"team": "a"}),
        created_ms,
        preview: "sk-...abcd".into(),
        spend: 0.0,
    }
}

async fn keys_round_trip(s: Stores) {
    let k = &s.keys;
    assert!(k.load().await.unwrap().is_empty());
    k.insert(&key("h2", 2)).await.unwrap();
    k.insert(&key("h1", 1)).await.unwrap();
    assert!(
        k.insert(&key("h1", 1)).await.is_err(),
        "a hash is stored once"
    );
    let all = k.load().await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.hash.as_str()).collect::<Vec<_>>(),
        ["h1", "h2"]
    );
    assert_eq!(all[0], key("h1", 1));
    assert_eq!(k.get("h2").await.unwrap(), Some(key("h2", 2)));
    assert_eq!(k.get("nope").await.unwrap(), None);
    assert_eq!(k.delete(&["h1".into(), "zz".into()]).await.unwrap(), ["h1"]);
    assert_eq!(k.load().await.unwrap().len(), 1);
}

// ---- ResponseStore ----

fn response(user: &str, id: &str) -> StoredResponse {
    StoredResponse {
        id: id.into(),
        user_id: user.into(),
        created_at: memproxy::protocol::ir::now_secs(),
        native_deployment: Some("dep".into()),
        input_items: "[]".into(),
        response: format!("{{\"id\":\"{id}\"}}"),
    }
}

async fn responses_scoped_and_durable(s: Stores) {
    let r = &s.responses;
    // One value: a second `response()` may fall in the next second (created_at).
    let first = response("u", "resp_1");
    r.put(first.clone());
    assert_eq!(
        r.get("u", "resp_1").await.unwrap(),
        Some(first.clone()),
        "readable at once"
    );
    r.flush().await;
    assert_eq!(
        r.get("u", "resp_1").await.unwrap(),
        Some(first.clone()),
        "after the write"
    );
    assert_eq!(r.get("v", "resp_1").await.unwrap(), None, "another user's");
    let mut newer = first;
    newer.response = "{\"v\":2}".into();
    r.put(newer.clone());
    r.flush().await;
    assert_eq!(r.get("u", "resp_1").await.unwrap(), Some(newer));
    assert!(!r.delete("v", "resp_1").await.unwrap());
    assert!(r.delete("u", "resp_1").await.unwrap());
    assert_eq!(r.get("u", "resp_1").await.unwrap(), None);
    r.put(response("u", "resp_2"));
    assert!(
        r.delete("u", "resp_2").await.unwrap(),
        "a delete right after a put"
    );
    r.flush().await;
    assert_eq!(r.get("u", "resp_2").await.unwrap(), None);
}

// ---- AnalyticsStore ----

fn row(i: usize, user: &str, model: &str, key: Option<&str>, total_ms: f64, cost: f64) -> Record {
    Record {
        ts_ms: T0 + i as i64 * 1000,
        request_id: format!("req-{i}"),
        user_id: user.into(),
        key_id: key.map(str::to_string),
        key_alias: key.map(|k| format!("alias-{k}")),
        endpoint: "chat".into(),
        model: model.into(),
        tokens_in: 10,
        tokens_out: 5,
        cost_usd: Some(cost),
        total_ms,
        status: if i.is_multiple_of(5) { 500 } else { 200 },
        client: if i.is_multiple_of(3) {
            "codex"
        } else {
            "claude-code"
        }
        .into(),
        ..Default::default()
    }
}

/// Runs `f` on a thread of its own (analytics stores block).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// A usage row whose texts hold a NUL (a client's model name `"x\u0000y"`) is written,
/// and so are the rows of its batch.
async fn analytics_rows_with_nul_are_written(s: Stores) {
    let open = s.analytics;
    blocking(move || {
        let mut a = open();
        let mut odd = row(1, "u1", "x\0y", None, 1.0, 0.0);
        odd.client = "cli\0".into();
        odd.error_type = Some("unknown_model\0".into());
        a.insert_records(&[row(0, "u1", "m", None, 1.0, 0.0), odd])
            .unwrap();
        let groups = a
            .usage(&UsageQuery {
                group_by: GroupBy::Model,
                from_ms: None,
                to_ms: None,
            })
            .unwrap();
        let mut models: Vec<String> = groups
            .iter()
            .map(|g| g.group.replace('\u{FFFD}', "\0"))
            .collect();
        models.sort();
        assert_eq!(models, ["m", "x\0y"]);
    })
    .await
}

async fn analytics_totals_pages_feedback_and_spend(s: Stores) {
    s.keys.insert(&key("kh", 1)).await.unwrap();
    let open = s.analytics;
    blocking(move || {
        let mut a = open();
        let rows: Vec<Record> = (0..20)
            .map(|i| {
                row(
                    i,
                    if i % 2 == 0 { "u1" } else { "u2" },
                    "m",
                    (i < 4).then_some("kh"),
                    (i + 1) as f64,
                    0.25,
                )
            })
            .collect();
        a.insert_records(&rows[..7]).unwrap();
        a.insert_records(&rows[7..]).unwrap();
        let groups = a
            .usage(&UsageQuery {
                group_by: GroupBy::User,
                from_ms: None,
                to_ms: None,
            })
            .unwrap();
        assert_eq!(
            groups
                .iter()
                .map(|g| (g.group.as_str(), g.requests))
                .collect::<Vec<_>>(),
            [("u1", 10), ("u2", 10)]
        );
        let u1 = &groups[0];
        assert_eq!((u1.tokens_in, u1.tokens_out, u1.errors), (100, 50, 2));
        assert!((u1.cost_usd - 2.5).abs() < 1e-9);
        // Nearest rank over u1's 1, 3, ..., 19 ms.
        assert_eq!((u1.latency_p50_ms, u1.latency_p95_ms), (9.0, 19.0));
        let keys = a
            .usage(&UsageQuery {
                group_by: GroupBy::Key,
                from_ms: None,
                to_ms: None,
            })
            .unwrap();
        assert_eq!(
            keys.iter().map(|g| g.group.as_str()).collect::<Vec<_>>(),
            ["(master)", "kh"]
        );
        assert_eq!(keys[1].key_alias.as_deref(), Some("alias-kh"));
        let clients = a
            .usage(&UsageQuery {
                group_by: GroupBy::Client,
                from_ms: None,
                to_ms: None,
            })
            .unwrap();
        assert_eq!(
            clients
                .iter()
                .map(|g| (g.group.as_str(), g.requests))
                .collect::<Vec<_>>(),
            [("claude-code", 13), ("codex", 7)]
        );
        let by_client = a
            .requests(&RequestsQuery {
                client: Some("codex".into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(by_client.len(), 7);
        let days = a
            .usage(&UsageQuery {
                group_by: GroupBy::Day,
                from_ms: Some(T0 + 5000),
                to_ms: Some(T0 + 10_000),
            })
            .unwrap();
        assert_eq!(
            (days[0].group.as_str(), days[0].requests),
            ("2023-11-14", 5)
        );
        let page = a
            .requests(&RequestsQuery {
                user_id: Some("u2".into()),
                limit: 3,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            page.iter()
                .map(|r| r.record.request_id.as_str())
                .collect::<Vec<_>>(),
            ["req-19", "req-17", "req-15"]
        );
        assert_eq!(page[0].record, rows[19]);
        let next = a
            .requests(&RequestsQuery {
                user_id: Some("u2".into()),
                limit: 3,
                before_id: Some(page[2].id),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(next[0].record.request_id, "req-13");
        assert!(a
            .set_feedback(&Feedback {
                request_id: "req-3".into(),
                score: Some(1.0),
                comment: Some("good".into()),
                key_id: None
            })
            .unwrap());
        assert!(!a
            .set_feedback(&Feedback {
                request_id: "req-3".into(),
                score: Some(0.0),
                comment: None,
                key_id: Some("other".into())
            })
            .unwrap());
        assert!(!a
            .set_feedback(&Feedback {
                request_id: "nope".into(),
                score: None,
                comment: None,
                key_id: None
            })
            .unwrap());
        let rated = a
            .requests(&RequestsQuery {
                request_id: Some("req-3".into()),
                limit: 5,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            (
                rated[0].feedback_score,
                rated[0].feedback_comment.as_deref()
            ),
            (Some(1.0), Some("good"))
        );
        a.check().unwrap();
    })
    .await;
    // Spend was added with the rows: 4 rows of 0.25.
    let spend = s.keys.get("kh").await.unwrap().unwrap().spend;
    assert!((spend - 1.0).abs() < 1e-9, "{spend}");
}

/// Each case over each backend: `sqlite::<case>` and `postgres::<case>`.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::sqlite()).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $case() {
                super::$case(super::postgres().await).await
            })*
        }
    };
}

suite!(
    memory_users_never_see_each_other,
    memory_searches_follow_writes_after_the_first,
    memory_project_scopes_are_listed,
    memory_records_come_back_unchanged,
    memory_captures_are_not_stored_twice,
    memory_batched_captures_keep_each_users_order,
    memory_texts_with_nul_are_stored,
    memory_lists_newest_first_by_cursor,
    memory_search_stems_dedups_and_uses_neighbours,
    memory_common_terms_do_not_hide_rare_ones,
    memory_hybrid_search_uses_vectors_of_one_model,
    memory_large_scopes_are_scored_apart,
    memory_unembedded_walks_every_user_once,
    memory_sessions_keep_the_newest_and_expire,
    memory_shared_session_ids_need_a_user,
    keys_round_trip,
    responses_scoped_and_durable,
    analytics_totals_pages_feedback_and_spend,
    analytics_rows_with_nul_are_written,
);

/// `max_memories_per_user`, counted over the user's own and project scopes, inside the
/// write transaction: an add past it is refused, a capture skipped, other users untouched.
async fn memory_quota_counts_every_scope_of_a_user(s: Stores) {
    let m = &s.memory;
    m.add(vec![new("q", "fact one"), new("q#p1", "fact two")])
        .await
        .unwrap();
    // One batch may not pass the limit either.
    let e = m
        .add(vec![new("q#p2", "fact three"), new("q", "fact four")])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Quota(_)), "{e:?}");
    m.add(vec![new("q#p2", "fact three")]).await.unwrap();
    let e = m.add(vec![new("q", "fact four")]).await.unwrap_err();
    assert!(matches!(e, StoreError::Quota(_)), "{e:?}");
    let created = m
        .apply(vec![WriteOp::Capture(new("q", "a captured exchange"))])
        .await
        .unwrap();
    assert!(created.is_empty(), "capture skipped past the quota");
    for other in ["qq", "q2", "r#p1"] {
        m.add(vec![new(other, "fact one")]).await.unwrap();
    }
    let id = m.list("q#p1", 10, None).await.unwrap().items[0].id.clone();
    m.delete("q#p1", &id).await.unwrap();
    m.add(vec![new("q", "fact four")]).await.unwrap();
}

#[tokio::test]
async fn sqlite_memory_quota() {
    memory_quota_counts_every_scope_of_a_user(sqlite_with(3)).await
}

#[tokio::test]
async fn postgres_memory_quota() {
    memory_quota_counts_every_scope_of_a_user(postgres_with(3).await).await
}

/// The same memories and queries give the same rankings on both backends.
#[tokio::test]
async fn both_backends_rank_alike() {
    let (a, b) = (sqlite(), postgres().await);
    let e = HashEmbedder::new(64);
    let speakers = ["Ann", "Bo"];
    let words = [
        "garden", "painting", "camping", "guitar", "school", "dog", "recipe", "hiking", "museum",
        "yoga",
    ];
    let mut batch = Vec::new();
    for i in 0..300usize {
        let text = format!(
            "{}: I went {} with my {} and a {} on day {}",
            speakers[i % 2],
            words[i % 10],
            words[(i / 10) % 10],
            words[(i * 7) % 10],
            i
        );
        batch.push(NewMemory {
            session_id: Some(format!("s{}", i / 20)),
            ..new("u", &text)
        });
    }
    for s in [&a, &b] {
        let made = s.memory.add(batch.clone()).await.unwrap();
        let vectors = made
            .iter()
            .map(|m| (m.id.clone(), e.vector(&m.content)))
            .collect();
        s.memory
            .apply(vec![WriteOp::Embeddings {
                user_id: "u".into(),
                model: e.model().into(),
                vectors,
            }])
            .await
            .unwrap();
    }
    for q in [
        "garden dog",
        "painting with Bo",
        "yoga museum day 42",
        "camping recipe",
        "when did Ann go hiking?",
    ] {
        for semantic in [false, true] {
            let mut sq = query(q, 10);
            if semantic {
                sq.embedding = Some(QueryEmbedding {
                    model: e.model().into(),
                    vector: e.vector(q),
                    alone_floor: memproxy::memory::retrieve::MIN_COSINE,
                });
            }
            let x = a.memory.search("u", &sq).await.unwrap();
            let y = b.memory.search("u", &sq).await.unwrap();
            assert_eq!(contents(&x), contents(&y), "{q} (semantic: {semantic})");
            for (p, r) in x.iter().zip(&y) {
                assert!(
                    (p.score - r.score).abs() < 1e-9,
                    "{q}: {} vs {}",
                    p.score,
                    r.score
                );
            }
        }
    }
}

/// Two PostgreSQL stores on one database, as two instances: what one deletes is never
/// returned by the other's next search, although that one keeps what its searches read
/// of each memory; the search still fills its limit from the memories left.
#[tokio::test]
async fn postgres_deletions_on_another_instance_leave_searches_full() {
    use memproxy::storage::postgres::{self as pg, memory::Options};
    let db = TestDb::create().await;
    let clock = Arc::new(ManualClock::at(T0));
    let store = || {
        let (session_ttl, session_max_messages, c) = memory_opts(clock.clone());
        pg::memory::PgMemoryStore::new(
            db.pool(),
            Options {
                session_ttl,
                session_max_messages,
                clock: c,
                max_memories_per_user: 0,
            },
        )
    };
    let (a, b) = (store(), store());
    let created = a
        .add(
            (0..8)
                .map(|i| new("u", &format!("garden note {i}")))
                .collect(),
        )
        .await
        .unwrap();
    let e = HashEmbedder::new(64);
    a.apply(vec![WriteOp::Embeddings {
        user_id: "u".into(),
        model: e.model().into(),
        vectors: created
            .iter()
            .map(|x| (x.id.clone(), e.vector(&x.content)))
            .collect(),
    }])
    .await
    .unwrap();
    // Found by their vectors, which `a` keeps in its index, as it keeps their lights.
    let mut q = query("zzz", 3);
    q.embedding = Some(QueryEmbedding {
        model: e.model().into(),
        vector: e.vector("garden note"),
        alone_floor: memproxy::memory::retrieve::MIN_COSINE,
    });
    let before = a.search("u", &q).await.unwrap();
    assert_eq!(before.len(), 3);
    for hit in &before {
        b.delete("u", &hit.memory.id).await.unwrap();
    }
    let after = a.search("u", &q).await.unwrap();
    assert_eq!(after.len(), 3, "{:?}", contents(&after));
    for hit in &after {
        assert!(before.iter().all(|g| g.memory.id != hit.memory.id));
        assert!(created.iter().any(|c| c.id == hit.memory.id));
    }
}
