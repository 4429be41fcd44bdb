//! `memory.backend: supermemory` against a mock of Supermemory's v3 API: captured exchanges
//! become documents under the user's container tag and are injected for that user only;
//! the memory API's search, get, delete and forget-all go through Supermemory; its errors
//! (401, 429, 5xx) and outages give the memory API a clear 503 and never fail a chat.

mod common;

use common::*;
use memproxy::config::Overrides;
use memproxy::storage::supermemory::container_tag;
use mock_upstream::{MockSupermemory, SUPERMEMORY_KEY};
use serde_json::{json, Value};

const RETRIEVAL: &str = "context_retrieval: {enabled: true, max_results: 5}";

async fn start_proxy(mock: &MockUpstream, sm: &MockSupermemory, key: &str) -> Proxy {
    let yaml = format!(
        "model_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/gpt-4o, api_base: '{}', api_key: k}}\nrouter_settings: {{num_retries: 0}}\n{RETRIEVAL}\nmemory: {{backend: supermemory, supermemory: {{timeout_seconds: 5}}}}\n",
        mock.url()
    );
    let url = sm.url();
    start_with(
        &yaml,
        &[("SUPERMEMORY_API_KEY", key), ("SUPERMEMORY_BASE_URL", &url)],
        Overrides::default(),
    )
    .await
}

async fn chat(proxy: &Proxy, user: &str, text: &str) {
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .header("x-memory-user-id", user)
        .json(&json!({"model": "gpt", "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

async fn api(proxy: &Proxy, method: reqwest::Method, path: &str) -> (u16, Value) {
    let resp = client()
        .request(method, proxy.url(path))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn last_upstream(mock: &MockUpstream) -> String {
    mock.requests().last().unwrap().body.to_string()
}

#[tokio::test]
async fn captured_memories_live_in_supermemory_per_user_and_are_injected() {
    let mock = MockUpstream::start().await;
    let sm = MockSupermemory::start().await;
    let proxy = start_proxy(&mock, &sm, SUPERMEMORY_KEY).await;

    mock.push(Behavior::Text("Noted, teal it is.".into()));
    chat(&proxy, "alice", "My favourite colour is teal").await;
    proxy.flush_memory().await;
    let docs = sm.documents();
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0].1, vec![container_tag("alice")]);
    assert!(docs[0].2.contains("teal"));
    // The same exchange captured again is the same document (customId).
    mock.push(Behavior::Text("Noted, teal it is.".into()));
    chat(&proxy, "alice", "My favourite colour is teal").await;
    proxy.flush_memory().await;
    assert_eq!(sm.documents().len(), 1);

    chat(&proxy, "alice", "What is my favourite colour?").await;
    assert!(
        last_upstream(&mock).contains("teal"),
        "alice's memory not injected"
    );
    chat(&proxy, "bob", "What is my favourite colour?").await;
    assert!(
        !last_upstream(&mock).contains("teal"),
        "bob got alice's memory"
    );

    // The memory API on top of Supermemory.
    let get = reqwest::Method::GET;
    let del = reqwest::Method::DELETE;
    let (s, found) = api(
        &proxy,
        get.clone(),
        "/v1/memories/search?user_id=alice&q=favourite+colour",
    )
    .await;
    assert_eq!(s, 200, "{found}");
    let id = found["results"][0]["id"].as_str().unwrap().to_string();
    assert!(found["results"][0]["content"]
        .as_str()
        .unwrap()
        .contains("teal"));
    let (s, one) = api(
        &proxy,
        get.clone(),
        &format!("/v1/memories/{id}?user_id=alice"),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(one["id"], id.as_str());
    let (s, _) = api(
        &proxy,
        get.clone(),
        &format!("/v1/memories/{id}?user_id=bob"),
    )
    .await;
    assert_eq!(s, 404, "bob reads alice's memory by id");
    let (s, _) = api(
        &proxy,
        del.clone(),
        &format!("/v1/memories/{id}?user_id=bob"),
    )
    .await;
    assert_eq!(s, 404, "bob deletes alice's memory");
    let (s, listed) = api(&proxy, get.clone(), "/v1/memories?user_id=alice").await;
    assert_eq!(s, 200);
    let items = listed["data"].as_array().unwrap();
    assert!(items.iter().any(|m| m["id"] == id.as_str()), "{listed}");
    assert!(items.iter().all(|m| m["user_id"] == "alice"), "{listed}");
    let (s, _) = api(
        &proxy,
        del.clone(),
        &format!("/v1/memories/{id}?user_id=alice"),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = api(
        &proxy,
        get.clone(),
        &format!("/v1/memories/{id}?user_id=alice"),
    )
    .await;
    assert_eq!(s, 404);

    // Forget-all removes one scope's documents, not another's.
    for (user, fact) in [("alice", "Alice owns a kayak"), ("bob", "Bob owns a canoe")] {
        let resp = client()
            .post(proxy.url("/v1/memories"))
            .json(&json!({"user_id": user, "content": fact}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    // A project of alice's: forget-all without a project takes it too.
    let resp = client()
        .post(proxy.url("/v1/memories"))
        .json(&json!({"user_id": "alice", "project": "shop", "content": "Alice ships on Fridays"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let (s, gone) = api(&proxy, del, "/v1/memories?user_id=alice").await;
    assert_eq!(s, 200, "{gone}");
    assert!(
        !sm.documents().iter().any(|d| d.2.contains("Fridays")),
        "the project's memory outlived forget-all"
    );
    assert!(gone["deleted"].as_u64().unwrap() >= 1, "{gone}");
    let left = sm.documents();
    assert!(
        left.iter().all(|d| d.1 == vec![container_tag("bob")]),
        "{left:?}"
    );
    assert!(left.iter().any(|d| d.2.contains("canoe")), "{left:?}");
}

#[tokio::test]
async fn supermemory_errors_are_503_and_never_fail_a_chat() {
    let mock = MockUpstream::start().await;
    let sm = MockSupermemory::start().await;
    let proxy = start_proxy(&mock, &sm, SUPERMEMORY_KEY).await;
    let search = "/v1/memories/search?user_id=alice&q=anything";

    sm.fail_next(&[429]);
    let (s, body) = api(&proxy, reqwest::Method::GET, search).await;
    assert_eq!(s, 503, "{body}");
    assert!(body.to_string().contains("rate limit"), "{body}");

    sm.fail_next(&[500]);
    let (s, body) = api(&proxy, reqwest::Method::GET, search).await;
    assert_eq!(s, 503, "{body}");
    assert!(body.to_string().contains("500"), "{body}");

    // A whole outage: the memory API says so; chats are answered without memories.
    sm.set_down(true);
    let (s, body) = api(&proxy, reqwest::Method::GET, "/v1/memories?user_id=alice").await;
    assert_eq!(s, 503, "{body}");
    chat(&proxy, "alice", "Hello while Supermemory is down").await;
    assert!(!last_upstream(&mock).contains("memproxy-memory"));
    sm.set_down(false);
    let (s, _) = api(&proxy, reqwest::Method::GET, search).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn a_refused_api_key_is_a_clear_503() {
    let mock = MockUpstream::start().await;
    let sm = MockSupermemory::start().await;
    let proxy = start_proxy(&mock, &sm, "sm_wrong").await;
    let (s, body) = api(&proxy, reqwest::Method::GET, "/v1/memories?user_id=alice").await;
    assert_eq!(s, 503, "{body}");
    assert!(body.to_string().contains("API key"), "{body}");
    chat(&proxy, "alice", "Still answered").await;
}

#[tokio::test]
async fn the_backend_needs_an_api_key() {
    let yaml = "memory: {backend: supermemory}\n";
    let Err(err) = memproxy::config::parse(yaml, "t.yaml", &Overrides::default(), &|_| None) else {
        panic!("a supermemory backend without a key was accepted");
    };
    assert!(err.to_string().contains("SUPERMEMORY_API_KEY"), "{err}");
}
