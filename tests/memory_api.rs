//! The memory and sessions API against the real server: strict isolation between users,
//! validation, persistence across a restart, the write queue flushed at shutdown, JSONL
//! export, sessions.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use memproxy::config::{self, Overrides};
use memproxy::memory::{CaptureMeta, Captured, WriteOp};
use memproxy::AppState;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const KEY: &str = "sk-master";

/// A server whose state the test can reach (to queue captures as the request path does).
struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(data_dir: &Path, extra_yaml: &str) -> Self {
        let yaml = format!(
            "general_settings: {{master_key: {KEY}}}\nmodel_list:\n  - model_name: mock\n    litellm_params: {{model: openai/mock, mock_response: hi}}\n{extra_yaml}"
        );
        let overrides = Overrides {
            data_dir: Some(data_dir.to_string_lossy().into_owned()),
            ..Default::default()
        };
        let cfg = config::parse(&yaml, "test.yaml", &overrides, &|_| None).expect("config");
        let state = AppState::new(cfg).expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(memproxy::serve(listener, state.clone(), async {
            let _ = rx.await;
        }));
        Self {
            addr,
            state,
            stop,
            handle,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap().unwrap();
    }
}

fn client() -> reqwest::Client {
    common::client()
}

async fn add(s: &Server, user: &str, content: &str, metadata: Value) -> Value {
    let r = client()
        .post(s.url("/v1/memories"))
        .bearer_auth(KEY)
        .json(&json!({"user_id": user, "content": content, "metadata": metadata}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn get_json(s: &Server, path: &str) -> (u16, Value) {
    let r = client()
        .get(s.url(path))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn delete(s: &Server, path: &str) -> (u16, Value) {
    let r = client()
        .delete(s.url(path))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn contents(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn users_are_strictly_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "").await;
    let a = add(&s, "alice", "I prefer tabs over spaces", json!({})).await;
    add(&s, "alice", "My cat is called Pixel", json!({})).await;
    let b = add(&s, "bob", "I use four spaces", json!({})).await;
    let a_id = a["id"].as_str().unwrap();

    // Look-alike ids (no-break space, ideographic space, line separator, plain space)
    // are refused by every path, never read as alice's.
    for id in [
        "%C2%A0alice",
        "alice%E3%80%80",
        "%E2%80%A8alice",
        "%20alice",
        "alice%20",
    ] {
        for path in [
            format!("/v1/memories/search?user_id={id}&q=tabs"),
            format!("/v1/memories?user_id={id}"),
            format!("/v1/memories/export?user_id={id}"),
            format!("/v1/sessions?user_id={id}"),
        ] {
            let (st, v) = get_json(&s, &path).await;
            assert_eq!(st, 400, "{path}: {v}");
            assert!(!v.to_string().contains("tabs over"), "{path}: {v}");
        }
    }

    for q in [
        "tabs",
        "Pixel",
        "cat",
        "prefer tabs over spaces",
        "alice",
        "*",
        "\"tabs\" OR cat",
    ] {
        let (st, v) = get_json(
            &s,
            &format!("/v1/memories/search?user_id=bob&q={}", urlencode(q)),
        )
        .await;
        assert_eq!(st, 200, "{q}");
        for r in v["results"].as_array().unwrap() {
            assert_eq!(r["user_id"], "bob", "{q}: {v}");
        }
    }
    let (_, v) = get_json(
        &s,
        "/v1/memories/search?user_id=alice&q=which+indentation+do+I+prefer%3F+tabs",
    )
    .await;
    assert_eq!(v["results"][0]["id"], a["id"]);
    assert!(v["results"][0]["score"].as_f64().unwrap() > 0.0);

    // Another user's ids are 404, for reading and deleting.
    let (st, v) = get_json(&s, &format!("/v1/memories/{a_id}?user_id=bob")).await;
    assert_eq!(st, 404, "{v}");
    assert_eq!(v["error"]["code"], "not_found");
    assert_eq!(
        delete(&s, &format!("/v1/memories/{a_id}?user_id=bob"))
            .await
            .0,
        404
    );
    let (st, v) = get_json(&s, &format!("/v1/memories/{a_id}?user_id=alice")).await;
    assert_eq!(
        (st, v["content"].as_str()),
        (200, Some("I prefer tabs over spaces"))
    );

    let (_, v) = get_json(&s, "/v1/memories?user_id=bob").await;
    assert_eq!(contents(&v, "data"), ["I use four spaces"]);

    // Forgetting bob leaves alice alone.
    let (st, v) = delete(&s, "/v1/memories?user_id=bob").await;
    assert_eq!((st, v["deleted"].as_u64()), (200, Some(1)));
    assert_eq!(
        get_json(
            &s,
            &format!("/v1/memories/{}?user_id=bob", b["id"].as_str().unwrap())
        )
        .await
        .0,
        404
    );
    let (_, v) = get_json(&s, "/v1/memories?user_id=alice").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        delete(&s, &format!("/v1/memories/{a_id}?user_id=alice"))
            .await
            .0,
        200
    );
    assert_eq!(
        get_json(&s, &format!("/v1/memories/{a_id}?user_id=alice"))
            .await
            .0,
        404
    );
    s.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn bad_requests_are_400_and_keys_are_required() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "").await;
    let post = |body: Value| {
        let url = s.url("/v1/memories");
        async move {
            client()
                .post(url)
                .bearer_auth(KEY)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    for body in [
        json!({"content": "x"}),
        json!({"user_id": "u"}),
        json!({"user_id": "u", "content": ""}),
        json!({"user_id": "u", "content": 5}),
        json!({"user_id": "u", "content": "x", "metadata": [1]}),
        json!({"user_id": "bad user", "content": "x"}),
    ] {
        let r = post(body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    for path in [
        "/v1/memories",
        "/v1/memories/search?q=x",
        "/v1/memories/search?user_id=u",
        "/v1/memories/mem_x",
        "/v1/memories/export",
        "/v1/memories?user_id=u&limit=0",
        "/v1/memories?user_id=u&cursor=nope",
    ] {
        assert_eq!(get_json(&s, path).await.0, 400, "{path}");
    }
    assert_eq!(delete(&s, "/v1/memories").await.0, 400);
    let r = client()
        .get(s.url("/v1/memories?user_id=u"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        get_json(&s, "/v1/memories/mem_unknown?user_id=u").await.0,
        404
    );
    s.stop().await;
}

#[tokio::test]
async fn memories_survive_a_restart_and_pages_work() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "").await;
    let meta = json!({"dia_id": "D1:1", "tags": ["a", {"b": null}], "n": 1.5});
    let first = add(&s, "u", "the first memory", meta.clone()).await;
    for i in 0..4 {
        add(&s, "u", &format!("memory {i}"), json!({})).await;
    }
    s.stop().await;

    let s = Server::start(dir.path(), "").await;
    let (st, v) = get_json(
        &s,
        &format!("/v1/memories/{}?user_id=u", first["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["metadata"], meta);
    assert_eq!(v, first);
    let (_, p1) = get_json(&s, "/v1/memories?user_id=u&limit=3").await;
    assert_eq!(contents(&p1, "data"), ["memory 3", "memory 2", "memory 1"]);
    assert_eq!(p1["has_more"], true);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = get_json(
        &s,
        &format!("/v1/memories?user_id=u&limit=3&cursor={cursor}"),
    )
    .await;
    assert_eq!(contents(&p2, "data"), ["memory 0", "the first memory"]);
    assert_eq!(p2["has_more"], false);
    let (_, v) = get_json(&s, "/v1/memories/search?user_id=u&q=first").await;
    assert_eq!(v["results"][0]["id"], first["id"]);
    s.stop().await;
}

#[tokio::test]
async fn shutdown_flushes_queued_captures() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "").await;
    let mem = s.state.memory.clone().unwrap();
    for i in 0..200 {
        let queued = mem.capture(
            CaptureMeta {
                user_id: "cap",
                session_id: Some("sess-1"),
                model: "mock",
                request_id: &format!("req-{i}"),
            },
            Captured {
                user: format!("question {i}"),
                assistant: format!("answer {i}"),
            },
        );
        assert!(queued);
    }
    drop(mem);
    s.stop().await;

    let s = Server::start(dir.path(), "").await;
    let (_, v) = get_json(&s, "/v1/memories?user_id=cap&limit=1000").await;
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 200);
    assert_eq!(
        data[0]["content"],
        "user: question 199\nassistant: answer 199"
    );
    assert_eq!(data[0]["metadata"]["request_id"], "req-199");
    assert_eq!(data[0]["metadata"]["model"], "mock");
    assert_eq!(data[0]["session_id"], "sess-1");
    s.stop().await;
}

#[tokio::test]
async fn export_is_jsonl_of_every_memory() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "").await;
    for i in 0..3 {
        add(
            &s,
            "exp",
            &format!("line {i}\nwith a newline"),
            json!({"i": i}),
        )
        .await;
    }
    add(&s, "other", "not mine", json!({})).await;
    let r = client()
        .get(s.url("/v1/memories/export?user_id=exp"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l["user_id"] == "exp" && l["id"].is_string()));
    assert_eq!(lines[2]["metadata"], json!({"i": 0}));
    assert_eq!(lines[2]["content"], "line 0\nwith a newline");
    // A user without memories exports nothing.
    let r = client()
        .get(s.url("/v1/memories/export?user_id=nobody"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "");
    s.stop().await;
}

#[tokio::test]
async fn sessions_api_lists_reads_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "memory: {max_context_messages: 3}\n").await;
    let store = s.state.memory.as_ref().unwrap().store().clone();
    let turns = |user: &str, sid: &str, n: usize| WriteOp::Turns {
        user_id: user.into(),
        session_id: sid.into(),
        messages: (0..n)
            .map(|i| {
                (
                    if i % 2 == 0 { "user" } else { "assistant" }.to_string(),
                    format!("{user} {i}"),
                )
            })
            .collect(),
    };
    store
        .apply(vec![
            turns("ann", "s-1", 4),
            turns("ann", "s-2", 1),
            turns("ben", "s-1", 2),
        ])
        .await
        .unwrap();

    let (st, v) = get_json(&s, "/v1/sessions?user_id=ann").await;
    assert_eq!(st, 200);
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"s-1") && ids.contains(&"s-2"));
    let (_, v) = get_json(&s, "/v1/sessions").await;
    assert_eq!(v["data"].as_array().unwrap().len(), 3);

    // The id is used by two users: name one.
    let (st, v) = get_json(&s, "/v1/sessions/s-1").await;
    assert_eq!(st, 409, "{v}");
    let (st, v) = get_json(&s, "/v1/sessions/s-1?user_id=ann").await;
    assert_eq!(st, 200);
    assert_eq!(v["message_count"], 3);
    let msgs: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(msgs, ["ann 1", "ann 2", "ann 3"]);
    assert_eq!(v["messages"][0]["role"], "assistant");
    let (st, v) = get_json(&s, "/v1/sessions/s-2").await;
    assert_eq!((st, v["user_id"].as_str()), (200, Some("ann")));

    assert_eq!(delete(&s, "/v1/sessions/s-1?user_id=ben").await.0, 200);
    assert_eq!(get_json(&s, "/v1/sessions/s-1?user_id=ben").await.0, 404);
    assert_eq!(get_json(&s, "/v1/sessions/s-1").await.0, 200);
    assert_eq!(delete(&s, "/v1/sessions/s-1").await.0, 200);
    let (st, v) = delete(&s, "/v1/sessions/s-1").await;
    assert_eq!(st, 404);
    assert_eq!(v["error"]["message"], "session not found");
    // Forgetting a user removes its sessions too.
    delete(&s, "/v1/memories?user_id=ann").await;
    assert_eq!(get_json(&s, "/v1/sessions/s-2").await.0, 404);
    s.stop().await;
}

#[tokio::test]
async fn disabled_memory_answers_503_and_readiness_reports_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "memory: {enabled: false}\n").await;
    let (st, v) = get_json(&s, "/v1/memories?user_id=u").await;
    assert_eq!(st, 503, "{v}");
    let (_, v) = get_json(&s, "/health/readiness").await;
    assert_eq!(v["checks"]["memory"]["enabled"], false);
    s.stop().await;

    let s = Server::start(dir.path(), "").await;
    let (st, v) = get_json(&s, "/health/readiness").await;
    assert_eq!(st, 200);
    assert_eq!(v["checks"]["memory"]["ok"], true);
    s.stop().await;
}

#[tokio::test]
async fn a_user_at_the_memory_quota_is_refused_with_403_and_captures_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "memory: {max_memories_per_user: 3}\n").await;
    add(&s, "quota-user", "fact one", json!({})).await;
    let one_more = |project: Option<&str>, user: &str, content: &str| {
        let mut req = client()
            .post(s.url("/v1/memories"))
            .bearer_auth(KEY)
            .json(&json!({"user_id": user, "content": content}));
        if let Some(p) = project {
            req = req.header("x-memory-project", p);
        }
        req.send()
    };
    // A project's memories count towards its user.
    let r = one_more(Some("proj"), "quota-user", "fact two")
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    add(&s, "quota-user", "fact three", json!({})).await;

    for project in [None, Some("proj"), Some("other")] {
        let r = one_more(project, "quota-user", "fact four").await.unwrap();
        assert_eq!(r.status(), 403, "{project:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "memory_quota_exceeded", "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("memory.max_memories_per_user") && msg.contains("(3)"),
            "{msg}"
        );
    }
    // Another user (even one whose name starts alike) is not affected.
    for user in ["quota-user2", "quota"] {
        let r = one_more(None, user, "fact one").await.unwrap();
        assert_eq!(r.status(), 201, "{user}");
    }

    // A capture past the quota is skipped, not an error.
    let mem = s.state.memory.clone().unwrap();
    assert!(mem.capture(
        CaptureMeta {
            user_id: "quota-user",
            session_id: None,
            model: "mock",
            request_id: "req-over",
        },
        Captured {
            user: "something new".into(),
            assistant: "noted".into(),
        },
    ));
    mem.flush().await;
    let (_, v) = get_json(&s, "/v1/memories?user_id=quota-user&limit=100").await;
    assert_eq!(contents(&v, "data"), ["fact three", "fact one"]);

    // Room made: adds work again.
    let id = v["data"][0]["id"].as_str().unwrap().to_string();
    let (status, _) = delete(&s, &format!("/v1/memories/{id}?user_id=quota-user")).await;
    assert_eq!(status, 200);
    let r = one_more(None, "quota-user", "fact five").await.unwrap();
    assert_eq!(r.status(), 201);
    drop(mem);
    s.stop().await;
}
