//! `ollama/` and `ollama_chat/` deployments end to end against the mock's Ollama API:
//! requests translated into `/api/chat`, answers (JSON and NDJSON streams) converted into
//! OpenAI chat and from there into the other client APIs: text, tool round trips, images,
//! usage, Ollama's errors, incremental relay, cut and silent streams.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};

fn config(mock: &MockUpstream, prefix: &str, extra: &str) -> String {
    format!(
        "model_list:\n  - model_name: ol\n    litellm_params: {{model: {prefix}/llama3.2, api_base: 'http://{}'{extra}}}\nrouter_settings: {{num_retries: 0}}\n",
        mock.addr
    )
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
async fn text_answer_and_the_request_ollama_saw() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "ollama", ", keep_alive: 10m, num_ctx: 8192")).await;
    let resp = post(
        &proxy,
        "/v1/chat/completions",
        &json!({"model": "ol", "temperature": 0.2, "max_tokens": 64, "stop": ["END"],
                "messages": [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "hi ollama"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "mock reply to: hi ollama"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["model"], "llama3.2");
    let u = &body["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );

    let up = &mock.requests()[0];
    assert_eq!(up.path, "/api/chat");
    assert!(up.headers.get("authorization").is_none());
    assert_eq!(
        up.body,
        json!({"model": "llama3.2", "stream": false,
               "messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "hi ollama"}],
               "options": {"temperature": 0.2, "num_predict": 64, "stop": ["END"], "num_ctx": 8192},
               "keep_alive": "10m"})
    );
}

#[tokio::test]
async fn ndjson_streams_become_openai_chunks() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "ollama_chat", "")).await;
    let mut body = chat_body("ol", "stream it");
    body["stream"] = json!(true);
    let resp = post(&proxy, "/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (cs, done) = chunks(resp).await;
    assert!(done);
    assert_eq!(streamed_text(&cs), "mock reply to: stream it");
    assert!(cs.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert!(
        cs.iter().all(|c| c.get("usage").is_none()),
        "usage not asked"
    );
    assert!(cs
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    assert_eq!(mock.requests()[0].path, "/api/chat");
    assert_eq!(mock.requests()[0].body["stream"], true);

    body["stream_options"] = json!({"include_usage": true});
    let (cs, done) = chunks(post(&proxy, "/v1/chat/completions", &body).await).await;
    assert!(done);
    let usage = &cs.last().unwrap()["usage"];
    assert!(usage["completion_tokens"].as_u64().unwrap() > 0, "{usage}");
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{usage}");
}

#[tokio::test]
async fn tool_round_trip_streamed_and_not() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "ollama_chat", "")).await;
    for stream in [false, true] {
        mock.push(Behavior::ToolCall {
            id: "unused".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        });
        let mut messages = vec![json!({"role": "user", "content": "Weather in Paris?"})];
        let resp = post(
            &proxy,
            "/v1/chat/completions",
            &json!({"model": "ol", "stream": stream, "tools": weather_tool(), "messages": messages}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let (id, name, args) = if stream {
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
            assert!(cs
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
            (
                calls[0]["id"].as_str().unwrap().to_string(),
                calls[0]["function"]["name"].clone(),
                args,
            )
        } else {
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
            let call = &v["choices"][0]["message"]["tool_calls"][0];
            (
                call["id"].as_str().unwrap().to_string(),
                call["function"]["name"].clone(),
                call["function"]["arguments"].as_str().unwrap().to_string(),
            )
        };
        assert!(id.starts_with("call_"), "{id}");
        assert_eq!(name, "get_weather");
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"city": "Paris"})
        );
        assert_eq!(
            mock.requests().last().unwrap().body["tools"],
            weather_tool()
        );

        // Turn two: the call with object arguments, the result naming its tool.
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": "get_weather", "arguments": args}}]}));
        messages.push(json!({"role": "tool", "tool_call_id": id, "content": "sunny, 21C"}));
        mock.push(Behavior::Text("It is sunny.".into()));
        let resp = post(
            &proxy,
            "/v1/chat/completions",
            &json!({"model": "ol", "stream": stream, "tools": weather_tool(), "messages": messages}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let text = if stream {
            streamed_text(&chunks(resp).await.0)
        } else {
            let v: Value = resp.json().await.unwrap();
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(text, "It is sunny.");
        let sent = mock.requests().last().unwrap().body["messages"].clone();
        assert_eq!(
            sent[1]["tool_calls"][0]["function"],
            json!({"name": "get_weather", "arguments": {"city": "Paris"}})
        );
        assert_eq!(
            sent[2],
            json!({"role": "tool", "content": "sunny, 21C", "tool_name": "get_weather", "tool_call_id": id})
        );
    }
}

#[tokio::test]
async fn images_go_as_base64_and_remote_ones_are_refused() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "ollama", "")).await;
    let content = json!([{"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]);
    let resp = post(
        &proxy,
        "/v1/chat/completions",
        &json!({"model": "ol", "messages": [{"role": "user", "content": content}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        mock.requests()[0].body["messages"][0],
        json!({"role": "user", "content": "what is this", "images": ["iVBORw0KGgo="]})
    );

    let content =
        json!([{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]);
    let resp = post(
        &proxy,
        "/v1/chat/completions",
        &json!({"model": "ol", "messages": [{"role": "user", "content": content}]}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("Ollama") && msg.contains("data:"), "{msg}");
    assert_eq!(mock.count(), 1, "nothing sent upstream");
}

#[tokio::test]
async fn ollama_errors_keep_their_message() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "ollama", "")).await;
    for stream in [false, true] {
        mock.push(Behavior::Status(
            404,
            json!({"error": "model \"llama3.2\" not found, try pulling it first"}),
        ));
        let mut body = chat_body("ol", "x");
        body["stream"] = json!(stream);
        let resp = post(&proxy, "/v1/chat/completions", &body).await;
        assert_eq!(resp.status(), 404);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            v["error"]["message"],
            "model \"llama3.2\" not found, try pulling it first"
        );
    }
    mock.push(Behavior::Status(
        500,
        json!({"error": {"message": "llama runner process has terminated"}}),
    ));
    let resp = post(&proxy, "/v1/chat/completions", &chat_body("ol", "x")).await;
    assert_eq!(resp.status(), 500);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "llama runner process has terminated");
}

#[tokio::test]
async fn parameters_ollama_cannot_take_are_named() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "ollama", "")).await;
    let mut body = chat_body("ol", "x");
    body["logprobs"] = json!(true);
    body["n"] = json!(2);
    let resp = post(&proxy, "/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("logprobs") && msg.contains("n"), "{msg}");
    assert_eq!(mock.count(), 0);

    let proxy = start(&config(&mock, "ollama", ", drop_params: true")).await;
    let resp = post(&proxy, "/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn key_and_base_from_the_environment() {
    let mock = MockUpstream::start().await;
    let base = format!("http://{}", mock.addr);
    let yaml = "model_list:\n  - model_name: ol\n    litellm_params: {model: ollama/qwen3}\n";
    let proxy = start_with(
        yaml,
        &[
            ("OLLAMA_API_BASE", base.as_str()),
            ("OLLAMA_API_KEY", "ol-key"),
        ],
        Default::default(),
    )
    .await;
    let resp = post(&proxy, "/v1/chat/completions", &chat_body("ol", "x")).await;
    assert_eq!(resp.status(), 200);
    let up = &mock.requests()[0];
    assert_eq!(up.headers["authorization"], "Bearer ol-key");
    assert_eq!(up.body["model"], "qwen3");
}

#[tokio::test]
async fn other_client_apis_reach_ollama() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "ollama_chat", "")).await;
    let resp = post(
        &proxy,
        "/v1/messages",
        &json!({"model": "ol", "max_tokens": 64, "stream": true,
                "messages": [{"role": "user", "content": "via messages"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let streamed: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter(|v| v["type"] == "content_block_delta")
        .map(|v| v["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(streamed, "mock reply to: via messages");
    assert!(text.contains("\"output_tokens\""), "{text}");

    let resp = post(
        &proxy,
        "/v1/responses",
        &json!({"model": "ol", "input": "via responses"}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        "mock reply to: via responses"
    );
    assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn streams_are_relayed_as_they_come() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "ollama", "")).await;
    mock.push(Behavior::PausedStream {
        first: "early".into(),
        rest: "late part".into(),
    });
    let mut body = chat_body("ol", "x");
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
}

#[tokio::test]
async fn a_cut_stream_ends_in_an_error_event() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "ollama", "")).await;
    mock.push(Behavior::CutStream {
        first: "partial".into(),
    });
    let mut body = chat_body("ol", "x");
    body["stream"] = json!(true);
    let resp = post(&proxy, "/v1/chat/completions", &body).await;
    mock.release();
    let events = sse_payloads(resp).await;
    assert!(events.iter().any(|e| e.contains("partial")), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_unreachable", "{last}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[tokio::test]
async fn a_silent_upstream_times_out() {
    let mock = MockUpstream::start().await;
    mock.push(Behavior::Hang);
    let proxy = start(&config(&mock, "ollama", ", timeout: 0.3")).await;
    let resp = post(&proxy, "/v1/chat/completions", &chat_body("ol", "x")).await;
    assert_eq!(resp.status(), 504);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout");
}
