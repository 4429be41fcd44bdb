//! The dashboard's server side against the real server: sign-in sessions (cookie flags,
//! CSRF on mutations, wrong keys refused, sign-out), the timeseries from the rollups,
//! memory edit and import, key updates, and a virtual key's scope (its own user only).

mod common;

use common::{client, Proxy};
use serde_json::{json, Value};

const MASTER: &str = "sk-master";

async fn proxy() -> Proxy {
    common::start(&format!(
        "general_settings: {{master_key: {MASTER}}}\nmodel_list:\n  - model_name: mock\n    litellm_params: {{model: openai/mock, mock_response: hi}}\n"
    ))
    .await
}

/// A signed-in browser: the session cookie and the CSRF token.
struct Session {
    cookie: String,
    csrf: String,
    principal: Value,
}

async fn login(p: &Proxy, key: &str) -> Result<Session, (u16, String)> {
    let resp = client()
        .post(p.url("/ui/api/login"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let set = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = resp.json().await.unwrap();
    match set {
        Some(set) if status == 200 => {
            assert!(set.contains("HttpOnly"), "{set}");
            assert!(set.contains("SameSite=Strict"), "{set}");
            assert!(!set.contains(key), "the key must not be the cookie");
            Ok(Session {
                cookie: set.split(';').next().unwrap().to_string(),
                csrf: body["csrf_token"].as_str().unwrap().to_string(),
                principal: body["principal"].clone(),
            })
        }
        _ => Err((status, body.to_string())),
    }
}

async fn chat(p: &Proxy, key: &str, user: &str) {
    let resp = client()
        .post(p.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-memproxy-user-id", user)
        .header("user-agent", "ui-test-client/1.0")
        .json(&common::chat_body("mock", "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

async fn generate(p: &Proxy, user: &str) -> String {
    let resp: Value = client()
        .post(p.url("/key/generate"))
        .bearer_auth(MASTER)
        .json(&json!({"user_id": user, "key_alias": user}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["key"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn sessions_need_a_right_key_and_a_csrf_token_for_changes() {
    let p = proxy().await;
    let (status, _) = login(&p, "sk-wrong").await.err().unwrap();
    assert_eq!(status, 401);
    let (status, _) = login(&p, "").await.err().unwrap();
    assert_eq!(status, 401);

    let s = login(&p, MASTER).await.unwrap();
    assert_eq!(s.principal["kind"], "master");
    let get = |path: &str| {
        client()
            .get(p.url(path))
            .header("cookie", s.cookie.clone())
            .send()
    };
    assert_eq!(
        get("/v1/usage/timeseries?range=1h").await.unwrap().status(),
        200
    );
    let session: Value = get("/ui/api/session").await.unwrap().json().await.unwrap();
    assert_eq!(session["csrf_token"], s.csrf.as_str());

    // A change without the CSRF token (or with another) is refused and changes nothing.
    for token in [None, Some("forged")] {
        let mut req = client()
            .post(p.url("/key/generate"))
            .header("cookie", s.cookie.clone())
            .json(&json!({"key_alias": "x"}));
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        assert_eq!(req.send().await.unwrap().status(), 403);
    }
    assert!(p.state.keys.is_empty());
    let made = client()
        .post(p.url("/key/generate"))
        .header("cookie", s.cookie.clone())
        .header("x-csrf-token", s.csrf.clone())
        .json(&json!({"key_alias": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 200);

    let out = client()
        .post(p.url("/ui/api/logout"))
        .header("cookie", s.cookie.clone())
        .header("x-csrf-token", s.csrf.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    assert_eq!(get("/v1/usage/timeseries").await.unwrap().status(), 401);
    // The page itself is served without signing in, from the binary.
    let page = client().get(p.url("/ui")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("memproxy"));
    p.shutdown().await.unwrap();
}

#[tokio::test]
async fn timeseries_and_requests_are_scoped_to_a_keys_user() {
    let p = proxy().await;
    let alice = generate(&p, "alice").await;
    let bob = generate(&p, "bob").await;
    for _ in 0..3 {
        chat(&p, &alice, "alice").await;
    }
    chat(&p, &bob, "bob").await;
    chat(&p, MASTER, "carol").await;
    p.state.analytics.flush().await;

    let ts = |key: String, q: &'static str| {
        let url = p.url(&format!("/v1/usage/timeseries?{q}"));
        async move {
            let r = client().get(url).bearer_auth(key).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, all) = ts(MASTER.into(), "range=1h&group_by=user").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["total"]["totals"]["requests"], 5);
    assert_eq!(all["total"]["points"].as_array().unwrap().len(), 60);
    assert_eq!(all["groups"][0]["group"], "alice");
    assert_eq!(all["groups"][0]["totals"]["requests"], 3);
    assert!(all["total"]["totals"]["latency_p95_ms"].as_f64().unwrap() > 0.0);
    let (_, by_client) = ts(MASTER.into(), "range=24h&group_by=client").await;
    assert_eq!(by_client["groups"][0]["group"], "ui-test-client");
    let (_, week) = ts(MASTER.into(), "range=7d&group_by=model").await;
    assert_eq!(week["groups"][0]["group"], "mock");
    assert_eq!(week["total"]["totals"]["requests"], 5);

    // Alice's key sees alice's rows only; asking for bob's is refused.
    let (_, mine) = ts(alice.clone(), "range=1h").await;
    assert_eq!(mine["total"]["totals"]["requests"], 3);
    let (status, _) = ts(alice.clone(), "range=1h&user_id=bob").await;
    assert_eq!(status, 403);
    let (status, _) = ts(alice.clone(), "range=1h&group_by=user").await;
    assert_eq!(status, 403);
    let (status, _) = ts(MASTER.into(), "range=2h").await;
    assert_eq!(status, 400);
    let rows: Value = client()
        .get(p.url("/v1/usage/requests"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let users: Vec<&str> = rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice"; 3]);

    // The same through a session signed in with alice's key, memory included.
    let s = login(&p, &alice).await.unwrap();
    assert_eq!(s.principal["user_id"], "alice");
    let bobs = client()
        .get(p.url("/v1/memories?user_id=bob"))
        .header("cookie", s.cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(bobs.status(), 403);
    let own = client()
        .get(p.url("/v1/memories?user_id=alice"))
        .header("cookie", s.cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let keys = client()
        .get(p.url("/key/list"))
        .header("cookie", s.cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(keys.status(), 403);
    p.shutdown().await.unwrap();
}

#[tokio::test]
async fn memories_are_edited_and_imported() {
    let p = proxy().await;
    let add: Value = client()
        .post(p.url("/v1/memories"))
        .bearer_auth(MASTER)
        .json(&json!({"user_id": "alice", "content": "likes tea", "metadata": {"src": "t"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = add["id"].as_str().unwrap();
    let patch = |id: &str, body: Value| {
        client()
            .patch(p.url(&format!("/v1/memories/{id}?user_id=alice")))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
    };
    assert_eq!(
        patch(id, json!({"content": "  "})).await.unwrap().status(),
        400
    );
    let edited: Value = patch(id, json!({"content": "likes green tea"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(edited["content"], "likes green tea");
    assert_eq!(edited["metadata"]["src"], "t");
    let old = client()
        .get(p.url(&format!("/v1/memories/{id}?user_id=alice")))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 404);
    // Another user's id is unknown to bob's scope.
    let new_id = edited["id"].as_str().unwrap();
    let as_bob = client()
        .patch(p.url(&format!("/v1/memories/{new_id}?user_id=bob")))
        .bearer_auth(MASTER)
        .json(&json!({"content": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(as_bob.status(), 404);

    let import = |body: &'static str| {
        client()
            .post(p.url("/v1/memories/import?user_id=alice"))
            .bearer_auth(MASTER)
            .body(body)
            .send()
    };
    let bad = import("{\"content\": \"one\"}\n{\"content\": 5}\n")
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("line 2"));
    let good: Value = import(
        "{\"content\": \"owns a cat\", \"user_id\": \"bob\"}\n\n{\"content\": \"lives in Oslo\", \"metadata\": {\"a\": 1}}\n",
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(good["imported"], 2);
    let list: Value = client()
        .get(p.url("/v1/memories?user_id=alice"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    let bobs: Value = client()
        .get(p.url("/v1/memories?user_id=bob"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bobs["data"].as_array().unwrap().len(), 0);
    p.shutdown().await.unwrap();
}

#[tokio::test]
async fn keys_are_rebound_and_limited() {
    let p = proxy().await;
    let key = generate(&p, "alice").await;
    let update = |body: Value| {
        client()
            .post(p.url("/key/update"))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
    };
    assert_eq!(
        update(json!({"key": key, "rpm_limit": 0}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        update(json!({"key": "sk-nope", "rpm_limit": 5}))
            .await
            .unwrap()
            .status(),
        404
    );
    let r: Value = update(json!({"key": key, "user_id": "bob", "rpm_limit": 7, "max_budget": 2.5}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["info"]["user_id"], "bob");
    assert_eq!(r["info"]["rpm_limit"], 7);
    assert_eq!(r["info"]["key_alias"], "alice");
    // The key now speaks for bob.
    let s = login(&p, &key).await.unwrap();
    assert_eq!(s.principal["user_id"], "bob");
    let cleared: Value = update(json!({"key": key, "rpm_limit": null}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["info"]["rpm_limit"], Value::Null);
    assert_eq!(cleared["info"]["max_budget"], 2.5);
    let as_key = client()
        .post(p.url("/key/update"))
        .bearer_auth(&key)
        .json(&json!({"key": key, "rpm_limit": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(as_key.status(), 403);
    p.shutdown().await.unwrap();
}

/// Rows over the last hour and the last week, for the rollup cases.
fn usage_rows(now: i64) -> Vec<memproxy::analytics::Record> {
    (0..300)
        .map(|i| memproxy::analytics::Record {
            ts_ms: now - (i % 7) * 86_400_000 - (i * 11_000) % 3_000_000,
            request_id: format!("r{i}"),
            user_id: format!("u{}", i % 3),
            client: ["codex", "curl"][i as usize % 2].into(),
            key_id: (i % 4 == 0).then(|| "k1".to_string()),
            endpoint: "chat".into(),
            model: ["a", "b", "c"][i as usize % 3].into(),
            tokens_in: 10,
            tokens_out: i as u64,
            cost_usd: Some(0.25),
            total_ms: 3.0 + (i * 37 % 900) as f64,
            ttft_ms: (i % 2 == 0).then_some(2.5 + (i % 50) as f64),
            status: if i % 25 == 0 { 500 } else { 200 },
            project: if i % 5 == 0 {
                "alpha".into()
            } else {
                String::new()
            },
            ..Default::default()
        })
        .collect()
}

fn all_ranges(now: i64) -> Vec<memproxy::analytics::rollup::TimeseriesQuery> {
    use memproxy::analytics::rollup::{Range, SeriesBy, TimeseriesQuery};
    let mut qs = Vec::new();
    for range in ["1h", "6h", "24h", "7d", "30d"] {
        for (group_by, user_id, key_id, project) in [
            (SeriesBy::Model, None, None, None),
            (SeriesBy::Client, Some("u1".to_string()), None, None),
            (SeriesBy::User, None, Some("k1".to_string()), None),
            (SeriesBy::Project, None, None, None),
            (SeriesBy::Model, None, None, Some("alpha".to_string())),
        ] {
            qs.push(TimeseriesQuery {
                range: Range::parse(range).unwrap(),
                group_by,
                user_id,
                key_id,
                project,
                now_ms: now,
            });
        }
    }
    qs
}

/// Both stores answer every range alike, and a database upgraded from before the rollups
/// (version 1: the rows without rollup tables) is filled from its rows to the same answer.
#[tokio::test]
async fn rollups_agree_across_stores_and_are_backfilled_on_upgrade() {
    use memproxy::analytics::AnalyticsStore;
    use memproxy::storage::embedded::analytics::SqliteStore;
    use memproxy::storage::postgres::analytics::PgAnalytics;
    let now = memproxy::analytics::timefmt::now_ms();
    let rows = usage_rows(now);
    let dir = tempfile::tempdir().unwrap();
    let db = common::pg::TestDb::create().await;
    let pool = db.pool();
    let url = pool.url().clone();
    let (dir_path, db_url) = (dir.path().to_path_buf(), db.url.clone());
    tokio::task::spawn_blocking(move || {
        let mut lite = SqliteStore::open(&dir_path).unwrap();
        let mut pg = PgAnalytics::open(&url).unwrap();
        lite.insert_records(&rows[..120]).unwrap();
        lite.insert_records(&rows[120..]).unwrap();
        pg.insert_records(&rows[..50]).unwrap();
        pg.insert_records(&rows[50..]).unwrap();
        let answers: Vec<_> = all_ranges(now)
            .iter()
            .map(|q| lite.timeseries(q).unwrap())
            .collect();
        // Five queries per range: the 7-day answers are 15..20.
        let week = &answers[15];
        assert_eq!(week.total.totals.requests, 300);
        assert_eq!(week.total.totals.errors, 12);
        let by_project = &answers[18];
        let alpha = by_project
            .groups
            .iter()
            .find(|g| g.group == "alpha")
            .unwrap();
        assert_eq!(alpha.totals.requests, 60);
        assert_eq!(answers[19].total.totals.requests, 60);
        assert!(answers[0].total.totals.requests > 0);
        for (q, want) in all_ranges(now).iter().zip(&answers) {
            assert_eq!(&pg.timeseries(q).unwrap(), want, "{q:?}");
        }
        drop(lite);

        // Back to before the rollups (version 2 is another step's): opening again fills
        // them from the rows.
        let conn = rusqlite::Connection::open(dir_path.join("analytics.db")).unwrap();
        conn.execute_batch(
            "DROP TABLE usage_minute; DROP TABLE usage_hour; DROP TABLE usage_day; \
             PRAGMA user_version = 2;",
        )
        .unwrap();
        drop(conn);
        let mut lite = SqliteStore::open(&dir_path).unwrap();
        for (q, want) in all_ranges(now).iter().zip(&answers) {
            assert_eq!(&lite.timeseries(q).unwrap(), want, "{q:?}");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(
                    "DROP TABLE memproxy_usage_minute, memproxy_usage_hour, memproxy_usage_day; \
                     DELETE FROM memproxy_schema_migrations WHERE version >= 3;",
                )
                .await
                .unwrap();
        });
        drop(rt);
        let url = memproxy::storage::postgres::PgUrl::parse(&db_url).unwrap();
        url.open_blocking(|_| Box::pin(async { Ok(()) })).unwrap();
        let mut pg = PgAnalytics::open(&url).unwrap();
        for (q, want) in all_ranges(now).iter().zip(&answers) {
            assert_eq!(&pg.timeseries(q).unwrap(), want, "{q:?}");
        }
    })
    .await
    .unwrap();
}
