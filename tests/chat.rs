//! Chat completions end to end: passthrough to an OpenAI-compatible upstream, streaming
//! relayed incrementally, the offline mock, graceful shutdown.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

#[tokio::test]
async fn non_streamed_passthrough_keeps_fields_and_sets_headers() {
    let mock = MockUpstream::start().await;
    let proxy = start(&one_model(&mock)).await;
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .header("x-request-id", "req-abc-1")
        .header("x-memory-user-id", "alice")
        .json(
            &json!({"model": "gpt", "messages": [{"role": "user", "content": "hi there"}],
                      "temperature": 0.2, "x_vendor_field": {"keep": [1, 2]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-abc-1");
    assert_eq!(resp.headers()["x-memproxy-user-id"], "alice");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "mock reply to: hi there"
    );
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!(up.body["model"], "gpt-4o-up");
    assert_eq!(up.body["x_vendor_field"], json!({"keep": [1, 2]}));
    assert_eq!(up.body["temperature"], 0.2);
    assert_eq!(up.headers["authorization"], "Bearer sk-up");
    assert_eq!(up.headers["x-memproxy-user-id"], "alice");
    assert_eq!(up.headers["x-request-id"], "req-abc-1");
    assert!(
        up.headers.get("x-sm-user-id").is_none(),
        "not a supermemory router"
    );
}

#[tokio::test]
async fn also_served_without_v1_prefix() {
    let mock = MockUpstream::start().await;
    let proxy = start(&one_model(&mock)).await;
    let resp = client()
        .post(proxy.url("/chat/completions"))
        .json(&chat_body("gpt", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn stream_is_relayed_while_upstream_is_still_sending() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::PausedStream {
        first: "first".into(),
        rest: "second part".into(),
    });
    let proxy = start(&one_model(&mock)).await;
    let mut body = chat_body("gpt", "stream please");
    body["stream"] = json!(true);
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    // The mock holds back everything after the first chunk until released: receiving
    // it here proves the proxy does not buffer.
    let mut got = String::new();
    while !got.contains("\n\n") {
        let chunk = stream.next().await.expect("first chunk").unwrap();
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(got.contains("\"first\""), "{got}");
    assert!(!got.contains("[DONE]"));
    mock.release();
    while let Some(chunk) = stream.next().await {
        got.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(got.contains("second "), "{got}");
    assert!(got.trim_end().ends_with("data: [DONE]"), "{got}");
    // The gateway asked the upstream for usage; the client did not, so the usage-only
    // chunk is not forwarded.
    assert!(!got.contains("\"usage\""), "{got}");
    assert_eq!(
        mock.requests()[0].body["stream_options"]["include_usage"],
        true
    );
}

#[tokio::test]
async fn stream_usage_is_forwarded_when_the_client_asks() {
    let mock = MockUpstream::start().await;
    let proxy = start(&one_model(&mock)).await;
    let mut body = chat_body("gpt", "hello");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let events = sse_payloads(resp).await;
    let usage: Vec<Value> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter(|v| v["usage"].is_object())
        .collect();
    assert_eq!(usage.len(), 1);
    assert!(usage[0]["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let text: String = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "mock reply to: hello");
}

#[tokio::test]
async fn stream_cut_midway_ends_with_an_error_event() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::CutStream {
        first: "partial".into(),
    });
    let proxy = start(&one_model(&mock)).await;
    let mut body = chat_body("gpt", "x");
    body["stream"] = json!(true);
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut got = String::new();
    while !got.contains("\n\n") {
        got.push_str(std::str::from_utf8(&stream.next().await.unwrap().unwrap()).unwrap());
    }
    mock.release();
    while let Some(Ok(c)) = stream.next().await {
        got.push_str(std::str::from_utf8(&c).unwrap());
    }
    let events: Vec<&str> = got
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert!(events[0].contains("partial"));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_unreachable", "{last}");
    assert!(!events.contains(&"[DONE]"));
    // The proxy is fine afterwards.
    let ok = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&chat_body("gpt", "again"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn mock_response_answers_offline_streamed_and_not() {
    let proxy = start(
        "model_list:\n  - model_name: demo\n    litellm_params: {model: openai/demo, mock_response: \"Hi there, offline.\"}\n",
    )
    .await;
    let resp: Value = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&chat_body("demo", "hello"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        resp["choices"][0]["message"]["content"],
        "Hi there, offline."
    );
    assert_eq!(resp["object"], "chat.completion");

    let mut body = chat_body("demo", "hello");
    body["stream"] = json!(true);
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let events = sse_payloads(resp).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "Hi there, offline.");
    assert!(!events.iter().any(|e| e.contains("\"usage\"")));
}

#[tokio::test]
async fn models_lists_configured_names() {
    let mock = MockUpstream::start().await;
    let proxy = start(&one_model(&mock)).await;
    let v: Value = client()
        .get(proxy.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "gpt");
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_streams_finish() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::PausedStream {
        first: "one".into(),
        rest: "two three".into(),
    });
    let mut proxy = start(&one_model(&mock)).await;
    let mut body = chat_body("gpt", "x");
    body["stream"] = json!(true);
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("one"));
    let server = proxy.begin_shutdown();
    mock.release();
    let mut rest = String::new();
    while let Some(c) = stream.next().await {
        rest.push_str(std::str::from_utf8(&c.unwrap()).unwrap());
    }
    assert!(rest.contains("three") && rest.contains("[DONE]"), "{rest}");
    server.await.unwrap().unwrap();
}
