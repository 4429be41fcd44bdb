//! `memory.backend: supermemory` against a mock of Supermemory's documented v3 API (its
//! JSON and its error shape): captures become documents with one container tag per scope,
//! retrieval searches them and injects the results, the memory API (add, get, list,
//! delete, forget-all) works on top, another scope's document is "not found", and an
//! outage never fails a chat request. No real key is needed.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use common::*;
use memproxy::config::Overrides;
use serde_json::{json, Value};

const SM_KEY: &str = "sm_test_key";

#[derive(Clone, Debug)]
struct Doc {
    id: String,
    content: String,
    tag: String,
    custom_id: Option<String>,
    metadata: Value,
}

#[derive(Default)]
struct Sm {
    docs: Mutex<Vec<Doc>>,
    next: AtomicU64,
    down: AtomicBool,
    calls: Mutex<Vec<String>>,
}

type S = State<Arc<Sm>>;

fn err(status: StatusCode, error: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "details": "from the mock"})),
    )
        .into_response()
}

/// Authorization and outage checks every endpoint makes.
fn gate(sm: &Sm, h: &HeaderMap, what: &str) -> Option<Response> {
    sm.calls.lock().unwrap().push(what.to_string());
    if sm.down.load(Ordering::SeqCst) {
        return Some(err(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service temporarily unavailable",
        ));
    }
    let ok =
        h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {SM_KEY}"));
    (!ok).then(|| err(StatusCode::UNAUTHORIZED, "Unauthorized"))
}

fn doc_json(d: &Doc) -> Value {
    json!({"id": d.id, "content": d.content, "containerTags": [d.tag], "metadata": d.metadata,
           "customId": d.custom_id, "status": "done", "type": "text",
           "createdAt": "2026-01-02T03:04:05.000Z", "updatedAt": "2026-01-02T03:04:05.000Z"})
}

async fn add(State(sm): S, h: HeaderMap, Json(b): Json<Value>) -> Response {
    if let Some(r) = gate(&sm, &h, "add") {
        return r;
    }
    let (Some(content), Some(tag)) = (b["content"].as_str(), b["containerTag"].as_str()) else {
        return err(
            StatusCode::BAD_REQUEST,
            "content and containerTag are required",
        );
    };
    let custom = b["customId"].as_str().map(str::to_string);
    let mut docs = sm.docs.lock().unwrap();
    if let Some(d) = custom
        .as_ref()
        .and_then(|c| docs.iter_mut().find(|d| d.custom_id.as_ref() == Some(c)))
    {
        d.content = content.into();
        return Json(json!({"id": d.id, "status": "queued"})).into_response();
    }
    let id = format!("doc{}", sm.next.fetch_add(1, Ordering::SeqCst));
    docs.push(Doc {
        id: id.clone(),
        content: content.into(),
        tag: tag.into(),
        custom_id: custom,
        metadata: b["metadata"].clone(),
    });
    Json(json!({"id": id, "status": "queued"})).into_response()
}

fn tag_of(b: &Value) -> String {
    b["containerTags"][0].as_str().unwrap_or("").to_string()
}

async fn search(State(sm): S, h: HeaderMap, Json(b): Json<Value>) -> Response {
    if let Some(r) = gate(&sm, &h, "search") {
        return r;
    }
    let q = b["q"].as_str().unwrap_or("").to_lowercase();
    let words: Vec<&str> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .collect();
    let tag = tag_of(&b);
    let docs = sm.docs.lock().unwrap();
    let mut results: Vec<(usize, &Doc)> = docs
        .iter()
        .filter(|d| d.tag == tag)
        .map(|d| {
            (
                words
                    .iter()
                    .filter(|w| d.content.to_lowercase().contains(**w))
                    .count(),
                d,
            )
        })
        .filter(|(n, _)| *n > 0)
        .collect();
    results.sort_by_key(|r| std::cmp::Reverse(r.0));
    let results: Vec<Value> = results
        .iter()
        .map(|(n, d)| {
            json!({"documentId": d.id, "score": *n as f64 / 10.0, "title": null,
            "chunks": [{"content": d.content, "score": 0.9, "isRelevant": true}],
            "metadata": d.metadata, "createdAt": "2026-01-02T03:04:05.000Z", "type": "text"})
        })
        .collect();
    Json(json!({"results": results, "total": results.len(), "timing": 3})).into_response()
}

async fn get_doc(State(sm): S, h: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = gate(&sm, &h, "get") {
        return r;
    }
    match sm.docs.lock().unwrap().iter().find(|d| d.id == id) {
        Some(d) => Json(doc_json(d)).into_response(),
        None => err(StatusCode::NOT_FOUND, "Document not found"),
    }
}

async fn delete_doc(State(sm): S, h: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = gate(&sm, &h, "delete") {
        return r;
    }
    let mut docs = sm.docs.lock().unwrap();
    let before = docs.len();
    docs.retain(|d| d.id != id);
    if docs.len() == before {
        return err(StatusCode::NOT_FOUND, "Document not found");
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn list(State(sm): S, h: HeaderMap, Json(b): Json<Value>) -> Response {
    if let Some(r) = gate(&sm, &h, "list") {
        return r;
    }
    let tag = tag_of(&b);
    let limit = b["limit"].as_u64().unwrap_or(10) as usize;
    let page = b["page"].as_u64().unwrap_or(1) as usize;
    let docs = sm.docs.lock().unwrap();
    let mine: Vec<&Doc> = docs.iter().rev().filter(|d| d.tag == tag).collect();
    let pages = mine.len().div_ceil(limit).max(1);
    let items: Vec<Value> = mine
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .map(|d| doc_json(d))
        .collect();
    Json(json!({"memories": items, "pagination": {"currentPage": page, "limit": limit, "totalItems": mine.len(), "totalPages": pages}})).into_response()
}

async fn bulk(State(sm): S, h: HeaderMap, Json(b): Json<Value>) -> Response {
    if let Some(r) = gate(&sm, &h, "bulk") {
        return r;
    }
    let tag = tag_of(&b);
    let mut docs = sm.docs.lock().unwrap();
    let before = docs.len();
    docs.retain(|d| d.tag != tag);
    Json(json!({"success": true, "deletedCount": before - docs.len(), "containerTags": [tag]}))
        .into_response()
}

async fn mock_supermemory() -> (Arc<Sm>, String) {
    let sm = Arc::new(Sm::default());
    let app = Router::new()
        .route("/v3/documents", post(add))
        .route("/v3/search", post(search))
        .route("/v3/documents/list", post(list))
        .route("/v3/documents/bulk", delete(bulk))
        .route("/v3/documents/{id}", get(get_doc).delete(delete_doc))
        .with_state(sm.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (sm, url)
}

async fn proxy_with_supermemory(mock: &MockUpstream, sm_url: &str) -> Proxy {
    let yaml = format!(
        "{}context_retrieval: {{enabled: true, max_results: 5}}\nmemory: {{backend: supermemory, supermemory_base_url: '{sm_url}'}}\n",
        one_model(mock)
    );
    start_with(
        &yaml,
        &[("SUPERMEMORY_API_KEY", SM_KEY)],
        Overrides::default(),
    )
    .await
}

async fn chat(proxy: &Proxy, path: &str, user: &str, text: &str) -> u16 {
    client()
        .post(proxy.url(path))
        .header("x-memory-user-id", user)
        .json(&chat_body("gpt", text))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn captures_go_to_supermemory_per_scope_and_come_back_injected() {
    let mock = MockUpstream::start().await;
    let (sm, sm_url) = mock_supermemory().await;
    let proxy = proxy_with_supermemory(&mock, &sm_url).await;
    let alpha = "/p/alpha/v1/chat/completions";
    mock.push(Behavior::Text("Noted.".into()));
    assert_eq!(
        chat(&proxy, alpha, "sam", "our queue is rabbitmq").await,
        200
    );
    // The same exchange again updates the same document (customId), adds none.
    mock.push(Behavior::Text("Noted.".into()));
    chat(&proxy, alpha, "sam", "our queue is rabbitmq").await;
    proxy.flush_memory().await;
    {
        let docs = sm.docs.lock().unwrap();
        assert_eq!(docs.len(), 1, "{docs:?}");
        assert_eq!(docs[0].tag, "mp_sam_23alpha");
        assert!(docs[0].content.contains("rabbitmq"));
        assert_eq!(docs[0].metadata["source"], "conversation");
    }
    mock.push(Behavior::Text("ok".into()));
    chat(&proxy, alpha, "sam", "which queue? rabbitmq?").await;
    let saw = mock.requests().last().unwrap().body.to_string();
    assert!(
        saw.contains("our queue is rabbitmq") && saw.contains("From this project (alpha)"),
        "{saw}"
    );
    for (path, user) in [("/p/beta/v1/chat/completions", "sam"), (alpha, "tom")] {
        mock.push(Behavior::Text("ok".into()));
        chat(&proxy, path, user, "which queue? rabbitmq?").await;
        let saw = mock.requests().last().unwrap().body.to_string();
        assert!(
            !saw.contains("our queue is rabbitmq"),
            "{path} {user}: {saw}"
        );
    }
}

#[tokio::test]
async fn memory_api_works_on_supermemory_and_never_crosses_scopes() {
    let mock = MockUpstream::start().await;
    let (sm, sm_url) = mock_supermemory().await;
    let proxy = proxy_with_supermemory(&mock, &sm_url).await;
    let c = client();
    let add = |user: &str, project: Option<&str>, content: &str| {
        let mut b =
            json!({"user_id": user, "content": content, "metadata": {"n": 1, "nested": {"a": 1}}});
        if let Some(p) = project {
            b["project"] = p.into();
        }
        c.post(proxy.url("/v1/memories")).json(&b).send()
    };
    let r = add("uma", Some("alpha"), "alpha uses kafka").await.unwrap();
    assert_eq!(r.status(), 201);
    let mine: Value = r.json().await.unwrap();
    add("uma", None, "uma likes vim").await.unwrap();
    let other: Value = add("vic", None, "vic secret")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = mine["id"].as_str().unwrap();
    assert_eq!(
        sm.docs.lock().unwrap()[0].metadata["nested"],
        "{\"a\":1}",
        "flat metadata"
    );

    let get = |path: String| c.get(proxy.url(&path)).send();
    let r = get(format!("/v1/memories/{id}?user_id=uma&project=alpha"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    assert_eq!(
        (got["content"].as_str(), got["project"].as_str()),
        (Some("alpha uses kafka"), Some("alpha"))
    );
    // Another scope's id is not found, and deleting it does not reach Supermemory's delete.
    let vid = other["id"].as_str().unwrap();
    assert_eq!(
        get(format!("/v1/memories/{vid}?user_id=uma"))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        get(format!("/v1/memories/{id}?user_id=uma"))
            .await
            .unwrap()
            .status(),
        404
    );
    let r = c
        .delete(proxy.url(&format!("/v1/memories/{vid}?user_id=uma")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(!sm.calls.lock().unwrap().contains(&"delete".to_string()));

    let list: Value = get("/v1/memories?user_id=uma&project=alpha".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    let found: Value = get("/v1/memories/search?user_id=uma&project=alpha&q=kafka".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["results"][0]["id"], id, "{found}");

    // Forget-all of uma: its own tag and its project's, never vic's.
    let r: Value = c
        .delete(proxy.url("/v1/memories?user_id=uma"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["deleted"], 2, "{r}");
    let docs = sm.docs.lock().unwrap().clone();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].content, "vic secret");
}

#[tokio::test]
async fn an_outage_or_a_bad_key_never_fails_a_chat_request() {
    let mock = MockUpstream::start().await;
    let (sm, sm_url) = mock_supermemory().await;
    let proxy = proxy_with_supermemory(&mock, &sm_url).await;
    sm.down.store(true, Ordering::SeqCst);
    mock.push(Behavior::Text("still here".into()));
    assert_eq!(
        chat(&proxy, "/v1/chat/completions", "wes", "hello there").await,
        200
    );
    proxy.flush_memory().await;
    assert!(sm.calls.lock().unwrap().iter().any(|c| c == "search"));
    // The memory API names the failure.
    let r = client()
        .get(proxy.url("/v1/memories?user_id=wes"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    let body: Value = r.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("503") && msg.contains("Service temporarily unavailable"),
        "{msg}"
    );

    // A wrong key: the same, with Supermemory's own message.
    sm.down.store(false, Ordering::SeqCst);
    let mock2 = MockUpstream::start().await;
    let yaml = format!(
        "{}context_retrieval: {{enabled: true}}\nmemory: {{backend: supermemory, supermemory_base_url: '{sm_url}'}}\n",
        one_model(&mock2)
    );
    let bad = start_with(
        &yaml,
        &[("SUPERMEMORY_API_KEY", "sm_wrong")],
        Overrides::default(),
    )
    .await;
    mock2.push(Behavior::Text("fine".into()));
    assert_eq!(
        chat(&bad, "/v1/chat/completions", "wes", "hello again").await,
        200
    );
    let r = client()
        .get(bad.url("/v1/memories?user_id=wes"))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unauthorized"),
        "{body}"
    );
}

#[test]
fn the_backend_needs_a_key() {
    let yaml = "memory: {backend: supermemory}\n";
    let err =
        memproxy::config::parse(yaml, "t.yaml", &Overrides::default(), &|_| None).unwrap_err();
    assert!(err.to_string().contains("SUPERMEMORY_API_KEY"), "{err}");
}
