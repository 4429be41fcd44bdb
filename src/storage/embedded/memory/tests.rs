use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::memory::retrieve::{Embedder, HashEmbedder};
use crate::memory::store::{NewMemory, QueryEmbedding};
use crate::memory::ManualClock;

const T0: i64 = 1_700_000_000_000;

fn open_with(dir: &Path, clock: Arc<ManualClock>) -> SqliteStore {
    SqliteStore::open(
        dir,
        SqliteOptions {
            session_ttl: Duration::from_secs(3600),
            session_max_messages: 4,
            clock,
            max_memories_per_user: 0,
        },
    )
    .unwrap()
}

fn open(dir: &Path) -> SqliteStore {
    open_with(dir, Arc::new(ManualClock::at(T0)))
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

#[test]
fn bundled_sqlite_has_fts5_with_contentless_delete() {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch("CREATE VIRTUAL TABLE t USING fts5(x, content='', contentless_delete=1)")
        .unwrap();
    c.execute_batch(
        "INSERT INTO t(rowid, x) VALUES (1, 'a b'), (2, 'a c'), (3, 'a'); DELETE FROM t WHERE rowid = 1;",
    )
    .unwrap();
    // bm25 works on this table kind (it does not with detail=column).
    let (rowid, rank): (i64, f64) = c
        .query_row(
            "SELECT rowid, rank FROM t WHERE t MATCH 'a OR c' ORDER BY rank LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(rowid, 2);
    assert!(rank < 0.0, "{rank}");
}

#[tokio::test]
async fn users_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let a = s
        .add(vec![new("alice", "I prefer tabs over spaces")])
        .await
        .unwrap();
    s.add(vec![new("bob", "I like spaces, four of them")])
        .await
        .unwrap();
    let a_id = &a[0].id;

    // Bob's crafted queries find nothing of Alice's.
    for q in ["tabs", "tabs over spaces", "prefer", "alice tabs"] {
        let hits = s.search("bob", &query(q, 10)).await.unwrap();
        assert!(hits.iter().all(|h| h.memory.user_id == "bob"), "{q}");
        assert!(
            hits.iter().all(|h| !h.memory.content.contains("tabs")),
            "{q}"
        );
    }
    // Ids of another user are not found, not readable, not deletable.
    assert!(matches!(
        s.get("bob", a_id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.delete("bob", a_id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.get("carol", a_id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        s.get("alice", a_id).await.unwrap().content,
        "I prefer tabs over spaces"
    );
    // Listing and forgetting are per user.
    assert_eq!(s.list("bob", 10, None).await.unwrap().items.len(), 1);
    assert_eq!(s.delete_user("bob").await.unwrap(), 1);
    assert_eq!(s.list("alice", 10, None).await.unwrap().items.len(), 1);
    assert!(s
        .search("bob", &query("spaces", 5))
        .await
        .unwrap()
        .is_empty());
    let hits = s
        .search("alice", &query("which do I prefer, tabs?", 5))
        .await
        .unwrap();
    assert_eq!(hits[0].memory.id, *a_id);
}

#[tokio::test]
async fn metadata_and_session_come_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let meta = json!({"dia_id": "D1:3", "nested": {"list": [1, 2.5, null, "x"]}, "ok": true});
    let mut m = new("u", "hello");
    m.metadata = meta.as_object().unwrap().clone();
    m.session_id = Some("s1".into());
    let created = s.add(vec![m]).await.unwrap().remove(0);
    let got = s.get("u", &created.id).await.unwrap();
    assert_eq!(serde_json::Value::Object(got.metadata.clone()), meta);
    assert_eq!(got.session_id.as_deref(), Some("s1"));
    assert_eq!(got.created_at_ms, T0);
    assert_eq!(got, created);
}

#[tokio::test]
async fn a_capture_the_user_already_has_is_not_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let capture = |user: &str, text: &str| WriteOp::Capture(new(user, text));
    let made = s
        .apply(vec![
            capture("u", "user: tabs or spaces?\nassistant: Tabs."),
            capture("u", "User:  Tabs or spaces?\nassistant:   tabs."),
            capture("v", "user: tabs or spaces?\nassistant: Tabs."),
        ])
        .await
        .unwrap();
    assert_eq!(made.len(), 2, "the same normalised content once per user");
    let again = s
        .apply(vec![capture(
            "u",
            "user: tabs or spaces?\nassistant: Tabs.",
        )])
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(s.list("u", 10, None).await.unwrap().items.len(), 1);
    assert_eq!(s.list("v", 10, None).await.unwrap().items.len(), 1);
    // Memories added through the API are stored as asked, duplicates included.
    s.add(vec![new("u", "user: tabs or spaces?\nassistant: Tabs.")])
        .await
        .unwrap();
    assert_eq!(s.list("u", 10, None).await.unwrap().items.len(), 2);
    // Once forgotten, the same exchange is captured again.
    s.delete_user("u").await.unwrap();
    let back = s
        .apply(vec![capture(
            "u",
            "user: tabs or spaces?\nassistant: Tabs.",
        )])
        .await
        .unwrap();
    assert_eq!(back.len(), 1);
}

#[tokio::test]
async fn list_pages_newest_first_with_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let batch = (0..5).map(|i| new("u", &format!("note {i}"))).collect();
    s.add(batch).await.unwrap();
    let p1 = s.list("u", 2, None).await.unwrap();
    assert_eq!(
        p1.items
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["note 4", "note 3"]
    );
    let p2 = s.list("u", 2, p1.next_cursor.as_deref()).await.unwrap();
    assert_eq!(p2.items[0].content, "note 2");
    let p3 = s.list("u", 2, p2.next_cursor.as_deref()).await.unwrap();
    assert_eq!(p3.items.len(), 1);
    assert!(p3.next_cursor.is_none());
    assert!(matches!(
        s.list("u", 2, Some("zzz")).await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn search_ranks_stems_dedups_and_uses_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut turns: Vec<NewMemory> = [
        "Caroline: I went to a support group yesterday",
        "Melanie: How was it?",
        "Caroline: Wonderful, everyone was kind.",
        "Melanie: I painted a sunrise last week",
        "Melanie: I painted a sunrise last week",
        "Caroline: The weather is nice today",
    ]
    .iter()
    .map(|t| {
        let mut m = new("u", t);
        m.session_id = Some("conv".into());
        m
    })
    .collect();
    turns.push(new("u", "unrelated other session about groups"));
    s.add(turns).await.unwrap();

    let hits = s
        .search("u", &query("When did Melanie paint a sunrise?", 10))
        .await
        .unwrap();
    assert_eq!(
        hits[0].memory.content,
        "Melanie: I painted a sunrise last week"
    );
    // The duplicate is dropped.
    assert_eq!(
        hits.iter()
            .filter(|h| h.memory.content.contains("sunrise"))
            .count(),
        1
    );
    // A turn with no query word is found through its neighbour.
    let hits = s.search("u", &query("support group", 10)).await.unwrap();
    assert!(hits
        .iter()
        .any(|h| h.memory.content == "Melanie: How was it?"));
    assert!(s
        .search("u", &query("the and of", 10))
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .search("nobody", &query("sunrise", 10))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn document_frequencies_are_counted_when_candidates_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut batch: Vec<NewMemory> = (0..150)
        .map(|i| new("u", &format!("common filler {i}")))
        .collect();
    batch.push(new("u", "common rare"));
    s.add(batch).await.unwrap();
    let hits = s.search("u", &query("common rare", 3)).await.unwrap();
    assert_eq!(hits[0].memory.content, "common rare");
}

#[tokio::test]
async fn common_terms_are_capped_and_their_frequency_extrapolated() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let cap = read::TERM_SCAN_CAP;
    // The oldest memory has the rare term; every other one of 3 × cap has "alpha".
    let mut batch = vec![new("u", "alpha needle")];
    batch.extend((0..3 * cap).map(|i| {
        let w = if i % 2 == 0 { "alpha" } else { "beta" };
        new("u", &format!("{w} filler {i}"))
    }));
    s.add(batch).await.unwrap();
    let conn = rusqlite::Connection::open(s.path()).unwrap();
    let u = read::user(&conn, "u").unwrap().unwrap();
    let alpha = read::scan_term(&conn, &u, "alpha").unwrap();
    assert_eq!(alpha.rids.len(), cap, "only the newest matches are read");
    let exact = 3 * cap as u64 / 2 + 1;
    assert!(alpha.df.abs_diff(exact) <= 2, "{} vs {exact}", alpha.df);
    assert_eq!(read::scan_term(&conn, &u, "needl").unwrap().df, 1);
    // The old memory is still found through its rare term.
    let hits = s.search("u", &query("alpha needle", 3)).await.unwrap();
    assert_eq!(hits[0].memory.content, "alpha needle");
}

#[tokio::test]
async fn hybrid_search_fuses_vectors_of_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let e = HashEmbedder::new(64);
    let created = s
        .add(vec![new("u", "tabs are better"), new("u", "cats and dogs")])
        .await
        .unwrap();
    let vectors = created
        .iter()
        .map(|m| (m.id.clone(), e.vector(&m.content)))
        .collect();
    s.apply(vec![WriteOp::Embeddings {
        user_id: "u".into(),
        model: e.model().into(),
        vectors,
    }])
    .await
    .unwrap();
    let mut q = query("dogs", 5);
    q.embedding = Some(QueryEmbedding {
        model: e.model().into(),
        vector: e.vector("dogs"),
        alone_floor: crate::memory::retrieve::MIN_COSINE,
    });
    let hits = s.search("u", &q).await.unwrap();
    assert_eq!(hits[0].memory.content, "cats and dogs");
    // A vector of another model is ignored; another user's vectors are never compared.
    q.embedding.as_mut().unwrap().model = "other".into();
    assert_eq!(s.search("u", &q).await.unwrap().len(), 1);
    assert!(s.search("v", &q).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_vector_index_follows_writes_and_deletions_after_it_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let e = HashEmbedder::new(64);
    let embed = |s: &SqliteStore, ms: Vec<crate::memory::Memory>| {
        let vectors = ms
            .iter()
            .map(|m| (m.id.clone(), e.vector(&m.content)))
            .collect();
        let s = s.clone();
        async move {
            s.apply(vec![WriteOp::Embeddings {
                user_id: "u".into(),
                model: "hash-64".into(),
                vectors,
            }])
            .await
            .unwrap()
        }
    };
    // Only the vector can find these: "zzz" matches no term.
    let semantic = |text: &str| {
        let mut q = query("zzz", 5);
        q.embedding = Some(QueryEmbedding {
            model: "hash-64".into(),
            vector: e.vector(text),
            alone_floor: crate::memory::retrieve::MIN_COSINE,
        });
        q
    };
    let first = s.add(vec![new("u", "tabs are better")]).await.unwrap();
    embed(&s, first.clone()).await;
    // The first semantic search loads the scope's vectors into the index.
    let hits = s.search("u", &semantic("tabs are better")).await.unwrap();
    assert_eq!(hits[0].memory.content, "tabs are better");
    // Written after the load: found through the index, which the writer keeps current.
    let second = s.add(vec![new("u", "cats and dogs")]).await.unwrap();
    embed(&s, second.clone()).await;
    let hits = s.search("u", &semantic("cats and dogs")).await.unwrap();
    assert_eq!(hits[0].memory.content, "cats and dogs");
    // A deleted memory leaves the index at once; so does a deleted user's every vector.
    s.delete("u", &second[0].id).await.unwrap();
    let hits = s.search("u", &semantic("cats and dogs")).await.unwrap();
    assert!(hits.iter().all(|h| h.memory.content != "cats and dogs"));
    s.delete_user("u").await.unwrap();
    assert!(s
        .search("u", &semantic("tabs are better"))
        .await
        .unwrap()
        .is_empty());
    // Another store on the same file loads what is stored.
    let third = s.add(vec![new("u", "vim over emacs")]).await.unwrap();
    embed(&s, third).await;
    s.close();
    let reopened = open(dir.path());
    let hits = reopened
        .search("u", &semantic("vim over emacs"))
        .await
        .unwrap();
    assert_eq!(hits[0].memory.content, "vim over emacs");
}

/// A file of schema version 2 kept its vectors as f32 in `embeddings`: opening it moves
/// them to their int8 form in `vectors`, and they find the same memories.
#[tokio::test]
async fn vectors_stored_as_f32_are_quantized_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let e = HashEmbedder::new(64);
    let s = open(dir.path());
    let made = s
        .add(vec![new("u", "tabs are better"), new("u", "cats and dogs")])
        .await
        .unwrap();
    s.close();
    drop(s);
    let path = dir.path().join(DB_FILE);
    let conn = Connection::open(&path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute_batch(
        "DROP TABLE vectors;
         CREATE TABLE embeddings (rid INTEGER PRIMARY KEY, model TEXT NOT NULL, vec BLOB NOT NULL);
         PRAGMA user_version = 2;",
    )
    .unwrap();
    for m in &made {
        let rid: i64 = conn
            .query_row("SELECT rid FROM memories WHERE id = ?1", [&m.id], |r| {
                r.get(0)
            })
            .unwrap();
        let v = crate::memory::retrieve::vector_to_bytes(&e.vector(&m.content));
        conn.execute(
            "INSERT INTO embeddings (rid, model, vec) VALUES (?1, ?2, ?3)",
            rusqlite::params![rid, e.model(), v],
        )
        .unwrap();
    }
    drop(conn);

    let s = open(dir.path());
    let mut q = query("zzz", 5);
    q.embedding = Some(QueryEmbedding {
        model: e.model().into(),
        vector: e.vector("cats and dogs"),
        alone_floor: crate::memory::retrieve::MIN_COSINE,
    });
    let hits = s.search("u", &q).await.unwrap();
    assert_eq!(
        hits[0].memory.content, "cats and dogs",
        "found by its vector only"
    );
    s.close();
    drop(s);
    let conn = Connection::open(&path).unwrap();
    let (n, len): (i64, i64) = conn
        .query_row("SELECT count(*), max(length(vec)) FROM vectors", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((n, len), (2, 4 + 64));
    let old: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'embeddings'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old, 0);
}

#[tokio::test]
async fn sessions_keep_the_newest_messages_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at(T0));
    let s = open_with(dir.path(), clock.clone());
    let turns = |n: usize| WriteOp::Turns {
        user_id: "u".into(),
        session_id: "s".into(),
        messages: (0..n).map(|i| ("user".into(), format!("m{i}"))).collect(),
    };
    s.apply(vec![turns(3)]).await.unwrap();
    s.apply(vec![turns(3)]).await.unwrap();
    let msgs = s.session_messages("u", "s").await.unwrap();
    assert_eq!(
        msgs.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["m2", "m0", "m1", "m2"]
    );
    // Another user's session of the same id is separate.
    assert!(s.session_messages("v", "s").await.unwrap().is_empty());
    assert_eq!(s.list_sessions(Some("u")).await.unwrap().len(), 1);
    assert!(s.list_sessions(Some("v")).await.unwrap().is_empty());
    assert_eq!(s.get_session(None, "s").await.unwrap().messages.len(), 4);

    clock.advance(Duration::from_secs(3601));
    assert!(s.session_messages("u", "s").await.unwrap().is_empty());
    assert!(s.list_sessions(None).await.unwrap().is_empty());
    assert!(matches!(
        s.get_session(None, "s").await,
        Err(StoreError::NotFound)
    ));
    // Appending to an expired session starts it afresh.
    s.apply(vec![turns(1)]).await.unwrap();
    assert_eq!(s.session_messages("u", "s").await.unwrap().len(), 1);
    clock.advance(Duration::from_secs(3601));
    assert_eq!(s.purge_expired().await.unwrap(), 1);
}

#[tokio::test]
async fn session_ids_shared_by_users_need_a_user() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    for u in ["a", "b"] {
        s.apply(vec![WriteOp::Turns {
            user_id: u.into(),
            session_id: "same".into(),
            messages: vec![("user".into(), format!("from {u}"))],
        }])
        .await
        .unwrap();
    }
    assert!(matches!(
        s.get_session(None, "same").await,
        Err(StoreError::Ambiguous(_))
    ));
    assert!(matches!(
        s.delete_session(None, "same").await,
        Err(StoreError::Ambiguous(_))
    ));
    let b = s.get_session(Some("b"), "same").await.unwrap();
    assert_eq!(b.messages[0].content, "from b");
    s.delete_session(Some("a"), "same").await.unwrap();
    assert_eq!(s.get_session(None, "same").await.unwrap().info.user_id, "b");
    assert!(matches!(
        s.delete_session(Some("a"), "same").await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn a_failed_write_does_not_fail_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let (bad, good) = tokio::join!(s.add(vec![new("u", "  ")]), s.add(vec![new("u", "fine")]));
    assert!(matches!(bad, Err(StoreError::Invalid(_))));
    assert_eq!(good.unwrap().len(), 1);
    assert_eq!(s.list("u", 10, None).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let s = open(dir.path());
        let id = s.add(vec![new("u", "persist me")]).await.unwrap()[0]
            .id
            .clone();
        s.close();
        id
    };
    let s = open(dir.path());
    assert_eq!(s.get("u", &id).await.unwrap().content, "persist me");
    assert_eq!(s.search("u", &query("persist", 1)).await.unwrap().len(), 1);
    // New memories continue the user's sequence.
    s.add(vec![new("u", "second")]).await.unwrap();
    assert_eq!(
        s.list("u", 10, None).await.unwrap().items[0].content,
        "second"
    );
    s.health().await.unwrap();
}

#[tokio::test]
async fn an_index_of_many_segments_is_merged_into_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // Each commit adds a segment to the full-text index.
    for i in 0..12 {
        s.add(vec![new(
            "u",
            &format!("note {i} about gardening tomatoes"),
        )])
        .await
        .unwrap();
    }
    let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
    let before = index_segments(&conn).unwrap();
    assert!(before > MERGE_ABOVE_SEGMENTS, "{before} segments");
    let mut merging = false;
    let mut steps = 0;
    loop {
        merging = merge_step(&conn, merging);
        if !merging {
            break;
        }
        steps += 1;
        assert!(steps < 1000, "the merge does not end");
    }
    assert_eq!(index_segments(&conn).unwrap(), 1);
    let hits = s.search("u", &query("tomatoes", 20)).await.unwrap();
    assert_eq!(hits.len(), 12);
    // A small index is left alone.
    assert!(!merge_step(&conn, false));
}
