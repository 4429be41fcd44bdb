//! An `anthropic/` deployment behind the OpenAI chat API: requests translated to
//! Anthropic Messages (headers, system, tools, tool results), answers translated back,
//! streamed and not, errors carrying Anthropic's message, streams relayed incrementally.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

fn claude(mock: &MockUpstream) -> String {
    format!(
        "model_list:\n  - model_name: claude\n    litellm_params: {{model: anthropic/claude-test, api_base: '{}', api_key: sk-ant-test}}\nrouter_settings: {{num_retries: 0}}\n",
        mock.url()
    )
}

async fn post(proxy: &Proxy, body: &Value) -> reqwest::Response {
    client()
        .post(proxy.url("/v1/chat/completions"))
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The chunks of an OpenAI stream, `[DONE]` excluded (asserted to be last).
async fn chunks(resp: reqwest::Response) -> Vec<Value> {
    let events = sse_payloads(resp).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn finish_reason(chunks: &[Value]) -> Option<&str> {
    chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
}

#[tokio::test]
async fn text_answer_is_translated_both_ways() {
    let mock = MockUpstream::start().await;
    let proxy = start(&claude(&mock)).await;
    let resp = post(
        &proxy,
        &json!({"model": "claude", "messages": [
                   {"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "hello there"}],
                "temperature": 0.2, "stop": "END", "user": "u-7"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "mock reply to: hello there"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["model"], "claude-test");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!(up.path, "/v1/messages");
    assert_eq!(up.headers["x-api-key"], "sk-ant-test");
    assert_eq!(up.headers["anthropic-version"], "2023-06-01");
    assert_eq!(up.headers["content-type"], "application/json");
    assert_eq!(
        up.headers["anthropic-beta"],
        "interleaved-thinking-2025-05-14"
    );
    assert!(up.headers.get("authorization").is_none());
    assert_eq!(
        up.body,
        json!({"model": "claude-test", "system": "Be brief.",
               "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
               "max_tokens": 4096, "temperature": 0.2, "stop_sequences": ["END"],
               "metadata": {"user_id": "u-7"}})
    );
}

#[tokio::test]
async fn streamed_text_arrives_as_openai_chunks_with_usage() {
    let mock = MockUpstream::start().await;
    let proxy = start(&claude(&mock)).await;
    let resp = post(
        &proxy,
        &json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "stream it"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let chunks = chunks(resp).await;
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(streamed_text(&chunks), "mock reply to: stream it");
    assert_eq!(finish_reason(&chunks), Some("stop"));
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    let up = &mock.requests()[0];
    assert_eq!(up.body["stream"], true);
    assert_eq!(up.headers["accept"], "text/event-stream");
    assert!(up.body.get("stream_options").is_none());
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
}

#[tokio::test]
async fn tool_call_round_trip() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::ToolCall {
        id: "toolu_01".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    });
    let proxy = start(&claude(&mock)).await;
    let mut messages = json!([{"role": "user", "content": "weather in Paris?"}]);
    let resp = post(
        &proxy,
        &json!({"model": "claude", "messages": messages, "tools": weather_tool(),
                "tool_choice": "auto"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let msg = &body["choices"][0]["message"];
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert!(msg["content"].is_null(), "{msg}");
    let call = &msg["tool_calls"][0];
    assert_eq!(call["id"], "toolu_01");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));

    let first = &mock.requests()[0].body;
    assert_eq!(
        first["tools"],
        json!([{"name": "get_weather", "description": "Weather now",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
    );
    assert_eq!(first["tool_choice"], json!({"type": "auto"}));

    // The client runs the tool and sends the result back; the mock checks (as Anthropic
    // does) that each tool_result answers a tool_use of the previous turn.
    let messages = messages.as_array_mut().unwrap();
    messages.push(msg.clone());
    messages.push(json!({"role": "tool", "tool_call_id": "toolu_01", "content": "18°C, sunny"}));
    let resp = post(
        &proxy,
        &json!({"model": "claude", "messages": messages, "tools": weather_tool()}),
    )
    .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let second = &mock.requests()[1].body;
    assert_eq!(
        second["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01",
                 "content": [{"type": "text", "text": "18°C, sunny"}]}]}
        ])
    );
}

#[tokio::test]
async fn streamed_tool_call_is_assembled_from_pieces() {
    let mock = MockUpstream::start().await;
    let arguments = r#"{"city":"Paris","unit":"celsius"}"#;
    mock.push(Behavior::ToolCall {
        id: "toolu_02".into(),
        name: "get_weather".into(),
        arguments: arguments.into(),
    });
    let proxy = start(&claude(&mock)).await;
    let resp = post(
        &proxy,
        &json!({"model": "claude", "stream": true, "tools": weather_tool(),
                "messages": [{"role": "user", "content": "weather?"}]}),
    )
    .await;
    let chunks = chunks(resp).await;
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[0]["id"], "toolu_02");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let pieces: Vec<&str> = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .filter(|a| !a.is_empty())
        .collect();
    assert!(pieces.len() >= 2, "{pieces:?}");
    assert_eq!(pieces.concat(), arguments);
    assert_eq!(finish_reason(&chunks), Some("tool_calls"));
}

#[tokio::test]
async fn upstream_error_keeps_anthropic_message_in_openai_shape() {
    let mock = MockUpstream::start().await;
    let message = "Number of request tokens has exceeded your per-minute rate limit";
    mock.push(Behavior::Status(
        429,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": message}}),
    ));
    let proxy = start(&claude(&mock)).await;
    let resp = post(&proxy, &chat_body("claude", "hi")).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], message);
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(mock.count(), 1);
}

#[tokio::test]
async fn stream_is_relayed_while_upstream_is_still_sending() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::PausedStream {
        first: "first".into(),
        rest: " second part".into(),
    });
    let proxy = start(&claude(&mock)).await;
    let resp = post(
        &proxy,
        &json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "go"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    // The mock holds everything after its first text delta until released: seeing that
    // delta here proves neither the provider nor the translation buffers.
    let mut got = String::new();
    while !got.contains("\"first\"") {
        let chunk = stream.next().await.expect("first text").unwrap();
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(!got.contains("[DONE]") && !got.contains("second"), "{got}");
    mock.release();
    while let Some(chunk) = stream.next().await {
        got.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(got.trim_end().ends_with("data: [DONE]"), "{got}");
    let chunks: Vec<Value> = got
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(streamed_text(&chunks), "first second part");
}

#[tokio::test]
async fn stream_cut_midway_ends_with_an_error_chunk() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::CutStream {
        first: "partial".into(),
    });
    let proxy = start(&claude(&mock)).await;
    let resp = post(
        &proxy,
        &json!({"model": "claude", "stream": true, "messages": [{"role": "user", "content": "go"}]}),
    )
    .await;
    let mut stream = resp.bytes_stream();
    let mut got = String::new();
    while !got.contains("partial") {
        got.push_str(std::str::from_utf8(&stream.next().await.unwrap().unwrap()).unwrap());
    }
    mock.release();
    while let Some(Ok(c)) = stream.next().await {
        got.push_str(std::str::from_utf8(&c).unwrap());
    }
    let last: Value = serde_json::from_str(
        got.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .last()
            .unwrap(),
    )
    .unwrap();
    assert!(last["error"]["message"].is_string(), "{last}");
    assert!(!got.contains("[DONE]"));
}
