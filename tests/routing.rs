//! Retries, fallbacks, load balancing, wildcards, upstream mode and Supermemory headers.

mod common;

use common::*;
use memproxy::config::Overrides;
use serde_json::{json, Value};

async fn chat(proxy: &Proxy, model: &str) -> reqwest::Response {
    client()
        .post(proxy.url("/v1/chat/completions"))
        .header("authorization", "Bearer client-key")
        .json(&chat_body(model, "route me"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn retries_429_and_5xx_then_succeeds() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Status(
        429,
        json!({"error": {"message": "slow down"}}),
    ));
    mock.push(Behavior::Status(500, json!({"error": {"message": "boom"}})));
    let yaml = format!(
        "model_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/x, api_base: '{}'}}\nrouter_settings: {{num_retries: 2}}\n",
        mock.url()
    );
    let proxy = start(&yaml).await;
    let resp = chat(&proxy, "gpt").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.count(), 3);
}

#[tokio::test]
async fn per_deployment_max_retries_overrides_router_setting() {
    let mock = MockUpstream::start().await;
    for _ in 0..5 {
        mock.push(Behavior::Status(500, json!({"error": {"message": "boom"}})));
    }
    let yaml = format!(
        "model_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/x, api_base: '{}', max_retries: 0}}\nrouter_settings: {{num_retries: 4}}\n",
        mock.url()
    );
    let proxy = start(&yaml).await;
    assert_eq!(chat(&proxy, "gpt").await.status(), 500);
    assert_eq!(mock.count(), 1);
}

#[tokio::test]
async fn fallbacks_are_tried_after_retries() {
    let primary = MockUpstream::start().await;
    let backup = MockUpstream::start().await;
    for _ in 0..2 {
        primary.push(Behavior::Status(502, json!({"error": {"message": "down"}})));
    }
    backup.push(Behavior::Text("from the backup".into()));
    let yaml = format!(
        "model_list:\n  - model_name: gpt-4\n    litellm_params: {{model: openai/gpt-4, api_base: '{}'}}\n  - model_name: claude\n    litellm_params: {{model: openai/backup-model, api_base: '{}'}}\nrouter_settings: {{num_retries: 1, fallbacks: [{{gpt-4: [claude]}}]}}\n",
        primary.url(),
        backup.url()
    );
    let proxy = start(&yaml).await;
    let resp = chat(&proxy, "gpt-4").await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "from the backup");
    assert_eq!(primary.count(), 2);
    assert_eq!(backup.requests()[0].body["model"], "backup-model");
}

#[tokio::test]
async fn deployments_of_one_model_share_the_load() {
    let a = MockUpstream::start().await;
    let b = MockUpstream::start().await;
    let yaml = format!(
        "model_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/x, api_base: '{}'}}\n  - model_name: gpt\n    litellm_params: {{model: openai/x, api_base: '{}'}}\n",
        a.url(),
        b.url()
    );
    let proxy = start(&yaml).await;
    for _ in 0..60 {
        assert_eq!(chat(&proxy, "gpt").await.status(), 200);
    }
    // Each deployment gets traffic (the chance of all 60 going one way is 2^-59).
    assert!(
        a.count() > 0 && b.count() > 0,
        "{} / {}",
        a.count(),
        b.count()
    );
    assert_eq!(a.count() + b.count(), 60);
}

#[tokio::test]
async fn a_failing_deployment_is_retried_on_another() {
    let bad = MockUpstream::start().await;
    let good = MockUpstream::start().await;
    for _ in 0..20 {
        bad.push(Behavior::Status(500, json!({"error": {"message": "bad"}})));
    }
    let yaml = format!(
        "model_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/x, api_base: '{}'}}\n  - model_name: gpt\n    litellm_params: {{model: openai/x, api_base: '{}'}}\nrouter_settings: {{num_retries: 1}}\n",
        bad.url(),
        good.url()
    );
    let proxy = start(&yaml).await;
    for _ in 0..10 {
        assert_eq!(chat(&proxy, "gpt").await.status(), 200);
    }
}

#[tokio::test]
async fn wildcard_model_names_route_with_the_matched_part() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "model_list:\n  - model_name: 'claude-*'\n    litellm_params: {{model: 'openai/claude-*', api_base: '{}'}}\n",
        mock.url()
    );
    let proxy = start(&yaml).await;
    assert_eq!(chat(&proxy, "claude-sonnet-4-5").await.status(), 200);
    assert_eq!(mock.requests()[0].body["model"], "claude-sonnet-4-5");
    assert_eq!(chat(&proxy, "gpt-4").await.status(), 404);
}

#[tokio::test]
async fn upstream_mode_forwards_every_model_with_memory_headers() {
    let gateway = MockUpstream::start().await;
    let overrides = Overrides {
        upstream: Some(gateway.url()),
        ..Default::default()
    };
    let proxy = start_with("", &[("SUPERMEMORY_API_KEY", "sm-key")], overrides).await;
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .header("authorization", "Bearer client-key")
        .header("x-memory-user-id", "bob")
        .json(&chat_body("any-model-name", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = &gateway.requests()[0];
    assert_eq!(seen.body["model"], "any-model-name");
    assert_eq!(seen.headers["x-sm-user-id"], "bob");
    assert_eq!(seen.headers["x-memproxy-user-id"], "bob");
    assert_eq!(seen.headers["x-supermemory-api-key"], "sm-key");
    assert_eq!(seen.headers["authorization"], "Bearer client-key");
}

#[tokio::test]
async fn supermemory_router_gets_user_and_key_headers() {
    let mock = MockUpstream::start().await;
    // The mock answers any path; the api_base names Supermemory's router host.
    let yaml = format!(
        "model_list:\n  - model_name: sm\n    litellm_params: {{model: openai/gpt-4o, api_base: 'http://{}/v3/api.supermemory.ai/v1', api_key: sk-openai}}\n",
        mock.addr
    );
    let proxy = start_with(
        &yaml,
        &[("SUPERMEMORY_API_KEY", "sm-secret")],
        Overrides::default(),
    )
    .await;
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .header("user-agent", "claude-cli/2.1.0 (external, sdk-cli)")
        .json(&chat_body("sm", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = &mock.requests()[0];
    assert_eq!(seen.headers["x-sm-user-id"], "claude-code");
    assert_eq!(seen.headers["x-supermemory-api-key"], "sm-secret");
    assert_eq!(seen.headers["authorization"], "Bearer sk-openai");
}

/// A Supermemory router that sets a session cookie naming the user it was made for, and
/// records the cookies each request brought.
async fn cookie_router() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    use axum::http::HeaderMap;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let log = log.clone();
        async move {
            let get = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let user = get("x-sm-user-id");
            log.lock().unwrap().push((user.clone(), get("cookie")));
            let body = json!({"id": "c", "object": "chat.completion", "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                             "finish_reason": "stop"}]});
            (
                [("set-cookie", format!("challenge={user}; Path=/"))],
                axum::Json(body),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

#[tokio::test]
async fn supermemory_router_cookies_stay_with_their_user() {
    let (addr, seen) = cookie_router().await;
    let yaml = format!(
        "model_list:\n  - model_name: sm\n    litellm_params: {{model: openai/gpt-4o, api_base: 'http://{addr}/v3/api.supermemory.ai/v1'}}\n"
    );
    let proxy = start(&yaml).await;
    for user in ["alice", "bob", "alice", "bob"] {
        let resp = client()
            .post(proxy.url("/v1/chat/completions"))
            .header("x-memory-user-id", user)
            .json(&chat_body("sm", "hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let seen = seen.lock().unwrap().clone();
    let expected: Vec<(String, String)> = [
        ("alice", ""),
        ("bob", ""),
        ("alice", "challenge=alice"),
        ("bob", "challenge=bob"),
    ]
    .iter()
    .map(|(u, c)| (u.to_string(), c.to_string()))
    .collect();
    assert_eq!(seen, expected);
}

/// With Redis shared, a router's cookies follow their user to any instance: set through
/// A, sent through B; never to another user.
#[tokio::test]
async fn supermemory_router_cookies_follow_their_user_across_instances() {
    let (addr, seen) = cookie_router().await;
    let redis_url = std::env::var("MEMPROXY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = redis::Client::open(redis_url.as_str()).unwrap();
    // Fails (never skips) when the test Redis is down.
    let mut c = redis
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("the test Redis at {redis_url} is unreachable: {e}"));
    let prefix = format!("memproxy-test:{}:", uuid::Uuid::new_v4());
    let yaml = format!(
        "general_settings: {{redis_url: '{redis_url}'}}\nrate_limits: {{redis_prefix: '{prefix}'}}\nmodel_list:\n  - model_name: sm\n    litellm_params: {{model: openai/gpt-4o, api_base: 'http://{addr}/v3/api.supermemory.ai/v1'}}\n"
    );
    let a = start(&yaml).await;
    let b = start(&yaml).await;
    for (proxy, user) in [(&a, "alice"), (&b, "alice"), (&b, "bob"), (&a, "bob")] {
        let resp = client()
            .post(proxy.url("/v1/chat/completions"))
            .header("x-memory-user-id", user)
            .json(&chat_body("sm", "hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let seen = seen.lock().unwrap().clone();
    let expected: Vec<(String, String)> = [
        ("alice", ""),
        ("alice", "challenge=alice"),
        ("bob", ""),
        ("bob", "challenge=bob"),
    ]
    .iter()
    .map(|(u, c)| (u.to_string(), c.to_string()))
    .collect();
    assert_eq!(seen, expected);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "one jar per user: {keys:?}");
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut c)
        .await
        .unwrap();
}
