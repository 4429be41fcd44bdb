//! The edge interceptor (`memproxy intercept`): one local forwarder per project in front
//! of a central memproxy. Two projects of one user keep separate memories through it;
//! a project keeps its port across restarts; concurrent starts of different projects get
//! different ports; a stale registry entry is reclaimed; streams pass through unbuffered;
//! a memproxy that is down is a clear 502.

mod common;

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use common::*;
use futures_util::StreamExt;
use memproxy::intercept::registry::{Entry, Registry};
use memproxy::intercept::{self, InterceptError, Options, Running};
use serde_json::Value;
use tokio::sync::mpsc;

fn options(registry: &Registry, project: &str, upstream: &str) -> Options {
    Options {
        project: project.into(),
        dir: None,
        upstream: upstream.into(),
        user: Some("ivan".into()),
        key: None,
        host: "127.0.0.1".into(),
        registry: registry.clone(),
    }
}

async fn chat_via(base: &str, headers: &[(&str, &str)], text: &str) -> reqwest::Response {
    let mut req = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat_body("gpt", text));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn base(r: &Running) -> String {
    format!("http://{}", r.addr)
}

#[tokio::test]
async fn two_projects_through_interceptors_keep_their_memories_apart() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "{}context_retrieval: {{enabled: true, max_results: 5}}\n",
        one_model(&mock)
    );
    let proxy = start(&yaml).await;
    let reg_dir = tempfile::tempdir().unwrap();
    let reg = Registry::with_first_port(reg_dir.path(), 18_700);
    let central = format!("http://{}", proxy.addr);
    let alpha = intercept::start(options(&reg, "alpha", &central))
        .await
        .unwrap();
    let beta = intercept::start(options(&reg, "beta", &central))
        .await
        .unwrap();
    assert_ne!(alpha.addr.port(), beta.addr.port());
    assert!(alpha
        .instructions()
        .contains(&format!("{}/v1", base(&alpha))));

    mock.push(Behavior::Text("Noted.".into()));
    let resp = chat_via(&base(&alpha), &[], "alpha renders with vulkan shaders").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-memproxy-project"], "alpha");
    assert_eq!(resp.headers()["x-memproxy-user-id"], "ivan");
    // A user-level fact, straight to memproxy without a project.
    mock.push(Behavior::Text("Noted.".into()));
    let direct = chat_via(
        &central,
        &[("x-memory-user-id", "ivan")],
        "I name every branch after vulkan volcanoes",
    )
    .await;
    assert_eq!(direct.status(), 200);
    proxy.flush_memory().await;

    let ask = "what about vulkan?";
    mock.push(Behavior::Text("ok".into()));
    chat_via(&base(&alpha), &[], ask).await;
    let saw = mock.requests().last().unwrap().body.to_string();
    assert!(saw.contains("renders with vulkan shaders"), "{saw}");
    assert!(saw.contains("vulkan volcanoes"), "{saw}");
    mock.push(Behavior::Text("ok".into()));
    chat_via(&base(&beta), &[], ask).await;
    let saw = mock.requests().last().unwrap().body.to_string();
    assert!(
        !saw.contains("renders with vulkan shaders"),
        "beta got alpha's: {saw}"
    );
    assert!(saw.contains("vulkan volcanoes"), "{saw}");
    // Another user, through the same interceptor, sees neither.
    mock.push(Behavior::Text("ok".into()));
    chat_via(&base(&alpha), &[("x-memory-user-id", "other")], ask).await;
    let saw = mock.requests().last().unwrap().body.to_string();
    assert!(!saw.contains("memproxy-memory"), "{saw}");
    alpha.stop().await.unwrap();
    beta.stop().await.unwrap();
}

#[tokio::test]
async fn a_project_keeps_its_port_and_stale_entries_are_reclaimed() {
    let reg_dir = tempfile::tempdir().unwrap();
    let reg = Registry::with_first_port(reg_dir.path(), 18_800);
    let up = "http://127.0.0.1:9";
    let first = intercept::start(options(&reg, "keep", up)).await.unwrap();
    let port = first.addr.port();
    // A second start while it runs is refused, naming the running one.
    match intercept::start(options(&reg, "keep", up)).await {
        Err(InterceptError::AlreadyRunning { port: p, .. }) => assert_eq!(p, port),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("started twice"),
    }
    first.stop().await.unwrap();
    assert!(!reg.list().unwrap()["keep"].running());
    let again = intercept::start(options(&reg, "keep", up)).await.unwrap();
    assert_eq!(again.addr.port(), port, "the port changed across a restart");
    again.stop().await.unwrap();

    // An entry left by a process that died (no clean stop) is reclaimed.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    {
        let mut l = reg.lock().unwrap();
        l.entries.get_mut("keep").unwrap().pid = Some(dead);
        l.entries.insert(
            "crashed".into(),
            Entry {
                port: port + 50,
                pid: Some(dead),
                upstream: up.into(),
                dir: None,
            },
        );
        l.save().unwrap();
    }
    let reclaimed = intercept::start(options(&reg, "crashed", up))
        .await
        .unwrap();
    assert_eq!(reclaimed.addr.port(), port + 50);
    let keep = intercept::start(options(&reg, "keep", up)).await.unwrap();
    assert_eq!(keep.addr.port(), port);
    let list = reg.list().unwrap();
    assert_eq!(list["keep"].pid, Some(std::process::id()));
    reclaimed.stop().await.unwrap();
    keep.stop().await.unwrap();
    assert!(reg.release("keep").unwrap().is_some());
    assert!(!reg.list().unwrap().contains_key("keep"));
}

#[test]
fn concurrent_starts_of_different_projects_get_different_ports() {
    let reg_dir = tempfile::tempdir().unwrap();
    let reg = Registry::with_first_port(reg_dir.path(), 18_900);
    let barrier = std::sync::Barrier::new(4);
    let ports: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (reg, barrier) = (&reg, &barrier);
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        barrier.wait();
                        let opts = options(reg, &format!("p{i}"), "http://127.0.0.1:9");
                        let r = intercept::start(opts).await.unwrap();
                        let port = r.addr.port();
                        // Every one is still running while the others start.
                        barrier.wait();
                        r.stop().await.unwrap();
                        port
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = ports.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "ports collided: {ports:?}");
    let list = reg.list().unwrap();
    for i in 0..4 {
        assert_eq!(list[&format!("p{i}")].port, ports[i]);
    }
}

#[tokio::test]
async fn streams_pass_through_unbuffered_with_the_project_added() {
    // An upstream that sends one chunk, then waits for the test before the next.
    let (chunks_tx, chunks_rx) = mpsc::channel::<Bytes>(4);
    let (seen_tx, mut seen_rx) = mpsc::channel::<HeaderMap>(1);
    let rx = std::sync::Mutex::new(Some(chunks_rx));
    let rx = std::sync::Arc::new(rx);
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap| {
            let rx = rx.lock().unwrap().take().unwrap();
            let seen = seen_tx.clone();
            async move {
                seen.send(headers).await.unwrap();
                let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
                });
                Body::from_stream(stream)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let reg_dir = tempfile::tempdir().unwrap();
    let reg = Registry::with_first_port(reg_dir.path(), 19_000);
    let mut opts = options(&reg, "streamy", &format!("{up}/v1"));
    opts.key = Some("sk-from-interceptor".into());
    let r = intercept::start(opts).await.unwrap();
    let resp = chat_via(&base(&r), &[], "stream please").await;
    assert_eq!(resp.status(), 200);
    let headers = seen_rx.recv().await.unwrap();
    assert_eq!(headers["x-memory-project"], "streamy");
    assert_eq!(headers["x-memory-user-id"], "ivan");
    assert_eq!(headers["authorization"], "Bearer sk-from-interceptor");
    let mut body = resp.bytes_stream();
    chunks_tx
        .send(Bytes::from("data: first\n\n"))
        .await
        .unwrap();
    // Read before the upstream has sent the rest: nothing waits for the whole body.
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(first, "data: first\n\n");
    chunks_tx
        .send(Bytes::from("data: second\n\n"))
        .await
        .unwrap();
    let second = body.next().await.unwrap().unwrap();
    assert_eq!(second, "data: second\n\n");
    drop(chunks_tx);
    assert!(body.next().await.is_none());
    r.stop().await.unwrap();
}

#[tokio::test]
async fn a_memproxy_that_is_down_is_a_clear_502() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let reg_dir = tempfile::tempdir().unwrap();
    let reg = Registry::with_first_port(reg_dir.path(), 19_100);
    let r = intercept::start(options(&reg, "down", &format!("http://{closed}")))
        .await
        .unwrap();
    let resp = chat_via(&base(&r), &[], "hello").await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("unreachable") && msg.contains(&closed.to_string()),
        "{msg}"
    );
    r.stop().await.unwrap();
    for bad in ["a b", ".x"] {
        assert!(matches!(
            intercept::start(options(&reg, bad, "http://127.0.0.1:9")).await,
            Err(InterceptError::Project(_))
        ));
    }
}
