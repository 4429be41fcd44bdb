//! The built-in embedding model in the real server, with the default config: a question
//! worded differently from the memory finds it, another user finds nothing, a deleted
//! memory leaves search at once; missing weights give a clear start-up error (or lexical
//! retrieval with `embedder_fallback: lexical`).
//!
//! The weights come from `scripts/fetch-model.sh` (scripts/test.sh runs it and sets
//! `MEMPROXY_MODEL_DIR`).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memproxy::config::{self, Overrides};
use memproxy::AppState;
use serde_json::{json, Value};

const KEY: &str = "sk-master";

fn model_dir() -> PathBuf {
    let dir = std::env::var("MEMPROXY_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_default();
            Path::new(&home)
                .join(".cache/memproxy/models")
                .join(memproxy::memory::embed::MODEL_NAME)
        });
    assert!(
        dir.join("SHA256SUMS").is_file(),
        "the built-in model is not in {}: run scripts/fetch-model.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

fn state(data_dir: &Path, memory_yaml: &str) -> Result<Arc<AppState>, String> {
    let yaml = format!(
        "general_settings: {{master_key: {KEY}}}\nmodel_list:\n  - model_name: mock\n    litellm_params: {{model: openai/mock, mock_response: hi}}\nmemory: {memory_yaml}\n"
    );
    let overrides = Overrides {
        data_dir: Some(data_dir.to_string_lossy().into_owned()),
        ..Default::default()
    };
    let cfg =
        config::parse(&yaml, "test.yaml", &overrides, &|_| None).map_err(|e| e.to_string())?;
    AppState::new(cfg).map_err(|e| e.to_string())
}

async fn serve(
    state: Arc<AppState>,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(memproxy::serve(listener, state, async {
        let _ = rx.await;
    }));
    (addr, stop, handle)
}

/// A server state on the built-in model in `data_dir`.
fn with_builtin(data_dir: &Path) -> Arc<AppState> {
    let path = model_dir();
    state(
        data_dir,
        &format!("{{embedder: builtin, embedder_path: '{}'}}", path.display()),
    )
    .unwrap()
}

/// Adds a memory through the API; its JSON.
async fn add(addr: SocketAddr, user: &str, content: &str) -> Value {
    let r = common::client()
        .post(format!("http://{addr}/v1/memories"))
        .bearer_auth(KEY)
        .json(&json!({"user_id": user, "content": content}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn search(addr: SocketAddr, user: &str, q: &str) -> Vec<Value> {
    let url = reqwest::Url::parse_with_params(
        &format!("http://{addr}/v1/memories/search"),
        &[("user_id", user), ("q", q), ("limit", "3")],
    )
    .unwrap();
    let r = common::client()
        .get(url)
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["results"].as_array().unwrap().clone()
}

/// A user with one relevant memory and captured small talk: the question brings the
/// relevant memory only (small talk scores below the floor of a match by meaning alone),
/// and a question nothing answers brings nothing.
#[tokio::test]
async fn small_talk_is_not_found_by_meaning_alone() {
    let dir = tempfile::tempdir().unwrap();
    let st = with_builtin(dir.path());
    let memory = st.memory.clone().unwrap();
    let (addr, stop, handle) = serve(st).await;
    for content in [
        "Alice's favourite gemstone is turquoise",
        "user: hello\nassistant: mock reply to: hello",
        "user: hi there\nassistant: Hi, I am a mock.",
        "user: hello again\nassistant: mock reply to: hello again",
    ] {
        add(addr, "alice", content).await;
    }
    memory.flush().await;
    let hits = search(addr, "alice", "which gemstone do I like?").await;
    let found: Vec<&str> = hits.iter().filter_map(|h| h["content"].as_str()).collect();
    assert_eq!(found, ["Alice's favourite gemstone is turquoise"]);
    assert!(search(addr, "alice", "what is the capital of Peru?")
        .await
        .is_empty());
    let _ = stop.send(());
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_paraphrase_finds_its_memory_for_its_user_only_and_deletion_is_immediate() {
    let dir = tempfile::tempdir().unwrap();
    let st = with_builtin(dir.path());
    let memory = st.memory.clone().unwrap();
    let (addr, stop, handle) = serve(st).await;
    let c = common::client();
    let mut target = String::new();
    for content in [
        "I adopted a puppy from the shelter last weekend",
        "The quarterly report is due on Friday",
        "My favourite programming language is Rust",
        "We painted the kitchen walls yellow",
    ] {
        let v = add(addr, "alice", content).await;
        if content.contains("puppy") {
            target = v["id"].as_str().unwrap().to_string();
        }
    }
    memory.flush().await;
    // No word of the question (after stemming and stop words) is in the memory.
    let q = "does she own a dog?";
    let hits = search(addr, "alice", q).await;
    assert_eq!(
        hits.first().map(|h| h["id"].clone()),
        Some(json!(target)),
        "{hits:?}"
    );
    assert!(search(addr, "bob", q).await.is_empty());

    let r = c
        .delete(format!("http://{addr}/v1/memories/{target}?user_id=alice"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let hits = search(addr, "alice", q).await;
    assert!(hits.iter().all(|h| h["id"] != json!(target)), "{hits:?}");
    let _ = stop.send(());
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn missing_weights_fail_start_naming_the_fix_or_fall_back_to_lexical() {
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let at = empty.path().display();
    let e = state(
        dir.path(),
        &format!("{{embedder: builtin, embedder_path: '{at}', embedder_fallback: fail}}"),
    )
    .err()
    .expect("start refused");
    assert!(
        e.contains("missing") && e.contains("scripts/fetch-model.sh"),
        "{e}"
    );
    // The default falls back to lexical retrieval (with a warning) and serves.
    let st = state(
        dir.path(),
        &format!("{{embedder: builtin, embedder_path: '{at}'}}"),
    )
    .unwrap();
    let (addr, stop, handle) = serve(st).await;
    assert!(search(addr, "alice", "anything").await.is_empty());
    let _ = stop.send(());
    handle.await.unwrap().unwrap();
}

/// Latency figures (run with `--ignored --nocapture`; build with optimisations for
/// figures that mean anything): query embedding p99, and search p99 over 100k memories
/// of one user with their vectors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn latency_figures() {
    use memproxy::memory::embed::StaticModel;
    use memproxy::memory::{Metadata, NewMemory, WriteOp};
    let model = StaticModel::shared(&model_dir()).unwrap();
    let words = [
        "camping",
        "painting",
        "daughter",
        "support",
        "group",
        "birthday",
        "concert",
        "guitar",
        "adopted",
        "shelter",
        "marathon",
        "recipe",
        "kitchen",
        "holiday",
        "museum",
        "school",
        "speech",
        "garden",
        "volunteer",
        "pottery",
        "hiking",
        "beach",
        "family",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    let mut sentence = |n: usize| {
        (0..n)
            .map(|_| words[rng.usize(..words.len())])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let questions: Vec<String> = (0..2000)
        .map(|_| format!("When did Melanie {}?", sentence(6)))
        .collect();
    let mut times = Vec::with_capacity(questions.len());
    for q in &questions {
        let t = std::time::Instant::now();
        std::hint::black_box(model.vector(q));
        times.push(t.elapsed());
    }
    times.sort_unstable();
    println!(
        "query embedding p50 {:?} p99 {:?}",
        times[1000], times[1980]
    );

    let dir = tempfile::tempdir().unwrap();
    let st = state(
        dir.path(),
        &format!(
            "{{embedder: builtin, embedder_path: '{}'}}",
            model_dir().display()
        ),
    )
    .unwrap();
    let mem = st.memory.clone().unwrap();
    for chunk in 0..100 {
        let batch = (0..1000)
            .map(|i| NewMemory {
                user_id: "u".into(),
                content: format!("Caroline: {} ({chunk}-{i})", sentence(14)),
                metadata: Metadata::new(),
                session_id: None,
            })
            .collect();
        let created = mem.store().add(batch).await.unwrap();
        let vectors = created
            .iter()
            .map(|m| (m.id.clone(), model.vector(&m.content)))
            .collect();
        mem.store()
            .apply(vec![WriteOp::Embeddings {
                user_id: "u".into(),
                model: model.id().to_string(),
                vectors,
            }])
            .await
            .unwrap();
    }
    let mut times = Vec::new();
    for q in questions.iter().take(200) {
        let t = std::time::Instant::now();
        let hits = mem.search("u", q, 5).await;
        times.push(t.elapsed());
        assert!(!hits.is_empty());
    }
    times.sort_unstable();
    println!(
        "search over 100k memories with vectors: p50 {:?} p99 {:?}",
        times[100], times[198]
    );
}
