//! Test harness: the real memproxy app on a random port, configured from YAML text.
#![allow(dead_code)]

pub mod pg;

use std::net::SocketAddr;

use memproxy::config::{self, Overrides};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(unused_imports)]
pub use mock_upstream::{Behavior, MockUpstream};

pub struct Proxy {
    pub addr: SocketAddr,
    /// The memory data dir made for this proxy (none when the test chose its own).
    pub data_dir: Option<tempfile::TempDir>,
    pub state: std::sync::Arc<memproxy::AppState>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Waits until every captured exchange so far is written to the memory store.
    pub async fn flush_memory(&self) {
        if let Some(m) = &self.state.memory {
            m.flush().await;
        }
    }

    /// Signals a graceful shutdown and waits until the server has stopped.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        let _ = self.stop.take().map(|s| s.send(()));
        self.handle.take().unwrap().await.unwrap()
    }

    /// Signals a graceful shutdown without waiting.
    pub fn begin_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        let _ = self.stop.take().map(|s| s.send(()));
        self.handle.take().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(h) = &self.handle {
            h.abort();
        }
    }
}

pub async fn start(yaml: &str) -> Proxy {
    start_with(yaml, &[], Overrides::default()).await
}

/// Starts the app; without `overrides.data_dir`, memory lives in a fresh temp dir.
pub async fn start_with(yaml: &str, env: &[(&str, &str)], mut overrides: Overrides) -> Proxy {
    let data_dir = match overrides.data_dir {
        Some(_) => None,
        None => {
            let d = tempfile::tempdir().expect("temp data dir");
            overrides.data_dir = Some(d.path().to_string_lossy().into_owned());
            Some(d)
        }
    };
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let cfg = config::parse(yaml, "test.yaml", &overrides, &lookup).expect("config");
    let state = memproxy::AppState::new(cfg).expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(memproxy::serve(listener, state.clone(), async {
        let _ = rx.await;
    }));
    Proxy {
        addr,
        data_dir,
        state,
        stop: Some(tx),
        handle: Some(handle),
    }
}

/// Parses a test config, with its data dir in a fresh temp dir (returned with it).
pub fn test_config(yaml: &str, env: &[(&str, &str)]) -> (config::Config, tempfile::TempDir) {
    let d = tempfile::tempdir().expect("temp data dir");
    let overrides = Overrides {
        data_dir: Some(d.path().to_string_lossy().into_owned()),
        ..Default::default()
    };
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let cfg = config::parse(yaml, "test.yaml", &overrides, &lookup).expect("config");
    (cfg, d)
}

/// Serves an already built state (tests that control the clock or inspect the state).
pub async fn start_state(state: std::sync::Arc<memproxy::AppState>) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(memproxy::serve(listener, state.clone(), async {
        let _ = rx.await;
    }));
    Proxy {
        addr,
        data_dir: None,
        state,
        stop: Some(tx),
        handle: Some(handle),
    }
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A config with one OpenAI-compatible deployment `gpt` at the mock.
pub fn one_model(mock: &MockUpstream) -> String {
    format!(
        "model_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/gpt-4o-up, api_base: {}, api_key: sk-up}}\nrouter_settings: {{num_retries: 0}}\n",
        mock.url()
    )
}

pub fn chat_body(model: &str, text: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// Reads an SSE response to the end, returning the `data:` payloads.
pub async fn sse_payloads(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|ev| ev.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

/// The JSON chunks of an OpenAI SSE answer, and whether it ended with `[DONE]`.
pub async fn chunks(resp: reqwest::Response) -> (Vec<serde_json::Value>, bool) {
    let events = sse_payloads(resp).await;
    let done = events.last().map(String::as_str) == Some("[DONE]");
    let chunks = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    (chunks, done)
}
