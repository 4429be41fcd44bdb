//! Every error case answers in OpenAI's error shape with the right status, and bad input
//! changes nothing (no upstream call is made).

mod common;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.expect("JSON error body");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    assert!(v["error"].get("code").is_some(), "{v}");
    (status, v)
}

async fn post_raw(proxy: &Proxy, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(proxy.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn malformed_bodies_are_400_and_never_reach_upstream() {
    let mock = MockUpstream::start().await;
    let proxy = start(&one_model(&mock)).await;
    let cases: Vec<(&[u8], &str)> = vec![
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[]", "JSON object"),
        (
            br#"{"model": 12, "messages": [{"role":"user","content":"x"}]}"#,
            "`model` must be a string",
        ),
        (
            br#"{"model": "gpt", "stream": "yes", "messages": [{"role":"user","content":"x"}]}"#,
            "`stream`",
        ),
        (
            br#"{"model": "gpt", "messages": {"role":"user"}}"#,
            "`messages`",
        ),
        (br#"{"model": "gpt"}"#, "missing required field `messages`"),
        (
            b"{\"model\": \"gpt\", \"messages\": [{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}",
            "not valid JSON",
        ),
    ];
    for (body, want) in cases {
        let (status, v) = error_of(post_raw(&proxy, body.to_vec()).await).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{want:?} not in {msg:?}");
    }
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn unknown_model_is_404_naming_the_available_ones() {
    let mock = MockUpstream::start().await;
    let proxy = start(&one_model(&mock)).await;
    let (status, v) = error_of(
        client()
            .post(proxy.url("/v1/chat/completions"))
            .json(&chat_body("gpt-5", "x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("gpt-5") && msg.contains("available models: gpt"),
        "{msg}"
    );
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let mock = MockUpstream::start().await;
    let yaml = format!("{}server: {{max_body_bytes: 2000}}\n", one_model(&mock));
    let proxy = start(&yaml).await;
    let big = json!({"model": "gpt", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    // With Content-Length: refused before reading.
    let (status, v) = error_of(post_raw(&proxy, serde_json::to_vec(&big).unwrap()).await).await;
    assert_eq!(status, 413);
    assert_eq!(v["error"]["code"], "request_too_large");
    // Chunked (no Content-Length): refused while reading.
    let bytes = serde_json::to_vec(&big).unwrap();
    let stream = futures_util::stream::iter(
        bytes
            .chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // A body under the limit still works.
    let ok = post_raw(
        &proxy,
        serde_json::to_vec(&chat_body("gpt", "small")).unwrap(),
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(mock.count(), 1);
}

#[tokio::test]
async fn body_shorter_than_content_length_is_400() {
    let mock = MockUpstream::start().await;
    let proxy = start(&one_model(&mock)).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let body = br#"{"model":"gpt","messages":[]}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len() + 50
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    tcp.shutdown().await.unwrap(); // the client stops sending: the body is short
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("Content-Length"), "{out}");
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn upstream_connect_failure_is_502() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "model_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/x, api_base: 'http://127.0.0.1:{port}/v1'}}\nrouter_settings: {{num_retries: 1}}\n"
    );
    let proxy = start(&yaml).await;
    let (status, v) = error_of(
        client()
            .post(proxy.url("/v1/chat/completions"))
            .json(&chat_body("gpt", "x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(v["error"]["code"], "upstream_unreachable");
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Hang);
    let yaml = format!(
        "model_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/x, api_base: '{}', timeout: 0.3}}\nrouter_settings: {{num_retries: 0}}\n",
        mock.url()
    );
    let proxy = start(&yaml).await;
    let (status, v) = error_of(
        client()
            .post(proxy.url("/v1/chat/completions"))
            .json(&chat_body("gpt", "x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 504);
    assert_eq!(v["error"]["type"], "timeout_error");
}

#[tokio::test]
async fn upstream_4xx_is_passed_on_with_the_provider_message_and_not_retried() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Status(
        400,
        json!({"error": {"message": "max_tokens is too large", "type": "invalid_request_error", "code": "bad_max_tokens"}}),
    ));
    let yaml = format!(
        "model_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/x, api_base: '{}'}}\nrouter_settings: {{num_retries: 3}}\n",
        mock.url()
    );
    let proxy = start(&yaml).await;
    let (status, v) = error_of(
        client()
            .post(proxy.url("/v1/chat/completions"))
            .json(&chat_body("gpt", "x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["message"], "max_tokens is too large");
    assert_eq!(v["error"]["code"], "bad_max_tokens");
    assert_eq!(mock.count(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn upstream_5xx_after_retries_is_passed_on() {
    let mock = MockUpstream::start().await;
    for _ in 0..3 {
        mock.push(Behavior::Status(
            503,
            json!({"error": {"message": "overloaded"}}),
        ));
    }
    let yaml = format!(
        "model_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/x, api_base: '{}'}}\nrouter_settings: {{num_retries: 2}}\n",
        mock.url()
    );
    let proxy = start(&yaml).await;
    let (status, v) = error_of(
        client()
            .post(proxy.url("/v1/chat/completions"))
            .json(&chat_body("gpt", "x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(v["error"]["message"], "overloaded");
    assert_eq!(mock.count(), 3, "1 call + 2 retries");
}

#[tokio::test]
async fn unknown_paths_and_methods_get_openai_errors() {
    let mock = MockUpstream::start().await;
    let proxy = start(&one_model(&mock)).await;
    let (status, _) = error_of(client().get(proxy.url("/v1/nothing")).send().await.unwrap()).await;
    assert_eq!(status, 404);
    let (status, _) = error_of(
        client()
            .get(proxy.url("/v1/chat/completions"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 405);
}

/// A config with one Anthropic deployment `claude` at the mock.
fn anthropic_model(mock: &MockUpstream) -> String {
    format!(
        "model_list:\n  - model_name: claude\n    litellm_params: {{model: anthropic/claude-sonnet-4-5, api_base: {}, api_key: sk-ant}}\nrouter_settings: {{num_retries: 0}}\n",
        mock.url()
    )
}

fn raw(status: u16, content_type: &str, body: &str) -> Behavior {
    Behavior::Raw {
        status,
        content_type: content_type.into(),
        body: body.into(),
    }
}

/// Malformed answers from upstream: a body that is not the provider's JSON is a 502 naming
/// the upstream; a stream that turns malformed ends with the client's own error event
/// (no `[DONE]`, no garbage passed on as if it were an answer); the proxy serves on.
#[tokio::test]
async fn malformed_upstream_answers_become_a_502_or_an_error_event() {
    let mock = MockUpstream::start().await;
    let proxy = start(&one_model(&mock)).await;

    mock.push(raw(200, "text/html", "<html>a captive portal</html>"));
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&chat_body("gpt", "x"))
        .send()
        .await
        .unwrap();
    let (status, v) = error_of(resp).await;
    assert_eq!(status, 502, "{v}");

    let good = r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#;
    mock.push(raw(
        200,
        "text/event-stream",
        &format!("data: {good}\n\ndata: {{\"choices\": [{{\"delta\": \n\ndata: [DONE]\n\n"),
    ));
    let mut body = chat_body("gpt", "x");
    body["stream"] = json!(true);
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert!(events[0].contains("Hel"), "{text}");
    let last: Value = serde_json::from_str(events.last().unwrap()).expect(&text);
    assert!(last["error"]["message"].is_string(), "{text}");
    assert!(!events.contains(&"[DONE]"), "{text}");

    let ok = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&chat_body("gpt", "again"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_malformed_anthropic_stream_ends_with_an_anthropic_error_event() {
    let mock = MockUpstream::start().await;
    let proxy = start(&anthropic_model(&mock)).await;
    let start_ev = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":3,"output_tokens":0}}}"#;
    mock.push(raw(
        200,
        "text/event-stream",
        &format!("event: message_start\ndata: {start_ev}\n\nevent: content_block_start\ndata: {{\"type\": \"content_block_start\", \"index\": 0, \"content_block\": \n\n"),
    ));
    let resp = client()
        .post(proxy.url("/v1/messages"))
        .json(&json!({"model": "claude", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("message_start"), "{text}");
    assert!(text.contains("event: error"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
}
