//! The mock's OpenAI Responses API (`POST /v1/responses`, JSON and the typed SSE events
//! with `sequence_number`). It checks requests where translation bugs would show (input
//! shape, function call outputs answering earlier calls, `previous_response_id` naming a
//! response it made), honours the same scripted [`Behavior`]s as the other routes, and
//! records requests. [`crate::MockUpstream::disable_responses`] makes it answer 404 here,
//! as servers without this endpoint do.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::{halves, Behavior, ScriptedCall, Shared};

/// This format's routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/responses", post(create))
        .route("/responses", post(create))
}

fn error(status: u16, message: &str, code: Option<&str>) -> Response {
    let kind = match status {
        401 => "authentication_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

/// The text of the last user message in `input`.
fn last_user_text(body: &Value) -> String {
    match &body["input"] {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .rev()
            .find(|i| i["role"] == "user")
            .map(|m| match &m["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            })
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// What OpenAI itself would refuse, as its 400 message.
fn validate(shared: &Shared, body: &Value) -> Result<(), (u16, String)> {
    if !body["model"].is_string() {
        return Err((400, "Missing required parameter: 'model'.".into()));
    }
    if let Some(prev) = body["previous_response_id"].as_str() {
        if !shared
            .made_responses
            .lock()
            .unwrap()
            .iter()
            .any(|r| r == prev)
        {
            return Err((
                404,
                format!("Previous response with id '{prev}' not found."),
            ));
        }
    }
    let items = match &body["input"] {
        Value::String(_) => return Ok(()),
        Value::Array(items) => items,
        Value::Null if body["previous_response_id"].is_string() => return Ok(()),
        _ => return Err((400, "Missing required parameter: 'input'.".into())),
    };
    let mut calls: Vec<&str> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let kind = item["type"]
            .as_str()
            .unwrap_or(if item["role"].is_string() {
                "message"
            } else {
                ""
            });
        match kind {
            "message" => {
                let role = item["role"].as_str().unwrap_or_default();
                if !matches!(role, "user" | "assistant" | "system" | "developer") {
                    return Err((400, format!("Invalid value: '{role}'. input[{i}].role")));
                }
            }
            "function_call" => calls.push(item["call_id"].as_str().unwrap_or_default()),
            "function_call_output" => {
                let id = item["call_id"].as_str().unwrap_or_default();
                if !calls.contains(&id) && body["previous_response_id"].is_null() {
                    return Err((
                        400,
                        format!("No tool call found for function call output with call_id {id}."),
                    ));
                }
            }
            "reasoning" | "item_reference" => {}
            other => return Err((400, format!("Invalid input[{i}].type: '{other}'."))),
        }
    }
    Ok(())
}

fn usage(prompt: &str, text: &str) -> Value {
    let p = (prompt.len() as u64).div_ceil(4).max(1);
    let c = (text.len() as u64).div_ceil(4).max(1);
    json!({"input_tokens": p, "input_tokens_details": {"cached_tokens": 0},
           "output_tokens": c, "output_tokens_details": {"reasoning_tokens": 0},
           "total_tokens": p + c})
}

fn message_item(text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([{"type": "output_text", "text": text, "annotations": []}])
    };
    json!({"type": "message", "id": "msg_mock", "status": status, "role": "assistant",
           "content": content})
}

fn call_item(item_id: &str, id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": item_id, "call_id": id, "name": name,
           "arguments": arguments, "status": status})
}

/// One response being answered: its id, model and the request it answers.
struct Answer {
    id: String,
    model: String,
    prompt: String,
}

impl Answer {
    fn object(&self, status: &str, output: Value, usage: Value) -> Value {
        json!({"id": self.id, "object": "response", "created_at": 1_700_000_000u64,
               "status": status, "error": null, "incomplete_details": null,
               "model": self.model, "output": output, "usage": usage,
               "parallel_tool_calls": true, "tool_choice": "auto", "tools": []})
    }

    fn text(&self, text: &str) -> Value {
        self.object(
            "completed",
            json!([message_item(text, "completed")]),
            usage(&self.prompt, text),
        )
    }
}

/// Frames typed events, numbering them.
struct Events {
    seq: u64,
    frames: Vec<Bytes>,
}

impl Events {
    fn new() -> Self {
        Self {
            seq: 0,
            frames: Vec::new(),
        }
    }

    fn push(&mut self, kind: &str, mut data: Value) {
        data["type"] = kind.into();
        data["sequence_number"] = self.seq.into();
        self.seq += 1;
        self.frames
            .push(Bytes::from(format!("event: {kind}\ndata: {data}\n\n")));
    }

    fn take(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.frames)
    }

    fn opening(&mut self, a: &Answer) {
        let r = a.object("in_progress", json!([]), Value::Null);
        self.push("response.created", json!({"response": r}));
        self.push("response.in_progress", json!({"response": r}));
    }

    fn text_open(&mut self) {
        self.push(
            "response.output_item.added",
            json!({"output_index": 0, "item": message_item("", "in_progress")}),
        );
        self.push(
            "response.content_part.added",
            json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": []}}),
        );
    }

    fn text_delta(&mut self, delta: &str) {
        self.push(
            "response.output_text.delta",
            json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0,
                   "delta": delta, "logprobs": []}),
        );
    }

    fn text_close(&mut self, a: &Answer, text: &str) {
        self.push(
            "response.output_text.done",
            json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0,
                   "text": text, "logprobs": []}),
        );
        self.push(
            "response.content_part.done",
            json!({"item_id": "msg_mock", "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": text, "annotations": []}}),
        );
        self.push(
            "response.output_item.done",
            json!({"output_index": 0, "item": message_item(text, "completed")}),
        );
        self.push("response.completed", json!({"response": a.text(text)}));
    }
}

fn sse<S>(stream: S) -> Response
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn frames(frames: Vec<Bytes>) -> Response {
    sse(futures_util::stream::iter(frames.into_iter().map(Ok)))
}

fn text(a: &Answer, text: &str, stream: bool) -> Response {
    if !stream {
        return axum::Json(a.text(text)).into_response();
    }
    let mut ev = Events::new();
    ev.opening(a);
    ev.text_open();
    for piece in text.split_inclusive(' ') {
        ev.text_delta(piece);
    }
    ev.text_close(a, text);
    frames(ev.take())
}

/// An answer made of function calls, as a response object or its events.
fn tool_calls(a: &Answer, calls: &[ScriptedCall], stream: bool) -> Response {
    let all_args: String = calls.iter().map(|c| c.arguments.as_str()).collect();
    let item_id = |i: usize| format!("fc_mock_{i}");
    let done: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| call_item(&item_id(i), &c.id, &c.name, &c.arguments, "completed"))
        .collect();
    let finished = a.object("completed", json!(done), usage(&a.prompt, &all_args));
    if !stream {
        return axum::Json(finished).into_response();
    }
    let mut ev = Events::new();
    ev.opening(a);
    for (i, c) in calls.iter().enumerate() {
        ev.push(
            "response.output_item.added",
            json!({"output_index": i, "item": call_item(&item_id(i), &c.id, &c.name, "", "in_progress")}),
        );
        for part in halves(&c.arguments) {
            ev.push(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id(i), "output_index": i, "delta": part}),
            );
        }
        ev.push(
            "response.function_call_arguments.done",
            json!({"item_id": item_id(i), "output_index": i, "name": c.name, "arguments": c.arguments}),
        );
        ev.push(
            "response.output_item.done",
            json!({"output_index": i, "item": done[i]}),
        );
    }
    ev.push("response.completed", json!({"response": finished}));
    frames(ev.take())
}

/// A scripted error body in OpenAI's shape (kept when it already is).
fn error_body(v: Value) -> Value {
    if v["error"].is_object() {
        return v;
    }
    let message = v["message"].as_str().unwrap_or("mock error");
    json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})
}

pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return error(400, &format!("mock: bad JSON: {e}"), None),
    };
    if shared.responses_disabled.load(Ordering::Relaxed) {
        shared.record_only(uri.path(), headers, &body);
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"detail": "Not Found"})),
        )
            .into_response();
    }
    let stream = body["stream"] == true;
    let n = shared.made_responses.lock().unwrap().len();
    let a = Answer {
        id: format!("resp_mock_{n}"),
        model: body["model"].as_str().unwrap_or("mock").to_string(),
        prompt: last_user_text(&body),
    };
    let behavior = shared.behavior(uri.path(), headers, &body);
    if let Err((status, message)) = validate(&shared, &body) {
        return error(status, &message, None);
    }
    if body["store"] != false {
        shared.made_responses.lock().unwrap().push(a.id.clone());
    }
    let default_text = format!("mock reply to: {}", a.prompt);
    match behavior {
        None => text(&a, &default_text, stream),
        Some(Behavior::Text(t)) => text(&a, &t, stream),
        Some(Behavior::ToolCall {
            id,
            name,
            arguments,
        }) => tool_calls(
            &a,
            &[ScriptedCall {
                id,
                name,
                arguments,
            }],
            stream,
        ),
        Some(Behavior::ToolCalls(calls)) => tool_calls(&a, &calls, stream),
        Some(Behavior::Status(code, v)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, axum::Json(error_body(v))).into_response()
        }
        Some(Behavior::Delay(d)) => {
            tokio::time::sleep(d).await;
            text(&a, &default_text, stream)
        }
        Some(Behavior::Raw {
            status,
            content_type,
            body,
        }) => crate::raw(status, &content_type, body),
        Some(Behavior::Hang) => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Some(Behavior::PausedStream { first, rest }) => {
            let mut ev = Events::new();
            ev.opening(&a);
            ev.text_open();
            ev.text_delta(&first);
            let head = ev.take();
            for piece in rest.split_inclusive(' ') {
                ev.text_delta(piece);
            }
            ev.text_close(&a, &format!("{first}{rest}"));
            crate::sse(crate::gated(shared, head, Some(ev.take())))
        }
        Some(Behavior::CutStream { first }) => {
            let mut ev = Events::new();
            ev.opening(&a);
            ev.text_open();
            ev.text_delta(&first);
            crate::sse(crate::gated(shared, ev.take(), None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_matches_call_outputs_to_calls() {
        let shared = Shared::default();
        let ok = json!({"model": "m", "input": [
            {"role": "user", "content": "q"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "r"}
        ]});
        assert_eq!(validate(&shared, &ok), Ok(()));
        let mut bad = ok.clone();
        bad["input"][2]["call_id"] = "c2".into();
        assert!(validate(&shared, &bad).unwrap_err().1.contains("c2"));
        let prev = json!({"model": "m", "input": "x", "previous_response_id": "resp_nope"});
        assert_eq!(validate(&shared, &prev).unwrap_err().0, 404);
    }
}
