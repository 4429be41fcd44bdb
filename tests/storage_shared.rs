//! Several memproxy instances on one PostgreSQL database (`database_url`): what one
//! instance stores, the others use. Each test has a database of its own
//! (`common::pg::TestDb`); an unreachable server fails them.

mod common;

use std::time::{Duration, Instant};

use common::pg::TestDb;
use common::*;
use serde_json::{json, Value};

const MASTER: &str = "sk-master-shared";

fn config(mock: &MockUpstream) -> String {
    format!(
        r#"
general_settings: {{master_key: {MASTER}}}
model_list:
  - model_name: gpt
    litellm_params: {{model: openai/gpt-4o, api_base: "{url}", api_key: k}}
    model_info: {{supported_endpoints: ["/v1/chat/completions"]}}
router_settings: {{num_retries: 0}}
context_retrieval: {{enabled: true, query_strategy: last_user, injection_strategy: system, max_results: 5}}
"#,
        url = mock.url()
    )
}

/// An instance on `db` (its own data dir, which it does not use for state).
async fn instance(mock: &MockUpstream, db: &TestDb) -> Proxy {
    start_with(
        &config(mock),
        &[("DATABASE_URL", db.url.as_str())],
        Default::default(),
    )
    .await
}

async fn chat(proxy: &Proxy, key: &str, user: &str, text: &str) -> reqwest::Response {
    client()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-memory-user-id", user)
        .json(&chat_body("gpt", text))
        .send()
        .await
        .unwrap()
}

async fn pg(db: &TestDb) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

#[tokio::test]
async fn two_instances_share_memories_keys_usage_and_responses() {
    let db = TestDb::create().await;
    let mock = MockUpstream::start().await;
    let a = instance(&mock, &db).await;
    let b = instance(&mock, &db).await;

    // Readiness names the backend.
    let ready: Value = client()
        .get(b.url("/health/readiness"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        ready["checks"]["storage"],
        json!({"backend": "postgres", "ok": true}),
        "{ready}"
    );

    // A memory captured through A is injected through B.
    mock.push(Behavior::Text("Noted: tabs.".into()));
    assert_eq!(
        chat(
            &a,
            MASTER,
            "ada",
            "I prefer tabs over spaces for indentation"
        )
        .await
        .status(),
        200
    );
    a.flush_memory().await;
    let resp = chat(
        &b,
        MASTER,
        "ada",
        "Which indentation do I prefer, tabs or spaces?",
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-memproxy-memory").is_none());
    let sent = mock.requests().last().unwrap().body.to_string();
    assert!(
        sent.contains("I prefer tabs over spaces"),
        "B did not inject A's memory: {sent}"
    );
    // ... and never to another user.
    chat(
        &b,
        MASTER,
        "bob",
        "Which indentation do I prefer, tabs or spaces?",
    )
    .await;
    let sent = mock.requests().last().unwrap().body.to_string();
    assert!(!sent.contains("I prefer tabs"), "{sent}");

    // A key made on A works on B; deleted on A, B refuses it (within the key re-read).
    let made: Value = client()
        .post(a.url("/key/generate"))
        .bearer_auth(MASTER)
        .json(&json!({"key_alias": "shared", "user_id": "keyed"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = made["key"].as_str().unwrap().to_string();
    assert_eq!(
        chat(&b, &key, "ignored", "hello from a key").await.status(),
        200
    );
    let deleted = client()
        .post(a.url("/key/delete"))
        .bearer_auth(MASTER)
        .json(&json!({"keys": [key]}))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let started = Instant::now();
    loop {
        let status = chat(&b, &key, "ignored", "still?").await.status();
        if status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "B still accepts a deleted key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // previous_response_id made on A continues on B.
    mock.push(Behavior::Text("Nice to meet you, Ada.".into()));
    let first: Value = client()
        .post(a.url("/v1/responses"))
        .bearer_auth(MASTER)
        .header("x-memory-user-id", "ada")
        .json(&json!({"model": "gpt", "input": "My name is Ada."}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = first["id"].as_str().unwrap().to_string();
    a.state.responses.flush().await;
    mock.push(Behavior::Text("Your name is Ada.".into()));
    let second = client()
        .post(b.url("/v1/responses"))
        .bearer_auth(MASTER)
        .header("x-memory-user-id", "ada")
        .json(&json!({"model": "gpt", "previous_response_id": id, "input": "What is my name?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    let sent = mock.requests().last().unwrap().body.to_string();
    assert!(
        sent.contains("My name is Ada.") && sent.contains("Nice to meet you, Ada."),
        "{sent}"
    );

    // Usage rows of both instances land in one table, exactly.
    let mut ids = Vec::new();
    for (i, p) in [&a, &b, &a, &b, &b].into_iter().enumerate() {
        let rid = format!("shared-usage-{i}");
        let resp = client()
            .post(p.url("/v1/chat/completions"))
            .bearer_auth(MASTER)
            .header("x-request-id", &rid)
            .header("x-memory-user-id", "counted")
            .json(&chat_body("gpt", "count me"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        ids.push(rid);
    }
    a.state.analytics.flush().await;
    b.state.analytics.flush().await;
    let c = pg(&db).await;
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM memproxy_requests WHERE user_id = 'counted' AND request_id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 5);
    // Either instance's usage API sees both instances' rows.
    let usage: Value = client()
        .get(a.url("/v1/usage?group_by=user"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let counted = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "counted")
        .cloned()
        .unwrap_or_default();
    assert_eq!(counted["requests"], 5, "{usage}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_newer_schema_is_refused_at_start() {
    let db = TestDb::create().await;
    drop(db.pool());
    pg(&db)
        .await
        .execute(
            "INSERT INTO memproxy_schema_migrations (version, description) VALUES (999, 'future')",
            &[],
        )
        .await
        .unwrap();
    let cfg = memproxy::config::parse("model_list: []\n", "test.yaml", &Default::default(), &|n| {
        (n == "DATABASE_URL").then(|| db.url.clone())
    })
    .unwrap();
    let err = memproxy::AppState::new(cfg).err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("schema version 999") && text.contains("upgrade memproxy"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_start_error() {
    let cfg = memproxy::config::parse("model_list: []\n", "test.yaml", &Default::default(), &|n| {
        (n == "DATABASE_URL").then(|| "postgres://nobody:secret@127.0.0.1:1/none".to_string())
    })
    .unwrap();
    let text = memproxy::AppState::new(cfg)
        .err()
        .expect("refused")
        .to_string();
    assert!(text.contains("cannot connect to PostgreSQL"), "{text}");
    assert!(
        !text.contains("secret"),
        "the password is not shown: {text}"
    );
}

/// `sslmode` decides TLS: `disable` is plain, `require` encrypts, `verify-full` checks the
/// certificate (the local server's self-signed one is refused).
#[tokio::test]
async fn sslmode_decides_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDb::create().await;
    let plain = pg(&db).await;
    let server_tls: String = plain.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let with = |mode: &str| {
        let sep = if db.url.contains('?') { '&' } else { '?' };
        memproxy::storage::postgres::PgUrl::parse(&format!("{}{sep}sslmode={mode}", db.url))
            .unwrap()
    };
    let encrypted = |c: tokio_postgres::Client| async move {
        c.query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get::<_, bool>(0)
    };
    assert!(!encrypted(with("disable").connect().await.unwrap()).await);
    assert!(!encrypted(with("prefer").connect().await.unwrap()).await);
    let required = with("require").connect().await;
    if server_tls == "on" {
        assert!(
            encrypted(required.unwrap()).await,
            "sslmode=require is encrypted"
        );
        let verified = with("verify-full").connect().await;
        assert!(
            verified.is_err(),
            "a self-signed certificate must not verify"
        );
    } else {
        assert!(
            required.is_err(),
            "sslmode=require against a server without TLS"
        );
    }
    assert!(
        memproxy::storage::postgres::PgUrl::parse(&format!("{}?sslmode=bogus", db.url)).is_err()
    );
    let redacted =
        memproxy::storage::postgres::PgUrl::parse("postgres://u:hunter2@h:5/db?sslmode=require")
            .unwrap();
    assert_eq!(redacted.redacted(), "postgres://u:*****@h:5/db");
    assert_eq!(redacted.dbname(), Some("db"));
}

/// With Redis beside PostgreSQL, a key revoked on one instance is refused by every other
/// within a second: the revocation is published and each instance drops its cached copy.
#[tokio::test]
async fn a_revoked_key_is_refused_everywhere_within_a_second() {
    let db = TestDb::create().await;
    let mock = MockUpstream::start().await;
    let (redis_url, prefix) = redis_for_test().await;
    let (a, b) = two_instances(&mock, &db, &redis_url, &prefix).await;
    b.state.storage.key_changes_followed().await;

    let made: Value = client()
        .post(a.url("/key/generate"))
        .bearer_auth(MASTER)
        .json(&json!({"key_alias": "revoked-fast", "user_id": "keyed"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = made["key"].as_str().unwrap().to_string();
    // B learns the key on first sight and caches it.
    for _ in 0..2 {
        assert_eq!(chat(&b, &key, "ignored", "hello").await.status(), 200);
    }
    let deleted = client()
        .post(a.url("/key/delete"))
        .bearer_auth(MASTER)
        .json(&json!({"keys": [key]}))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let revoked_at = Instant::now();
    loop {
        if chat(&b, &key, "ignored", "still?").await.status() == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "B still accepts a key revoked on A after 1 s"
        );
        tokio::task::yield_now().await;
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A test Redis URL and a key prefix of the test's own; fails (never skips) when the
/// test Redis is down.
async fn redis_for_test() -> (String, String) {
    let redis_url = std::env::var("MEMPROXY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut c = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("the test Redis at {redis_url} is unreachable: {e}"));
    let _: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    (
        redis_url,
        format!("memproxy-test:{}:", uuid::Uuid::new_v4()),
    )
}

/// Two instances on `db` and the test Redis (keys under `prefix`).
async fn two_instances(
    mock: &MockUpstream,
    db: &TestDb,
    redis_url: &str,
    prefix: &str,
) -> (Proxy, Proxy) {
    let yaml = format!(
        "{}rate_limits: {{redis_prefix: \"{prefix}\"}}\n",
        config(mock)
    );
    let env = [("DATABASE_URL", db.url.as_str()), ("REDIS_URL", redis_url)];
    let a = start_with(&yaml, &env, Default::default()).await;
    let b = start_with(&yaml, &env, Default::default()).await;
    (a, b)
}

#[tokio::test]
async fn a_dashboard_session_works_on_every_instance_and_ends_everywhere() {
    let db = TestDb::create().await;
    let mock = MockUpstream::start().await;
    let (redis_url, prefix) = redis_for_test().await;
    let (a, b) = two_instances(&mock, &db, &redis_url, &prefix).await;

    // Signed in through A.
    let resp = client()
        .post(a.url("/ui/api/login"))
        .json(&json!({ "key": MASTER }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = resp.json::<Value>().await.unwrap()["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    let session = |p: &Proxy| {
        client()
            .get(p.url("/ui/api/session"))
            .header("cookie", &cookie)
            .send()
    };
    let usage = |p: &Proxy| {
        client()
            .get(p.url("/v1/usage"))
            .header("cookie", &cookie)
            .send()
    };

    // B knows the session (and its CSRF token) and serves the APIs on it.
    let on_b = session(&b).await.unwrap();
    assert_eq!(on_b.status(), 200);
    let on_b: Value = on_b.json().await.unwrap();
    assert_eq!(on_b["csrf_token"], csrf.as_str(), "{on_b}");
    assert_eq!(on_b["principal"]["kind"], "master", "{on_b}");
    assert_eq!(usage(&b).await.unwrap().status(), 200);
    // Only the hash of the cookie's token is stored, never the token.
    let token = cookie.split_once('=').unwrap().1;
    let mut c = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}session:*"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(!stored[0].contains(token));

    // A mutation on B without the CSRF token is refused; signing out on B (with it)
    // ends the session on A too.
    let no_csrf = client()
        .post(b.url("/ui/api/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403);
    let out = client()
        .post(b.url("/ui/api/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    assert_eq!(session(&a).await.unwrap().status(), 401);
    assert_eq!(usage(&a).await.unwrap().status(), 401);
    assert_eq!(session(&b).await.unwrap().status(), 401);
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}session:*"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn dashboard_sessions_work_on_their_instance_while_redis_is_down() {
    let mock = MockUpstream::start().await;
    // Nothing listens on port 1: every Redis call fails at once.
    let p = start_with(
        &config(&mock),
        &[("REDIS_URL", "redis://127.0.0.1:1")],
        Default::default(),
    )
    .await;
    let resp = client()
        .post(p.url("/ui/api/login"))
        .json(&json!({ "key": MASTER }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    let cookie = cookie.split(';').next().unwrap();
    let s = client()
        .get(p.url("/ui/api/session"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(s.status(), 200);
    p.shutdown().await.unwrap();
}
