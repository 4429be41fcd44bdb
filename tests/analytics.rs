//! The analytics databank end to end: rows for streamed and non-streamed requests with
//! their tokens and cost, usage totals per group, feedback, a failing store that does not
//! fail requests, `/metrics` as Prometheus text, and 10,000 requests at 50 connections
//! leaving exactly 10,000 rows. Synchronisation is by flush, never by sleeping.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

const MASTER: &str = "sk-master";

fn priced_config(mock: &MockUpstream) -> String {
    format!(
        r#"
general_settings: {{master_key: {MASTER}}}
model_list:
  - model_name: gpt
    litellm_params: {{model: openai/gpt-4o-mini-2024-07-18, api_base: {url}, api_key: sk-up}}
  - model_name: custom
    litellm_params: {{model: openai/my-finetune, api_base: {url}, api_key: sk-up}}
    model_info: {{input_cost_per_token: 0.001, output_cost_per_token: 0.002}}
  - model_name: offline
    litellm_params: {{model: openai/unpriced, mock_response: "offline answer"}}
router_settings: {{num_retries: 0}}
"#,
        url = mock.url()
    )
}

/// gpt-4o-mini list price: $0.15 / $0.60 per million tokens.
fn mini_cost(input: u64, output: u64) -> f64 {
    input as f64 * 0.15e-6 + output as f64 * 0.6e-6
}

async fn post_chat(proxy: &Proxy, user: &str, body: &Value) -> reqwest::Response {
    client()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(MASTER)
        .header("x-memory-user-id", user)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn get_json(proxy: &Proxy, path: &str) -> (u16, Value) {
    let resp = client()
        .get(proxy.url(path))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

async fn rows(proxy: &Proxy, query: &str) -> Vec<Value> {
    let (status, body) = get_json(proxy, &format!("/v1/usage/requests?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn rows_carry_tokens_cost_and_latencies_for_plain_and_streamed_answers() {
    let mock = MockUpstream::start().await;
    let proxy = start(&priced_config(&mock)).await;

    let resp = post_chat(&proxy, "alice", &chat_body("gpt", "hello there")).await;
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let header_cost: f64 = resp.headers()["x-memproxy-cost"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let overhead: f64 = resp.headers()["x-memproxy-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(overhead >= 0.0);
    let body: Value = resp.json().await.unwrap();
    let (pin, pout) = (
        body["usage"]["prompt_tokens"].as_u64().unwrap(),
        body["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    assert!((header_cost - mini_cost(pin, pout)).abs() < 1e-9);

    let mut streamed = chat_body("gpt", "stream this please");
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let resp = post_chat(&proxy, "alice", &streamed).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("x-memproxy-overhead-ms").is_some()
            && resp.headers().get("x-memproxy-cost").is_none(),
        "streams carry the overhead up to the headers, not the cost"
    );
    let stream_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let payloads = sse_payloads(resp).await;
    let usage_chunk: Value = payloads
        .iter()
        .filter(|p| *p != "[DONE]")
        .map(|p| serde_json::from_str::<Value>(p).unwrap())
        .find(|c| c["usage"].is_object())
        .expect("usage chunk");
    let (sin, sout) = (
        usage_chunk["usage"]["prompt_tokens"].as_u64().unwrap(),
        usage_chunk["usage"]["completion_tokens"].as_u64().unwrap(),
    );

    let all = rows(&proxy, "user_id=alice").await;
    assert_eq!(all.len(), 2);
    let by_id: HashMap<&str, &Value> = all
        .iter()
        .map(|r| (r["request_id"].as_str().unwrap(), r))
        .collect();
    let plain = by_id[request_id.as_str()];
    assert_eq!(plain["tokens_in"], pin);
    assert_eq!(plain["tokens_out"], pout);
    assert!((plain["cost_usd"].as_f64().unwrap() - mini_cost(pin, pout)).abs() < 1e-12);
    assert_eq!(plain["stream"], false);
    assert_eq!(plain["status"], 200);
    assert_eq!(plain["model"], "gpt");
    assert_eq!(plain["deployment"], "gpt");
    assert_eq!(plain["provider"], "openai");
    assert_eq!(plain["upstream_model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(plain["endpoint"], "chat");
    assert_eq!(plain["attempts"], 1);
    let total = plain["total_ms"].as_f64().unwrap();
    let upstream = plain["upstream_ms"].as_f64().unwrap();
    let own = plain["overhead_ms"].as_f64().unwrap();
    assert!(total >= upstream && (total - upstream - own).abs() < 1e-6);

    let s = by_id[stream_id.as_str()];
    assert_eq!(s["stream"], true);
    assert_eq!(
        (s["tokens_in"].as_u64(), s["tokens_out"].as_u64()),
        (Some(sin), Some(sout))
    );
    assert!((s["cost_usd"].as_f64().unwrap() - mini_cost(sin, sout)).abs() < 1e-12);
    assert!(s["ttft_ms"].as_f64().is_some());
    assert!(s["error_type"].is_null());
}

#[tokio::test]
async fn streams_without_client_usage_still_count_tokens_and_overrides_price() {
    let mock = MockUpstream::start().await;
    let proxy = start(&priced_config(&mock)).await;
    let mut body = chat_body("custom", "abcdefgh");
    body["stream"] = json!(true);
    let resp = post_chat(&proxy, "carol", &body).await;
    let payloads = sse_payloads(resp).await;
    assert!(
        payloads.iter().all(|p| !p.contains("\"usage\"")),
        "the client did not ask for usage"
    );
    let row = &rows(&proxy, "user_id=carol").await[0];
    // Mock usage: ceil(len/4) for prompt and answer ("mock reply to: abcdefgh").
    assert_eq!(
        (row["tokens_in"].as_u64(), row["tokens_out"].as_u64()),
        (Some(2), Some(6))
    );
    let expected = 2.0 * 0.001 + 6.0 * 0.002;
    assert!((row["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12);

    // Unknown prices give no cost and no cost header, tokens still counted.
    let resp = post_chat(&proxy, "carol", &chat_body("offline", "x")).await;
    assert!(resp.headers().get("x-memproxy-cost").is_none());
    let row = &rows(&proxy, "user_id=carol&model=offline").await[0];
    assert!(row["cost_usd"].is_null());
    assert!(row["tokens_out"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn errors_produce_rows_too() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Status(
        500,
        json!({"error": {"message": "boom", "type": "server_error"}}),
    ));
    let proxy = start(&priced_config(&mock)).await;
    assert_eq!(
        post_chat(&proxy, "dave", &chat_body("gpt", "x"))
            .await
            .status(),
        500
    );
    assert_eq!(
        post_chat(&proxy, "dave", &chat_body("nope", "x"))
            .await
            .status(),
        404
    );
    let bad = client()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(MASTER)
        .header("x-memory-user-id", "dave")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let unauth = client()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth("sk-wrong")
        .json(&chat_body("gpt", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);

    let dave = rows(&proxy, "user_id=dave").await;
    let mut seen: Vec<(u64, String)> = dave
        .iter()
        .map(|r| {
            (
                r["status"].as_u64().unwrap(),
                r["error_type"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (400, "bad_request".to_string()),
            (404, "unknown_model".to_string()),
            (500, "upstream_status".to_string())
        ]
    );
    let upstream_failure = dave.iter().find(|r| r["status"] == 500).unwrap();
    assert!(upstream_failure["upstream_ms"].as_f64().is_some());
    let anonymous = rows(&proxy, "limit=1000").await;
    assert!(anonymous
        .iter()
        .any(|r| r["status"] == 401 && r["user_id"] == "" && r["error_type"] == "auth"));
}

#[tokio::test]
async fn usage_totals_per_user_model_key_and_day() {
    let mock = MockUpstream::start().await;
    let proxy = start(&priced_config(&mock)).await;
    for (user, model) in [
        ("alice", "gpt"),
        ("alice", "gpt"),
        ("alice", "custom"),
        ("bob", "gpt"),
        ("bob", "nope"),
    ] {
        post_chat(&proxy, user, &chat_body(model, "hello")).await;
    }
    let (status, by_user) = get_json(&proxy, "/v1/usage?group_by=user").await;
    assert_eq!(status, 200, "{by_user}");
    let groups = by_user["data"].as_array().unwrap();
    let get = |name: &str| groups.iter().find(|g| g["group"] == name).unwrap().clone();
    let (alice, bob) = (get("alice"), get("bob"));
    assert_eq!(
        (alice["requests"].as_u64(), alice["errors"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(
        (bob["requests"].as_u64(), bob["errors"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(alice["cost_usd"].as_f64().unwrap() > bob["cost_usd"].as_f64().unwrap());
    assert!(alice["latency_p95_ms"].as_f64().unwrap() >= alice["latency_p50_ms"].as_f64().unwrap());
    assert_eq!(by_user["totals"]["requests"], 5);

    let (_, by_model) = get_json(&proxy, "/v1/usage?group_by=model").await;
    let models: HashMap<String, u64> = by_model["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group"].as_str().unwrap().to_string(),
                g["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        models,
        HashMap::from([("gpt".into(), 3), ("custom".into(), 1), ("nope".into(), 1)])
    );

    let (_, by_key) = get_json(&proxy, "/v1/usage?group_by=key").await;
    assert_eq!(by_key["data"][0]["group"], "(master)");

    let (_, by_day) = get_json(&proxy, "/v1/usage?group_by=day").await;
    assert_eq!(by_day["data"].as_array().unwrap().len(), 1);
    let (_, future) = get_json(&proxy, "/v1/usage?group_by=day&from=2999-01-01").await;
    assert_eq!(future["totals"]["requests"], 0);
    let (status, _) = get_json(&proxy, "/v1/usage?group_by=colour").await;
    assert_eq!(status, 400);
    let (status, _) = get_json(&proxy, "/v1/usage?from=yesterday").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn request_pages_follow_the_cursor() {
    let mock = MockUpstream::start().await;
    let proxy = start(&priced_config(&mock)).await;
    for i in 0..5 {
        post_chat(&proxy, "pager", &chat_body("offline", &format!("m{i}"))).await;
    }
    let (_, first) = get_json(&proxy, "/v1/usage/requests?user_id=pager&limit=2").await;
    assert_eq!(first["data"].as_array().unwrap().len(), 2);
    let mut seen = 2;
    let mut cursor = first["next_cursor"].as_str().unwrap().to_string();
    loop {
        let (_, page) = get_json(
            &proxy,
            &format!("/v1/usage/requests?user_id=pager&limit=2&cursor={cursor}"),
        )
        .await;
        seen += page["data"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, 5);
}

#[tokio::test]
async fn feedback_is_stored_with_its_row() {
    let mock = MockUpstream::start().await;
    let proxy = start(&priced_config(&mock)).await;
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(MASTER)
        .header("x-request-id", "rated-1")
        .json(&chat_body("offline", "rate me"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Sent right after the answer: the row may still be queued; feedback waits for it.
    let fb = |id: &str| {
        client()
            .post(proxy.url("/v1/feedback"))
            .bearer_auth(MASTER)
            .json(&json!({"request_id": id, "score": 0.9, "comment": "useful"}))
            .send()
    };
    let ok = fb("rated-1").await.unwrap();
    assert_eq!(ok.status(), 200);
    let missing = fb("never-seen").await.unwrap();
    assert_eq!(missing.status(), 404);
    let err: Value = missing.json().await.unwrap();
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("never-seen"));
    let row = &rows(&proxy, "request_id=rated-1").await[0];
    assert_eq!(row["feedback_score"], 0.9);
    assert_eq!(row["feedback_comment"], "useful");
}

#[tokio::test]
async fn a_failing_store_does_not_fail_requests() {
    let mock = MockUpstream::start().await;
    // The data dir is "under" a regular file: the store can never open.
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let overrides = memproxy::config::Overrides {
        data_dir: Some(blocker.path().join("sub").to_string_lossy().into_owned()),
        ..Default::default()
    };
    // Memory refuses to start without its store; this test is about analytics alone.
    let yaml = format!("{}memory: {{enabled: false}}\n", priced_config(&mock));
    let proxy = start_with(&yaml, &[], overrides).await;
    for _ in 0..3 {
        let resp = post_chat(&proxy, "erin", &chat_body("gpt", "still works")).await;
        assert_eq!(resp.status(), 200);
    }
    let (status, ready) = get_json(&proxy, "/health/readiness").await;
    assert_eq!(status, 503);
    assert_eq!(ready["checks"]["analytics_store"]["ok"], false);
    assert!(ready["checks"]["analytics_store"]["error"]
        .as_str()
        .is_some());
    // Readiness went through the store thread after the rows: all three are kept, for
    // when the store opens (an unreachable store loses nothing within the queue's bound).
    assert_eq!(ready["checks"]["analytics_store"]["rows_dropped"], 0);
    assert_eq!(ready["checks"]["analytics_store"]["queue_depth"], 3);
    let metrics = client()
        .get(proxy.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("memproxy_analytics_queue_depth 3"),
        "{metrics}"
    );
    let (status, _) = get_json(&proxy, "/v1/usage").await;
    assert_eq!(status, 503);
}

/// A small check of the Prometheus text format: every sample line is
/// `name{label="value",...} number`, every family has one TYPE, histograms have
/// increasing buckets ending in `+Inf` equal to `_count`.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("metric name in comment");
            assert!(name_ok(name), "bad name in {line:?}");
            if kind == "TYPE" {
                let t = parts.next().unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "{line}"
                );
                assert!(
                    types.insert(name.into(), t.into()).is_none(),
                    "two TYPEs: {line}"
                );
            } else {
                assert_eq!(kind, "HELP", "{line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("closing brace");
                for pair in split_labels(labels) {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    assert!(name_ok(k), "bad label name in {line:?}");
                    assert!(
                        v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                        "{line}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(name_ok(name), "bad metric name in {line:?}");
        samples.insert(series.to_string(), value);
    }
    samples
}

fn split_labels(labels: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        out.push(&labels[start..]);
    }
    out
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_low_cardinality_labels() {
    let mock = MockUpstream::start().await;
    let proxy = start(&priced_config(&mock)).await;
    post_chat(&proxy, "secret-user-zz", &chat_body("gpt", "count me")).await;
    post_chat(
        &proxy,
        "secret-user-zz",
        &chat_body("free-text-model-zz", "x"),
    )
    .await;
    let resp = client().get(proxy.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    let samples = parse_prometheus(&text);
    assert!(
        !text.contains("secret-user-zz"),
        "user ids never label metrics"
    );
    assert!(
        !text.contains("free-text-model-zz"),
        "only configured models label metrics"
    );
    let find = |prefix: &str| samples.iter().any(|(k, _)| k.starts_with(prefix));
    for family in [
        "memproxy_requests_total{",
        "memproxy_request_duration_seconds_bucket{",
        "memproxy_tokens_total{",
        "memproxy_upstream_duration_seconds_bucket{",
        "memproxy_overhead_seconds_bucket{",
        "memproxy_analytics_queue_depth",
        "memproxy_analytics_rows_dropped_total{",
    ] {
        assert!(find(family), "{family} missing in\n{text}");
    }
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("memproxy_requests_total{")
                && k.contains("route=\"/v1/chat/completions\"")
                && k.contains("model=\"gpt\"")
                && k.contains("status=\"200\"")),
        "{text}"
    );
    assert!(text.contains("memproxy_memory_retrieval_seconds"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_at_fifty_connections_leave_ten_thousand_rows() {
    const TOTAL: usize = 10_000;
    const CONNECTIONS: usize = 50;
    let (cfg, _dir) = test_config(
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/gpt-4o-mini, mock_response: ok}\n",
        &[],
    );
    let state = memproxy::AppState::new(cfg).unwrap();
    let proxy = start_state(state.clone()).await;
    let started = std::time::Instant::now();
    let http = client();
    let url = Arc::new(proxy.url("/v1/chat/completions"));
    let body = Arc::new(serde_json::to_vec(&chat_body("m", "hi")).unwrap());
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..TOTAL / CONNECTIONS {
                    let resp = http
                        .post(url.as_str())
                        .header("content-type", "application/json")
                        .header("x-memory-user-id", format!("conn-{c}"))
                        .body(body.as_ref().clone())
                        .send()
                        .await
                        .unwrap();
                    if resp.status() == 200 {
                        ok += 1;
                    }
                    let _ = resp.bytes().await;
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(ok, TOTAL);
    state.analytics.flush().await;
    let stats = state.analytics.stats();
    assert_eq!(
        (
            stats.written,
            stats.dropped_queue_full,
            stats.dropped_store_error
        ),
        (TOTAL as u64, 0, 0)
    );
    let groups = state
        .analytics
        .call(|s| {
            s.usage(&memproxy::analytics::UsageQuery {
                group_by: memproxy::analytics::GroupBy::User,
                from_ms: None,
                to_ms: None,
            })
        })
        .await
        .unwrap();
    assert_eq!(groups.len(), CONNECTIONS);
    assert_eq!(groups.iter().map(|g| g.requests).sum::<u64>(), TOTAL as u64);
    assert!(groups
        .iter()
        .all(|g| g.requests == (TOTAL / CONNECTIONS) as u64));
    eprintln!("10k requests at 50 connections: {elapsed:?}");
    proxy.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_writes_queued_rows() {
    let (cfg, dir) = test_config(
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/x, mock_response: ok}\n",
        &[],
    );
    let state = memproxy::AppState::new(cfg).unwrap();
    let proxy = start_state(state.clone()).await;
    for _ in 0..20 {
        client()
            .post(proxy.url("/v1/chat/completions"))
            .json(&chat_body("m", "hi"))
            .send()
            .await
            .unwrap();
    }
    proxy.shutdown().await.unwrap();
    drop(state);
    let conn = rusqlite_count(dir.path());
    assert_eq!(conn, 20);
}

fn rusqlite_count(dir: &std::path::Path) -> i64 {
    let mut store =
        memproxy::storage::embedded::analytics::SqliteStore::open(dir).expect("reopen the store");
    use memproxy::analytics::AnalyticsStore;
    store
        .usage(&memproxy::analytics::UsageQuery {
            group_by: memproxy::analytics::GroupBy::Day,
            from_ms: None,
            to_ms: None,
        })
        .unwrap()
        .iter()
        .map(|g| g.requests as i64)
        .sum()
}

#[tokio::test]
async fn a_stream_cut_upstream_leaves_a_row_with_its_error() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::CutStream {
        first: "partial".into(),
    });
    let proxy = start(&priced_config(&mock)).await;
    let mut body = chat_body("gpt", "cut me");
    body["stream"] = json!(true);
    let resp = post_chat(&proxy, "frank", &body).await;
    assert_eq!(resp.status(), 200);
    mock.release();
    let _ = resp.text().await;
    let row = &rows(&proxy, "user_id=frank").await[0];
    assert_eq!(row["status"], 200);
    assert!(row["error_type"].as_str().is_some(), "{row}");
}

#[tokio::test]
async fn every_client_api_leaves_its_row() {
    let mock = MockUpstream::start().await;
    let proxy = start(&priced_config(&mock)).await;
    let send = |path: &'static str, body: Value| {
        client()
            .post(proxy.url(path))
            .bearer_auth(MASTER)
            .header("x-memory-user-id", "apis")
            .json(&body)
            .send()
    };
    let r = send(
        "/v1/messages",
        json!({"model": "gpt", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = send("/v1/responses", json!({"model": "gpt", "input": "hi"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = send("/v1/embeddings", json!({"model": "offline", "input": "hi"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut endpoints: Vec<String> = rows(&proxy, "user_id=apis")
        .await
        .iter()
        .map(|r| {
            assert_eq!(r["status"], 200);
            r["endpoint"].as_str().unwrap().to_string()
        })
        .collect();
    endpoints.sort();
    assert_eq!(endpoints, ["embeddings", "messages", "responses"]);
    let priced = rows(&proxy, "user_id=apis&model=gpt").await;
    assert!(priced
        .iter()
        .all(|r| r["cost_usd"].as_f64().unwrap() > 0.0 && r["tokens_out"].as_u64().unwrap() > 0));
}

#[tokio::test]
async fn rows_name_the_client_from_its_user_agent() {
    let mock = MockUpstream::start().await;
    let proxy = start(&priced_config(&mock)).await;
    let send = |path: &'static str, ua: &'static str, key: &'static str, body: Value| {
        client()
            .post(proxy.url(path))
            .bearer_auth(key)
            .header("x-memory-user-id", "clients")
            .header("user-agent", ua)
            .json(&body)
            .send()
    };
    let messages =
        json!({"model": "gpt", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});
    let cases = [
        (
            "/v1/messages",
            "claude-cli/2.1.332 (external, sdk-cli)",
            MASTER,
            200,
        ),
        ("/v1/chat/completions", "OpenAI/Python 3.63.0", MASTER, 200),
        ("/v1/chat/completions", "curl/8.5.0", "sk-wrong", 401),
    ];
    for (path, ua, key, status) in cases {
        let body = if path == "/v1/messages" {
            messages.clone()
        } else {
            chat_body("gpt", "hi")
        };
        let r = send(path, ua, key, body).await.unwrap();
        assert_eq!(r.status(), status, "{ua}");
    }
    let claude = rows(&proxy, "client=claude-code").await;
    assert_eq!(claude.len(), 1);
    assert_eq!(
        (&claude[0]["endpoint"], &claude[0]["user_id"]),
        (&json!("messages"), &json!("clients"))
    );
    assert_eq!(rows(&proxy, "client=openai-python").await.len(), 1);
    let refused = rows(&proxy, "client=curl").await;
    assert_eq!(refused[0]["status"], 401, "{refused:?}");

    let (status, by_client) = get_json(&proxy, "/v1/usage?group_by=client").await;
    assert_eq!(status, 200, "{by_client}");
    let groups: Vec<(&str, u64)> = by_client["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group"].as_str().unwrap(),
                g["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [("claude-code", 1), ("curl", 1), ("openai-python", 1)]
    );
}
