//! `azure/` and `azure_ai/` deployments end to end against the mock's Azure API: the
//! deployment paths and `api-version`, the `api-key` header or an Entra bearer token, text
//! and tool answers streamed and not, images passed on, usage, Azure's error shapes, the
//! Responses API on Azure, embeddings, and deployments skipped for want of credentials.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// A config with one deployment `az` whose `litellm_params` are `params`.
fn config(params: &str) -> String {
    format!(
        "model_list:\n  - model_name: az\n    litellm_params: {{{params}}}\nrouter_settings: {{num_retries: 0}}\n"
    )
}

fn azure(mock: &MockUpstream, extra: &str) -> String {
    config(&format!(
        "model: azure/gpt4o-dep, api_base: 'http://{}', api_key: az-key{extra}",
        mock.addr
    ))
}

async fn post(proxy: &Proxy, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(proxy.url(path))
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

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

#[tokio::test]
async fn chat_goes_to_the_deployment_with_api_version_and_api_key() {
    let mock = MockUpstream::start().await;
    let proxy = start(&azure(&mock, "")).await;
    let resp = post(
        &proxy,
        "/v1/chat/completions",
        &json!({"model": "az", "temperature": 0.2, "messages": [{"role": "user", "content": "hi azure"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "mock reply to: hi azure"
    );
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);
    // Azure's filter annotations reach the client untouched.
    assert!(body["prompt_filter_results"].is_array(), "{body}");

    let up = &mock.requests()[0];
    assert_eq!(up.path, "/openai/deployments/gpt4o-dep/chat/completions");
    assert_eq!(up.headers["x-mock-query"], "api-version=2024-10-21");
    assert_eq!(up.headers["api-key"], "az-key");
    assert!(up.headers.get("authorization").is_none());
    assert_eq!(up.body["temperature"], 0.2);
}

#[tokio::test]
async fn streams_translate_from_azure_chunks() {
    let mock = MockUpstream::start().await;
    let proxy = start(&azure(&mock, ", api_version: 2025-04-01-preview")).await;
    let mut body = chat_body("az", "stream it");
    body["stream"] = json!(true);
    let (chunks_seen, done) = chunks(post(&proxy, "/v1/chat/completions", &body).await).await;
    assert!(done);
    assert_eq!(streamed_text(&chunks_seen), "mock reply to: stream it");
    // Usage was requested by the gateway, not the client: not shown.
    assert!(chunks_seen.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(
        mock.requests()[0].headers["x-mock-query"],
        "api-version=2025-04-01-preview"
    );
    assert_eq!(
        mock.requests()[0].body["stream_options"]["include_usage"],
        true
    );

    // Asked for, the usage chunk comes last.
    body["stream_options"] = json!({"include_usage": true});
    let (chunks_seen, done) = chunks(post(&proxy, "/v1/chat/completions", &body).await).await;
    assert!(done);
    assert!(chunks_seen.last().unwrap()["usage"]["completion_tokens"]
        .as_u64()
        .is_some_and(|n| n > 0));

    // A client speaking Anthropic gets Azure's stream translated, the filter chunk
    // (empty choices, id and model) included.
    let resp = post(
        &proxy,
        "/v1/messages",
        &json!({"model": "az", "max_tokens": 64, "stream": true,
                "messages": [{"role": "user", "content": "via messages"}]}),
    )
    .await;
    let text = resp.text().await.unwrap();
    let mut streamed = String::new();
    let mut start = Value::Null;
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let v: Value = serde_json::from_str(data).unwrap();
        match v["type"].as_str().unwrap() {
            "message_start" => start = v,
            "content_block_delta" => streamed.push_str(v["delta"]["text"].as_str().unwrap()),
            "error" => panic!("{text}"),
            _ => {}
        }
    }
    assert_eq!(streamed, "mock reply to: via messages");
    // The opening filter chunk names no model; the answer still names one.
    assert_eq!(start["message"]["model"], "az", "{start}");
    assert!(
        text.trim_end()
            .ends_with(r#"data: {"type":"message_stop"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn tool_calls_streamed_and_not() {
    let mock = MockUpstream::start().await;
    let proxy = start(&azure(&mock, "")).await;
    for stream in [false, true] {
        mock.push(Behavior::ToolCall {
            id: "call_az1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        });
        let body = json!({"model": "az", "stream": stream, "tools": weather_tool(),
                          "messages": [{"role": "user", "content": "Paris?"}]});
        let resp = post(&proxy, "/v1/chat/completions", &body).await;
        assert_eq!(resp.status(), 200);
        let (name, args) = if stream {
            let (cs, done) = chunks(resp).await;
            assert!(done);
            let calls: Vec<&Value> = cs
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
                .collect();
            let args: String = calls
                .iter()
                .filter_map(|c| c["function"]["arguments"].as_str())
                .collect();
            (calls[0]["function"]["name"].clone(), args)
        } else {
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
            let call = &v["choices"][0]["message"]["tool_calls"][0];
            assert_eq!(call["id"], "call_az1");
            (
                call["function"]["name"].clone(),
                call["function"]["arguments"].as_str().unwrap().to_string(),
            )
        };
        assert_eq!(name, "get_weather");
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"city": "Paris"})
        );
        assert_eq!(
            mock.requests().last().unwrap().body["tools"],
            weather_tool()
        );
    }
}

#[tokio::test]
async fn images_reach_azure_as_sent() {
    let mock = MockUpstream::start().await;
    let proxy = start(&azure(&mock, "")).await;
    let content = json!([{"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}]);
    let resp = post(
        &proxy,
        "/v1/chat/completions",
        &json!({"model": "az", "messages": [{"role": "user", "content": content}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.requests()[0].body["messages"][0]["content"], content);
}

#[tokio::test]
async fn azure_errors_keep_their_message() {
    let mock = MockUpstream::start().await;
    let proxy = start(&azure(&mock, "")).await;

    // An OpenAI-style scripted error comes back in Azure's shape.
    mock.push(Behavior::Status(
        429,
        json!({"error": {"message": "Requests to the ChatCompletions_Create Operation have exceeded the token rate limit."}}),
    ));
    let resp = post(&proxy, "/v1/chat/completions", &chat_body("az", "x")).await;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Requests to the ChatCompletions_Create"));
    assert_eq!(v["error"]["type"], "rate_limit_error");

    // A content-filter refusal names the policy and the filtered categories.
    mock.push(Behavior::Status(
        400,
        json!({"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            "type": null, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                "hate": {"filtered": false, "severity": "safe"}, "violence": {"filtered": true, "severity": "high"}}}}}),
    ));
    let resp = post(&proxy, "/v1/chat/completions", &chat_body("az", "x")).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("content management policy"), "{msg}");
    assert!(
        msg.ends_with("(ResponsibleAIPolicyViolation: violence)"),
        "{msg}"
    );
    assert_eq!(v["error"]["code"], "content_filter");

    // The gateway's plain shape.
    mock.push(Behavior::Status(
        401,
        json!({"statusCode": 401, "message": "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired."}),
    ));
    let resp = post(&proxy, "/v1/chat/completions", &chat_body("az", "x")).await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Unauthorized. Access token is missing"));

    // The same in a stream (the upstream answered before any event).
    mock.push(Behavior::Status(
        404,
        json!({"error": {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist."}}),
    ));
    let mut body = chat_body("az", "x");
    body["stream"] = json!(true);
    let resp = post(&proxy, "/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["error"]["message"],
        "The API deployment for this resource does not exist."
    );
    assert_eq!(v["error"]["code"], "DeploymentNotFound");
}

#[tokio::test]
async fn an_unsupported_api_version_is_azures_error() {
    let mock = MockUpstream::start().await;
    let proxy = start(&azure(&mock, ", api_version: tomorrow")).await;
    let resp = post(&proxy, "/v1/chat/completions", &chat_body("az", "x")).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "API version not supported");
}

#[tokio::test]
async fn entra_token_is_sent_as_bearer() {
    let mock = MockUpstream::start().await;
    let yaml = config(&format!(
        "model: azure/gpt4o-dep, api_base: 'http://{}', azure_ad_token: os.environ/MY_TOKEN",
        mock.addr
    ));
    let proxy = start_with(
        &yaml,
        &[("MY_TOKEN", "eyJ0eXAi.token"), ("AZURE_API_KEY", "env-key")],
        Default::default(),
    )
    .await;
    let resp = post(&proxy, "/v1/chat/completions", &chat_body("az", "x")).await;
    assert_eq!(resp.status(), 200);
    let up = &mock.requests()[0];
    assert_eq!(up.headers["authorization"], "Bearer eyJ0eXAi.token");
    assert!(up.headers.get("api-key").is_none());

    // AZURE_AD_TOKEN from the environment does the same.
    let mock = MockUpstream::start().await;
    let yaml = config(&format!("model: azure/d, api_base: 'http://{}'", mock.addr));
    let proxy = start_with(
        &yaml,
        &[("AZURE_AD_TOKEN", "env-token")],
        Default::default(),
    )
    .await;
    assert_eq!(
        post(&proxy, "/v1/chat/completions", &chat_body("az", "x"))
            .await
            .status(),
        200
    );
    assert_eq!(
        mock.requests()[0].headers["authorization"],
        "Bearer env-token"
    );
}

#[tokio::test]
async fn key_and_base_come_from_the_environment() {
    let mock = MockUpstream::start().await;
    let base = format!("http://{}", mock.addr);
    let yaml = config("model: azure/env-dep");
    let proxy = start_with(
        &yaml,
        &[
            ("AZURE_API_BASE", base.as_str()),
            ("AZURE_API_KEY", "env-key"),
            ("AZURE_API_VERSION", "2024-06-01"),
        ],
        Default::default(),
    )
    .await;
    let resp = post(&proxy, "/v1/chat/completions", &chat_body("az", "x")).await;
    assert_eq!(resp.status(), 200);
    let up = &mock.requests()[0];
    assert_eq!(up.path, "/openai/deployments/env-dep/chat/completions");
    assert_eq!(up.headers["x-mock-query"], "api-version=2024-06-01");
    assert_eq!(up.headers["api-key"], "env-key");
}

#[tokio::test]
async fn deployments_without_base_or_credentials_are_skipped_with_the_reason() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "model_list:\n  - model_name: az-nobase\n    litellm_params: {{model: azure/d, api_key: k}}\n  - model_name: az-nokey\n    litellm_params: {{model: azure/d, api_base: 'http://{0}'}}\n  - model_name: ok\n    litellm_params: {{model: azure/d, api_base: 'http://{0}', api_key: k}}\n",
        mock.addr
    );
    let (cfg, _dir) = test_config(&yaml, &[]);
    let skipped: Vec<_> = cfg
        .skipped
        .iter()
        .map(|s| (s.model_name.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].0, "az-nobase");
    assert!(skipped[0].1.contains("api_base"), "{skipped:?}");

    let proxy = start(&yaml).await;
    let resp = post(&proxy, "/v1/chat/completions", &chat_body("az-nokey", "x")).await;
    assert_eq!(resp.status(), 404, "a skipped deployment is not served");
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
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"ok") && !ids.contains(&"az-nokey"), "{ids:?}");
    assert_eq!(mock.count(), 0);
}

#[tokio::test]
async fn the_v1_api_takes_the_deployment_in_the_body() {
    let mock = MockUpstream::start().await;
    let proxy = start(&azure(&mock, ", api_version: preview")).await;
    let resp = post(&proxy, "/v1/chat/completions", &chat_body("az", "x")).await;
    assert_eq!(resp.status(), 200);
    let up = &mock.requests()[0];
    assert_eq!(up.path, "/openai/v1/chat/completions");
    assert_eq!(up.headers["x-mock-query"], "api-version=preview");
    assert_eq!(up.body["model"], "gpt4o-dep");
}

#[tokio::test]
async fn responses_are_native_on_azure() {
    let mock = MockUpstream::start().await;
    let proxy = start(&azure(&mock, "")).await;
    let resp = post(
        &proxy,
        "/v1/responses",
        &json!({"model": "az", "input": "hello responses", "store": false}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        "mock reply to: hello responses"
    );
    let up = &mock.requests()[0];
    assert_eq!(up.path, "/openai/v1/responses");
    assert!(up.headers.get("x-mock-query").is_none());
    assert_eq!(up.body["model"], "gpt4o-dep");
    assert_eq!(up.headers["api-key"], "az-key");

    // Streamed, with earlier output replayed (Azure refuses `status` on those items).
    let resp = post(
        &proxy,
        "/v1/responses",
        &json!({"model": "az", "stream": true, "store": false, "input": [
            {"role": "user", "content": "first"},
            {"type": "message", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "earlier"}]},
            {"role": "user", "content": "second"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: response.completed"), "{text}");
    assert!(text.contains("mock reply to: second"), "{text}");
    let up = &mock.requests()[1];
    assert!(up.body["input"][1].get("status").is_none(), "{}", up.body);
}

#[tokio::test]
async fn responses_with_a_dated_preview_version_use_its_path() {
    let mock = MockUpstream::start().await;
    let proxy = start(&azure(&mock, ", api_version: 2025-04-01-preview")).await;
    let resp = post(
        &proxy,
        "/v1/responses",
        &json!({"model": "az", "input": "dated", "stream": true}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("response.completed"));
    let up = &mock.requests()[0];
    assert_eq!(up.path, "/openai/responses");
    assert_eq!(up.headers["x-mock-query"], "api-version=2025-04-01-preview");
}

#[tokio::test]
async fn embeddings_go_to_the_deployment() {
    let mock = MockUpstream::start().await;
    let yaml = config(&format!(
        "model: azure/emb-dep, api_base: 'http://{}', api_key: k",
        mock.addr
    ));
    let proxy = start(&yaml).await;
    let resp = post(
        &proxy,
        "/v1/embeddings",
        &json!({"model": "az", "input": ["one", "two"]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let up = &mock.requests()[0];
    assert_eq!(up.path, "/openai/deployments/emb-dep/embeddings");
    assert_eq!(up.headers["x-mock-query"], "api-version=2024-10-21");
}

#[tokio::test]
async fn azure_ai_endpoints_take_the_key_both_ways() {
    let mock = MockUpstream::start().await;
    let yaml = config(&format!(
        "model: azure_ai/Meta-Llama-3.1-70B-Instruct, api_base: 'http://{}/serverless', api_key: ai-key, api_version: 2024-05-01-preview",
        mock.addr
    ));
    let proxy = start(&yaml).await;
    let resp = post(&proxy, "/v1/chat/completions", &chat_body("az", "llama?")).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "mock reply to: llama?"
    );
    let up = &mock.requests()[0];
    assert_eq!(up.path, "/serverless/chat/completions");
    assert_eq!(up.headers["api-key"], "ai-key");
    assert_eq!(up.headers["authorization"], "Bearer ai-key");
    assert_eq!(up.body["model"], "Meta-Llama-3.1-70B-Instruct");

    // Responses are bridged to chat completions there.
    let resp = post(
        &proxy,
        "/v1/responses",
        &json!({"model": "az", "input": "bridged", "stream": true}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("mock reply to: bridged"), "{text}");
    assert_eq!(mock.requests()[1].path, "/serverless/chat/completions");
}

#[tokio::test]
async fn streams_are_relayed_as_they_come_and_cut_streams_end_in_an_error() {
    let mock = MockUpstream::start().await;
    let proxy = start(&azure(&mock, "")).await;
    mock.push(Behavior::PausedStream {
        first: "early".into(),
        rest: "late part".into(),
    });
    let mut body = chat_body("az", "x");
    body["stream"] = json!(true);
    let resp = post(&proxy, "/v1/chat/completions", &body).await;
    let mut stream = resp.bytes_stream();
    let mut got = String::new();
    while !got.contains("early") {
        let chunk = stream.next().await.expect("first chunk").unwrap();
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(!got.contains("[DONE]"));
    mock.release();
    while let Some(c) = stream.next().await {
        got.push_str(std::str::from_utf8(&c.unwrap()).unwrap());
    }
    assert!(
        got.contains("late") && got.trim_end().ends_with("data: [DONE]"),
        "{got}"
    );

    mock.push(Behavior::CutStream {
        first: "partial".into(),
    });
    let resp = post(&proxy, "/v1/chat/completions", &body).await;
    mock.release();
    let events = sse_payloads(resp).await;
    assert!(events.iter().any(|e| e.contains("partial")), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_unreachable", "{last}");
}
