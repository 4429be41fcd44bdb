//! The mock's Gemini API: `POST /v1beta/models/{model}:generateContent` (JSON) and
//! `:streamGenerateContent?alt=sse` (SSE `data:` lines, each a whole response chunk;
//! the last one carries `finishReason` and `usageMetadata`; no end marker). Errors are
//! in Google's shape `{"error":{"code","message","status"}}`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::stream;
use serde_json::{json, Value};

use crate::{Behavior, ScriptedCall, Shared};

/// This format's routes. The model and method share one path segment
/// (`gemini-x:generateContent`), split here rather than by the router.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v1beta/models/{target}", post(generate))
}

/// Google's RPC status name for an HTTP status.
fn rpc_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ if code >= 500 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

/// A Google error response. A scripted body already in Google's shape is sent as it is;
/// any other (an OpenAI-style `{"error":{"message"}}`, say) is rewritten into it, so one
/// script serves every format.
pub(crate) fn google_error(code: u16, body: Value) -> Response {
    let body = if body["error"]["status"].is_string() {
        body
    } else {
        let message = body["error"]["message"]
            .as_str()
            .or(body["error"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        json!({"error": {"code": code, "message": message, "status": rpc_status(code)}})
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

/// The text of the last `user` turn.
fn last_user_text(body: &Value) -> String {
    body["contents"]
        .as_array()
        .and_then(|c| c.iter().rev().find(|c| c["role"] == "user"))
        .and_then(|c| c["parts"].as_array())
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn usage(prompt: &str, answer: &str) -> Value {
    let p = (prompt.len() as u64).div_ceil(4).max(1);
    let c = (answer.len() as u64).div_ceil(4).max(1);
    json!({"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c})
}

/// One `GenerateContentResponse`.
fn response(
    model: &str,
    parts: Option<Value>,
    finish: Option<&str>,
    usage: Option<Value>,
) -> Value {
    let mut candidate = json!({"index": 0});
    if let Some(parts) = parts {
        candidate["content"] = json!({"role": "model", "parts": parts});
    }
    if let Some(f) = finish {
        candidate["finishReason"] = f.into();
    }
    let mut v = json!({"candidates": [candidate], "modelVersion": model, "responseId": "mock-gemini-response"});
    if let Some(u) = usage {
        v["usageMetadata"] = u;
    }
    v
}

/// An SSE frame, with the CRLF line ends Google's servers use.
fn frame(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\r\n\r\n"))
}

/// `text` in chunks of one word; the last chunk finishes and reports usage.
fn text_frames(model: &str, text: &str, prompt: &str) -> Vec<Bytes> {
    let mut pieces: Vec<&str> = text.split_inclusive(' ').collect();
    if pieces.is_empty() {
        pieces.push("");
    }
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let (finish, usage) = if i == last {
                (Some("STOP"), Some(usage(prompt, text)))
            } else {
                (None, None)
            };
            frame(&response(
                model,
                Some(json!([{"text": piece}])),
                finish,
                usage,
            ))
        })
        .collect()
}

fn sse(body: Body) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

fn answer(model: &str, text: &str, prompt: &str, stream: bool) -> Response {
    if stream {
        let frames = text_frames(model, text, prompt);
        sse(Body::from_stream(stream::iter(
            frames.into_iter().map(Ok::<_, std::io::Error>),
        )))
    } else {
        let v = response(
            model,
            Some(json!([{"text": text}])),
            Some("STOP"),
            Some(usage(prompt, text)),
        );
        axum::Json(v).into_response()
    }
}

/// An answer made of function calls (Gemini names no call ids; the scripted ids are not
/// sent).
fn tool_calls(model: &str, prompt: &str, calls: &[ScriptedCall], stream: bool) -> Response {
    let parts: Vec<Value> = calls
        .iter()
        .map(|c| {
            let args: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
            json!({"functionCall": {"name": c.name, "args": args}})
        })
        .collect();
    let all_args: String = calls.iter().map(|c| c.arguments.as_str()).collect();
    let usage = usage(prompt, &all_args);
    let parts = Value::Array(parts);
    if stream {
        // The calls in one chunk, then a finish-only chunk, as Gemini often sends.
        let frames = vec![
            frame(&response(model, Some(parts), None, None)),
            frame(&response(model, None, Some("STOP"), Some(usage))),
        ];
        sse(Body::from_stream(stream::iter(
            frames.into_iter().map(Ok::<_, std::io::Error>),
        )))
    } else {
        axum::Json(response(model, Some(parts), Some("STOP"), Some(usage))).into_response()
    }
}

async fn generate(
    State(shared): State<Arc<Shared>>,
    Path(target): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    answer_generate(shared, &target, &uri, headers, &bytes).await
}

/// Answers `{model}:generateContent` / `:streamGenerateContent` (`target`), on the Gemini
/// API or Vertex AI.
pub(crate) async fn answer_generate(
    shared: Arc<Shared>,
    target: &str,
    uri: &Uri,
    headers: HeaderMap,
    bytes: &[u8],
) -> Response {
    let (model, stream) = match target.rsplit_once(':') {
        Some((model, "generateContent")) => (model.to_string(), false),
        Some((model, "streamGenerateContent")) => (model.to_string(), true),
        _ => {
            let msg = format!("mock: no method in `{target}`");
            return google_error(404, json!({"error": {"message": msg}}));
        }
    };
    let body: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            let msg = format!("mock: bad JSON: {e}");
            return google_error(400, json!({"error": {"message": msg}}));
        }
    };
    let prompt = last_user_text(&body);
    let behavior = shared.behavior(uri.path(), headers, &body);
    let alt_sse = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "alt=sse"));
    if stream && !alt_sse {
        // Without alt=sse Google streams one JSON array, which memproxy does not read.
        let msg = "mock: streamGenerateContent is served only with alt=sse";
        return google_error(400, json!({"error": {"message": msg}}));
    }
    let default_text = format!("mock reply to: {prompt}");
    match behavior {
        None => answer(&model, &default_text, &prompt, stream),
        Some(Behavior::Text(t)) => answer(&model, &t, &prompt, stream),
        Some(Behavior::Status(code, v)) => google_error(code, v),
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
        Some(Behavior::PausedStream { first, rest }) => {
            let first = frame(&response(
                &model,
                Some(json!([{"text": first}])),
                None,
                None,
            ));
            let rest = text_frames(&model, &rest, &prompt);
            sse(crate::gated(shared.clone(), vec![first], Some(rest)))
        }
        Some(Behavior::CutStream { first }) => {
            let first = frame(&response(
                &model,
                Some(json!([{"text": first}])),
                None,
                None,
            ));
            sse(crate::gated(shared.clone(), vec![first], None))
        }
    }
}
