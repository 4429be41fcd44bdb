//! Client detection priority and master-key authentication, through the real server.

mod common;

use common::*;
use serde_json::Value;

const PATTERNS: &str = r#"
general_settings: {master_key: sk-master}
user_id_mappings:
  custom_header: x-memory-user-id
  header_patterns:
    - {header: user-agent, pattern: "OpenAIClientImpl/Java", user_id: pycharm-ai}
    - {header: user-agent, pattern: "^Claude Code|claude-cli", user_id: claude-code}
    - {header: x-client-name, pattern: "claude", user_id: second-match}
  default_user_id: fallback-user
model_list:
  - model_name: demo
    litellm_params: {model: openai/demo, mock_response: ok}
"#;

async fn info(proxy: &Proxy, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client()
        .get(proxy.url("/memory-routing/info?model=demo"))
        .header("authorization", "Bearer sk-master");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn detection_priority_matrix() {
    let proxy = start(PATTERNS).await;
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (&[], "fallback-user", "default"),
        (&[("user-agent", "curl/8")], "fallback-user", "default"),
        (
            &[("user-agent", "Mozilla OpenAIClientImpl/Java 17")],
            "pycharm-ai",
            "header_pattern",
        ),
        (
            &[("user-agent", "CLAUDE-CLI/2.1 (external)")],
            "claude-code",
            "header_pattern",
        ),
        (
            &[("user-agent", "Claude Code/1.0")],
            "claude-code",
            "header_pattern",
        ),
        // First match wins: both rule 1 and rule 2 match.
        (
            &[("user-agent", "claude-cli/2"), ("x-client-name", "claude")],
            "claude-code",
            "header_pattern",
        ),
        (
            &[("x-client-name", "my-claude")],
            "second-match",
            "header_pattern",
        ),
        // The custom header beats every pattern.
        (
            &[
                ("user-agent", "claude-cli/2"),
                ("x-memory-user-id", "alice"),
            ],
            "alice",
            "custom_header",
        ),
    ];
    for (headers, user, rule) in cases {
        let (status, v) = info(&proxy, headers).await;
        assert_eq!(status, 200);
        assert_eq!(v["user_id"], *user, "{headers:?} → {v}");
        assert_eq!(v["matched_rule"]["type"], *rule, "{headers:?} → {v}");
    }
    let (_, v) = info(
        &proxy,
        &[("user-agent", "claude-cli/2"), ("x-session-id", "s-1")],
    )
    .await;
    assert_eq!(v["matched_rule"]["index"], 1);
    assert_eq!(v["matched_rule"]["pattern"], "^Claude Code|claude-cli");
    assert_eq!(v["session_id"], "s-1");
    assert_eq!(v["model"]["configured"], true);
}

#[tokio::test]
async fn builtin_patterns_detect_known_clients() {
    let proxy = start("model_list:\n  - model_name: demo\n    litellm_params: {model: openai/demo, mock_response: ok}\n").await;
    for (ua, user) in [
        ("codex_exec/0.169.0 (Linux)", "codex"),
        ("codex_cli_rs/0.169.0", "codex"),
        ("claude-cli/2.1.3 (external, sdk-cli)", "claude-code"),
        ("OpenAIClientImpl/Java", "pycharm-ai"),
        ("python-httpx", "default-dev"),
    ] {
        let resp = client()
            .post(proxy.url("/v1/chat/completions"))
            .header("user-agent", ua)
            .json(&chat_body("demo", "x"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-memproxy-user-id"], user, "{ua}");
    }
    let (_, v) = info(&proxy, &[]).await;
    assert_eq!(v["user_id"], "default-dev");
}

#[tokio::test]
async fn invalid_user_id_is_400_not_a_fallback() {
    let proxy = start(PATTERNS).await;
    for bad in ["has space", "semi;colon", "ünï", &"x".repeat(200)] {
        let resp = client()
            .post(proxy.url("/v1/chat/completions"))
            .header("authorization", "Bearer sk-master")
            .header("x-memory-user-id", bad)
            .json(&chat_body("demo", "x"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_user_id");
    }
}

#[tokio::test]
async fn master_key_is_required_when_set() {
    let proxy = start(PATTERNS).await;
    let c = client();
    let url = proxy.url("/v1/chat/completions");
    let body = chat_body("demo", "x");
    let missing = c.post(&url).json(&body).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let v: Value = missing.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(
        c.post(&url)
            .bearer_auth("sk-wrong")
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.post(&url)
            .bearer_auth("sk-master")
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.post(&url)
            .header("x-api-key", "sk-master")
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for path in [
        "/health",
        "/health/readiness",
        "/v1/models",
        "/memory-routing/info",
        "/v1/debug/routing",
    ] {
        assert_eq!(
            c.get(proxy.url(path)).send().await.unwrap().status(),
            401,
            "{path}"
        );
        assert_eq!(
            c.get(proxy.url(path))
                .bearer_auth("sk-master")
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{path}"
        );
    }
    assert_eq!(
        c.get(proxy.url("/health/liveliness"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn every_response_carries_request_and_user_ids() {
    let proxy = start(PATTERNS).await;
    let resp = client().get(proxy.url("/v1/models")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("x-request-id"));
    let resp = client()
        .get(proxy.url("/v1/models"))
        .bearer_auth("sk-master")
        .header("x-request-id", "my-trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "my-trace-42");
    assert_eq!(resp.headers()["x-memproxy-user-id"], "fallback-user");
}
