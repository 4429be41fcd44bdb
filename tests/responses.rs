//! The Responses API beyond the conformance matrix: stored responses and
//! `previous_response_id` (bridged and native), `GET`/`DELETE /v1/responses/{id}` scoped
//! per user, the remembered 404 → bridge fallback, built-in tools dropped with a warning,
//! JSON-schema output, reasoning and usage mapping, Codex CLI requests and headers.

mod common;

use std::sync::{Arc, Mutex};

use axum::routing::post;
use common::*;
use serde_json::{json, Value};

fn config(mock: &MockUpstream) -> String {
    format!(
        r#"
model_list:
  - model_name: native
    litellm_params: {{model: openai/gpt-4o, api_base: "{url}", api_key: sk-o}}
  - model_name: native-2
    litellm_params: {{model: openai/gpt-4o, api_base: "{url}", api_key: sk-other-account}}
  - model_name: bridged
    litellm_params: {{model: openai/local-llama, api_base: "{url}", api_key: sk-o}}
    model_info: {{supported_endpoints: ["/v1/chat/completions"]}}
  - model_name: claude
    litellm_params: {{model: anthropic/claude-sonnet-4-5, api_base: "http://{addr}", api_key: sk-a}}
  - model_name: gemini
    litellm_params: {{model: gemini/gemini-2.0-flash, api_base: "http://{addr}", api_key: sk-g}}
router_settings: {{num_retries: 0}}
"#,
        url = mock.url(),
        addr = mock.addr,
    )
}

/// A mock upstream and a proxy in front of it (its data dir is a fresh temp dir).
async fn setup() -> (MockUpstream, Proxy) {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    (mock, proxy)
}

async fn create(proxy: &Proxy, body: Value) -> reqwest::Response {
    client()
        .post(proxy.url("/v1/responses"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn create_ok(proxy: &Proxy, body: Value) -> Value {
    let resp = create(proxy, body).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn output_text(v: &Value) -> String {
    v["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().unwrap().iter())
        .filter_map(|p| p["text"].as_str())
        .collect()
}

#[tokio::test]
async fn previous_response_id_rebuilds_the_conversation_on_bridged_deployments() {
    let (mock, proxy) = setup().await;
    for model in ["bridged", "claude", "gemini"] {
        mock.push(Behavior::Text("Nice to meet you, Ada.".into()));
        let first = create_ok(
            &proxy,
            json!({"model": model, "instructions": "Be kind.", "input": "My name is Ada."}),
        )
        .await;
        assert_eq!(output_text(&first), "Nice to meet you, Ada.");
        let id = first["id"].as_str().unwrap();
        assert!(id.starts_with("resp_"), "{first}");

        mock.push(Behavior::Text("Your name is Ada.".into()));
        let second = create_ok(
            &proxy,
            json!({"model": model, "previous_response_id": id, "input": "What is my name?"}),
        )
        .await;
        assert_eq!(output_text(&second), "Your name is Ada.");
        assert_eq!(second["previous_response_id"], id);
        // The upstream saw both turns and the first answer; instructions are not carried over.
        let sent = mock.requests().last().unwrap().body.to_string();
        for part in [
            "My name is Ada.",
            "Nice to meet you, Ada.",
            "What is my name?",
        ] {
            assert!(sent.contains(part), "{model}: {sent}");
        }
        assert!(!sent.contains("Be kind."), "{model}: {sent}");
    }
}

#[tokio::test]
async fn tool_round_trip_through_previous_response_id() {
    let (mock, proxy) = setup().await;
    let tools = json!([{"type": "function", "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    for model in ["bridged", "claude"] {
        mock.push(Behavior::ToolCall {
            id: "call_7".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        });
        let first = create_ok(
            &proxy,
            json!({"model": model, "input": "Weather in Paris?", "tools": tools}),
        )
        .await;
        let call = first["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "function_call")
            .unwrap_or_else(|| panic!("{first}"))
            .clone();
        assert_eq!(call["name"], "get_weather");
        mock.push(Behavior::Text("Sunny.".into()));
        let second = create_ok(
            &proxy,
            json!({"model": model, "previous_response_id": first["id"], "tools": tools,
                   "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}]}),
        )
        .await;
        assert_eq!(output_text(&second), "Sunny.");
        let s = mock.requests().last().unwrap().body.to_string();
        assert!(s.contains("call_7") && s.contains("sunny"), "{model}: {s}");
    }
}

#[tokio::test]
async fn native_deployments_keep_previous_response_id_or_get_the_conversation() {
    let (mock, proxy) = setup().await;
    mock.push(Behavior::Text("first answer".into()));
    let first = create_ok(&proxy, json!({"model": "native", "input": "hello"})).await;
    let id = first["id"].as_str().unwrap().to_string();
    assert!(
        id.starts_with("resp_mock_"),
        "the upstream's own id: {first}"
    );

    // Same deployment: it holds the response, so the id is forwarded as sent.
    create_ok(
        &proxy,
        json!({"model": "native", "previous_response_id": id, "input": "again"}),
    )
    .await;
    let sent = mock.requests().last().unwrap().clone();
    assert!(sent.path.ends_with("/responses"));
    assert_eq!(sent.body["previous_response_id"], id.as_str());
    assert_eq!(sent.body["input"], "again");

    // Another account (native-2) or a bridged deployment: the conversation is expanded.
    for model in ["native-2", "bridged"] {
        create_ok(
            &proxy,
            json!({"model": model, "previous_response_id": id, "input": "and now?"}),
        )
        .await;
        let sent = mock.requests().last().unwrap().body.clone();
        assert!(
            sent.get("previous_response_id").is_none(),
            "{model}: {sent}"
        );
        let s = sent.to_string();
        assert!(
            s.contains("hello") && s.contains("first answer") && s.contains("and now?"),
            "{model}: {s}"
        );
    }
}

#[tokio::test]
async fn get_and_delete_are_scoped_to_the_user() {
    let (mock, proxy) = setup().await;
    mock.push(Behavior::Text("stored text".into()));
    let resp = client()
        .post(proxy.url("/v1/responses"))
        .header("x-memory-user-id", "alice")
        .json(&json!({"model": "bridged", "input": "hi", "stream": true}))
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    let id = text
        .split("\"id\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    assert!(id.starts_with("resp_"), "{text}");

    let get = |user: &'static str| {
        let url = proxy.url(&format!("/v1/responses/{id}"));
        async move {
            client()
                .get(url)
                .header("x-memory-user-id", user)
                .send()
                .await
                .unwrap()
        }
    };
    let own = get("alice").await;
    assert_eq!(own.status(), 200);
    let v: Value = own.json().await.unwrap();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(output_text(&v), "stored text");

    let other = get("bob").await;
    assert_eq!(other.status(), 404);
    let v: Value = other.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains(&id), "{v}");

    // Bob can neither delete it nor continue from it.
    let del = client()
        .delete(proxy.url(&format!("/v1/responses/{id}")))
        .header("x-memory-user-id", "bob")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 404);
    let cont = client()
        .post(proxy.url("/v1/responses"))
        .header("x-memory-user-id", "bob")
        .json(&json!({"model": "bridged", "previous_response_id": id, "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cont.status(), 404);
    let v: Value = cont.json().await.unwrap();
    assert_eq!(v["error"]["param"], "previous_response_id", "{v}");

    let del = client()
        .delete(proxy.url(&format!("/v1/responses/{id}")))
        .header("x-memory-user-id", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let v: Value = del.json().await.unwrap();
    assert_eq!(v, json!({"id": id, "object": "response", "deleted": true}));
    assert_eq!(get("alice").await.status(), 404);

    // store: false keeps nothing.
    let v = create_ok(
        &proxy,
        json!({"model": "bridged", "input": "x", "store": false}),
    )
    .await;
    let url = proxy.url(&format!("/v1/responses/{}", v["id"].as_str().unwrap()));
    assert_eq!(client().get(url).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn missing_responses_endpoint_falls_back_to_the_bridge_once_and_for_all() {
    let (mock, proxy) = setup().await;
    mock.disable_responses();
    for stream in [false, true, false] {
        let resp = create(
            &proxy,
            json!({"model": "native", "input": "hi", "stream": stream}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(text.contains("mock reply to: hi"), "{text}");
    }
    let paths: Vec<String> = mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/v1/responses",
            "/v1/chat/completions",
            "/v1/chat/completions",
            "/v1/chat/completions"
        ],
        "the 404 is remembered"
    );
}

#[tokio::test]
async fn an_unknown_model_404_is_not_a_missing_endpoint() {
    let (mock, proxy) = setup().await;
    mock.push(Behavior::Status(
        404,
        json!({"error": {"message": "The model `gpt-4o` does not exist", "type": "invalid_request_error", "code": "model_not_found"}}),
    ));
    let resp = create(&proxy, json!({"model": "native", "input": "hi"})).await;
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    create_ok(&proxy, json!({"model": "native", "input": "hi"})).await;
    let paths: Vec<String> = mock.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/responses", "/v1/responses"]);
}

#[tokio::test]
async fn built_in_tools_are_dropped_with_a_warning_when_bridged() {
    let (mock, proxy) = setup().await;
    let body = |model: &str| {
        json!({"model": model, "input": "news?", "tools": [
            {"type": "web_search"},
            {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
        ]})
    };
    mock.push(Behavior::Text("ok".into()));
    let resp = create(&proxy, body("claude")).await;
    assert_eq!(resp.status(), 200);
    let warning = resp.headers()["x-memproxy-warning"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(warning.contains("web_search"), "{warning}");
    let sent = mock.requests().last().unwrap().body.clone();
    assert_eq!(sent["tools"].as_array().unwrap().len(), 1, "{sent}");
    assert_eq!(sent["tools"][0]["name"], "lookup");

    // A native upstream runs its own built-in tools: they are forwarded, no warning.
    mock.push(Behavior::Text("ok".into()));
    let resp = create(&proxy, body("native")).await;
    assert!(resp.headers().get("x-memproxy-warning").is_none());
    let sent = mock.requests().last().unwrap().body.clone();
    assert_eq!(sent["tools"][0], json!({"type": "web_search"}));
}

#[tokio::test]
async fn json_schema_output_reaches_bridged_providers() {
    let (mock, proxy) = setup().await;
    let format = json!({"type": "json_schema", "name": "city", "strict": true,
        "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}});
    mock.push(Behavior::Text(r#"{"name":"Paris"}"#.into()));
    let v = create_ok(
        &proxy,
        json!({"model": "bridged", "input": "A city?", "text": {"format": format}}),
    )
    .await;
    assert_eq!(output_text(&v), r#"{"name":"Paris"}"#);
    assert_eq!(v["text"]["format"]["name"], "city", "echoed: {v}");
    let sent = mock.requests().last().unwrap().body.clone();
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert_eq!(sent["response_format"]["json_schema"]["name"], "city");
    assert_eq!(
        sent["response_format"]["json_schema"]["schema"]["required"],
        json!(["name"])
    );

    mock.push(Behavior::Text(r#"{"name":"Rome"}"#.into()));
    create_ok(
        &proxy,
        json!({"model": "gemini", "input": "A city?", "text": {"format": format}}),
    )
    .await;
    let sent = mock.requests().last().unwrap().body.clone();
    assert_eq!(
        sent["generationConfig"]["responseMimeType"], "application/json",
        "{sent}"
    );
}

#[tokio::test]
async fn errors_come_in_openai_shape() {
    let (mock, proxy) = setup().await;
    for (body, status, want) in [
        (json!({"input": "x"}), 400, "model"),
        (json!({"model": "native", "input": 7}), 400, "input"),
        (json!({"model": "nope", "input": "x"}), 404, "nope"),
        (
            json!({"model": "bridged", "input": "x", "previous_response_id": "resp_unknown"}),
            404,
            "resp_unknown",
        ),
    ] {
        let resp = create(&proxy, body.clone()).await;
        assert_eq!(resp.status(), status, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().contains(want),
            "{body}: {v}"
        );
        assert!(v["error"]["type"].is_string(), "{v}");
    }
    // A stream cut mid-way ends with response.failed, bridged or native.
    for model in ["bridged", "native"] {
        mock.push(Behavior::CutStream {
            first: "partial".into(),
        });
        let resp = create(
            &proxy,
            json!({"model": model, "input": "x", "stream": true}),
        )
        .await;
        mock.release();
        let text = resp.text().await.unwrap();
        assert!(text.contains("partial"), "{model}: {text}");
        let last = text.trim_end().rsplit("\n\n").next().unwrap();
        assert!(
            last.starts_with("event: response.failed"),
            "{model}: {text}"
        );
        assert_eq!(
            text.matches("event: response.created").count(),
            1,
            "{model}: {text}"
        );
    }
}

#[tokio::test]
async fn codex_requests_are_detected_and_name_their_session() {
    let (mock, proxy) = setup().await;
    // What Codex CLI sends (SPEC §2).
    let body = json!({
        "model": "claude",
        "instructions": "You are Codex, a coding agent.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>read-only</permissions>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hi"}]}
        ],
        "tools": [
            {"type": "function", "name": "shell", "description": "Runs a shell command", "strict": false,
             "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}, "required": ["command"], "additionalProperties": false}},
            {"type": "web_search"}
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "reasoning": {"summary": "auto"},
        "store": false,
        "stream": true,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199-thread",
        "client_metadata": {"x": "y"}
    });
    mock.push(Behavior::Text("hi".into()));
    let resp = client()
        .post(proxy.url("/v1/responses"))
        .header(
            "user-agent",
            "codex_exec/0.169.0 (Ubuntu 24.04; x86_64) xterm",
        )
        .header("session-id", "0199-session")
        .header("originator", "codex_exec")
        .header("accept", "text/event-stream")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-memproxy-user-id"], "codex");
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: response.completed"), "{text}");
    let sent = mock.requests().last().unwrap().body.clone();
    assert_eq!(
        sent["system"],
        "You are Codex, a coding agent.\n\n<permissions>read-only</permissions>"
    );

    let info: Value = client()
        .get(proxy.url("/memory-routing/info"))
        .header("user-agent", "codex_cli_rs/0.169.0")
        .header("session-id", "0199-session")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["user_id"], "codex");
    assert_eq!(info["session_id"], "0199-session");
}

/// A small upstream that answers with reasoning: Anthropic thinking with a signature, and
/// OpenAI chat `reasoning_content` with detailed usage. Records request bodies.
async fn reasoning_upstream() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s1, s2) = (seen.clone(), seen.clone());
    let app = axum::Router::new()
        .route(
            "/v1/messages",
            post(move |axum::Json(body): axum::Json<Value>| {
                let seen = s1.clone();
                async move {
                    seen.lock().unwrap().push(body);
                    axum::Json(json!({"id": "msg_1", "type": "message", "role": "assistant",
                        "model": "claude-x", "stop_reason": "end_turn",
                        "content": [{"type": "thinking", "thinking": "Let me think.", "signature": "SIG123"},
                                    {"type": "text", "text": "Done."}],
                        "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 20}}))
                }
            }),
        )
        .route(
            "/v1/chat/completions",
            post(move |axum::Json(body): axum::Json<Value>| {
                let seen = s2.clone();
                async move {
                    seen.lock().unwrap().push(body);
                    axum::Json(json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "r1",
                        "choices": [{"index": 0, "finish_reason": "length",
                                     "message": {"role": "assistant", "content": "Partial", "reasoning_content": "Thinking hard."}}],
                        "usage": {"prompt_tokens": 30, "completion_tokens": 40, "total_tokens": 70,
                                  "prompt_tokens_details": {"cached_tokens": 12},
                                  "completion_tokens_details": {"reasoning_tokens": 25}}}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn reasoning_and_usage_map_both_ways() {
    let (base, seen) = reasoning_upstream().await;
    let proxy = start(&format!(
        r#"
model_list:
  - model_name: claude
    litellm_params: {{model: anthropic/claude-x, api_base: "{base}", api_key: k}}
  - model_name: r1
    litellm_params: {{model: openai/r1, api_base: "{base}/v1", api_key: k}}
    model_info: {{supported_endpoints: ["/v1/chat/completions"]}}
router_settings: {{num_retries: 0}}
"#
    ))
    .await;

    let v = create_ok(
        &proxy,
        json!({"model": "claude", "input": "Solve it", "reasoning": {"effort": "low"}, "store": false}),
    )
    .await;
    let sent = seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(
        sent["thinking"]["type"], "enabled",
        "effort → thinking: {sent}"
    );
    let reasoning = v["output"][0].clone();
    assert_eq!(reasoning["type"], "reasoning", "{v}");
    assert_eq!(reasoning["summary"][0]["text"], "Let me think.");
    assert_eq!(output_text(&v), "Done.");
    assert_eq!(v["usage"]["input_tokens"], 15);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 5);
    assert_eq!(v["usage"]["output_tokens"], 20);

    // Codex sends the reasoning item back (store: false): Anthropic gets its thinking back.
    let mut input = vec![json!({"role": "user", "content": "Solve it"})];
    input.extend(v["output"].as_array().unwrap().iter().cloned());
    input.push(json!({"role": "user", "content": "And now?"}));
    create_ok(
        &proxy,
        json!({"model": "claude", "input": input, "reasoning": {"effort": "low"}, "store": false}),
    )
    .await;
    let sent = seen.lock().unwrap().last().unwrap().clone();
    let assistant = &sent["messages"][1];
    assert_eq!(assistant["role"], "assistant", "{sent}");
    assert_eq!(
        assistant["content"][0],
        json!({"type": "thinking", "thinking": "Let me think.", "signature": "SIG123"})
    );

    // Chat upstream: reasoning_content → summary; length → incomplete; detailed usage.
    let v = create_ok(&proxy, json!({"model": "r1", "input": "Long task"})).await;
    assert_eq!(v["status"], "incomplete", "{v}");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(v["output"][0]["summary"][0]["text"], "Thinking hard.");
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 30, "input_tokens_details": {"cached_tokens": 12},
               "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 25},
               "total_tokens": 70})
    );
}

const RETRIEVAL: &str = "context_retrieval: {enabled: true, query_strategy: last_user, injection_strategy: system, max_results: 5, max_context_length: 4000}\n";

async fn create_as(proxy: &Proxy, user: &str, session: Option<&str>, body: Value) -> Value {
    let mut req = client()
        .post(proxy.url("/v1/responses"))
        .header("x-memory-user-id", user);
    if let Some(s) = session {
        req = req.header("session-id", s);
    }
    let resp = req.json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn memory_is_captured_and_injected_native_or_bridged() {
    let mock = MockUpstream::start().await;
    let proxy = start(&format!("{}{RETRIEVAL}", config(&mock))).await;
    mock.push(Behavior::Text("Noted: tabs.".into()));
    create_as(
        &proxy,
        "alice",
        None,
        json!({"model": "native", "input": "I prefer tabs over spaces for indentation", "store": false}),
    )
    .await;
    proxy.flush_memory().await;

    let question = "Which indentation do I prefer, tabs or spaces?";
    // Native: into `instructions` of the body sent to /responses, the client's kept after it.
    create_as(
        &proxy,
        "alice",
        None,
        json!({"model": "native", "instructions": "Be brief.", "input": question}),
    )
    .await;
    let sent = mock.requests().last().unwrap().clone();
    assert!(sent.path.ends_with("/responses"));
    let instructions = sent.body["instructions"].as_str().unwrap();
    assert!(instructions.contains("I prefer tabs"), "{instructions}");
    assert!(instructions.ends_with("Be brief."), "{instructions}");
    // Bridged: into the system prompt.
    create_as(
        &proxy,
        "alice",
        None,
        json!({"model": "claude", "input": question}),
    )
    .await;
    let sent = mock.requests().last().unwrap().body.to_string();
    assert!(sent.contains("I prefer tabs"), "{sent}");
    // Another user gets nothing.
    create_as(
        &proxy,
        "bob",
        None,
        json!({"model": "native", "input": question}),
    )
    .await;
    let sent = mock.requests().last().unwrap().body.to_string();
    assert!(!sent.contains("I prefer tabs"), "{sent}");
}

#[tokio::test]
async fn the_session_id_header_names_a_memory_session() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    mock.push(Behavior::Text("Hello Ada.".into()));
    create_as(
        &proxy,
        "carol",
        Some("codex-session-1"),
        json!({"model": "native", "input": "My name is Ada.", "store": false}),
    )
    .await;
    proxy.flush_memory().await;
    create_as(
        &proxy,
        "carol",
        Some("codex-session-1"),
        json!({"model": "native", "input": "What is my name?", "store": false}),
    )
    .await;
    let sent = mock.requests().last().unwrap().body.clone();
    assert_eq!(
        sent["input"],
        json!([{"role": "user", "content": "My name is Ada."},
               {"role": "assistant", "content": "Hello Ada."},
               {"role": "user", "content": "What is my name?"}]),
        "{sent}"
    );
}
