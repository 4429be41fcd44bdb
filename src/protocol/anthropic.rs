//! Anthropic Messages, both directions. Requests: [`request_to_chat`] (client → internal
//! chat shape) and [`chat_to_request`] / [`native_with_model`] (→ upstream), in
//! `request.rs`. Answers: message JSON ([`decode_completion`], [`encode_completion`], here)
//! and named SSE events ([`EventDecoder`], [`EventEncoder`], in `stream.rs`). Errors in
//! Anthropic's shape, here. The wire types are private to this module and read borrowed
//! from the bytes; only opaque parts (tool schemas) become `serde_json::Value`s.

mod request;
mod stream;

pub use request::{chat_to_request, native_with_model, request_to_chat, RequestError};
pub use stream::{EventDecoder, EventEncoder};

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::ir::{self, Completion, DecodeError, ErrorInfo, FinishReason};

/// The API version memproxy speaks to Anthropic (`anthropic-version` header).
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` sent upstream when a chat request has none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

// ---------------------------------------------------------------------------------------
// Wire types, read side (requests, answers and stream events share the block shape).

/// A string or an array of content blocks (`system`, message and tool-result content).
enum TextOrBlocks<'a> {
    Text(Cow<'a, str>),
    Blocks(Vec<Block<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for TextOrBlocks<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = TextOrBlocks<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of content blocks")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TextOrBlocks::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOrBlocks::Text(Cow::Owned(v.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut blocks = Vec::with_capacity(seq.size_hint().unwrap_or(2));
                while let Some(b) = seq.next_element()? {
                    blocks.push(b);
                }
                Ok(TextOrBlocks::Blocks(blocks))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// One content block, flat: a block sets the fields of its `type`. Flat rather than a
/// tagged enum so that `input` stays raw JSON and unknown block types are tolerated.
#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    source: Option<Source<'a>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
    #[serde(default, borrow)]
    tool_use_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<TextOrBlocks<'a>>,
    #[serde(default)]
    is_error: Option<bool>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    title: Option<Cow<'a, str>>,
}

/// An image or document source.
#[derive(Deserialize)]
struct Source<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    media_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    url: Option<Cow<'a, str>>,
}

/// A message as Anthropic returns it (also `message_start.message`).
#[derive(Default, Deserialize)]
struct WireMessage<'a> {
    #[serde(default, borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    model: Cow<'a, str>,
    #[serde(default, borrow)]
    content: Vec<Block<'a>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Anthropic's token counts; any field may be absent or null.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Later counts replace earlier ones, field by field (message_delta after message_start).
    fn merge(&mut self, later: WireUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
    }

    /// Anthropic counts cached prompt tokens apart from `input_tokens`; the IR includes them.
    fn to_ir(self) -> ir::Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let created = self.cache_creation_input_tokens.unwrap_or(0);
        ir::Usage {
            input_tokens: self.input_tokens.unwrap_or(0) + read + created,
            output_tokens: self.output_tokens.unwrap_or(0),
            cached_input_tokens: read,
            cache_creation_input_tokens: created,
            reasoning_tokens: 0,
        }
    }
}

/// Usage as written to Anthropic clients.
#[derive(Serialize)]
struct OutUsage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

impl From<ir::Usage> for OutUsage {
    fn from(u: ir::Usage) -> Self {
        Self {
            input_tokens: u
                .input_tokens
                .saturating_sub(u.cached_input_tokens + u.cache_creation_input_tokens),
            cache_creation_input_tokens: u.cache_creation_input_tokens,
            cache_read_input_tokens: u.cached_input_tokens,
            output_tokens: u.output_tokens,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Wire types, write side.

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutBlock<'a> {
    Text {
        text: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    Image {
        source: OutSource<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    Document {
        source: OutSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Input<'a>,
    },
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        content: Vec<OutBlock<'a>>,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    RedactedThinking {
        data: &'a str,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

/// A tool call's input: the arguments' JSON object as given, or `{}`.
#[derive(Serialize)]
#[serde(untagged)]
enum Input<'a> {
    Raw(&'a RawValue),
    Empty {},
}

impl<'a> Input<'a> {
    /// Tool arguments are JSON text; Anthropic needs an object, so anything else is `{}`.
    fn parse(arguments: &'a str) -> Self {
        match serde_json::from_str::<&RawValue>(arguments) {
            Ok(raw) if raw.get().starts_with('{') => Input::Raw(raw),
            _ => Input::Empty {},
        }
    }
}

// ---------------------------------------------------------------------------------------
// Complete answers.

/// The finish reason for Anthropic's `stop_reason`.
fn finish_from(s: &str) -> FinishReason {
    match s {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_string()),
    }
}

/// Anthropic's `stop_reason` for a finish reason.
fn stop_reason(r: &FinishReason) -> &str {
    match r {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
        FinishReason::Other(s) => match s.as_str() {
            "pause_turn" | "stop_sequence" | "model_context_window_exceeded" => s,
            _ => "end_turn",
        },
    }
}

/// An Anthropic message id: the upstream's when it is one, else a fresh one.
fn message_id(upstream: &str) -> String {
    if upstream.starts_with("msg_") {
        upstream.to_string()
    } else {
        format!("msg_{}", uuid::Uuid::new_v4().simple())
    }
}

/// Decodes an Anthropic message body.
pub fn decode_completion(body: &[u8]) -> Result<Completion, DecodeError> {
    let w: WireMessage = serde_json::from_slice(body)
        .map_err(|e| DecodeError(format!("invalid Anthropic message: {e}")))?;
    let mut c = Completion {
        id: w.id.into_owned(),
        model: w.model.into_owned(),
        created: ir::now_secs(),
        finish_reason: w.stop_reason.as_deref().map(finish_from),
        usage: w.usage.unwrap_or_default().to_ir(),
        ..Default::default()
    };
    for b in w.content {
        match b.kind.as_ref() {
            "text" => c.text.push_str(b.text.as_deref().unwrap_or_default()),
            "thinking" => {
                let r = c.reasoning.get_or_insert_with(String::new);
                r.push_str(b.thinking.as_deref().unwrap_or_default());
                if let Some(s) = b.signature {
                    c.reasoning_signature = Some(s.into_owned());
                }
            }
            "tool_use" => c.tool_calls.push(ir::ToolCall {
                id: b.id.map(Cow::into_owned).unwrap_or_default(),
                name: b.name.map(Cow::into_owned).unwrap_or_default(),
                arguments: b.input.map_or("{}", RawValue::get).to_string(),
            }),
            _ => {}
        }
    }
    Ok(c)
}

#[derive(Serialize)]
struct OutCompletion<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<OutBlock<'a>>,
    stop_reason: &'a str,
    stop_sequence: Option<&'a str>,
    usage: OutUsage,
}

/// Encodes a completion as an Anthropic message body.
pub fn encode_completion(c: &Completion) -> Bytes {
    let mut content = Vec::with_capacity(c.tool_calls.len() + 2);
    if let Some(r) = &c.reasoning {
        content.push(OutBlock::Thinking {
            thinking: r,
            signature: c.reasoning_signature.as_deref().unwrap_or_default(),
        });
    }
    if !c.text.is_empty() || c.tool_calls.is_empty() {
        content.push(OutBlock::Text {
            text: Cow::Borrowed(&c.text),
            cache_control: None,
        });
    }
    for tc in &c.tool_calls {
        content.push(OutBlock::ToolUse {
            id: &tc.id,
            name: &tc.name,
            input: Input::parse(&tc.arguments),
        });
    }
    let reason = match &c.finish_reason {
        Some(r) => stop_reason(r),
        None if c.tool_calls.is_empty() => "end_turn",
        None => "tool_use",
    };
    let out = OutCompletion {
        id: message_id(&c.id),
        kind: "message",
        role: "assistant",
        model: &c.model,
        content,
        stop_reason: reason,
        stop_sequence: None,
        usage: c.usage.into(),
    };
    Bytes::from(serde_json::to_vec(&out).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------
// Errors.

/// Anthropic's error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
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

/// The HTTP status Anthropic uses for an error `type` (for errors met inside a stream).
pub fn status_for_error_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// An error body in Anthropic's shape, its type chosen from `status`.
pub fn error_json(status: u16, message: &str) -> Bytes {
    error_body(error_type(status), message)
}

/// An error body in Anthropic's shape for `err`, keeping an Anthropic error type that
/// came from the upstream (`overloaded_error`, …) and choosing one from the status otherwise.
pub fn encode_error(err: &ErrorInfo) -> Bytes {
    let kind = if status_for_error_type(&err.kind) != 500 || err.kind == "api_error" {
        err.kind.as_str()
    } else {
        error_type(err.status)
    };
    error_body(kind, &err.message)
}

fn error_body(kind: &str, message: &str) -> Bytes {
    Bytes::from(json!({"type": "error", "error": {"type": kind, "message": message}}).to_string())
}

/// An error Anthropic reported: its `type` and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub kind: String,
    pub message: String,
}

/// The `error` member of an error body or stream event.
#[derive(Deserialize)]
struct WireError<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    message: Cow<'a, str>,
}

#[derive(Deserialize)]
struct WireErrorEnvelope<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    error: WireError<'a>,
}

/// Reads an Anthropic error body (`{"type":"error","error":{"type","message"}}`), as
/// sent with an error status or as an `error` stream event.
pub fn parse_error(body: &[u8]) -> Option<UpstreamError> {
    let env: WireErrorEnvelope = serde_json::from_slice(body).ok()?;
    if env.kind != "error" || env.error.message.is_empty() {
        return None;
    }
    Some(UpstreamError {
        kind: env.error.kind.into_owned(),
        message: env.error.message.into_owned(),
    })
}

#[cfg(test)]
mod tests;
