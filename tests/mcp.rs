//! The MCP memory server on `/mcp` (streamable HTTP) against the real server: the tools
//! are listed with their schemas, each works on the caller's memory, a key bound to one
//! user never reaches another's, and a request without a key is refused.

mod common;

use common::*;
use serde_json::{json, Value};

const MASTER: &str = "sk-master";
const CONFIG: &str = "general_settings: {master_key: sk-master}\nmodel_list:\n  - model_name: mock\n    litellm_params: {model: openai/mock, mock_response: hi}\n";

/// One JSON-RPC exchange with `/mcp`; the answer may come as JSON or as one SSE event.
async fn rpc(proxy: &Proxy, key: Option<&str>, method: &str, params: Value) -> (u16, Value) {
    let mut req = client()
        .post(proxy.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|v| v.get("id").is_some())
            .unwrap_or(Value::String(text.clone()))
    });
    (status, body)
}

async fn initialize(proxy: &Proxy, key: &str) {
    let (status, body) = rpc(
        proxy,
        Some(key),
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "memproxy-test", "version": "0"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["serverInfo"]["name"], "memproxy", "{body}");
}

/// Calls a tool; returns (is_error, structured result or error text).
async fn call(proxy: &Proxy, key: &str, tool: &str, args: Value) -> (bool, Value) {
    let (status, body) = rpc(
        proxy,
        Some(key),
        "tools/call",
        json!({"name": tool, "arguments": args}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let result = &body["result"];
    assert!(result.is_object(), "{body}");
    let is_error = result["isError"].as_bool().unwrap_or(false);
    if is_error {
        (true, result["content"][0]["text"].clone())
    } else {
        (false, result["structuredContent"].clone())
    }
}

async fn bound_key(proxy: &Proxy, user: &str) -> String {
    let resp = client()
        .post(proxy.url("/key/generate"))
        .bearer_auth(MASTER)
        .json(&json!({"user_id": user}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn tools_are_listed_and_each_works_on_the_callers_memory() {
    let proxy = start(CONFIG).await;
    let alice = bound_key(&proxy, "alice").await;
    initialize(&proxy, &alice).await;

    let (status, body) = rpc(&proxy, Some(&alice), "tools/list", json!({})).await;
    assert_eq!(status, 200);
    let tools = body["result"]["tools"].as_array().expect("tools");
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    for n in [
        "memory_search",
        "memory_add",
        "memory_get",
        "memory_delete",
        "memory_list",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let search = tools.iter().find(|t| t["name"] == "memory_search").unwrap();
    assert_eq!(search["inputSchema"]["required"], json!(["query"]));

    let (err, added) = call(
        &proxy,
        &alice,
        "memory_add",
        json!({"content": "Alice keeps her bicycle in the red shed"}),
    )
    .await;
    assert!(!err, "{added}");
    let id = added["id"].as_str().unwrap().to_string();
    assert_eq!(added["user_id"], "alice");

    let (err, found) = call(
        &proxy,
        &alice,
        "memory_search",
        json!({"query": "where is the bicycle", "limit": 3}),
    )
    .await;
    assert!(!err, "{found}");
    assert_eq!(found["results"][0]["id"], id.as_str(), "{found}");

    let (err, got) = call(&proxy, &alice, "memory_get", json!({"id": id})).await;
    assert!(!err);
    assert!(got["content"].as_str().unwrap().contains("red shed"));

    let (err, listed) = call(&proxy, &alice, "memory_list", json!({"limit": 10})).await;
    assert!(!err);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    // Bad arguments are a tool error the model can read, and change nothing.
    let (err, msg) = call(&proxy, &alice, "memory_add", json!({"content": ""})).await;
    assert!(err);
    assert!(msg.as_str().unwrap().contains("content"), "{msg}");
    let (err, _) = call(&proxy, &alice, "memory_list", json!({"limit": 0})).await;
    assert!(err);

    let (err, _) = call(&proxy, &alice, "memory_delete", json!({"id": id})).await;
    assert!(!err);
    let (err, msg) = call(&proxy, &alice, "memory_get", json!({"id": id})).await;
    assert!(err, "deleted memory still readable: {msg}");
    // The REST API sees the same store.
    let resp = client()
        .get(proxy.url("/v1/memories?user_id=alice"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_key_bound_to_one_user_never_reads_another_users_memory() {
    let proxy = start(CONFIG).await;
    let alice = bound_key(&proxy, "alice").await;
    let bob = bound_key(&proxy, "bob").await;
    let (_, bobs) = call(
        &proxy,
        &bob,
        "memory_add",
        json!({"content": "Bob's locker code is 4471"}),
    )
    .await;
    let bob_id = bobs["id"].as_str().unwrap().to_string();

    let (err, found) = call(
        &proxy,
        &alice,
        "memory_search",
        json!({"query": "locker code"}),
    )
    .await;
    assert!(!err);
    assert_eq!(found["results"], json!([]), "{found}");
    let (err, _) = call(&proxy, &alice, "memory_get", json!({"id": bob_id})).await;
    assert!(err, "alice read bob's memory by id");
    let (err, _) = call(&proxy, &alice, "memory_delete", json!({"id": bob_id})).await;
    assert!(err, "alice deleted bob's memory");
    let (_, listed) = call(&proxy, &alice, "memory_list", json!({})).await;
    assert_eq!(listed["items"], json!([]));
    // A header naming bob changes nothing for alice's key.
    let resp = client()
        .post(proxy.url("/mcp"))
        .bearer_auth(&alice)
        .header("x-memory-user-id", "bob")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "memory_list", "arguments": {}}}))
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(!text.contains("4471"), "{text}");
    // Bob still has it.
    let (err, got) = call(&proxy, &bob, "memory_get", json!({"id": bob_id})).await;
    assert!(!err);
    assert!(got["content"].as_str().unwrap().contains("4471"));
}

#[tokio::test]
async fn unauthenticated_and_unbound_callers_are_refused() {
    let proxy = start(CONFIG).await;
    let (status, _) = rpc(&proxy, None, "tools/list", json!({})).await;
    assert_eq!(status, 401);
    let (status, _) = rpc(&proxy, Some("sk-wrong"), "tools/list", json!({})).await;
    assert_eq!(status, 401);
    // A virtual key bound to no user may not use anyone's memory.
    let resp = client()
        .post(proxy.url("/key/generate"))
        .bearer_auth(MASTER)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let unbound: Value = resp.json().await.unwrap();
    let unbound = unbound["key"].as_str().unwrap();
    let (err, msg) = call(&proxy, unbound, "memory_list", json!({})).await;
    assert!(err);
    assert!(msg.as_str().unwrap().contains("not bound"), "{msg}");
}

/// One tool call in a project (`x-memory-project`, or the `/p/<project>` prefix).
async fn call_in(
    proxy: &Proxy,
    key: &str,
    project: &str,
    prefix: bool,
    tool: &str,
    args: Value,
) -> Value {
    let (path, header) = if prefix {
        (format!("/p/{project}/mcp"), None)
    } else {
        ("/mcp".to_string(), Some(project))
    };
    let mut req = client()
        .post(proxy.url(&path))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": tool, "arguments": args}}));
    if let Some(p) = header {
        req = req.header("x-memory-project", p);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|v| v.get("id").is_some())
            .unwrap()
    });
    assert!(
        body["result"]["structuredContent"].is_object(),
        "{tool} in {project}: {body}"
    );
    body["result"]["structuredContent"].clone()
}

#[tokio::test]
async fn the_tools_work_in_the_callers_project_only() {
    let proxy = start(CONFIG).await;
    let alice = bound_key(&proxy, "alice").await;
    call_in(
        &proxy,
        &alice,
        "shop",
        false,
        "memory_add",
        json!({"content": "The shop repo deploys with make ship"}),
    )
    .await;
    let found = call_in(
        &proxy,
        &alice,
        "shop",
        true,
        "memory_search",
        json!({"query": "deploys"}),
    )
    .await;
    assert_eq!(
        found["results"].as_array().map(Vec::len),
        Some(1),
        "{found}"
    );
    let other = call_in(
        &proxy,
        &alice,
        "blog",
        true,
        "memory_search",
        json!({"query": "deploys"}),
    )
    .await;
    assert_eq!(other["results"], json!([]), "{other}");
    let listed = call_in(&proxy, &alice, "blog", false, "memory_list", json!({})).await;
    assert_eq!(listed["items"], json!([]), "{listed}");
}
