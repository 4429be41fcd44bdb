//! Helpers of `tests/memory_tools.rs`: requests in each client API's shape and what a
//! client reads from the answers, what an upstream request carried (tool results, offered
//! tools) in each provider's shape, and a memory store whose searches can hang.

use std::sync::atomic::{AtomicUsize, Ordering};

use memproxy::memory::store::BoxFuture;
use memproxy::memory::{
    Memory, MemoryStore, Page, ScoredMemory, SearchQuery, Session, SessionInfo, SessionMessage,
    StoreError, WriteOp,
};
use memproxy::storage::embedded::memory::SqliteStore;
use mock_upstream::Recorded;
use serde_json::{json, Value};

use crate::common::client;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Api {
    Chat,
    Messages,
    Responses,
}

pub fn path(api: Api) -> &'static str {
    match api {
        Api::Chat => "/v1/chat/completions",
        Api::Messages => "/v1/messages",
        Api::Responses => "/v1/responses",
    }
}

/// A one-question request in `api`'s shape, with the client's own `tools` if any.
pub fn request(api: Api, model: &str, question: &str, stream: bool, tools: Option<Value>) -> Value {
    let said = json!([{"role": "user", "content": question}]);
    let mut body = match api {
        Api::Responses => json!({"model": model, "input": said, "stream": stream}),
        _ => json!({"model": model, "messages": said, "stream": stream}),
    };
    if api == Api::Messages {
        body["max_tokens"] = json!(512);
    }
    if let Some(t) = tools {
        body["tools"] = t;
    }
    body
}

/// The client's `get_weather` tool in `api`'s shape.
pub fn weather_tool(api: Api) -> Value {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    match api {
        Api::Chat => {
            json!([{"type": "function", "function": {"name": "get_weather", "parameters": schema}}])
        }
        Api::Messages => json!([{"name": "get_weather", "input_schema": schema}]),
        Api::Responses => {
            json!([{"type": "function", "name": "get_weather", "parameters": schema}])
        }
    }
}

/// What the client read.
#[derive(Debug, Default)]
pub struct Answer {
    pub text: String,
    /// (id, name, arguments)
    pub calls: Vec<(String, String, Value)>,
    /// The finish reason in the API's own words.
    pub finish: String,
    /// The whole response body as the client got it.
    pub raw: String,
}

pub async fn ask(base: &str, api: Api, user: &str, body: &Value) -> Answer {
    let resp = client()
        .post(format!("{base}{}", path(api)))
        .header("x-memory-user-id", user)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let stream = body["stream"] == true;
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let raw = resp.text().await.unwrap();
    assert_eq!(status, 200, "{raw}");
    assert_eq!(ctype.starts_with("text/event-stream"), stream, "{ctype}");
    let mut a = if stream {
        read_stream(api, &raw)
    } else {
        read_body(api, &serde_json::from_str(&raw).unwrap())
    };
    a.raw = raw;
    a
}

pub fn args(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("bad arguments {text}: {e}"))
}

pub fn read_body(api: Api, v: &Value) -> Answer {
    let mut a = Answer::default();
    match api {
        Api::Chat => {
            let m = &v["choices"][0]["message"];
            a.text = m["content"].as_str().unwrap_or_default().into();
            for tc in m["tool_calls"].as_array().into_iter().flatten() {
                let f = &tc["function"];
                a.calls.push((
                    tc["id"].as_str().unwrap().into(),
                    f["name"].as_str().unwrap().into(),
                    args(f["arguments"].as_str().unwrap()),
                ));
            }
            a.finish = v["choices"][0]["finish_reason"].as_str().unwrap().into();
        }
        Api::Messages => {
            for b in v["content"].as_array().unwrap() {
                match b["type"].as_str().unwrap() {
                    "text" => a.text.push_str(b["text"].as_str().unwrap()),
                    "tool_use" => a.calls.push((
                        b["id"].as_str().unwrap().into(),
                        b["name"].as_str().unwrap().into(),
                        b["input"].clone(),
                    )),
                    _ => {}
                }
            }
            a.finish = v["stop_reason"].as_str().unwrap().into();
        }
        Api::Responses => {
            assert_eq!(v["status"], "completed", "{v}");
            for item in v["output"].as_array().unwrap() {
                match item["type"].as_str().unwrap() {
                    "message" => {
                        for p in item["content"].as_array().unwrap() {
                            a.text.push_str(p["text"].as_str().unwrap_or_default());
                        }
                    }
                    "function_call" => a.calls.push((
                        item["call_id"].as_str().unwrap().into(),
                        item["name"].as_str().unwrap().into(),
                        args(item["arguments"].as_str().unwrap()),
                    )),
                    _ => {}
                }
            }
            a.finish = "completed".into();
        }
    }
    a
}

/// `(event name, data)` of each SSE event; `[DONE]` as a `Value::Null` data.
pub fn events(text: &str) -> Vec<(Option<String>, Value)> {
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = Some(n.to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        let v = if data == "[DONE]" {
            Value::Null
        } else {
            serde_json::from_str(&data).unwrap_or_else(|e| panic!("bad SSE data {data}: {e}"))
        };
        out.push((name, v));
    }
    out
}

pub fn read_stream(api: Api, text: &str) -> Answer {
    let evs = events(text);
    let mut a = Answer::default();
    let mut args_by_call: Vec<String> = Vec::new();
    match api {
        Api::Chat => {
            assert_eq!(
                evs.last().unwrap().1,
                Value::Null,
                "ends with [DONE]: {text}"
            );
            for (_, v) in &evs {
                let Some(choice) = v["choices"].get(0) else {
                    continue;
                };
                let d = &choice["delta"];
                a.text.push_str(d["content"].as_str().unwrap_or_default());
                for tc in d["tool_calls"].as_array().into_iter().flatten() {
                    let i = tc["index"].as_u64().unwrap() as usize;
                    if let Some(name) = tc["function"]["name"].as_str() {
                        a.calls
                            .push((tc["id"].as_str().unwrap().into(), name.into(), json!({})));
                        args_by_call.push(String::new());
                    }
                    args_by_call[i].push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
                }
                if let Some(f) = choice["finish_reason"].as_str() {
                    a.finish = f.into();
                }
            }
        }
        Api::Messages => {
            let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
            assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
            assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
            for (_, v) in &evs {
                match v["type"].as_str().unwrap() {
                    "content_block_start" if v["content_block"]["type"] == "tool_use" => {
                        let b = &v["content_block"];
                        a.calls.push((
                            b["id"].as_str().unwrap().into(),
                            b["name"].as_str().unwrap().into(),
                            json!({}),
                        ));
                        args_by_call.push(String::new());
                    }
                    "content_block_delta" => match v["delta"]["type"].as_str().unwrap() {
                        "text_delta" => a.text.push_str(v["delta"]["text"].as_str().unwrap()),
                        "input_json_delta" => args_by_call
                            .last_mut()
                            .unwrap()
                            .push_str(v["delta"]["partial_json"].as_str().unwrap()),
                        _ => {}
                    },
                    "message_delta" => {
                        a.finish = v["delta"]["stop_reason"].as_str().unwrap().into()
                    }
                    "error" => panic!("error event: {v}"),
                    _ => {}
                }
            }
        }
        Api::Responses => {
            let (name, last) = evs.last().unwrap();
            assert_eq!(name.as_deref(), Some("response.completed"), "{text}");
            for (i, (_, v)) in evs.iter().enumerate() {
                assert_eq!(v["sequence_number"], i, "{v}");
            }
            return read_body(api, &last["response"]);
        }
    }
    for (call, args_text) in a.calls.iter_mut().zip(&args_by_call) {
        call.2 = args(if args_text.is_empty() {
            "{}"
        } else {
            args_text
        });
    }
    a
}

/// The tool results a request carried, each parsed from its JSON text, in order, in any
/// of the three upstream formats.
pub fn tool_results(r: &Recorded) -> Vec<Value> {
    let b = &r.body;
    let mut out = Vec::new();
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or_else(|_| json!(s));
    if let Some(contents) = b["contents"].as_array() {
        // Gemini
        for part in contents.iter().flat_map(|c| c["parts"].as_array().unwrap()) {
            if let Some(fr) = part.get("functionResponse") {
                out.push(parse(fr["response"]["content"].as_str().unwrap()));
            }
        }
        return out;
    }
    for m in b["messages"].as_array().unwrap() {
        if m["role"] == "tool" {
            out.push(parse(m["content"].as_str().unwrap()));
        }
        for block in m["content"].as_array().into_iter().flatten() {
            if block["type"] == "tool_result" {
                let text = match &block["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .collect::<String>(),
                    other => panic!("tool_result content {other}"),
                };
                out.push(parse(&text));
            }
        }
    }
    out
}

/// The names of the tools a request offered, in any of the three upstream formats.
pub fn offered(r: &Recorded) -> Vec<String> {
    let b = &r.body;
    let tools = b["tools"].as_array().cloned().unwrap_or_default();
    tools
        .iter()
        .flat_map(|t| {
            let names: Vec<Value> = match t["functionDeclarations"].as_array() {
                Some(decls) => decls.iter().map(|d| d["name"].clone()).collect(),
                None => vec![t["function"]["name"].clone(), t["name"].clone()],
            };
            names
        })
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect()
}

pub fn streamed_upstream(r: &Recorded) -> bool {
    r.body["stream"] == true || r.path.contains("streamGenerateContent")
}

/// A memory store whose searches can be made to hang (the slow tool), counting them.
pub struct SlowStore {
    pub inner: SqliteStore,
    /// Searches still to hang, from the next one on.
    pub hanging: AtomicUsize,
    /// Searches asked for so far.
    pub searches: AtomicUsize,
    /// While set, every write fails as on a full disk.
    pub failing_writes: std::sync::atomic::AtomicBool,
}

impl MemoryStore for SlowStore {
    fn apply(&self, ops: Vec<WriteOp>) -> BoxFuture<'_, Result<Vec<Memory>, StoreError>> {
        if self.failing_writes.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::Backend("database or disk is full".into())) });
        }
        self.inner.apply(ops)
    }
    fn get<'a>(&'a self, u: &'a str, id: &'a str) -> BoxFuture<'a, Result<Memory, StoreError>> {
        self.inner.get(u, id)
    }
    fn list<'a>(
        &'a self,
        u: &'a str,
        limit: usize,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Page, StoreError>> {
        self.inner.list(u, limit, cursor)
    }
    fn search<'a>(
        &'a self,
        u: &'a str,
        q: &'a SearchQuery,
    ) -> BoxFuture<'a, Result<Vec<ScoredMemory>, StoreError>> {
        self.searches.fetch_add(1, Ordering::SeqCst);
        let hang = self
            .hanging
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if hang {
            return Box::pin(std::future::pending());
        }
        self.inner.search(u, q)
    }
    fn delete<'a>(&'a self, u: &'a str, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.delete(u, id)
    }
    fn delete_user<'a>(&'a self, u: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.delete_user(u)
    }
    fn session_messages<'a>(
        &'a self,
        u: &'a str,
        s: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionMessage>, StoreError>> {
        self.inner.session_messages(u, s)
    }
    fn list_sessions<'a>(
        &'a self,
        u: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, StoreError>> {
        self.inner.list_sessions(u)
    }
    fn get_session<'a>(
        &'a self,
        u: Option<&'a str>,
        s: &'a str,
    ) -> BoxFuture<'a, Result<Session, StoreError>> {
        self.inner.get_session(u, s)
    }
    fn delete_session<'a>(
        &'a self,
        u: Option<&'a str>,
        s: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.delete_session(u, s)
    }
    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.purge_expired()
    }
    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.health()
    }
}
