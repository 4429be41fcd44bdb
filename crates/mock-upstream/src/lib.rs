//! A mock LLM provider for memproxy's tests and benchmark. It speaks the real OpenAI
//! chat completions wire format (JSON and SSE), and the OpenAI Responses, Anthropic,
//! Gemini, AWS Bedrock Converse and Vertex AI (token endpoint and model routes) formats,
//! one module each; records every request it receives, and can be scripted per call:
//! error statuses, delays, hangs, streams that pause until the test releases them, and
//! streams cut mid-way.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

pub use bedrock::{
    ACCESS_KEY_ID as BEDROCK_ACCESS_KEY_ID, SECRET_ACCESS_KEY as BEDROCK_SECRET_ACCESS_KEY,
};

mod anthropic;
mod azure;
mod bedrock;
mod gemini;
mod ollama;
mod responses;
mod supermemory;
mod vertex;

pub use supermemory::{MockSupermemory, SUPERMEMORY_KEY};

pub use vertex::TestKey;

/// One scripted answer, used for the next request (FIFO); unscripted requests get the
/// default echo answer.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Answer with this HTTP status and JSON body.
    Status(u16, Value),
    /// Answer normally with this text.
    Text(String),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Never answer (until the client gives up).
    Hang,
    /// Stream: send the chunk for `first`, wait for [`MockUpstream::release`], then the rest.
    PausedStream { first: String, rest: String },
    /// Answer with one tool call (streamed or not, in the endpoint's wire format).
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// Answer with several tool calls at once (parallel calls), streamed or not.
    ToolCalls(Vec<ScriptedCall>),
    /// Stream: send the chunk for `first`, wait for [`MockUpstream::release`], then break
    /// the connection.
    CutStream { first: String },
    /// Answer with exactly these bytes (a malformed stream or body, whatever the endpoint).
    Raw {
        status: u16,
        content_type: String,
        body: String,
    },
}

/// One tool call of a [`Behavior::ToolCalls`] answer; `arguments` is JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl ScriptedCall {
    pub fn new(id: &str, name: &str, arguments: &str) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }
}

/// How the `mock-upstream` binary answers: every request with a fixed text, after one tool
/// call when the request offers tools.
#[derive(Debug, Clone, Default)]
pub struct FixedMode {
    /// The answer text.
    pub text: String,
    /// A tool to call (name, JSON arguments) whenever a request offers one of that name, so
    /// a real client runs a chosen harmless tool; other requests with tools get a call of
    /// their first tool with `{}`.
    pub preferred_tool: Option<(String, String)>,
    /// A request whose last message contains this phrase is answered with the text at
    /// once, tools or not: a whole exchange from a client that always offers tools.
    pub text_only_phrase: Option<String>,
    /// Records requests and serves them at `GET /mock/requests`, for tests of real
    /// clients; off for the benchmark, whose request count would make it grow.
    pub record: bool,
}

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
pub(crate) struct Shared {
    script: Mutex<VecDeque<Behavior>>,
    requests: Mutex<Vec<Recorded>>,
    pub(crate) gate: Notify,
    /// A paused stream was dropped before it was sent whole.
    pub(crate) stream_dropped: Notify,
    pub(crate) fixed: Option<FixedMode>,
    /// `/v1/responses` answers 404, as servers without the Responses API do.
    pub(crate) responses_disabled: AtomicBool,
    /// Ids of the responses the Responses route made (and "stored").
    pub(crate) made_responses: Mutex<Vec<String>>,
    /// Vertex AI's token endpoint: trusted keys, issued tokens.
    pub(crate) vertex: vertex::State,
}

impl Shared {
    /// The behaviour for a request: in fixed mode the fixed one (recorded when asked),
    /// otherwise the next scripted one (always recorded).
    pub(crate) fn behavior(
        &self,
        path: &str,
        headers: HeaderMap,
        body: &Value,
    ) -> Option<Behavior> {
        match &self.fixed {
            Some(mode) => {
                if mode.record {
                    self.record_only(path, headers, body);
                }
                Some(fixed_behavior(mode, body))
            }
            None => self.record(path, headers, body),
        }
    }

    /// Records a request without taking a scripted behaviour.
    pub(crate) fn record_only(&self, path: &str, headers: HeaderMap, body: &Value) {
        self.requests.lock().unwrap().push(Recorded {
            path: path.to_string(),
            headers,
            body: body.clone(),
        });
    }

    /// Records a request and returns the scripted behaviour for it, if any.
    pub(crate) fn record(&self, path: &str, headers: HeaderMap, body: &Value) -> Option<Behavior> {
        self.requests.lock().unwrap().push(Recorded {
            path: path.to_string(),
            headers,
            body: body.clone(),
        });
        self.script.lock().unwrap().pop_front()
    }
}

/// Tool names a request offers, in order (OpenAI chat, Responses, Anthropic, Gemini).
fn offered_tools(body: &Value) -> Vec<&str> {
    let Some(tools) = body["tools"].as_array() else {
        return Vec::new();
    };
    tools
        .iter()
        .flat_map(|t| {
            let single = t["function"]["name"]
                .as_str()
                .or_else(|| t["name"].as_str());
            let gemini = t["functionDeclarations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d["name"].as_str());
            single.into_iter().chain(gemini)
        })
        .collect()
}

/// Fixed mode's answer: a tool call when the request offers tools and its last message is
/// not already a tool result (the preferred tool if offered, else the first with `{}`),
/// otherwise the fixed text.
fn fixed_behavior(mode: &FixedMode, body: &Value) -> Behavior {
    let last = body["messages"]
        .as_array()
        .or_else(|| body["contents"].as_array())
        .or_else(|| body["input"].as_array())
        .and_then(|m| m.last())
        .map(|m| m.to_string())
        .unwrap_or_default();
    let answered = last.contains("\"tool_result\"")
        || last.contains("\"functionResponse\"")
        || last.contains("\"role\":\"tool\"")
        || last.contains("\"function_call_output\"");
    let text_only = mode
        .text_only_phrase
        .as_deref()
        .is_some_and(|p| last.contains(p));
    let offered = offered_tools(body);
    if answered || text_only || offered.is_empty() {
        return Behavior::Text(mode.text.clone());
    }
    let (name, arguments) = match &mode.preferred_tool {
        Some((name, args)) if offered.contains(&name.as_str()) => (name.clone(), args.clone()),
        _ => (offered[0].to_string(), "{}".to_string()),
    };
    Behavior::ToolCall {
        id: "call_fixed_1".into(),
        name,
        arguments,
    }
}

/// A running mock upstream; stops when dropped.
pub struct MockUpstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

impl MockUpstream {
    /// Starts on a random loopback port.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0", None).await
    }

    /// Starts on `addr`; with `fixed`, every answer is that text and nothing is recorded
    /// (benchmark mode).
    pub async fn start_on(addr: &str, fixed: Option<String>) -> Self {
        let fixed = fixed.map(|text| FixedMode {
            text,
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind mock upstream");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            fixed,
            ..Default::default()
        });
        let (tx, rx) = oneshot::channel::<()>();
        let app = app(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(
                listener.tap_io(|t| {
                    let _ = t.set_nodelay(true);
                }),
                app,
            )
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        });
        Self {
            addr,
            shared,
            _stop: tx,
        }
    }

    /// The OpenAI-style base URL (`http://addr/v1`).
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Scripts the next answer.
    pub fn push(&self, b: Behavior) {
        self.shared.script.lock().unwrap().push_back(b);
    }

    /// Makes `/v1/responses` answer 404 (as llama.cpp or older vLLM do); requests there
    /// are still recorded.
    pub fn disable_responses(&self) {
        self.shared
            .responses_disabled
            .store(true, Ordering::Relaxed);
    }

    /// Releases a paused stream.
    pub fn release(&self) {
        self.shared.gate.notify_one();
    }

    /// Waits until a paused stream was dropped before it was sent whole: the client of the
    /// mock (the gateway) went away (every wire format but Vertex AI's own streams).
    pub async fn stream_dropped(&self) {
        self.shared.stream_dropped.notified().await;
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many requests were received.
    pub fn count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }
}

/// The mock's routes (also used by the `mock-upstream` binary).
pub fn app_fixed(mode: FixedMode) -> Router {
    app(Arc::new(Shared {
        fixed: Some(mode),
        ..Default::default()
    }))
}

fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(anthropic::routes())
        .merge(bedrock::routes())
        .merge(azure::routes())
        .merge(gemini::routes())
        .merge(ollama::routes())
        .merge(responses::routes())
        .merge(vertex::routes())
        .route("/mock/requests", get(recorded))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/{*rest}", post(chat))
        .route(
            "/v1/models",
            get(|| async {
                axum::Json(json!({"object":"list","data":[{"id":"mock","object":"model"}]}))
            }),
        )
        .with_state(shared)
}

/// `GET /mock/requests`: every recorded request as `{path, headers, body}`, oldest first.
async fn recorded(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    let all = shared.requests.lock().unwrap();
    let list: Vec<Value> = all
        .iter()
        .map(|r| {
            let headers: serde_json::Map<String, Value> = r
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into(),
                    )
                })
                .collect();
            json!({"path": r.path, "headers": headers, "body": r.body})
        })
        .collect();
    axum::Json(Value::Array(list))
}

pub(crate) fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default()
}

fn usage(prompt: &str, text: &str) -> Value {
    let p = (prompt.len() as u64).div_ceil(4).max(1);
    let c = (text.len() as u64).div_ceil(4).max(1);
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

fn completion(model: &str, text: &str, prompt: &str) -> Value {
    json!({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000u64, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": usage(prompt, text),
    })
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Bytes {
    let v = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                   "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    Bytes::from(format!("data: {v}\n\n"))
}

fn stream_frames(model: &str, text: &str, prompt: &str, include_usage: bool) -> Vec<Bytes> {
    let mut frames = vec![chunk(
        model,
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    for piece in text.split_inclusive(' ') {
        frames.push(chunk(model, json!({"content": piece}), None));
    }
    frames.push(chunk(model, json!({}), Some("stop")));
    if include_usage {
        let v = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                       "model": model, "choices": [], "usage": usage(prompt, text)});
        frames.push(Bytes::from(format!("data: {v}\n\n")));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    frames
}

/// A response of exactly `body`, whatever the endpoint's wire format ([`Behavior::Raw`]).
pub(crate) fn raw(status: u16, content_type: &str, body: String) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap()
}

pub(crate) fn sse(body: Body) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

async fn chat(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": {"message": format!("mock: bad JSON: {e}"), "type": "invalid_request_error"}}))).into_response()
        }
    };
    let model = body["model"].as_str().unwrap_or("mock").to_string();
    let stream = body["stream"] == true;
    let include_usage = body["stream_options"]["include_usage"] == true;
    let prompt = last_user_text(&body);

    let behavior = shared.behavior(uri.path(), headers, &body);
    let default_text = format!("mock reply to: {prompt}");
    match behavior {
        None => answer(&model, &default_text, &prompt, stream, include_usage),
        Some(Behavior::Text(t)) => answer(&model, &t, &prompt, stream, include_usage),
        Some(Behavior::ToolCall {
            id,
            name,
            arguments,
        }) => tool_calls(
            &model,
            &prompt,
            &[ScriptedCall {
                id,
                name,
                arguments,
            }],
            stream,
            include_usage,
        ),
        Some(Behavior::ToolCalls(calls)) => {
            tool_calls(&model, &prompt, &calls, stream, include_usage)
        }
        Some(Behavior::Status(code, v)) => {
            (StatusCode::from_u16(code).unwrap(), axum::Json(v)).into_response()
        }
        Some(Behavior::Delay(d)) => {
            tokio::time::sleep(d).await;
            answer(&model, &default_text, &prompt, stream, include_usage)
        }
        Some(Behavior::Raw {
            status,
            content_type,
            body,
        }) => raw(status, &content_type, body),
        Some(Behavior::Hang) => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Some(Behavior::PausedStream { first, rest }) => {
            let first_frame = chunk(&model, json!({"role": "assistant", "content": first}), None);
            let mut rest_frames = stream_frames(&model, &rest, &prompt, include_usage);
            rest_frames.remove(0);
            sse(gated(shared.clone(), vec![first_frame], Some(rest_frames)))
        }
        Some(Behavior::CutStream { first }) => {
            let first_frame = chunk(&model, json!({"role": "assistant", "content": first}), None);
            let s = futures_util::stream::unfold(Some(first_frame), move |first| {
                let shared = shared.clone();
                async move {
                    match first {
                        Some(f) => Some((Ok::<Bytes, std::io::Error>(f), None)),
                        None => {
                            shared.gate.notified().await;
                            Some((Err(std::io::Error::other("mock: connection cut")), None))
                        }
                    }
                }
            });
            sse(Body::from_stream(s))
        }
    }
}

/// Halves of a JSON text on a character boundary, sent as two argument deltas.
pub(crate) fn halves(arguments: &str) -> [&str; 2] {
    let mid = (0..=arguments.len() / 2)
        .rev()
        .find(|i| arguments.is_char_boundary(*i))
        .unwrap_or(0);
    [&arguments[..mid], &arguments[mid..]]
}

/// An answer made of tool calls, as a chat completion or its chunks.
fn tool_calls(
    model: &str,
    prompt: &str,
    calls: &[ScriptedCall],
    stream: bool,
    include_usage: bool,
) -> Response {
    let all_args: String = calls.iter().map(|c| c.arguments.as_str()).collect();
    if !stream {
        let wire: Vec<Value> = calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
        return axum::Json(json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000u64, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": wire},
                "finish_reason": "tool_calls"}],
            "usage": usage(prompt, &all_args),
        }))
        .into_response();
    }
    let mut frames = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        let mut delta = json!({"tool_calls": [{"index": i, "id": c.id, "type": "function",
                                               "function": {"name": c.name, "arguments": ""}}]});
        if i == 0 {
            delta["role"] = "assistant".into();
            delta["content"] = Value::Null;
        }
        frames.push(chunk(model, delta, None));
        for part in halves(&c.arguments) {
            frames.push(chunk(
                model,
                json!({"tool_calls": [{"index": i, "function": {"arguments": part}}]}),
                None,
            ));
        }
    }
    frames.push(chunk(model, json!({}), Some("tool_calls")));
    if include_usage {
        let v = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000u64,
                       "model": model, "choices": [], "usage": usage(prompt, &all_args)});
        frames.push(Bytes::from(format!("data: {v}\n\n")));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    sse(Body::from_stream(futures_util::stream::iter(
        frames.into_iter().map(Ok::<_, Infallible>),
    )))
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(Behavior::Status(code, v)) = shared.record(uri.path(), headers, &body) {
        return (StatusCode::from_u16(code).unwrap(), axum::Json(v)).into_response();
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => vec![],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": [t.len() as f32, 1.0, 0.5]}))
        .collect();
    axum::Json(
        json!({"object": "list", "data": data, "model": body["model"],
                      "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
    )
    .into_response()
}

fn answer(model: &str, text: &str, prompt: &str, stream: bool, include_usage: bool) -> Response {
    if stream {
        let frames = stream_frames(model, text, prompt, include_usage);
        sse(Body::from_stream(futures_util::stream::iter(
            frames.into_iter().map(Ok::<_, Infallible>),
        )))
    } else {
        axum::Json(completion(model, text, prompt)).into_response()
    }
}

/// Notes on the mock when a streamed answer is dropped before it was sent whole (the
/// client went away).
struct DropWatch {
    shared: Arc<Shared>,
    finished: bool,
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.stream_dropped.notify_one();
        }
    }
}

/// Sends `first`, waits for [`MockUpstream::release`], then sends `rest`, or with
/// `None` breaks the connection. A stream with a `rest` dropped before its end (the client went away) is
/// reported by [`MockUpstream::stream_dropped`]. Every wire format's paused and cut streams
/// are made here.
pub(crate) fn gated(shared: Arc<Shared>, first: Vec<Bytes>, rest: Option<Vec<Bytes>>) -> Body {
    let watch = rest.is_some().then(|| DropWatch {
        shared: shared.clone(),
        finished: false,
    });
    let head = futures_util::stream::iter(first.into_iter().map(Ok::<_, std::io::Error>));
    let tail = futures_util::stream::once(async move {
        shared.gate.notified().await;
        rest
    })
    .flat_map(|rest| match rest {
        Some(frames) => futures_util::stream::iter(frames.into_iter().map(Ok)).left_stream(),
        None => {
            futures_util::stream::once(async { Err(std::io::Error::other("mock: connection cut")) })
                .right_stream()
        }
    });
    let end = futures_util::stream::unfold(watch, |watch| async move {
        let mut watch = watch?;
        watch.finished = true;
        None::<(Result<Bytes, std::io::Error>, Option<DropWatch>)>
    });
    Body::from_stream(head.chain(tail).chain(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn called(b: Behavior) -> (String, String) {
        match b {
            Behavior::ToolCall {
                name, arguments, ..
            } => (name, arguments),
            other => panic!("expected a tool call, got {other:?}"),
        }
    }

    #[test]
    fn fixed_mode_calls_the_preferred_tool_when_offered() {
        let mode = FixedMode {
            text: "done".into(),
            preferred_tool: Some(("Bash".into(), r#"{"command":"echo ok"}"#.into())),
            text_only_phrase: Some("no tools please".into()),
            record: false,
        };
        let anthropic = json!({"tools": [{"name": "Agent"}, {"name": "Bash"}],
                               "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(
            called(fixed_behavior(&mode, &anthropic)),
            ("Bash".into(), r#"{"command":"echo ok"}"#.into())
        );
        let chat = json!({"tools": [{"type": "function", "function": {"name": "shell"}}],
                          "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(
            called(fixed_behavior(&mode, &chat)),
            ("shell".into(), "{}".into())
        );
        let answered = json!({"tools": [{"name": "Bash"}], "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}]});
        assert!(matches!(fixed_behavior(&mode, &answered), Behavior::Text(t) if t == "done"));
        let asked = json!({"tools": [{"name": "Bash"}],
                           "input": [{"role": "user", "content": "hi, no tools please"}]});
        assert!(matches!(fixed_behavior(&mode, &asked), Behavior::Text(_)));
        let no_tools = json!({"messages": [{"role": "user", "content": "hi"}]});
        assert!(matches!(
            fixed_behavior(&mode, &no_tools),
            Behavior::Text(_)
        ));
    }
}
