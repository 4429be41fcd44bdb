//! A `bedrock/` deployment end to end: OpenAI chat requests translated into Converse /
//! ConverseStream requests, signed with SigV4, sent to the mock's Bedrock runtime (which
//! recomputes every signature and answers in the real JSON and event-stream formats), and
//! the answers translated back, streamed and not: text, tools, images, usage, errors,
//! credentials from params and the environment, incremental relay and cancellation.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use memproxy::providers::{Provider, ProviderEnv};
use mock_upstream::{BEDROCK_ACCESS_KEY_ID as KEY_ID, BEDROCK_SECRET_ACCESS_KEY as SECRET};
use serde_json::{json, Value};

const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const MODEL_PATH: &str = "anthropic.claude-3-5-sonnet-20240620-v1%3A0";

/// A config with one Bedrock deployment `claude` at the mock, credentials in params.
fn bedrock_model(mock: &MockUpstream) -> String {
    bedrock_with(mock, MODEL, SECRET)
}

fn bedrock_with(mock: &MockUpstream, model: &str, secret: &str) -> String {
    format!(
        r#"model_list:
  - model_name: claude
    litellm_params:
      model: "bedrock/{model}"
      aws_bedrock_runtime_endpoint: "http://{addr}"
      aws_access_key_id: {KEY_ID}
      aws_secret_access_key: "{secret}"
      aws_region_name: us-west-2
router_settings: {{num_retries: 0}}
"#,
        addr = mock.addr
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
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

#[tokio::test]
async fn text_answer_and_the_signed_converse_request_the_upstream_saw() {
    let mock = MockUpstream::start().await;
    let proxy = start(&bedrock_model(&mock)).await;
    let resp = post(
        &proxy,
        &json!({"model": "claude", "max_tokens": 50, "temperature": 0.1, "messages": [
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
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["id"], "chatcmpl-mock-bedrock-request");
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!(up.path, format!("/model/{MODEL_PATH}/converse"));
    let auth = up.headers["authorization"].to_str().unwrap();
    let day = &up.headers["x-amz-date"].to_str().unwrap()[..8];
    assert!(
        auth.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential={KEY_ID}/{day}/us-west-2/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="
        )),
        "{auth}"
    );
    assert!(up.headers.get("x-amz-security-token").is_none());
    assert_eq!(up.headers["accept"], "application/json");
    assert_eq!(up.body["system"], json!([{"text": "You are terse."}]));
    assert_eq!(
        up.body["messages"],
        json!([{"role": "user", "content": [{"text": "hi there"}]}])
    );
    assert_eq!(
        up.body["inferenceConfig"],
        json!({"maxTokens": 50, "temperature": 0.1})
    );
    assert!(up.body.get("model").is_none() && up.body.get("stream").is_none());
}

#[tokio::test]
async fn streamed_text_is_translated_to_openai_chunks_with_usage() {
    let mock = MockUpstream::start().await;
    let proxy = start(&bedrock_model(&mock)).await;
    let mut body = chat_body("claude", "hello you");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = post(&proxy, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (chunks, done) = chunks(resp).await;
    assert!(done, "{chunks:?}");
    assert_eq!(streamed_text(&chunks), "mock reply to: hello you");
    assert_eq!(finish_reason(&chunks), Some("stop"));
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let up = &mock.requests()[0];
    assert_eq!(up.path, format!("/model/{MODEL_PATH}/converse-stream"));
    assert_eq!(up.headers["accept"], "application/vnd.amazon.eventstream");

    // Without include_usage the client gets no usage chunk.
    let mut body = chat_body("claude", "again");
    body["stream"] = json!(true);
    let (quiet, done) = self::chunks(post(&proxy, &body).await).await;
    assert!(done);
    assert!(
        quiet
            .iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null)),
        "{quiet:?}"
    );
    assert_eq!(streamed_text(&quiet), "mock reply to: again");
}

#[tokio::test]
async fn tool_call_round_trip() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::ToolCall {
        id: "tooluse_abc".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    });
    let proxy = start(&bedrock_model(&mock)).await;
    let mut messages = vec![json!({"role": "user", "content": "Weather in Paris?"})];
    let resp = post(
        &proxy,
        &json!({"model": "claude", "messages": messages, "tools": weather_tool(), "tool_choice": "auto"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "tooluse_abc");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    let first = &mock.requests()[0].body;
    assert_eq!(
        first["toolConfig"],
        json!({"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather for a city",
            "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}}],
            "toolChoice": {"auto": {}}})
    );

    messages.push(choice["message"].clone());
    messages
        .push(json!({"role": "tool", "tool_call_id": "tooluse_abc", "content": "18C and sunny"}));
    let resp = post(
        &proxy,
        &json!({"model": "claude", "messages": messages, "tools": weather_tool()}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let second = &mock.requests()[1].body;
    assert_eq!(
        second["messages"],
        json!([
            {"role": "user", "content": [{"text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_abc", "name": "get_weather", "input": {"city": "Paris"}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_abc", "content": [{"text": "18C and sunny"}]}}]},
        ])
    );
}

#[tokio::test]
async fn streamed_parallel_tool_calls() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::ToolCalls(vec![
        mock_upstream::ScriptedCall::new("tu_1", "get_weather", r#"{"city":"Oslo"}"#),
        mock_upstream::ScriptedCall::new("tu_2", "get_weather", r#"{"city":"Bergen"}"#),
    ]));
    let proxy = start(&bedrock_model(&mock)).await;
    let resp = post(
        &proxy,
        &json!({"model": "claude", "stream": true, "tools": weather_tool(),
                "messages": [{"role": "user", "content": "Oslo and Bergen?"}]}),
    )
    .await;
    let (chunks, done) = chunks(resp).await;
    assert!(done);
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for c in &chunks {
        for tc in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().unwrap() as usize;
            if calls.len() <= i {
                calls.resize(i + 1, Default::default());
            }
            if let Some(id) = tc["id"].as_str() {
                calls[i].0 = id.into();
            }
            if let Some(n) = tc["function"]["name"].as_str() {
                calls[i].1.push_str(n);
            }
            if let Some(a) = tc["function"]["arguments"].as_str() {
                calls[i].2.push_str(a);
            }
        }
    }
    assert_eq!(calls.len(), 2, "{chunks:?}");
    assert_eq!(calls[0].0, "tu_1");
    assert_eq!(calls[1].0, "tu_2");
    assert_eq!(calls[1].1, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[1].2).unwrap(),
        json!({"city": "Bergen"})
    );
    assert_eq!(finish_reason(&chunks), Some("tool_calls"));
}

#[tokio::test]
async fn images_go_as_bytes_and_links_are_refused() {
    let mock = MockUpstream::start().await;
    let proxy = start(&bedrock_model(&mock)).await;
    let resp = post(
        &proxy,
        &json!({"model": "claude", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}]}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        mock.requests()[0].body["messages"][0]["content"],
        json!([{"text": "What is this?"},
               {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}}])
    );

    let resp = post(
        &proxy,
        &json!({"model": "claude", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("data:"),
        "{body}"
    );
    assert_eq!(mock.count(), 1, "a refused request is not sent");
}

#[tokio::test]
async fn throttling_is_retried_and_keeps_bedrocks_message() {
    let mock = MockUpstream::start().await;
    for _ in 0..2 {
        mock.push(Behavior::Status(
            429,
            json!({"message": "Too many requests, please wait before trying again."}),
        ));
    }
    let yaml = bedrock_model(&mock).replace("num_retries: 0", "num_retries: 1");
    let proxy = start(&yaml).await;
    let resp = post(&proxy, &chat_body("claude", "x")).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "Too many requests, please wait before trying again."
    );
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "throttling_exception");
    assert_eq!(mock.count(), 2, "a throttled request is retried");

    mock.push(Behavior::Status(
        400,
        json!({"message": "The model returned the following errors: messages: text content blocks must be non-empty"}),
    ));
    let resp = post(&proxy, &chat_body("claude", "y")).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "validation_exception");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("The model returned the following errors"));
    assert_eq!(mock.count(), 3, "a validation error is not retried");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_signature_check() {
    let mock = MockUpstream::start().await;
    let proxy = start(&bedrock_with(&mock, MODEL, "not-the-secret")).await;
    let resp = post(&proxy, &chat_body("claude", "x")).await;
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("The request signature we calculated does not match"),
        "{body}"
    );
    assert_eq!(body["error"]["code"], "invalid_signature_exception");
}

#[tokio::test]
async fn arn_model_ids_are_encoded_and_signed() {
    let mock = MockUpstream::start().await;
    let arn = "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.anthropic.claude-3-5-haiku-20241022-v1:0";
    let proxy = start(&bedrock_with(&mock, arn, SECRET)).await;
    for stream in [false, true] {
        let mut body = chat_body("claude", "hi");
        body["stream"] = json!(stream);
        let resp = post(&proxy, &body).await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    let seen = mock.requests();
    assert_eq!(
        seen[0].path,
        "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    );
    assert!(seen[1].path.ends_with("/converse-stream"));
}

#[tokio::test]
async fn credentials_from_the_environment_with_a_session_token() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        r#"model_list:
  - model_name: nova
    litellm_params:
      model: bedrock/converse/amazon.nova-pro-v1:0
      api_base: "http://{addr}"
      aws_secret_access_key: os.environ/MY_BEDROCK_SECRET
router_settings: {{num_retries: 0}}
"#,
        addr = mock.addr
    );
    let env = [
        ("AWS_ACCESS_KEY_ID", KEY_ID),
        ("MY_BEDROCK_SECRET", SECRET),
        ("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLE//token=="),
        ("AWS_DEFAULT_REGION", "eu-central-1"),
    ];
    let proxy = start_with(&yaml, &env, Default::default()).await;
    for stream in [false, true] {
        let mut body = chat_body("nova", "hi");
        body["stream"] = json!(stream);
        let resp = post(&proxy, &body).await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    for up in mock.requests() {
        assert_eq!(up.path.split('/').nth(2), Some("amazon.nova-pro-v1%3A0"));
        assert_eq!(
            up.headers["x-amz-security-token"],
            "FwoGZXIvYXdzEXAMPLE//token=="
        );
        let auth = up.headers["authorization"].to_str().unwrap();
        assert!(
            auth.contains("/eu-central-1/bedrock/aws4_request"),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
    }
}

#[tokio::test]
async fn missing_region_or_credentials_skip_the_deployment_with_a_reason() {
    let yaml = "model_list:\n  - model_name: br\n    litellm_params: {model: 'bedrock/anthropic.claude-v2:1', aws_access_key_id: AKID, aws_secret_access_key: s}\n  - model_name: br2\n    litellm_params: {model: 'bedrock/anthropic.claude-v2:1', aws_region_name: us-east-1}\n  - model_name: ok\n    litellm_params: {model: openai/gpt, mock_response: hi}\n";
    let (cfg, _dir) = test_config(yaml, &[]);
    let env = ProviderEnv::new(&cfg).unwrap();
    let Err(why) = Provider::new(&cfg.models[0], &env) else {
        panic!("a deployment without a region must not be served");
    };
    assert!(
        why.contains("aws_region_name") && why.contains("AWS_REGION"),
        "{why}"
    );
    let Err(why) = Provider::new(&cfg.models[1], &env) else {
        panic!("a deployment without credentials must not be served");
    };
    assert!(
        why.contains("aws_access_key_id") && why.contains("AWS_ACCESS_KEY_ID"),
        "{why}"
    );

    let proxy = start(yaml).await;
    let models: Value = client()
        .get(proxy.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["ok"], "{models}");
    let resp = post(&proxy, &chat_body("br", "x")).await;
    assert!(resp.status().is_client_error(), "{}", resp.status());

    // The environment fills in what the entry leaves out.
    let (cfg, _dir) = test_config(yaml, &[("AWS_REGION", "us-east-2")]);
    assert!(Provider::new(&cfg.models[0], &env).is_ok());
}

#[tokio::test]
async fn stream_is_relayed_while_bedrock_is_sending_and_cancelled_with_the_client() {
    let mock = MockUpstream::start().await;
    let proxy = start(&bedrock_model(&mock)).await;
    let mut body = chat_body("claude", "stream please");
    body["stream"] = json!(true);

    mock.push(Behavior::PausedStream {
        first: "first".into(),
        rest: "second part".into(),
    });
    let resp = post(&proxy, &body).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    // Everything after the first frame is held back until released: seeing its text
    // here proves the proxy relays frame by frame.
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

    // A client that goes away mid-stream takes the upstream request with it.
    mock.push(Behavior::PausedStream {
        first: "early".into(),
        rest: "never read".into(),
    });
    let resp = post(&proxy, &body).await;
    let mut stream = resp.bytes_stream();
    let mut got = String::new();
    while !got.contains("\"early\"") {
        let chunk = stream.next().await.expect("first chunk").unwrap();
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), mock.stream_dropped())
        .await
        .expect("the upstream stream is dropped when the client leaves");
}

#[tokio::test]
async fn stream_cut_before_the_end_ends_with_an_error_event() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::CutStream {
        first: "partial".into(),
    });
    let proxy = start(&bedrock_model(&mock)).await;
    let mut body = chat_body("claude", "x");
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
    let yaml = bedrock_model(&mock).replace(
        "aws_region_name: us-west-2",
        "aws_region_name: us-west-2\n      timeout: 0.3",
    );
    let proxy = start(&yaml).await;
    let resp = post(&proxy, &chat_body("claude", "x")).await;
    assert_eq!(resp.status(), 504);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
}
