//! A `gemini/` deployment end to end: OpenAI chat requests translated into Gemini's
//! generateContent / streamGenerateContent, sent to the mock's Gemini API, and the
//! answers translated back, streamed and not: text, tool calls, errors, incremental relay.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// A config with one Gemini deployment `gem` at the mock's Gemini API.
fn gemini_model(mock: &MockUpstream) -> String {
    format!(
        "model_list:\n  - model_name: gem\n    litellm_params: {{model: gemini/gemini-test, api_base: http://{}, api_key: g-key}}\nrouter_settings: {{num_retries: 0}}\n",
        mock.addr
    )
}

async fn post(proxy: &Proxy, body: &Value) -> reqwest::Response {
    client()
        .post(proxy.url("/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap()
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

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
        "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                       "properties": {"city": {"type": "string"}}, "required": ["city"],
                       "additionalProperties": false}}}])
}

#[tokio::test]
async fn text_answer_and_the_gemini_request_the_upstream_saw() {
    let mock = MockUpstream::start().await;
    let proxy = start(&gemini_model(&mock)).await;
    let resp = post(
        &proxy,
        &json!({"model": "gem", "max_tokens": 50, "temperature": 0.1, "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hi there"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "mock reply to: hi there"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["model"], "gemini-test");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!(up.path, "/v1beta/models/gemini-test:generateContent");
    assert_eq!(up.headers["x-goog-api-key"], "g-key");
    assert!(up.headers.get("authorization").is_none());
    assert_eq!(
        up.body["systemInstruction"],
        json!({"parts": [{"text": "You are terse."}]})
    );
    assert_eq!(
        up.body["contents"],
        json!([{"role": "user", "parts": [{"text": "hi there"}]}])
    );
    assert_eq!(
        up.body["generationConfig"],
        json!({"temperature": 0.1, "maxOutputTokens": 50})
    );
    assert!(up.body.get("model").is_none() && up.body.get("messages").is_none());
}

#[tokio::test]
async fn streamed_text_is_translated_to_openai_chunks() {
    let mock = MockUpstream::start().await;
    let proxy = start(&gemini_model(&mock)).await;
    let mut body = chat_body("gem", "hello you");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = post(&proxy, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (chunks, done) = chunks(resp).await;
    assert!(
        done,
        "a Gemini stream that finished is complete: {chunks:?}"
    );
    assert_eq!(streamed_text(&chunks), "mock reply to: hello you");
    assert_eq!(finish_reason(&chunks), Some("stop"));
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let usage = chunks.last().unwrap();
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        mock.requests()[0].path,
        "/v1beta/models/gemini-test:streamGenerateContent"
    );
}

#[tokio::test]
async fn tool_call_round_trip() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::ToolCall {
        id: "ignored".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    });
    let proxy = start(&gemini_model(&mock)).await;
    let mut messages = vec![json!({"role": "user", "content": "Weather in Paris?"})];
    let resp = post(
        &proxy,
        &json!({"model": "gem", "messages": messages, "tools": weather_tool(), "tool_choice": "auto"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    let id = call["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("call_"), "{id}");

    let first = &mock.requests()[0].body;
    assert_eq!(
        first["tools"],
        json!([{"functionDeclarations": [{"name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}])
    );
    assert_eq!(
        first["toolConfig"],
        json!({"functionCallingConfig": {"mode": "AUTO"}})
    );

    // Turn two carries the tool's result back.
    messages.push(choice["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": id, "content": "18C and sunny"}));
    let resp = post(
        &proxy,
        &json!({"model": "gem", "messages": messages, "tools": weather_tool()}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let second = &mock.requests()[1].body;
    assert_eq!(
        second["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                             "response": {"content": "18C and sunny"}}}]},
        ])
    );
}

#[tokio::test]
async fn streamed_tool_call() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::ToolCall {
        id: "ignored".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Oslo"}"#.into(),
    });
    let proxy = start(&gemini_model(&mock)).await;
    let resp = post(
        &proxy,
        &json!({"model": "gem", "stream": true, "tools": weather_tool(),
                "messages": [{"role": "user", "content": "Oslo?"}]}),
    )
    .await;
    let (chunks, done) = chunks(resp).await;
    assert!(done);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    let args: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Oslo"})
    );
    assert_eq!(finish_reason(&chunks), Some("tool_calls"));
}

#[tokio::test]
async fn upstream_429_keeps_the_providers_message() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Status(
        429,
        json!({"error": {"code": 429, "message": "Quota exceeded for gemini-test", "status": "RESOURCE_EXHAUSTED"}}),
    ));
    let proxy = start(&gemini_model(&mock)).await;
    let resp = post(&proxy, &chat_body("gem", "x")).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Quota exceeded for gemini-test");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "resource_exhausted");
}

#[tokio::test]
async fn stream_is_relayed_while_gemini_is_still_sending() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::PausedStream {
        first: "first".into(),
        rest: "second part".into(),
    });
    let proxy = start(&gemini_model(&mock)).await;
    let mut body = chat_body("gem", "stream please");
    body["stream"] = json!(true);
    let resp = post(&proxy, &body).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    // Everything after the first Gemini chunk is held back until released: seeing its
    // text here proves the proxy relays as it goes.
    let mut got = String::new();
    while !got.contains("\"first\"") {
        let chunk = stream.next().await.expect("first chunk").unwrap();
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(!got.contains("[DONE]"));
    mock.release();
    while let Some(chunk) = stream.next().await {
        got.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(got.contains("second "), "{got}");
    assert!(got.trim_end().ends_with("data: [DONE]"), "{got}");
}

#[tokio::test]
async fn stream_cut_before_the_finish_ends_with_an_error_event() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::CutStream {
        first: "partial".into(),
    });
    let proxy = start(&gemini_model(&mock)).await;
    let mut body = chat_body("gem", "x");
    body["stream"] = json!(true);
    let resp = post(&proxy, &body).await;
    mock.release();
    let events = sse_payloads(resp).await;
    assert!(events.iter().any(|e| e.contains("partial")), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_unreachable", "{last}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[tokio::test]
async fn silent_upstream_times_out() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Hang);
    let yaml = gemini_model(&mock).replace("api_key: g-key", "api_key: g-key, timeout: 0.3");
    let proxy = start(&yaml).await;
    let resp = post(&proxy, &chat_body("gem", "x")).await;
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
}
