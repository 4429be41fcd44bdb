//! The mock's Ollama API: `POST /api/chat`, one JSON answer, or NDJSON lines
//! (`application/x-ndjson`) when `stream` is true or absent (Ollama's default): content
//! pieces with `done: false`, then a `done: true` line with `done_reason` and the token
//! counts. Tool calls carry object `arguments` and no id (as most Ollama versions send
//! them). It refuses what Ollama refuses where translation bugs would show (a missing
//! model, string tool-call arguments, images that are not bare base64) and answers errors
//! as `{"error":"…"}`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::stream;
use serde_json::{json, Value};

use crate::{Behavior, ScriptedCall, Shared};

/// This format's routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/api/chat", post(chat))
}

fn error(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({"error": message}))).into_response()
}

/// A scripted error body as Ollama's `{"error":"…"}` (an OpenAI-style body is rewritten,
/// so one script serves every format).
fn scripted_error(code: u16, body: &Value) -> Response {
    let message = body["error"]
        .as_str()
        .or(body["error"]["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    error(code, &message)
}

/// What Ollama itself would refuse, as its 400 message.
fn validate(body: &Value) -> Result<(), String> {
    if body["model"].as_str().is_none_or(str::is_empty) {
        return Err("model is required".into());
    }
    let Some(messages) = body["messages"].as_array() else {
        return Err("messages is required".into());
    };
    let base64 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    };
    for (i, m) in messages.iter().enumerate() {
        if !m["content"].is_string() && !m["content"].is_null() {
            return Err(format!(
                "json: cannot unmarshal {} into Go struct field Message.messages.content of type string (messages[{i}])",
                if m["content"].is_array() { "array" } else { "object" }
            ));
        }
        for img in m["images"].as_array().into_iter().flatten() {
            if !img.as_str().is_some_and(base64) {
                return Err(format!("illegal base64 data in messages[{i}].images"));
            }
        }
        for tc in m["tool_calls"].as_array().into_iter().flatten() {
            if !tc["function"]["arguments"].is_object() {
                return Err("json: cannot unmarshal string into Go struct field ToolCallFunction.messages.tool_calls.function.arguments of type api.ToolCallFunctionArguments".into());
            }
        }
    }
    Ok(())
}

/// The text of the last `user` message.
fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// One answer line; `done` carries the finish and the counts.
fn line(model: &str, message: Value, done: Option<(&str, &str)>) -> Value {
    let mut v = json!({"model": model, "created_at": "2025-01-01T00:00:00.000000Z",
                       "message": message, "done": done.is_some()});
    if let Some((prompt, answer)) = done {
        let p = (prompt.len() as u64).div_ceil(4).max(1);
        let c = (answer.len() as u64).div_ceil(4).max(1);
        v["done_reason"] = "stop".into();
        v["total_duration"] = 1_000_000u64.into();
        v["load_duration"] = 1_000u64.into();
        v["prompt_eval_count"] = p.into();
        v["prompt_eval_duration"] = 10_000u64.into();
        v["eval_count"] = c.into();
        v["eval_duration"] = 100_000u64.into();
    }
    v
}

fn text_message(t: &str) -> Value {
    json!({"role": "assistant", "content": t})
}

fn frame(v: &Value) -> Bytes {
    Bytes::from(format!("{v}\n"))
}

/// The lines of a streamed text answer: one per word, then the `done` line.
fn text_lines(model: &str, text: &str, prompt: &str) -> Vec<Bytes> {
    let mut out: Vec<Bytes> = text
        .split_inclusive(' ')
        .map(|piece| frame(&line(model, text_message(piece), None)))
        .collect();
    out.push(frame(&line(model, text_message(""), Some((prompt, text)))));
    out
}

fn ndjson(body: Body) -> Response {
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn lines(frames: Vec<Bytes>) -> Response {
    ndjson(Body::from_stream(stream::iter(
        frames.into_iter().map(Ok::<_, std::io::Error>),
    )))
}

fn answer(model: &str, text: &str, prompt: &str, streamed: bool) -> Response {
    if streamed {
        lines(text_lines(model, text, prompt))
    } else {
        axum::Json(line(model, text_message(text), Some((prompt, text)))).into_response()
    }
}

/// An answer made of tool calls: the calls in one line, then the `done` line.
fn tool_calls(model: &str, prompt: &str, calls: &[ScriptedCall], streamed: bool) -> Response {
    let wire: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let args: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
            json!({"function": {"index": i, "name": c.name, "arguments": args}})
        })
        .collect();
    let all_args: String = calls.iter().map(|c| c.arguments.as_str()).collect();
    let message = json!({"role": "assistant", "content": "", "tool_calls": wire});
    if streamed {
        lines(vec![
            frame(&line(model, message, None)),
            frame(&line(model, text_message(""), Some((prompt, &all_args)))),
        ])
    } else {
        axum::Json(line(model, message, Some((prompt, &all_args)))).into_response()
    }
}

async fn chat(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return error(400, &format!("invalid character in request body: {e}")),
    };
    let behavior = shared.behavior(uri.path(), headers, &body);
    if let Err(message) = validate(&body) {
        return error(400, &message);
    }
    let model = body["model"].as_str().unwrap_or("mock").to_string();
    // Ollama streams unless told not to.
    let streamed = body["stream"] != false;
    let prompt = last_user_text(&body);
    let default_text = format!("mock reply to: {prompt}");
    match behavior {
        None => answer(&model, &default_text, &prompt, streamed),
        Some(Behavior::Text(t)) => answer(&model, &t, &prompt, streamed),
        Some(Behavior::Status(code, v)) => scripted_error(code, &v),
        Some(Behavior::Delay(d)) => {
            tokio::time::sleep(d).await;
            answer(&model, &default_text, &prompt, streamed)
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
            streamed,
        ),
        Some(Behavior::ToolCalls(calls)) => tool_calls(&model, &prompt, &calls, streamed),
        Some(Behavior::PausedStream { first, rest }) => {
            let first = frame(&line(&model, text_message(&first), None));
            ndjson(crate::gated(
                shared.clone(),
                vec![first],
                Some(text_lines(&model, &rest, &prompt)),
            ))
        }
        Some(Behavior::CutStream { first }) => {
            let first = frame(&line(&model, text_message(&first), None));
            ndjson(crate::gated(shared.clone(), vec![first], None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_catches_untranslated_requests() {
        let ok = json!({"model": "m", "messages": [{"role": "user", "content": "x", "images": ["aGk="]},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}]});
        assert_eq!(validate(&ok), Ok(()));
        let mut bad = ok.clone();
        bad["messages"][1]["tool_calls"][0]["function"]["arguments"] = "{\"a\":1}".into();
        assert!(validate(&bad).unwrap_err().contains("arguments"));
        let mut bad = ok.clone();
        bad["messages"][0]["images"][0] = "data:image/png;base64,aGk=".into();
        assert!(validate(&bad).unwrap_err().contains("base64"));
        let mut bad = ok;
        bad["messages"][0]["content"] = json!([{"type": "text", "text": "x"}]);
        assert!(validate(&bad).unwrap_err().contains("array"));
    }
}
