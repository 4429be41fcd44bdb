//! `memproxy intercept` (issue 21): the binary keeps a project's port across restarts and
//! gives concurrent starts of different projects different ports (its registry file,
//! `intercept list` / `release`); the proxy passes streams through as they come and
//! answers a clear 502 when the central memproxy is down.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use axum::http::HeaderName;
use common::*;
use futures_util::StreamExt;
use memproxy::intercept::Target;
use serde_json::{json, Value};
use tokio::sync::oneshot;

const BIN: &str = env!("CARGO_BIN_EXE_memproxy");

/// A started `memproxy intercept` and the port it printed; killed when dropped.
struct Running {
    child: Child,
    port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each test hands out ports of its own range, so that one test's restart never finds
/// its port taken by another test's new project.
fn command(registry: &std::path::Path, ports: &str) -> Command {
    let mut c = Command::new(BIN);
    c.arg("intercept")
        .env("MEMPROXY_INTERCEPT_REGISTRY", registry)
        .env("MEMPROXY_INTERCEPT_PORTS", ports)
        .env_remove("MEMPROXY_UPSTREAM")
        .env_remove("MEMPROXY_KEY");
    c
}

/// Starts an interceptor of `project` and reads the port from its first line of output.
fn start_intercept(registry: &std::path::Path, ports: &str, project: &str) -> Running {
    let mut child = command(registry, ports)
        .args(["--project", project, "--upstream", "http://127.0.0.1:9"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok());
    match port {
        Some(port) => Running { child, port },
        None => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "no port in {line:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn cli(registry: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = command(registry, "1-2").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_project_keeps_its_port_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("ports.json");
    const PORTS: &str = "18600-18649";
    let first = start_intercept(&registry, PORTS, "web");
    let port = first.port;
    // A second interceptor of the same project is refused while the first runs.
    let out = command(&registry, PORTS)
        .args(["--project", "web", "--upstream", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already intercepted"));
    // Killed (not a clean stop): its entry is stale, and the next start takes it over.
    drop(first);
    let again = start_intercept(&registry, PORTS, "web");
    assert_eq!(again.port, port);
    let (ok, listed) = cli(&registry, &["list"]);
    assert!(
        ok && listed.contains("web") && listed.contains(&port.to_string()),
        "{listed}"
    );
    assert!(listed.contains("running"), "{listed}");
    drop(again);
    let (ok, out) = cli(&registry, &["release", "web"]);
    assert!(ok, "{out}");
    let (_, listed) = cli(&registry, &["list"]);
    assert!(!listed.contains("web"), "{listed}");
    let (ok, _) = cli(&registry, &["release", "web"]);
    assert!(!ok, "releasing an unknown project fails");
}

#[test]
fn concurrent_starts_get_different_ports() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("ports.json");
    let running: Vec<Running> = std::thread::scope(|s| {
        let handles: Vec<_> = ["p1", "p2", "p3", "p4"]
            .iter()
            .map(|p| {
                let registry = registry.clone();
                s.spawn(move || start_intercept(&registry, "18650-18699", p))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports: Vec<u16> = running.iter().map(|r| r.port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4, "{ports:?}");
    let (_, listed) = cli(&registry, &["list"]);
    for p in ["p1", "p2", "p3", "p4"] {
        assert!(listed.contains(p), "{listed}");
    }
}

/// An in-process interceptor for `project`, forwarding to `upstream`.
async fn intercept(upstream: &str) -> (String, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target = Target {
        upstream: upstream.parse().unwrap(),
        project: "web".into(),
        user: Some("alice".into()),
        user_header: HeaderName::from_static("x-memory-user-id"),
        key: None,
    };
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(memproxy::intercept::serve(listener, target, async {
        let _ = rx.await;
    }));
    (format!("http://{addr}"), tx)
}

#[tokio::test]
async fn streams_pass_through_as_they_come() {
    let mock = MockUpstream::start().await;
    let proxy = start(&one_model(&mock)).await;
    let (base, _stop) = intercept(&proxy.url("")).await;
    mock.push(Behavior::PausedStream {
        first: "first".into(),
        rest: " second part".into(),
    });
    let resp = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "gpt", "stream": true, "messages": [{"role": "user", "content": "go"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-memproxy-user-id"], "alice");
    assert_eq!(resp.headers()["x-memproxy-project"], "web");
    let mut stream = resp.bytes_stream();
    // The mock holds the rest until released: the first delta arriving proves neither
    // the interceptor nor memproxy buffers.
    let mut got = String::new();
    while !got.contains("\"first\"") {
        let chunk = stream.next().await.expect("first chunk").unwrap();
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(!got.contains("second") && !got.contains("[DONE]"), "{got}");
    mock.release();
    while let Some(chunk) = stream.next().await {
        got.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(got.contains("second") && got.contains("[DONE]"), "{got}");
    assert_eq!(mock.count(), 1);
}

#[tokio::test]
async fn central_memproxy_down_is_a_clear_502() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (base, _stop) = intercept(&format!("http://127.0.0.1:{port}")).await;
    let resp = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat_body("gpt", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot reach the central memproxy"), "{v}");
    assert_eq!(v["error"]["code"], "upstream_unavailable");
    let resp = client()
        .post(format!("{base}/v1/messages"))
        .json(&json!({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cannot reach"));
}
