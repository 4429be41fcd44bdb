//! The mock's AWS Bedrock runtime: `POST /model/{modelId}/converse` (JSON) and
//! `/model/{modelId}/converse-stream` (`application/vnd.amazon.eventstream`: binary
//! frames with their CRCs, one Converse event each: messageStart, contentBlockStart,
//! contentBlockDelta, contentBlockStop, messageStop, metadata). Errors are Bedrock's
//! `{"message"}` bodies with the error type in `x-amzn-errortype`.
//!
//! Every request must carry a SigV4 `Authorization` for service `bedrock` made with
//! [`ACCESS_KEY_ID`] / [`SECRET_ACCESS_KEY`]: the mock recomputes the signature from the
//! request it received (this implementation, independent of the AWS SDK's) and answers
//! 403 as AWS does when it differs. Refused requests are recorded but take no scripted
//! behaviour.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::stream;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{Behavior, ScriptedCall, Shared};

/// The access key id the mock accepts.
pub const ACCESS_KEY_ID: &str = "AKIAMOCKBEDROCKTEST1";
/// The secret the mock checks signatures with.
pub const SECRET_ACCESS_KEY: &str = "mockBedrockSecretKey/0123456789abcdefghij";

const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/model/{model}/converse", post(converse))
        .route("/model/{model}/converse-stream", post(converse_stream))
}

async fn converse(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    handle(shared, &method, uri, headers, bytes, false).await
}

async fn converse_stream(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    handle(shared, &method, uri, headers, bytes, true).await
}

/// Bedrock's error type for an HTTP status.
fn error_type(code: u16) -> &'static str {
    match code {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// A Bedrock error answer. A scripted body in Bedrock's shape (`{"message"}`) is sent as
/// it is; another (OpenAI's `{"error":{"message"}}`, say) is rewritten into it.
fn bedrock_error(code: u16, kind: &str, body: Value) -> Response {
    let body = if body["message"].is_string() {
        body
    } else {
        let message = body["error"]["message"]
            .as_str()
            .or(body["error"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string());
        json!({"message": message})
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, axum::Json(body)).into_response();
    let kind = format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/");
    resp.headers_mut()
        .insert("x-amzn-errortype", kind.parse().unwrap());
    resp
}

/// Why AWS refuses a request's signature: its error type and message (answered 403).
struct Denied(&'static str, String);

fn denied(kind: &'static str, message: &str) -> Denied {
    Denied(kind, message.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// SigV4's URI encoding: every byte but the unreserved ones as `%XX`.
fn uri_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The parts of an `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` header.
struct Authorization<'a> {
    key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim) {
        match part.split_once('=')? {
            ("Credential", v) => credential = Some(v),
            ("SignedHeaders", v) => signed = Some(v),
            ("Signature", v) => signature = Some(v),
            _ => return None,
        }
    }
    let scope: Vec<&str> = credential?.split('/').collect();
    let [key_id, date, region, service, "aws4_request"] = scope[..] else {
        return None;
    };
    Some(Authorization {
        key_id,
        date,
        region,
        service,
        signed_headers: signed?.split(';').collect(),
        signature: signature?,
    })
}

/// Checks the request's SigV4 signature as AWS does.
fn verify_signature(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Denied> {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(denied(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let Some(auth) = parse_authorization(value) else {
        return Err(denied(
            "IncompleteSignatureException",
            &format!("Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters: {value}"),
        ));
    };
    if auth.key_id != ACCESS_KEY_ID {
        return Err(denied(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    if auth.service != "bedrock" {
        return Err(denied(
            "InvalidSignatureException",
            &format!(
                "Credential should be scoped to correct service: 'bedrock'. (got '{}')",
                auth.service
            ),
        ));
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !amz_date.starts_with(auth.date) || amz_date.len() != 16 {
        return Err(denied(
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.",
        ));
    }
    for needed in ["host", "x-amz-date"] {
        if !auth.signed_headers.contains(&needed) {
            return Err(denied(
                "InvalidSignatureException",
                &format!("'{needed}' must be a 'SignedHeader' in the AWS Authorization."),
            ));
        }
    }
    if headers.contains_key("x-amz-security-token")
        && !auth.signed_headers.contains(&"x-amz-security-token")
    {
        return Err(denied(
            "InvalidSignatureException",
            "'x-amz-security-token' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let mut sorted = auth.signed_headers.clone();
    sorted.sort_unstable();
    let mut canonical_headers = String::new();
    for name in &sorted {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    // Paths are signed double-encoded: the encoded path, each segment encoded again.
    let canonical_uri = uri
        .path()
        .split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/");
    let mut query: Vec<(String, String)> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_request = format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{}\n{}",
        sorted.join(";"),
        sha256_hex(body)
    );
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let mut key = hmac(format!("AWS4{SECRET_ACCESS_KEY}").as_bytes(), auth.date);
    for part in [auth.region, auth.service, "aws4_request"] {
        key = hmac(&key, part);
    }
    let expected = hex(&hmac(&key, &string_to_sign));
    if expected != auth.signature {
        return Err(denied(
            "InvalidSignatureException",
            &format!(
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\n\
                 The Canonical String for this request should have been\n'{canonical_request}'\n\n\
                 The String-to-Sign should have been\n'{string_to_sign}'\n"
            ),
        ));
    }
    Ok(())
}

/// One event-stream message with string headers.
pub(crate) fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7); // string
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = (16 + h.len() + payload.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

/// A Converse event as a frame.
fn event(kind: &str, payload: Value) -> Bytes {
    frame(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

/// The text of the last user turn (its text blocks; tool results are not text).
fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_array())
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn usage(prompt: &str, answer: &str) -> Value {
    let p = (prompt.len() as u64).div_ceil(4).max(1);
    let c = (answer.len() as u64).div_ceil(4).max(1);
    json!({"inputTokens": p, "outputTokens": c, "totalTokens": p + c})
}

fn json_answer(content: Value, stop: &str, usage: Value) -> Response {
    let mut resp = axum::Json(json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": usage,
        "metrics": {"latencyMs": 1},
    }))
    .into_response();
    resp.headers_mut()
        .insert("x-amzn-requestid", "mock-bedrock-request".parse().unwrap());
    resp
}

fn event_stream(body: Body) -> Response {
    Response::builder()
        .header("content-type", EVENT_STREAM)
        .header("x-amzn-requestid", "mock-bedrock-request")
        .body(body)
        .unwrap()
}

/// The frames of a text answer after `messageStart`: one delta per word, then the stop
/// and the usage.
fn text_frames(text: &str, prompt: &str) -> Vec<Bytes> {
    let mut frames: Vec<Bytes> = text
        .split_inclusive(' ')
        .map(|piece| {
            event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": piece}, "p": "abcdefgh"}),
            )
        })
        .collect();
    frames.push(event("contentBlockStop", json!({"contentBlockIndex": 0})));
    frames.push(event("messageStop", json!({"stopReason": "end_turn"})));
    frames.push(event(
        "metadata",
        json!({"usage": usage(prompt, text), "metrics": {"latencyMs": 1}}),
    ));
    frames
}

fn message_start() -> Bytes {
    event("messageStart", json!({"role": "assistant"}))
}

fn text_answer(text: &str, prompt: &str, stream: bool) -> Response {
    if !stream {
        return json_answer(json!([{"text": text}]), "end_turn", usage(prompt, text));
    }
    let mut frames = vec![message_start()];
    frames.extend(text_frames(text, prompt));
    event_stream(Body::from_stream(stream::iter(
        frames.into_iter().map(Ok::<_, std::io::Error>),
    )))
}

fn tool_answer(calls: &[ScriptedCall], prompt: &str, stream: bool) -> Response {
    let all_args: String = calls.iter().map(|c| c.arguments.as_str()).collect();
    if !stream {
        let content: Vec<Value> = calls
            .iter()
            .map(|c| {
                let input: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                json!({"toolUse": {"toolUseId": c.id, "name": c.name, "input": input}})
            })
            .collect();
        return json_answer(Value::Array(content), "tool_use", usage(prompt, &all_args));
    }
    let mut frames = vec![message_start()];
    for (i, c) in calls.iter().enumerate() {
        frames.push(event(
            "contentBlockStart",
            json!({"contentBlockIndex": i, "start": {"toolUse": {"toolUseId": c.id, "name": c.name}}}),
        ));
        for part in crate::halves(&c.arguments) {
            frames.push(event(
                "contentBlockDelta",
                json!({"contentBlockIndex": i, "delta": {"toolUse": {"input": part}}}),
            ));
        }
        frames.push(event("contentBlockStop", json!({"contentBlockIndex": i})));
    }
    frames.push(event("messageStop", json!({"stopReason": "tool_use"})));
    frames.push(event(
        "metadata",
        json!({"usage": usage(prompt, &all_args), "metrics": {"latencyMs": 1}}),
    ));
    event_stream(Body::from_stream(stream::iter(
        frames.into_iter().map(Ok::<_, std::io::Error>),
    )))
}

async fn handle(
    shared: Arc<Shared>,
    method: &Method,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
    stream: bool,
) -> Response {
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            let msg = format!("mock: bad JSON: {e}");
            return bedrock_error(400, "ValidationException", json!({ "message": msg }));
        }
    };
    if let Err(Denied(kind, message)) = verify_signature(method, &uri, &headers, &bytes) {
        shared.record_only(uri.path(), headers, &body);
        return bedrock_error(403, kind, json!({ "message": message }));
    }
    if body.get("modelId").is_some() || body.get("model").is_some() {
        return bedrock_error(
            400,
            "ValidationException",
            json!({"message": "mock: the model goes in the path, not the body"}),
        );
    }
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let prompt = last_user_text(&body);
    let behavior = shared.behavior(uri.path(), headers, &body);
    if stream && !accept.is_empty() && accept != EVENT_STREAM && accept != "*/*" {
        let msg = format!("mock: converse-stream answers {EVENT_STREAM}, not {accept}");
        return bedrock_error(400, "ValidationException", json!({ "message": msg }));
    }
    let default_text = format!("mock reply to: {prompt}");
    match behavior {
        None => text_answer(&default_text, &prompt, stream),
        Some(Behavior::Text(t)) => text_answer(&t, &prompt, stream),
        Some(Behavior::Status(code, v)) => bedrock_error(code, error_type(code), v),
        Some(Behavior::Delay(d)) => {
            tokio::time::sleep(d).await;
            text_answer(&default_text, &prompt, stream)
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
        }) => tool_answer(
            &[ScriptedCall {
                id,
                name,
                arguments,
            }],
            &prompt,
            stream,
        ),
        Some(Behavior::ToolCalls(calls)) => tool_answer(&calls, &prompt, stream),
        Some(Behavior::PausedStream { first, rest }) => {
            let head = vec![
                message_start(),
                event(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"text": first}}),
                ),
            ];
            event_stream(crate::gated(
                shared.clone(),
                head,
                Some(text_frames(&rest, &prompt)),
            ))
        }
        Some(Behavior::CutStream { first }) => {
            let head = vec![
                message_start(),
                event(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": 0, "delta": {"text": first}}),
                ),
            ];
            event_stream(crate::gated(shared.clone(), head, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AWS SigV4 test suite's `post-vanilla` case, checked with this implementation's
    /// pieces (its key and service differ from the mock's, so the pieces are reused).
    #[test]
    fn signing_pieces_match_the_aws_test_suite() {
        let canonical = "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n{}",
            sha256_hex(canonical.as_bytes())
        );
        let mut key = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830");
        for part in ["us-east-1", "service", "aws4_request"] {
            key = hmac(&key, part);
        }
        assert_eq!(
            hex(&hmac(&key, &string_to_sign)),
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
    }

    #[test]
    fn paths_are_encoded_again_for_signing() {
        assert_eq!(
            uri_encode("anthropic.claude-v2%3A1"),
            "anthropic.claude-v2%253A1"
        );
        assert_eq!(uri_encode("a b"), "a%20b");
    }

    #[test]
    fn authorization_parses() {
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-west-2/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=abc",
        )
        .unwrap();
        assert_eq!(
            (a.key_id, a.date, a.region, a.service),
            ("AKID", "20240101", "us-west-2", "bedrock")
        );
        assert_eq!(a.signed_headers, ["content-type", "host", "x-amz-date"]);
        assert_eq!(a.signature, "abc");
        assert!(parse_authorization("Bearer x").is_none());
        assert!(parse_authorization("AWS4-HMAC-SHA256 Credential=AKID/20240101/bedrock/aws4_request, SignedHeaders=host, Signature=x").is_none());
    }
}
