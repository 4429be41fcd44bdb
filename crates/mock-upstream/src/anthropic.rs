//! The mock's Anthropic Messages (`POST /v1/messages`, JSON and named SSE events). It
//! checks requests the way Anthropic does where translation bugs would show (required
//! fields, roles, empty text, tool results answering the previous turn's tool calls),
//! honours the same scripted [`Behavior`]s as the OpenAI route, and records requests.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::{halves, last_user_text, Behavior, ScriptedCall, Shared};

/// This format's routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v1/messages", post(messages))
}

fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

fn error(status: u16, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": error_type(status), "message": message}});
    status_response(status, body)
}

fn status_response(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

/// A scripted error body in Anthropic's shape: kept when it already is, converted from
/// the OpenAI shape (`{"error":{"message"}}`) otherwise, so one script serves every route.
fn anthropic_error_body(status: u16, v: Value) -> Value {
    if v["type"] == "error" {
        return v;
    }
    let message = v["error"]["message"]
        .as_str()
        .or(v["message"].as_str())
        .unwrap_or("mock error")
        .to_string();
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

/// What Anthropic itself would refuse, as its 400 message. On Vertex AI (`vertex`) the
/// model is named by the URL and the version by the body.
fn validate(body: &Value, vertex: bool) -> Result<(), String> {
    if vertex {
        if body.get("model").is_some() {
            return Err("model: Extra inputs are not permitted".into());
        }
        if body["anthropic_version"] != "vertex-2023-10-16" {
            return Err("anthropic_version: Input should be 'vertex-2023-10-16'".into());
        }
    } else if !body["model"].is_string() {
        return Err("model: Field required".into());
    }
    if !body["max_tokens"].is_u64() {
        return Err("max_tokens: Field required".into());
    }
    let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
        return Err("messages: at least one message is required".into());
    };
    let mut previous_tool_ids: Vec<&str> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        // Claude Code 2.1 sends `system` messages between turns, and Anthropic takes them.
        if role != "user" && role != "assistant" && role != "system" {
            return Err(format!(
                "messages.{i}.role: Input should be 'user', 'assistant' or 'system'"
            ));
        }
        let blocks: Vec<&Value> = match &m["content"] {
            Value::String(_) => Vec::new(),
            Value::Array(b) => b.iter().collect(),
            _ => {
                return Err(format!(
                    "messages.{i}.content: Input should be a valid list"
                ))
            }
        };
        let mut tool_ids = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            match b["type"].as_str() {
                Some("text") if b["text"].as_str().is_none_or(str::is_empty) => {
                    return Err(format!(
                        "messages.{i}.content.{j}: text content blocks must be non-empty"
                    ))
                }
                Some("tool_use") => {
                    if !b["input"].is_object() {
                        return Err(format!(
                            "messages.{i}.content.{j}.tool_use.input: Input should be a valid dictionary"
                        ));
                    }
                    tool_ids.push(b["id"].as_str().unwrap_or_default());
                }
                Some("tool_result") => {
                    let id = b["tool_use_id"].as_str().unwrap_or_default();
                    if role != "user" || !previous_tool_ids.contains(&id) {
                        return Err(format!(
                            "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. \
                             Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        ));
                    }
                }
                Some(_) => {}
                None => return Err(format!("messages.{i}.content.{j}.type: Field required")),
            }
        }
        previous_tool_ids = tool_ids;
    }
    Ok(())
}

fn usage(prompt: &str, text: &str) -> Value {
    let p = (prompt.len() as u64).div_ceil(4).max(1);
    let c = (text.len() as u64).div_ceil(4).max(1);
    json!({"input_tokens": p, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
           "output_tokens": c})
}

fn message(model: &str, content: Value, stop_reason: &str, usage: Value) -> Value {
    json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
           "content": content, "stop_reason": stop_reason, "stop_sequence": null, "usage": usage})
}

fn event(name: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `message_start`, the opening of block 0 (`block`), and a `ping`, as Anthropic sends them.
fn opening(model: &str, prompt: &str, block: Value) -> Vec<Bytes> {
    let mut u = usage(prompt, "");
    u["output_tokens"] = 1.into();
    vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_mock", "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": u}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": block}),
        ),
        event("ping", json!({"type": "ping"})),
    ]
}

fn text_delta(text: &str) -> Bytes {
    event(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": text}}),
    )
}

/// Closes block 0 and the message.
fn closing(stop_reason: &str, output: &str) -> Vec<Bytes> {
    let c = (output.len() as u64).div_ceil(4).max(1);
    vec![
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        event(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                   "usage": {"output_tokens": c}}),
        ),
        event("message_stop", json!({"type": "message_stop"})),
    ]
}

fn text_frames(text: &str) -> Vec<Bytes> {
    text.split_inclusive(' ').map(text_delta).collect()
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

fn answer(model: &str, text: &str, prompt: &str, stream: bool) -> Response {
    if !stream {
        let body = message(
            model,
            json!([{"type": "text", "text": text}]),
            "end_turn",
            usage(prompt, text),
        );
        return axum::Json(body).into_response();
    }
    let mut all = opening(model, prompt, json!({"type": "text", "text": ""}));
    all.extend(text_frames(text));
    all.extend(closing("end_turn", text));
    frames(all)
}

/// An answer made of tool calls (`tool_use` blocks), as a message or its events.
fn tool_calls(model: &str, prompt: &str, calls: &[ScriptedCall], stream: bool) -> Response {
    let all_args: String = calls.iter().map(|c| c.arguments.as_str()).collect();
    let input = |arguments: &str| {
        serde_json::from_str::<Value>(arguments)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}))
    };
    if !stream {
        let blocks: Vec<Value> = calls
            .iter()
            .map(|c| json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input(&c.arguments)}))
            .collect();
        let body = message(
            model,
            Value::Array(blocks),
            "tool_use",
            usage(prompt, &all_args),
        );
        return axum::Json(body).into_response();
    }
    let mut all = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        let block = json!({"type": "tool_use", "id": c.id, "name": c.name, "input": {}});
        if i == 0 {
            all.extend(opening(model, prompt, block));
        } else {
            all.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": i, "content_block": block}),
            ));
        }
        for part in halves(&c.arguments) {
            all.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": i,
                       "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
        }
        if i + 1 < calls.len() {
            all.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": i}),
            ));
        }
    }
    let mut tail = closing("tool_use", &all_args);
    tail[0] = event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": calls.len().saturating_sub(1)}),
    );
    all.extend(tail);
    frames(all)
}

async fn messages(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    answer_messages(shared, &uri, headers, &bytes, None).await
}

/// Answers a Messages request; `vertex` is the model and whether the method streams when
/// it came through Vertex AI's `rawPredict` / `streamRawPredict`.
pub(crate) async fn answer_messages(
    shared: Arc<Shared>,
    uri: &axum::http::Uri,
    headers: HeaderMap,
    bytes: &[u8],
    vertex: Option<(&str, bool)>,
) -> Response {
    let body: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return error(400, &format!("mock: bad JSON: {e}")),
    };
    let model = match vertex {
        Some((model, _)) => model.to_string(),
        None => body["model"].as_str().unwrap_or("mock").to_string(),
    };
    let stream = body["stream"] == true;
    let prompt = last_user_text(&body);
    let behavior = shared.behavior(uri.path(), headers, &body);
    if let Err(message) = validate(&body, vertex.is_some()) {
        return error(400, &message);
    }
    if vertex.is_some_and(|(_, streams)| streams != stream) {
        return error(
            400,
            "mock: `stream` must be true exactly for streamRawPredict",
        );
    }
    let default_text = format!("mock reply to: {prompt}");
    match behavior {
        None => answer(&model, &default_text, &prompt, stream),
        Some(Behavior::Text(t)) => answer(&model, &t, &prompt, stream),
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
        ),
        Some(Behavior::ToolCalls(calls)) => tool_calls(&model, &prompt, &calls, stream),
        // Vertex AI's own refusals (quota, auth) keep Google's shape.
        Some(Behavior::Status(code, v)) if vertex.is_some() && v["error"]["status"].is_string() => {
            status_response(code, v)
        }
        Some(Behavior::Status(code, v)) => status_response(code, anthropic_error_body(code, v)),
        Some(Behavior::Delay(d)) => {
            tokio::time::sleep(d).await;
            answer(&model, &default_text, &prompt, stream)
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
            let mut head = opening(&model, &prompt, json!({"type": "text", "text": ""}));
            head.push(text_delta(&first));
            let mut tail = text_frames(&rest);
            tail.extend(closing("end_turn", &format!("{first}{rest}")));
            crate::sse(crate::gated(shared, head, Some(tail)))
        }
        Some(Behavior::CutStream { first }) => {
            let mut head = opening(&model, &prompt, json!({"type": "text", "text": ""}));
            head.push(text_delta(&first));
            crate::sse(crate::gated(shared, head, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_catches_what_anthropic_refuses() {
        let ok = json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]}
        ]});
        assert_eq!(validate(&ok, false), Ok(()));
        let mut bad = ok.clone();
        bad["messages"][2]["content"][0]["tool_use_id"] = "t2".into();
        assert!(validate(&bad, false).unwrap_err().contains("tool_use_id"));
        let mut bad = ok.clone();
        bad.as_object_mut().unwrap().remove("max_tokens");
        assert!(validate(&bad, false).unwrap_err().starts_with("max_tokens"));
        let mut bad = ok.clone();
        bad["messages"][0]["role"] = "tool".into();
        assert!(validate(&bad, false).unwrap_err().contains("role"));
        // Claude Code 2.1 sends system-role messages, which Anthropic takes.
        let mut sys = ok.clone();
        sys["messages"][0]["role"] = "system".into();
        assert!(validate(&sys, false).is_ok());
        let mut bad = ok;
        bad["messages"][0]["content"] = json!([{"type": "text", "text": ""}]);
        assert!(validate(&bad, false).unwrap_err().contains("non-empty"));
    }

    #[test]
    fn scripted_errors_take_anthropic_shape() {
        let v = anthropic_error_body(429, json!({"error": {"message": "slow"}}));
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}})
        );
        let native =
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "x"}});
        assert_eq!(anthropic_error_body(529, native.clone()), native);
    }
}
