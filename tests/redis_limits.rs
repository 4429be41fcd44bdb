//! Rate limits shared through the live Redis (`MEMPROXY_TEST_REDIS_URL`, default
//! redis://127.0.0.1:6379): two memproxy instances grant exactly the limit between them;
//! with Redis unreachable they fall back to their own buckets, or refuse when
//! `fail_open: false`. Each test writes under its own key prefix and deletes it after.

mod common;

use common::*;
use serde_json::Value;

fn redis_url() -> String {
    std::env::var("MEMPROXY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix of this test's own, deleted (with every key under it) when dropped.
struct Prefix(String);

impl Prefix {
    async fn new() -> Self {
        // Fails (never skips) when the test Redis is down.
        let client = redis::Client::open(redis_url()).unwrap();
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("the test Redis at {} is unreachable: {e}", redis_url()));
        let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
        assert_eq!(pong, "PONG");
        Prefix(format!("memproxy-test:{}:", uuid::Uuid::new_v4()))
    }

    async fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS")
            .arg(format!("{}*", self.0))
            .query_async(&mut c)
            .await
            .unwrap()
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.0);
        if let Ok(client) = redis::Client::open(redis_url()) {
            if let Ok(mut c) = client.get_connection() {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(&pattern)
                    .query(&mut c)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut c);
                }
            }
        }
    }
}

fn config(url: &str, prefix: &str, fail_open: bool) -> String {
    format!(
        r#"
general_settings: {{redis_url: "{url}"}}
model_list:
  - model_name: m
    litellm_params: {{model: openai/gpt-4o-mini, mock_response: "ok"}}
rate_limits: {{enabled: true, requests_per_minute: 10, fail_open: {fail_open}, redis_prefix: "{prefix}"}}
memory: {{enabled: false}}
"#
    )
}

async fn chat(proxy: &Proxy, user: &str) -> (u16, String) {
    let r = client()
        .post(proxy.url("/v1/chat/completions"))
        .header("x-memory-user-id", user)
        .json(&chat_body("m", "hello"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn two_instances_grant_exactly_the_limit_between_them() {
    let prefix = Prefix::new().await;
    let yaml = config(&redis_url(), &prefix.0, true);
    let a = start(&yaml).await;
    let b = start(&yaml).await;
    let mut granted = 0;
    let mut refused = 0;
    for i in 0..16 {
        let proxy = if i % 2 == 0 { &a } else { &b };
        match chat(proxy, "alice").await {
            (200, _) => granted += 1,
            (429, body) => {
                assert!(body.contains("rate limit exceeded"), "{body}");
                refused += 1
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        (granted, refused),
        (10, 6),
        "10 per minute across both instances"
    );
    // Another user has a bucket of their own.
    assert_eq!(chat(&b, "bob").await.0, 200);
    assert!(!prefix.keys().await.is_empty(), "buckets live in Redis");
}

#[tokio::test]
async fn unreachable_redis_falls_back_or_refuses() {
    // Port 1 on loopback: nothing listens there.
    let open = start(&config("redis://127.0.0.1:1", "memproxy-test-down:", true)).await;
    for _ in 0..10 {
        assert_eq!(chat(&open, "carol").await.0, 200);
    }
    let (status, body) = chat(&open, "carol").await;
    assert_eq!(
        status, 429,
        "this instance's own buckets still limit: {body}"
    );
    let ready: Value = client()
        .get(open.url("/health/readiness"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["redis"]["reachable"], false, "{ready}");
    assert_eq!(ready["status"], "ready", "fail-open stays ready: {ready}");

    let closed = start(&config("redis://127.0.0.1:1", "memproxy-test-down:", false)).await;
    let (status, body) = chat(&closed, "dave").await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body.contains("unreachable") && body.contains("fail_open"),
        "{body}"
    );
    let r = client()
        .get(closed.url("/health/readiness"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}
