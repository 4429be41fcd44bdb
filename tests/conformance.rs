//! The conformance matrix: every client API (OpenAI chat, Anthropic Messages, OpenAI
//! Responses) × every provider (OpenAI-compatible, which serves Responses natively, and the
//! same forced to the chat bridge by `supported_endpoints`; Anthropic; Gemini; AWS Bedrock
//! Converse, SigV4-signed; Gemini and Claude on Vertex AI; offline mock) × streamed and
//! not, with the same cases (plain text, a tool round trip, an
//! upstream error, unbuffered streams). Mock upstreams speak each provider's real wire
//! format; answers are read in each client API's real format.

mod common;

use common::*;
use mock_upstream::Recorded;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Api {
    Chat,
    Messages,
    Responses,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Prov {
    OpenAi,
    /// OpenAI-compatible, `supported_endpoints` without `/v1/responses`.
    OpenAiBridged,
    Anthropic,
    Gemini,
    Bedrock,
    Mock,
    /// Gemini on Vertex AI (service-account token from the mock's token endpoint).
    VertexGemini,
    /// Claude on Vertex AI (rawPredict).
    VertexClaude,
    /// Azure OpenAI: OpenAI's wire at a deployment path, Responses native.
    Azure,
    /// Ollama's native /api/chat (NDJSON streams).
    Ollama,
}

const APIS: [Api; 3] = [Api::Chat, Api::Messages, Api::Responses];
const PROVS: [Prov; 10] = [
    Prov::OpenAi,
    Prov::OpenAiBridged,
    Prov::Anthropic,
    Prov::Gemini,
    Prov::Bedrock,
    Prov::Mock,
    Prov::VertexGemini,
    Prov::VertexClaude,
    Prov::Azure,
    Prov::Ollama,
];
const UPSTREAMS: [Prov; 9] = [
    Prov::OpenAi,
    Prov::OpenAiBridged,
    Prov::Anthropic,
    Prov::Gemini,
    Prov::Bedrock,
    Prov::VertexGemini,
    Prov::VertexClaude,
    Prov::Azure,
    Prov::Ollama,
];
const MOCK_TEXT: &str = "Offline mock answer.";

fn model(p: Prov) -> &'static str {
    match p {
        Prov::OpenAi => "m-openai",
        Prov::OpenAiBridged => "m-openai-chat",
        Prov::Anthropic => "m-anthropic",
        Prov::Gemini => "m-gemini",
        Prov::Bedrock => "m-bedrock",
        Prov::Mock => "m-mock",
        Prov::VertexGemini => "m-vertex-gemini",
        Prov::VertexClaude => "m-vertex-claude",
        Prov::Azure => "m-azure",
        Prov::Ollama => "m-ollama",
    }
}

fn config(mock: &MockUpstream) -> String {
    let key = mock_upstream::TestKey::shared();
    mock.trust_key(key);
    let vertex_credentials = mock.service_account(key);
    format!(
        r#"
model_list:
  - model_name: m-openai
    litellm_params: {{model: openai/gpt-4o, api_base: "http://{addr}/v1", api_key: sk-o}}
  - model_name: m-openai-chat
    litellm_params: {{model: openai/gpt-4o, api_base: "http://{addr}/v1", api_key: sk-o}}
    model_info: {{supported_endpoints: ["/v1/chat/completions"]}}
  - model_name: m-anthropic
    litellm_params: {{model: anthropic/claude-sonnet-4-5, api_base: "http://{addr}", api_key: sk-a}}
  - model_name: m-gemini
    litellm_params: {{model: gemini/gemini-2.0-flash, api_base: "http://{addr}", api_key: sk-g}}
  - model_name: m-bedrock
    litellm_params: {{model: "bedrock/anthropic.claude-sonnet-4-5-20250929-v1:0", aws_bedrock_runtime_endpoint: "http://{addr}", aws_access_key_id: {bedrock_key}, aws_secret_access_key: "{bedrock_secret}", aws_region_name: us-east-1}}
  - model_name: m-mock
    litellm_params: {{model: openai/mock, mock_response: "{MOCK_TEXT}"}}
  - model_name: m-vertex-gemini
    litellm_params: {{model: vertex_ai/gemini-2.0-flash, api_base: "http://{addr}", vertex_credentials: '{vertex_credentials}'}}
  - model_name: m-vertex-claude
    litellm_params: {{model: vertex_ai/claude-sonnet-4-5@20250929, api_base: "http://{addr}", vertex_credentials: '{vertex_credentials}'}}
  - model_name: m-azure
    litellm_params: {{model: azure/gpt4o-dep, api_base: "http://{addr}", api_key: sk-az}}
  - model_name: m-ollama
    litellm_params: {{model: ollama_chat/llama3.2, api_base: "http://{addr}"}}
router_settings: {{num_retries: 0}}
"#,
        addr = mock.addr,
        bedrock_key = mock_upstream::BEDROCK_ACCESS_KEY_ID,
        bedrock_secret = mock_upstream::BEDROCK_SECRET_ACCESS_KEY,
    )
}

/// What a client read from an answer.
#[derive(Debug, Default)]
struct Answer {
    text: String,
    tool: Option<(String, String, Value)>,
}

fn tool_def(api: Api) -> Value {
    let schema =
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    match api {
        Api::Chat => {
            json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": schema}}])
        }
        Api::Messages => {
            json!([{"name": "get_weather", "description": "Weather", "input_schema": schema}])
        }
        Api::Responses => {
            json!([{"type": "function", "name": "get_weather", "description": "Weather", "parameters": schema}])
        }
    }
}

fn first_request(api: Api, p: Prov, stream: bool, tools: bool) -> Value {
    let question = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    let mut body = match api {
        Api::Responses => json!({"model": model(p), "input": question, "stream": stream}),
        _ => json!({"model": model(p), "messages": question, "stream": stream}),
    };
    if api == Api::Messages {
        body["max_tokens"] = json!(256);
    }
    if tools {
        body["tools"] = tool_def(api);
    }
    body
}

fn follow_up(api: Api, p: Prov, stream: bool, call_id: &str) -> Value {
    let mut body = first_request(api, p, stream, true);
    if api == Api::Responses {
        let items = body["input"].as_array_mut().unwrap();
        items.push(json!({"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}));
        items.push(
            json!({"type": "function_call_output", "call_id": call_id, "output": "sunny, 21C"}),
        );
        return body;
    }
    let msgs = body["messages"].as_array_mut().unwrap();
    match api {
        Api::Chat => {
            msgs.push(json!({"role": "assistant", "content": null, "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}));
            msgs.push(json!({"role": "tool", "tool_call_id": call_id, "content": "sunny, 21C"}));
        }
        Api::Messages => {
            msgs.push(json!({"role": "assistant", "content": [{"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"city": "Paris"}}]}));
            msgs.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id, "content": "sunny, 21C"}]}));
        }
        Api::Responses => unreachable!(),
    }
    body
}

fn path(api: Api) -> &'static str {
    match api {
        Api::Chat => "/v1/chat/completions",
        Api::Messages => "/v1/messages",
        Api::Responses => "/v1/responses",
    }
}

fn sse_events(text: &str) -> Vec<(Option<String>, Value)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut name = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = Some(n.to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        if data.is_empty() || data == "[DONE]" {
            continue;
        }
        out.push((
            name,
            serde_json::from_str(&data).unwrap_or_else(|e| panic!("bad SSE data {data}: {e}")),
        ));
    }
    out
}

async fn read_answer(api: Api, stream: bool, resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    let mut a = Answer::default();
    match (api, stream) {
        (Api::Chat, false) => {
            let v: Value = serde_json::from_str(&text).unwrap();
            let msg = &v["choices"][0]["message"];
            a.text = msg["content"].as_str().unwrap_or_default().to_string();
            if let Some(tc) = msg["tool_calls"].get(0) {
                let args: Value =
                    serde_json::from_str(tc["function"]["arguments"].as_str().unwrap()).unwrap();
                a.tool = Some((
                    tc["id"].as_str().unwrap().into(),
                    tc["function"]["name"].as_str().unwrap().into(),
                    args,
                ));
                assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
            }
        }
        (Api::Chat, true) => {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
            let (mut id, mut name, mut args) = (String::new(), String::new(), String::new());
            for (_, v) in sse_events(&text) {
                assert!(v.get("error").is_none(), "{v}");
                let d = &v["choices"][0]["delta"];
                if let Some(t) = d["content"].as_str() {
                    a.text.push_str(t);
                }
                if let Some(tc) = d["tool_calls"].get(0) {
                    if let Some(i) = tc["id"].as_str() {
                        id = i.into();
                    }
                    if let Some(n) = tc["function"]["name"].as_str() {
                        name.push_str(n);
                    }
                    if let Some(x) = tc["function"]["arguments"].as_str() {
                        args.push_str(x);
                    }
                }
            }
            if !name.is_empty() {
                a.tool = Some((id, name, serde_json::from_str(&args).unwrap()));
            }
        }
        (Api::Messages, false) => {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["type"], "message", "{v}");
            assert_eq!(v["role"], "assistant");
            for block in v["content"].as_array().unwrap() {
                match block["type"].as_str().unwrap() {
                    "text" => a.text.push_str(block["text"].as_str().unwrap()),
                    "tool_use" => {
                        a.tool = Some((
                            block["id"].as_str().unwrap().into(),
                            block["name"].as_str().unwrap().into(),
                            block["input"].clone(),
                        ));
                    }
                    _ => {}
                }
            }
            if a.tool.is_some() {
                assert_eq!(v["stop_reason"], "tool_use", "{v}");
            }
            assert!(v["usage"]["output_tokens"].is_u64(), "{v}");
        }
        (Api::Messages, true) => {
            let events = sse_events(&text);
            let names: Vec<&str> = events
                .iter()
                .map(|(n, _)| n.as_deref().unwrap_or(""))
                .collect();
            assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
            assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
            assert!(names.contains(&"message_delta"), "{names:?}");
            let (mut id, mut name, mut args) = (String::new(), String::new(), String::new());
            for (n, v) in &events {
                assert_eq!(
                    n.as_deref(),
                    v["type"].as_str(),
                    "event name matches its type"
                );
                match v["type"].as_str().unwrap() {
                    "content_block_start" if v["content_block"]["type"] == "tool_use" => {
                        id = v["content_block"]["id"].as_str().unwrap().into();
                        name = v["content_block"]["name"].as_str().unwrap().into();
                    }
                    "content_block_delta" => match v["delta"]["type"].as_str().unwrap() {
                        "text_delta" => a.text.push_str(v["delta"]["text"].as_str().unwrap()),
                        "input_json_delta" => {
                            args.push_str(v["delta"]["partial_json"].as_str().unwrap())
                        }
                        _ => {}
                    },
                    "error" => panic!("error event: {v}"),
                    _ => {}
                }
            }
            if !name.is_empty() {
                a.tool = Some((id, name, serde_json::from_str(&args).unwrap()));
            }
        }
        (Api::Responses, false) => {
            let v: Value = serde_json::from_str(&text).unwrap();
            read_response_object(&v, &mut a);
            assert!(v["usage"]["output_tokens"].is_u64(), "{v}");
        }
        (Api::Responses, true) => {
            let events = sse_events(&text);
            let names: Vec<&str> = events
                .iter()
                .map(|(n, _)| n.as_deref().unwrap_or(""))
                .collect();
            assert_eq!(
                names.get(..2),
                Some(&["response.created", "response.in_progress"][..]),
                "{names:?}"
            );
            assert_eq!(names.last(), Some(&"response.completed"), "{names:?}");
            let (mut id, mut name, mut args) = (String::new(), String::new(), String::new());
            for (i, (n, v)) in events.iter().enumerate() {
                assert_eq!(
                    n.as_deref(),
                    v["type"].as_str(),
                    "event name matches its type"
                );
                assert_eq!(v["sequence_number"], i, "{v}");
                match v["type"].as_str().unwrap() {
                    "response.output_text.delta" => a.text.push_str(v["delta"].as_str().unwrap()),
                    "response.output_item.added" if v["item"]["type"] == "function_call" => {
                        id = v["item"]["call_id"].as_str().unwrap().into();
                        name = v["item"]["name"].as_str().unwrap().into();
                    }
                    "response.function_call_arguments.delta" => {
                        args.push_str(v["delta"].as_str().unwrap())
                    }
                    "response.failed" | "error" => panic!("error event: {v}"),
                    _ => {}
                }
            }
            if !name.is_empty() {
                a.tool = Some((id, name, serde_json::from_str(&args).unwrap()));
            }
            // The final response object agrees with the deltas.
            let mut whole = Answer::default();
            read_response_object(&events.last().unwrap().1["response"], &mut whole);
            assert_eq!(whole.text, a.text);
            assert_eq!(whole.tool, a.tool);
        }
    }
    a
}

/// Reads a Responses API response object.
fn read_response_object(v: &Value, a: &mut Answer) {
    assert_eq!(v["object"], "response", "{v}");
    assert_eq!(v["status"], "completed", "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"), "{v}");
    for item in v["output"].as_array().unwrap() {
        match item["type"].as_str().unwrap() {
            "message" => {
                for part in item["content"].as_array().unwrap() {
                    a.text.push_str(part["text"].as_str().unwrap());
                }
            }
            "function_call" => {
                let args: Value =
                    serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
                a.tool = Some((
                    item["call_id"].as_str().unwrap().into(),
                    item["name"].as_str().unwrap().into(),
                    args,
                ));
            }
            _ => {}
        }
    }
}

async fn send(proxy: &Proxy, api: Api, body: &Value) -> reqwest::Response {
    client()
        .post(proxy.url(path(api)))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn text_across_the_matrix() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    for api in APIS {
        for p in PROVS {
            for stream in [false, true] {
                if p != Prov::Mock {
                    mock.push(Behavior::Text("Hello from upstream".into()));
                }
                let resp = send(&proxy, api, &first_request(api, p, stream, false)).await;
                let a = read_answer(api, stream, resp).await;
                let want = if p == Prov::Mock {
                    MOCK_TEXT
                } else {
                    "Hello from upstream"
                };
                assert_eq!(a.text, want, "{api:?} → {p:?} stream={stream}");
            }
        }
    }
}

/// Checks that the provider received the tool result of the second turn in its format.
fn assert_tool_result_reached(p: Prov, req: &Recorded, call_id: &str) {
    let body = &req.body;
    let s = body.to_string();
    match p {
        Prov::OpenAi | Prov::Azure if req.path.ends_with("/responses") => {
            let items = body["input"].as_array().unwrap();
            assert!(
                items
                    .iter()
                    .any(|i| i["type"] == "function_call_output" && i["call_id"] == call_id),
                "{s}"
            );
            assert!(
                items
                    .iter()
                    .any(|i| i["type"] == "function_call" && i["name"] == "get_weather"),
                "{s}"
            );
        }
        Prov::OpenAi | Prov::OpenAiBridged | Prov::Azure => {
            let msgs = body["messages"].as_array().unwrap();
            assert!(
                msgs.iter()
                    .any(|m| m["role"] == "tool" && m["tool_call_id"] == call_id),
                "{s}"
            );
            assert!(
                msgs.iter()
                    .any(|m| m["tool_calls"][0]["function"]["name"] == "get_weather"),
                "{s}"
            );
        }
        Prov::Anthropic | Prov::VertexClaude => {
            let msgs = body["messages"].as_array().unwrap();
            assert!(
                msgs.iter()
                    .any(|m| m["content"].as_array().is_some_and(|c| c
                        .iter()
                        .any(|b| b["type"] == "tool_result" && b["tool_use_id"] == call_id))),
                "{s}"
            );
            assert!(
                msgs.iter()
                    .any(|m| m["content"].as_array().is_some_and(|c| c
                        .iter()
                        .any(|b| b["type"] == "tool_use" && b["input"]["city"] == "Paris"))),
                "{s}"
            );
        }
        Prov::Gemini | Prov::VertexGemini => {
            assert!(
                s.contains("functionResponse") && s.contains("functionCall"),
                "{s}"
            );
            assert!(s.contains("sunny, 21C"), "{s}");
        }
        Prov::Bedrock => {
            let blocks: Vec<&Value> = body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|m| m["content"].as_array().unwrap())
                .collect();
            assert!(
                blocks
                    .iter()
                    .any(|b| b["toolResult"]["toolUseId"] == call_id
                        && b["toolResult"]["content"][0]["text"] == "sunny, 21C"),
                "{s}"
            );
            assert!(
                blocks.iter().any(|b| b["toolUse"]["toolUseId"] == call_id
                    && b["toolUse"]["input"]["city"] == "Paris"),
                "{s}"
            );
            assert!(req.path.ends_with("/converse") || req.path.ends_with("/converse-stream"));
        }
        Prov::Ollama => {
            let msgs = body["messages"].as_array().unwrap();
            assert!(
                msgs.iter().any(|m| m["role"] == "tool"
                    && m["tool_name"] == "get_weather"
                    && m["content"] == "sunny, 21C"),
                "{s}"
            );
            assert!(
                msgs.iter()
                    .any(|m| m["tool_calls"][0]["function"]["arguments"]["city"] == "Paris"),
                "{s}"
            );
        }
        Prov::Mock => {}
    }
}

#[tokio::test]
async fn tool_round_trip_across_the_matrix() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    for api in APIS {
        for p in UPSTREAMS {
            for stream in [false, true] {
                let ctx = format!("{api:?} → {p:?} stream={stream}");
                mock.push(Behavior::ToolCall {
                    id: "call_1".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into(),
                });
                let a = read_answer(
                    api,
                    stream,
                    send(&proxy, api, &first_request(api, p, stream, true)).await,
                )
                .await;
                let (id, name, args) = a.tool.unwrap_or_else(|| panic!("no tool call: {ctx}"));
                assert_eq!(name, "get_weather", "{ctx}");
                assert_eq!(args, json!({"city": "Paris"}), "{ctx}");
                assert!(!id.is_empty(), "{ctx}");
                // The tool definition reached the provider.
                let first = mock.requests().last().unwrap().body.to_string();
                assert!(first.contains("get_weather"), "{ctx}: {first}");

                mock.push(Behavior::Text("It is sunny.".into()));
                let a = read_answer(
                    api,
                    stream,
                    send(&proxy, api, &follow_up(api, p, stream, &id)).await,
                )
                .await;
                assert_eq!(a.text, "It is sunny.", "{ctx}");
                let last = mock.requests().last().unwrap().clone();
                assert_tool_result_reached(p, &last, &id);
                // Native Responses only where the deployment serves it.
                let native = api == Api::Responses && matches!(p, Prov::OpenAi | Prov::Azure);
                assert_eq!(
                    last.path.ends_with("/responses"),
                    native,
                    "{ctx}: {}",
                    last.path
                );
            }
        }
    }
}

fn provider_error(p: Prov) -> Value {
    match p {
        Prov::OpenAi | Prov::OpenAiBridged => {
            json!({"error": {"message": "quota exceeded for test", "type": "rate_limit_error"}})
        }
        Prov::Anthropic => {
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "quota exceeded for test"}})
        }
        // Vertex AI refuses over quota in Google's shape, for Claude too.
        Prov::Gemini | Prov::VertexGemini | Prov::VertexClaude => {
            json!({"error": {"code": 429, "message": "quota exceeded for test", "status": "RESOURCE_EXHAUSTED"}})
        }
        Prov::Bedrock => json!({"message": "quota exceeded for test"}),
        Prov::Azure => {
            json!({"error": {"code": "429", "message": "quota exceeded for test"}})
        }
        Prov::Ollama => json!({"error": "quota exceeded for test"}),
        Prov::Mock => unreachable!(),
    }
}

#[tokio::test]
async fn upstream_error_across_the_matrix() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    for api in APIS {
        for p in UPSTREAMS {
            for stream in [false, true] {
                let ctx = format!("{api:?} → {p:?} stream={stream}");
                mock.push(Behavior::Status(429, provider_error(p)));
                let resp = send(&proxy, api, &first_request(api, p, stream, false)).await;
                assert_eq!(resp.status(), 429, "{ctx}");
                let v: Value = resp.json().await.unwrap();
                match api {
                    Api::Chat | Api::Responses => {
                        assert_eq!(
                            v["error"]["message"], "quota exceeded for test",
                            "{ctx}: {v}"
                        );
                        assert!(v["error"]["type"].is_string(), "{ctx}: {v}");
                    }
                    Api::Messages => {
                        assert_eq!(v["type"], "error", "{ctx}: {v}");
                        assert_eq!(v["error"]["type"], "rate_limit_error", "{ctx}: {v}");
                        assert_eq!(
                            v["error"]["message"], "quota exceeded for test",
                            "{ctx}: {v}"
                        );
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn translated_streams_are_not_buffered() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    for api in APIS {
        for p in UPSTREAMS {
            let ctx = format!("{api:?} → {p:?}");
            mock.push(Behavior::PausedStream {
                first: "early".into(),
                rest: "late part".into(),
            });
            let resp = send(&proxy, api, &first_request(api, p, true, false)).await;
            assert_eq!(resp.status(), 200, "{ctx}");
            let mut stream = resp.bytes_stream();
            let mut got = String::new();
            // The mock holds everything after "early" until released.
            while !got.contains("early") {
                use futures_util::StreamExt;
                let chunk = stream
                    .next()
                    .await
                    .unwrap_or_else(|| panic!("ended early: {ctx}: {got}"))
                    .unwrap();
                got.push_str(std::str::from_utf8(&chunk).unwrap());
            }
            mock.release();
            use futures_util::StreamExt;
            while let Some(c) = stream.next().await {
                got.push_str(std::str::from_utf8(&c.unwrap()).unwrap());
            }
            assert!(got.contains("late"), "{ctx}: {got}");
        }
    }
}

#[tokio::test]
async fn cancellation_across_the_matrix() {
    use futures_util::StreamExt;
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    for api in APIS {
        for p in UPSTREAMS {
            let ctx = format!("{api:?} → {p:?}");
            mock.push(Behavior::PausedStream {
                first: "early".into(),
                rest: "never read".into(),
            });
            let resp = send(&proxy, api, &first_request(api, p, true, false)).await;
            assert_eq!(resp.status(), 200, "{ctx}");
            let mut stream = resp.bytes_stream();
            let mut got = String::new();
            while !got.contains("early") {
                let chunk = stream
                    .next()
                    .await
                    .unwrap_or_else(|| panic!("ended early: {ctx}: {got}"))
                    .unwrap();
                got.push_str(std::str::from_utf8(&chunk).unwrap());
            }
            // The client goes away mid-stream: the upstream request goes with it.
            drop(stream);
            tokio::time::timeout(std::time::Duration::from_secs(10), mock.stream_dropped())
                .await
                .unwrap_or_else(|_| panic!("{ctx}: the upstream stream outlived its client"));
        }
    }
}
