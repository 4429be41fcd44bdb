//! Faults against the real binary: SIGTERM / SIGINT with 200 open streams (each completes
//! within the grace period or ends with an error event, its usage row written), and
//! kill -9 in the middle of memory writes (after a restart, every acknowledged write is
//! there and the database opens clean).

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use mock_upstream::{Behavior, MockUpstream};
use serde_json::{json, Value};

#[path = "common/bin.rs"]
mod bin;
use bin::{exits_within, http, signal, spawn};

const STREAMS: usize = 200;

fn config(mock: &MockUpstream, grace_seconds: f64) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        f.path(),
        format!(
            "server:\n  shutdown_grace_seconds: {grace_seconds}\nmodel_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/gpt-4o, api_base: '{}', api_key: sk-test}}\n",
            mock.url()
        ),
    )
    .unwrap();
    f
}

fn usage_rows(data: &Path) -> Vec<(i64, Option<String>)> {
    let db = rusqlite::Connection::open(data.join("analytics.db")).unwrap();
    let mut st = db
        .prepare("SELECT status, error_type FROM requests WHERE endpoint LIKE '%chat%'")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// How one client's stream ended.
#[derive(Debug, PartialEq)]
enum End {
    Done,
    ShutdownError,
    Other(String),
}

/// Opens `STREAMS` streams, each reporting once its first chunk arrived; returns their
/// handles once every one is open.
async fn open_streams(addr: &str) -> Vec<tokio::task::JoinHandle<End>> {
    let client = http();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<()>(STREAMS);
    let mut handles = Vec::new();
    for i in 0..STREAMS {
        let req = client
            .post(format!("http://{addr}/v1/chat/completions"))
            .header("x-user-id", format!("u{}", i % 7))
            .json(&json!({"model": "gpt", "stream": true, "messages": [{"role": "user", "content": format!("stream {i}")}]}));
        let opened = opened_tx.clone();
        handles.push(tokio::spawn(async move {
            let resp = req.send().await.expect("stream starts");
            assert_eq!(resp.status(), 200);
            let mut body = resp.bytes_stream();
            let mut text = String::new();
            let mut told = false;
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else {
                    return End::Other(format!("cut: {text}"));
                };
                text.push_str(&String::from_utf8_lossy(&chunk));
                if !told && text.contains("data: ") {
                    told = true;
                    let _ = opened.send(()).await;
                }
            }
            if text.contains("data: [DONE]") && !text.contains("\"error\"") {
                End::Done
            } else if text.contains("shutting down") && text.contains("\"error\"") {
                End::ShutdownError
            } else {
                End::Other(text)
            }
        }));
    }
    for _ in 0..STREAMS {
        tokio::time::timeout(Duration::from_secs(60), opened_rx.recv())
            .await
            .expect("every stream opened")
            .unwrap();
    }
    handles
}

async fn ends(handles: Vec<tokio::task::JoinHandle<End>>) -> Vec<End> {
    let mut out = Vec::new();
    for h in handles {
        out.push(
            tokio::time::timeout(Duration::from_secs(60), h)
                .await
                .expect("stream ended")
                .unwrap(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_200_open_streams_finish_within_the_grace_period() {
    let mock = MockUpstream::start().await;
    for _ in 0..STREAMS {
        mock.push(Behavior::PausedStream {
            first: "Hello".into(),
            rest: " world".into(),
        });
    }
    let cfg = config(&mock, 30.0);
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn(cfg.path(), data.path());
    let handles = open_streams(&addr).await;

    signal(&child, "-TERM");
    // New connections are refused once the signal is taken; the open streams go on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while http()
        .get(format!("http://{addr}/health/liveliness"))
        .send()
        .await
        .is_ok()
    {
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..STREAMS {
        mock.release();
    }
    let ends = ends(handles).await;
    assert!(ends.iter().all(|e| *e == End::Done), "{ends:?}");
    let status = exits_within(&mut child, Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    let rows = usage_rows(data.path());
    assert_eq!(rows.len(), STREAMS, "one usage row per stream");
    assert!(
        rows.iter().all(|(s, e)| *s == 200 && e.is_none()),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_ends_streams_still_open_after_the_grace_period_with_an_error_event() {
    let mock = MockUpstream::start().await;
    for _ in 0..STREAMS {
        mock.push(Behavior::PausedStream {
            first: "Hello".into(),
            rest: " world".into(),
        });
    }
    let cfg = config(&mock, 1.0);
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn(cfg.path(), data.path());
    let handles = open_streams(&addr).await;

    // The upstream never finishes: the grace period runs out.
    signal(&child, "-INT");
    let ends = ends(handles).await;
    assert!(ends.iter().all(|e| *e == End::ShutdownError), "{ends:?}");
    let status = exits_within(&mut child, Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    let rows = usage_rows(data.path());
    assert_eq!(rows.len(), STREAMS, "one usage row per stream");
    assert!(
        rows.iter().all(|(_, e)| e.as_deref() == Some("shutdown")),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_memory_writes_loses_nothing_acknowledged() {
    let mock = MockUpstream::start().await;
    let cfg = config(&mock, 5.0);
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn(cfg.path(), data.path());
    let client = http();

    // Writers add memories until the process dies under them.
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, addr, acked) = (client.clone(), addr.clone(), acked_tx.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let user = format!("writer{w}");
                let resp = client
                    .post(format!("http://{addr}/v1/memories"))
                    .json(&json!({"user_id": user, "content": format!("fact {i} of writer {w}")}))
                    .send()
                    .await;
                let Ok(resp) = resp else { return };
                if resp.status() != 201 {
                    return;
                }
                let Ok(v) = resp.json::<Value>().await else {
                    return;
                };
                let id = v["id"]
                    .as_str()
                    .or_else(|| v[0]["id"].as_str())
                    .expect("created memory id")
                    .to_string();
                let _ = acked.send((user, id));
            }
        }));
    }
    drop(acked_tx);
    // Kill once a good number of writes were acknowledged.
    let mut acked = Vec::new();
    while acked.len() < 300 {
        acked.push(
            tokio::time::timeout(Duration::from_secs(60), acked_rx.recv())
                .await
                .expect("writes acknowledged")
                .unwrap(),
        );
    }
    signal(&child, "-KILL");
    let _ = exits_within(&mut child, Duration::from_secs(10)).await;
    for w in writers {
        w.await.unwrap();
    }
    while let Some(a) = acked_rx.recv().await {
        acked.push(a);
    }

    // Restarted on the same files: opens clean, every acknowledged memory is there.
    let (mut child, addr) = spawn(cfg.path(), data.path());
    let ready = client
        .get(format!("http://{addr}/health/readiness"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    for (user, id) in &acked {
        let resp = client
            .get(format!("http://{addr}/v1/memories/{id}?user_id={user}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "acknowledged memory {id} of {user} lost"
        );
    }
    let db = rusqlite::Connection::open(data.path().join("memproxy.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    signal(&child, "-TERM");
    assert!(exits_within(&mut child, Duration::from_secs(30))
        .await
        .success());
}
