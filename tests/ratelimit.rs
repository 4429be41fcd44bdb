//! Rate limits through the real server, on a clock the test moves (no sleeps): per-user
//! requests per minute from config and from the original's environment variables, key
//! request and token limits, OpenAI's headers on 429 and on success.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use memproxy::ratelimit::ManualClock;
use serde_json::{json, Value};

const MASTER: &str = "sk-master";

fn config(limits: &str) -> String {
    format!(
        r#"
general_settings: {{master_key: {MASTER}}}
model_list:
  - model_name: m
    litellm_params: {{model: openai/gpt-4o-mini, mock_response: "a fixed answer of some length"}}
{limits}
"#
    )
}

async fn start_clocked(yaml: &str, env: &[(&str, &str)]) -> (Proxy, Arc<ManualClock>) {
    let (cfg, dir) = test_config(yaml, env);
    let clock = Arc::new(ManualClock::default());
    let state = memproxy::AppState::with_clock(cfg, clock.clone()).unwrap();
    let mut proxy = start_state(state).await;
    proxy.data_dir = Some(dir);
    (proxy, clock)
}

async fn chat(proxy: &Proxy, key: &str, user: &str) -> reqwest::Response {
    client()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-memory-user-id", user)
        .json(&chat_body("m", "hello"))
        .send()
        .await
        .unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn per_user_requests_per_minute_with_openai_headers() {
    let (proxy, clock) = start_clocked(
        &config("rate_limits: {enabled: true, requests_per_minute: 3}"),
        &[],
    )
    .await;
    for remaining in ["2", "1", "0"] {
        let resp = chat(&proxy, MASTER, "alice").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-ratelimit-limit-requests"), "3");
        assert_eq!(header(&resp, "x-ratelimit-remaining-requests"), remaining);
    }
    let resp = chat(&proxy, MASTER, "alice").await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "retry-after"), "20");
    assert_eq!(header(&resp, "x-ratelimit-limit-requests"), "3");
    assert_eq!(header(&resp, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&resp, "x-ratelimit-reset-requests"), "1m0s");
    assert_eq!(header(&resp, "x-memproxy-user-id"), "alice");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["type"], "requests");

    // Another user has a bucket of their own.
    assert_eq!(chat(&proxy, MASTER, "bob").await.status(), 200);

    clock.advance(Duration::from_millis(19_999));
    assert_eq!(chat(&proxy, MASTER, "alice").await.status(), 429);
    clock.advance(Duration::from_millis(1));
    assert_eq!(chat(&proxy, MASTER, "alice").await.status(), 200);

    // The refusals are rows too.
    let rows: Value = client()
        .get(proxy.url("/v1/usage/requests?user_id=alice"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let limited = rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == 429 && r["error_type"] == "rate_limited")
        .count();
    assert_eq!(limited, 2);
}

#[tokio::test]
async fn the_original_environment_variables_turn_limits_on() {
    let (proxy, _) = start_clocked(
        &config(""),
        &[
            ("ENABLE_RATE_LIMITING", "true"),
            ("MAX_REQUESTS_PER_MINUTE", "1"),
        ],
    )
    .await;
    assert_eq!(chat(&proxy, MASTER, "u").await.status(), 200);
    assert_eq!(chat(&proxy, MASTER, "u").await.status(), 429);
}

#[tokio::test]
async fn limits_are_off_by_default() {
    let (proxy, _) = start_clocked(&config(""), &[]).await;
    for _ in 0..100 {
        let resp = chat(&proxy, MASTER, "u").await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("x-ratelimit-limit-requests").is_none());
    }
}

async fn generate(proxy: &Proxy, body: Value) -> String {
    let v: Value = client()
        .post(proxy.url("/key/generate"))
        .bearer_auth(MASTER)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn key_request_limits_apply_per_key() {
    let (proxy, clock) = start_clocked(&config(""), &[]).await;
    let k1 = generate(&proxy, json!({"rpm_limit": 2})).await;
    let k2 = generate(&proxy, json!({"rpm_limit": 2})).await;
    for _ in 0..2 {
        assert_eq!(chat(&proxy, &k1, "u").await.status(), 200);
    }
    let resp = chat(&proxy, &k1, "other-user").await;
    assert_eq!(resp.status(), 429, "the key's bucket, whatever the user");
    assert_eq!(header(&resp, "retry-after"), "30");
    assert_eq!(chat(&proxy, &k2, "u").await.status(), 200);
    clock.advance(Duration::from_secs(30));
    assert_eq!(chat(&proxy, &k1, "u").await.status(), 200);
}

#[tokio::test]
async fn key_token_limits_charge_estimates_and_settle_real_usage() {
    let (proxy, clock) = start_clocked(&config(""), &[]).await;
    let key = generate(&proxy, json!({"tpm_limit": 30})).await;
    // Each request: estimate ~12 prompt tokens, real usage 13-14 tokens in total.
    let first = chat(&proxy, &key, "u").await;
    assert_eq!(first.status(), 200);
    let body_usage: Value = first.json().await.unwrap();
    let used = body_usage["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used > 0);
    assert_eq!(chat(&proxy, &key, "u").await.status(), 200);
    let resp = chat(&proxy, &key, "u").await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "x-ratelimit-limit-tokens"), "30");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "tokens");
    clock.advance(Duration::from_secs(60));
    let resp = chat(&proxy, &key, "u").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ratelimit-limit-tokens"), "30");
}
