//! OpenTelemetry: with an OTLP endpoint configured, each model call is exported as a span
//! following the GenAI semantic conventions. The collector is a local HTTP server that
//! keeps the protobuf bodies it receives. (Own test binary: it installs the global
//! subscriber.)
#![cfg(feature = "otel")]

mod common;

use std::time::Duration;

use axum::routing::post;
use bytes::Bytes;
use common::*;
use serde_json::json;

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_calls_are_exported_as_genai_spans() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let collector = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let yaml = format!(
        "model_list:\n  - model_name: m\n    litellm_params: {{model: openai/gpt-4o-mini, mock_response: traced}}\n\
         observability: {{otlp_endpoint: \"http://{addr}\", service_name: memproxy-test}}\n"
    );
    let (cfg, _dir) = test_config(&yaml, &[]);
    let telemetry = memproxy::telemetry::init("info", &cfg.observability);
    assert!(memproxy::telemetry::traces_enabled());
    let proxy = start_state(memproxy::AppState::new(cfg).unwrap()).await;
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&chat_body("m", "trace me"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut streamed = chat_body("m", "trace this stream");
    streamed["stream"] = json!(true);
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    let _ = resp.text().await.unwrap();

    // Dropping the guard flushes the batch exporter (a blocking call).
    tokio::task::spawn_blocking(move || drop(telemetry))
        .await
        .unwrap();
    let mut received = Vec::new();
    while let Ok(Some(body)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        received.extend_from_slice(&body);
        if contains(&received, "gen_ai.usage.output_tokens") {
            break;
        }
    }
    for needle in [
        "memproxy-test",
        "chat m",
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
    ] {
        assert!(contains(&received, needle), "{needle} not exported");
    }
}
