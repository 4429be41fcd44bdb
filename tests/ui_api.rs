//! The APIs behind the dashboard: sign-in sessions (cookie, CSRF, revocation), usage over
//! time and its scoping to a virtual key, a request's injected memories, editing and
//! importing memories, changing a key's limits. The pages themselves are tested in a
//! browser by tests/ui (scripts/test.sh).

mod common;

use common::*;
use serde_json::{json, Value};

const MASTER: &str = "sk-master";

fn config(mock: &MockUpstream) -> String {
    format!(
        r#"
general_settings: {{master_key: {MASTER}}}
model_list:
  - model_name: gpt
    litellm_params: {{model: openai/gpt-4o, api_base: {url}, api_key: sk-up}}
context_retrieval: {{enabled: true, injection_strategy: system}}
"#,
        url = mock.url()
    )
}

async fn call(
    proxy: &Proxy,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client()
        .request(method.parse().unwrap(), proxy.url(path))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn chat(proxy: &Proxy, key: &str, user: &str, text: &str) -> String {
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-memory-user-id", user)
        .json(&chat_body("gpt", text))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["x-request-id"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn sessions_need_their_csrf_token_and_end_with_their_key() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let login = |key: &str| {
        client()
            .post(proxy.url("/ui/login"))
            .json(&json!({ "key": key }))
            .send()
    };
    let refused = login("sk-wrong").await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("set-cookie").is_none());

    let (_, gen) = call(
        &proxy,
        "POST",
        "/key/generate",
        MASTER,
        Some(json!({"user_id": "bob"})),
    )
    .await;
    let key = gen["key"].as_str().unwrap().to_string();
    let resp = login(&key).await.unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().unwrap().to_string();
    assert_eq!(body["principal"]["user_id"], "bob");

    let with_cookie = |method: &str, path: &str| {
        client()
            .request(method.parse().unwrap(), proxy.url(path))
            .header("cookie", &session)
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(
            with_cookie("GET", "/v1/memories?user_id=bob")
                .send()
                .await
                .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            with_cookie("GET", "/v1/memories?user_id=alice")
                .send()
                .await
                .unwrap()
        ),
        403
    );
    // A change needs the token, and the page's own origin.
    let add = json!({"user_id": "bob", "content": "Bob deploys on Fridays."});
    assert_eq!(
        status(
            with_cookie("POST", "/v1/memories")
                .json(&add)
                .send()
                .await
                .unwrap()
        ),
        403
    );
    let foreign = with_cookie("POST", "/v1/memories")
        .header("x-csrf-token", &csrf)
        .header("origin", "http://evil.example")
        .json(&add);
    assert_eq!(status(foreign.send().await.unwrap()), 403);
    let ok = with_cookie("POST", "/v1/memories")
        .header("x-csrf-token", &csrf)
        .json(&add);
    assert_eq!(status(ok.send().await.unwrap()), 201);
    // Model requests never take the cookie.
    let model = with_cookie("POST", "/v1/chat/completions").json(&chat_body("gpt", "hi"));
    assert_eq!(status(model.send().await.unwrap()), 401);

    call(
        &proxy,
        "POST",
        "/key/delete",
        MASTER,
        Some(json!({"keys": [key]})),
    )
    .await;
    assert_eq!(
        status(
            with_cookie("GET", "/v1/memories?user_id=bob")
                .send()
                .await
                .unwrap()
        ),
        401
    );
}

#[tokio::test]
async fn usage_over_time_is_scoped_to_a_virtual_key_and_requests_show_their_memories() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let (_, gen) = call(
        &proxy,
        "POST",
        "/key/generate",
        MASTER,
        Some(json!({"user_id": "bob"})),
    )
    .await;
    let key = gen["key"].as_str().unwrap().to_string();
    call(
        &proxy,
        "POST",
        "/v1/memories",
        MASTER,
        Some(json!({"user_id": "alice", "content": "Alice indents with tabs."})),
    )
    .await;
    let id = chat(&proxy, MASTER, "alice", "Should I indent with tabs?").await;
    chat(&proxy, MASTER, "alice", "another question").await;
    chat(&proxy, &key, "ignored", "bob's question").await;

    let (s, all) = call(
        &proxy,
        "GET",
        "/v1/usage/timeseries?range=1h&group_by=user",
        MASTER,
        None,
    )
    .await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(all["totals"]["requests"], 3);
    assert_eq!(all["source"], "rows");
    let groups: Vec<&str> = all["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["alice", "bob"]);
    let (_, hourly) = call(
        &proxy,
        "GET",
        "/v1/usage/timeseries?range=24h&bucket=1h",
        MASTER,
        None,
    )
    .await;
    assert_eq!(hourly["source"], "rollup");
    assert_eq!(hourly["totals"]["requests"], 3);
    assert_eq!(
        hourly["all"]["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        3
    );

    let (_, own) = call(
        &proxy,
        "GET",
        "/v1/usage/timeseries?range=24h&group_by=model",
        &key,
        None,
    )
    .await;
    assert_eq!(own["totals"]["requests"], 1);
    assert_eq!(own["groups"][0]["group"], "gpt");
    let (s, _) = call(
        &proxy,
        "GET",
        "/v1/usage/timeseries?user_id=alice",
        &key,
        None,
    )
    .await;
    assert_eq!(s, 403);
    let (_, rows) = call(&proxy, "GET", "/v1/usage/requests", &key, None).await;
    assert_eq!(rows["data"].as_array().unwrap().len(), 1);
    let (s, _) = call(
        &proxy,
        "GET",
        &format!("/v1/usage/requests/{id}"),
        &key,
        None,
    )
    .await;
    assert_eq!(s, 404, "another key's request is not found");

    proxy.flush_memory().await;
    let (s, detail) = call(
        &proxy,
        "GET",
        &format!("/v1/usage/requests/{id}"),
        MASTER,
        None,
    )
    .await;
    assert_eq!(s, 200, "{detail}");
    assert_eq!(
        detail["request"]["memory_query"],
        "Should I indent with tabs?"
    );
    let inj = &detail["injected"][0];
    assert_eq!(inj["rank"], 1);
    assert!(inj["score"].as_f64().unwrap() > 0.0);
    assert_eq!(inj["memory"]["content"], "Alice indents with tabs.");
    assert!(
        inj["matched_terms"]
            .as_array()
            .unwrap()
            .contains(&json!("tab")),
        "{inj}"
    );
    assert_eq!(detail["captured"][0]["metadata"]["request_id"], id.as_str());
}

#[tokio::test]
async fn memories_are_edited_and_imported_and_keys_change_limits() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let (_, m) = call(
        &proxy,
        "POST",
        "/v1/memories",
        MASTER,
        Some(json!({"user_id": "alice", "content": "Alice likes tea.", "metadata": {"tag": "drink"}})),
    )
    .await;
    let old = m["id"].as_str().unwrap();
    let (s, edited) = call(
        &proxy,
        "PATCH",
        &format!("/v1/memories/{old}?user_id=alice"),
        MASTER,
        Some(json!({"content": "Alice likes coffee."})),
    )
    .await;
    assert_eq!(s, 200, "{edited}");
    assert_eq!(edited["content"], "Alice likes coffee.");
    assert_eq!(edited["metadata"]["tag"], "drink");
    let (s, _) = call(
        &proxy,
        "GET",
        &format!("/v1/memories/{old}?user_id=alice"),
        MASTER,
        None,
    )
    .await;
    assert_eq!(s, 404, "the old version is gone");

    let jsonl = "{\"content\": \"one\", \"user_id\": \"mallory\"}\n\n{\"content\": \"two\", \"metadata\": {\"k\": 1}, \"session_id\": null}\n";
    let resp = client()
        .post(proxy.url("/v1/memories/import?user_id=bob"))
        .bearer_auth(MASTER)
        .body(jsonl)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let (_, list) = call(&proxy, "GET", "/v1/memories?user_id=bob", MASTER, None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let bad = client()
        .post(proxy.url("/v1/memories/import?user_id=bob"))
        .bearer_auth(MASTER)
        .body("{\"content\": \"three\"}\nnot json\n")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400, "nothing is stored from a bad file");
    let (_, list) = call(&proxy, "GET", "/v1/memories?user_id=bob", MASTER, None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);

    let (_, gen) = call(
        &proxy,
        "POST",
        "/key/generate",
        MASTER,
        Some(json!({"key_alias": "ci", "rpm_limit": 5})),
    )
    .await;
    let token = gen["token"].as_str().unwrap();
    let (s, up) = call(
        &proxy,
        "POST",
        "/key/update",
        MASTER,
        Some(json!({"key": token, "rpm_limit": null, "tpm_limit": 1000, "user_id": "carol", "max_budget": 2.5})),
    )
    .await;
    assert_eq!(s, 200, "{up}");
    let info = &up["info"];
    assert_eq!(
        (info["rpm_limit"].clone(), info["tpm_limit"].clone()),
        (Value::Null, json!(1000))
    );
    assert_eq!(
        (info["user_id"].clone(), info["max_budget"].clone()),
        (json!("carol"), json!(2.5))
    );
    assert_eq!(info["key_alias"], "ci");
    let key = gen["key"].as_str().unwrap();
    let (s, _) = call(
        &proxy,
        "POST",
        "/key/update",
        key,
        Some(json!({"key": token, "rpm_limit": 1})),
    )
    .await;
    assert_eq!(s, 403, "only the master key changes keys");
    // Stored: a restart-free reload of the keys reads the same row.
    let rows = proxy.state.analytics.call(|s| s.load_keys()).await.unwrap();
    assert_eq!(rows[0].tpm_limit, Some(1000));
    assert_eq!(rows[0].user_id.as_deref(), Some("carol"));
}
