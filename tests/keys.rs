//! Virtual keys end to end: the LiteLLM-shaped lifecycle (generate, info, list, delete),
//! hashed storage that survives a restart, the user binding headers cannot override,
//! model allow-lists, budgets and expiry.

mod common;

use common::*;
use memproxy::keys::{hash_key, hex, KeyRow};
use serde_json::{json, Value};

const MASTER: &str = "sk-master";

fn config(mock: &MockUpstream) -> String {
    format!(
        r#"
general_settings: {{master_key: {MASTER}}}
model_list:
  - model_name: gpt
    litellm_params: {{model: openai/gpt-4o, api_base: {url}, api_key: sk-up}}
  - model_name: other
    litellm_params: {{model: openai/other, mock_response: "other answer"}}
router_settings: {{num_retries: 0}}
"#,
        url = mock.url()
    )
}

async fn generate(proxy: &Proxy, body: Value) -> (u16, Value) {
    let resp = client()
        .post(proxy.url("/key/generate"))
        .bearer_auth(MASTER)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn chat_as(
    proxy: &Proxy,
    key: &str,
    model: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat_body(model, "hello"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn key_lifecycle_in_litellm_shape() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let (status, gen) = generate(
        &proxy,
        json!({"key_alias": "ci-bot", "models": ["gpt"], "duration": "30d", "max_budget": 10.0,
               "rpm_limit": 100, "tpm_limit": 100000, "metadata": {"team": "infra"},
               "user_id": "ci"}),
    )
    .await;
    assert_eq!(status, 200, "{gen}");
    let key = gen["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sk-") && key.len() > 40);
    assert_eq!(gen["key_alias"], "ci-bot");
    assert_eq!(gen["models"], json!(["gpt"]));
    assert_eq!(gen["metadata"]["team"], "infra");
    assert_eq!(gen["user_id"], "ci");
    assert!(gen["expires"].as_str().unwrap().ends_with('Z'));
    let token = gen["token"].as_str().unwrap().to_string();
    assert_eq!(token, hex(&hash_key(&key)));
    assert!(gen["key_name"]
        .as_str()
        .unwrap()
        .ends_with(&key[key.len() - 4..]));

    // The key works.
    let resp = chat_as(&proxy, &key, "gpt", &[]).await;
    assert_eq!(resp.status(), 200);

    // Info by key and by hash; the key reads its own info.
    for (who, query) in [
        (MASTER, key.as_str()),
        (MASTER, token.as_str()),
        (key.as_str(), ""),
    ] {
        let url = if query.is_empty() {
            proxy.url("/key/info")
        } else {
            proxy.url(&format!("/key/info?key={query}"))
        };
        let info: Value = client()
            .get(url)
            .bearer_auth(who)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(info["key"], token, "{info}");
        assert_eq!(info["info"]["key_alias"], "ci-bot");
        assert_eq!(info["info"]["max_budget"], 10.0);
    }

    let list: Value = client()
        .get(proxy.url("/key/list"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["keys"], json!([token]));
    assert_eq!(list["total_count"], 1);

    // Only the master key manages keys.
    let (status, _) = {
        let r = client()
            .post(proxy.url("/key/generate"))
            .bearer_auth(&key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 403);
    let r = client()
        .get(proxy.url("/key/list"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let del: Value = client()
        .post(proxy.url("/key/delete"))
        .bearer_auth(MASTER)
        .json(&json!({"keys": [key]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(del["deleted_keys"], json!([token]));
    let resp = chat_as(&proxy, &key, "gpt", &[]).await;
    assert_eq!(resp.status(), 401);
    let again = client()
        .post(proxy.url("/key/delete"))
        .bearer_auth(MASTER)
        .json(&json!({"keys": [key]}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn a_bound_key_cannot_act_for_another_user_by_header() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let (_, gen) = generate(&proxy, json!({"user_id": "alice"})).await;
    let key = gen["key"].as_str().unwrap();

    let resp = chat_as(
        &proxy,
        key,
        "gpt",
        &[
            ("x-memory-user-id", "bob"),
            ("user-agent", "claude-cli/2.1"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-memproxy-user-id"], "alice");
    let upstream = &mock.requests()[0];
    assert_eq!(upstream.headers["x-memproxy-user-id"], "alice");

    let info: Value = client()
        .get(proxy.url("/memory-routing/info"))
        .bearer_auth(key)
        .header("x-memory-user-id", "bob")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["user_id"], "alice");
    assert_eq!(info["matched_rule"]["type"], "key_binding");
    assert_eq!(info["authenticated_as"], "virtual_key");

    // Nor can it read other users' usage.
    let r = client()
        .get(proxy.url("/v1/usage/requests?user_id=bob"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Its row is attributed to alice and to the key.
    let rows: Value = client()
        .get(proxy.url("/v1/usage/requests"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = &rows["data"][0];
    assert_eq!(row["user_id"], "alice");
    assert_eq!(row["key_id"], gen["token"]);
}

#[tokio::test]
async fn model_allow_list_is_enforced_with_a_clear_message() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let (_, gen) = generate(&proxy, json!({"models": ["other"]})).await;
    let key = gen["key"].as_str().unwrap();
    assert_eq!(chat_as(&proxy, key, "other", &[]).await.status(), 200);
    let resp = chat_as(&proxy, key, "gpt", &[]).await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("`gpt`") && msg.contains("other"), "{msg}");
    assert_eq!(body["error"]["code"], "model_not_allowed");
    assert_eq!(mock.count(), 0, "a refused model is never called");
    let models: Value = client()
        .get(proxy.url("/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
    assert_eq!(models["data"][0]["id"], "other");
}

#[tokio::test]
async fn a_key_over_budget_gets_429() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    // gpt-4o: one request costs a few hundred-thousandths of a dollar.
    let (_, gen) = generate(&proxy, json!({"max_budget": 0.00001})).await;
    let key = gen["key"].as_str().unwrap();
    assert_eq!(chat_as(&proxy, key, "gpt", &[]).await.status(), 200);
    let resp = chat_as(&proxy, key, "gpt", &[]).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Budget has been exceeded"),
        "{body}"
    );
    assert_eq!(body["error"]["type"], "budget_exceeded");
    assert_eq!(mock.count(), 1);
    let info: Value = client()
        .get(proxy.url(&format!("/key/info?key={key}")))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(info["info"]["spend"].as_f64().unwrap() > 0.00001);
}

#[tokio::test]
async fn keys_are_stored_hashed_survive_restarts_and_expire() {
    let mock = MockUpstream::start().await;
    let (cfg, dir) = test_config(&config(&mock), &[]);
    let state = memproxy::AppState::new(cfg).unwrap();
    let proxy = start_state(state.clone()).await;
    let (_, gen) = generate(&proxy, json!({"key_alias": "keeper"})).await;
    let key = gen["key"].as_str().unwrap().to_string();
    assert_eq!(chat_as(&proxy, &key, "gpt", &[]).await.status(), 200);
    // A key that expired a second ago, written straight into the store.
    let expired = "sk-expired-key-0001";
    let row = KeyRow {
        hash: hex(&hash_key(expired)),
        created_ms: 1,
        expires_ms: Some(memproxy::analytics::timefmt::now_ms() - 1000),
        preview: "sk-...0001".into(),
        metadata: json!({}),
        ..Default::default()
    };
    state.key_store.insert(&row).await.unwrap();
    proxy.shutdown().await.unwrap();
    drop(state);

    let db = std::fs::read(dir.path().join("analytics.db")).unwrap();
    let wal = std::fs::read(dir.path().join("analytics.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "the key itself is never stored"
        );
    }

    let (cfg, _) = test_config(&config(&mock), &[]);
    let mut cfg = cfg;
    cfg.analytics.data_dir = dir.path().to_path_buf();
    let proxy = start_state(memproxy::AppState::new(cfg).unwrap()).await;
    let resp = chat_as(&proxy, &key, "gpt", &[]).await;
    assert_eq!(resp.status(), 200, "keys survive a restart");
    let resp = chat_as(&proxy, expired, "gpt", &[]).await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    assert_eq!(body["error"]["code"], "key_expired");
}

#[tokio::test]
async fn bad_generate_requests_are_400() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    for body in [
        json!({"duration": "forever"}),
        json!({"user_id": "not a valid id"}),
        json!({"max_budget": -1}),
        json!({"key": "not-sk"}),
        json!({"metadata": [1, 2]}),
        json!({"rpm_limit": 0}),
        // NUL fits no text column of PostgreSQL: refused on every backend alike.
        json!({"key_alias": "a\0b"}),
        json!({"key": "sk-with-a-nul-\0"}),
        json!({"models": ["gpt\0"]}),
        json!({"metadata": {"team": {"name": "x\0"}}}),
        json!({"metadata": {"k\0": 1}}),
    ] {
        let (status, resp) = generate(&proxy, body.clone()).await;
        assert_eq!(status, 400, "{body} → {resp}");
    }
    let (status, _) = generate(&proxy, json!({"key": "sk-chosen-by-me-1"})).await;
    assert_eq!(status, 200);
    let (status, _) = generate(&proxy, json!({"key": "sk-chosen-by-me-1"})).await;
    assert_eq!(status, 400, "duplicate key");
}

#[tokio::test]
async fn a_bound_key_reaches_only_its_own_memory() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let (_, gen) = generate(&proxy, json!({"user_id": "alice"})).await;
    let key = gen["key"].as_str().unwrap().to_string();
    let (_, unbound) = generate(&proxy, json!({})).await;
    let unbound = unbound["key"].as_str().unwrap().to_string();

    let add = |who: String, user: &'static str| {
        client()
            .post(proxy.url("/v1/memories"))
            .bearer_auth(who)
            .json(&json!({"user_id": user, "content": format!("a fact about {user}")}))
            .send()
    };
    assert_eq!(add(MASTER.into(), "bob").await.unwrap().status(), 201);
    assert_eq!(add(key.clone(), "alice").await.unwrap().status(), 201);
    let refused = add(key.clone(), "bob").await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "user_not_allowed");
    assert_eq!(add(unbound.clone(), "alice").await.unwrap().status(), 403);

    let get =
        |who: String, path: &'static str| client().get(proxy.url(path)).bearer_auth(who).send();
    let own = get(key.clone(), "/v1/memories?user_id=alice")
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let other = get(key.clone(), "/v1/memories?user_id=bob").await.unwrap();
    assert_eq!(other.status(), 403);
    let search = get(key.clone(), "/v1/memories/search?user_id=bob&q=fact")
        .await
        .unwrap();
    assert_eq!(search.status(), 403);
    // Session listing without a user is scoped to the key's user, or refused unbound.
    assert_eq!(
        get(key.clone(), "/v1/sessions").await.unwrap().status(),
        200
    );
    assert_eq!(get(unbound, "/v1/sessions").await.unwrap().status(), 403);
    let forget = client()
        .delete(proxy.url("/v1/memories?user_id=bob"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(forget.status(), 403);
}

#[tokio::test]
async fn metrics_can_require_the_master_key() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "{}observability: {{require_auth_for_metrics_endpoint: true}}\n",
        config(&mock)
    );
    let proxy = start(&yaml).await;
    let (_, gen) = generate(&proxy, json!({})).await;
    let key = gen["key"].as_str().unwrap();
    let get = |auth: Option<&str>| {
        let mut r = client().get(proxy.url("/metrics"));
        if let Some(a) = auth {
            r = r.bearer_auth(a);
        }
        r.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some(key)).await.unwrap().status(), 403);
    assert_eq!(get(Some(MASTER)).await.unwrap().status(), 200);
}
