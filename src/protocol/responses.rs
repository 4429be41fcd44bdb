//! OpenAI Responses API (`POST /v1/responses`), both directions. Requests: a client's
//! request into the internal chat shape, its request fields echoed into answers, and the
//! conversation expanded for a native upstream (`request.rs`). Answers: response objects
//! ([`decode_completion`], [`encode_completion`], here) and the typed SSE events
//! ([`EventDecoder`], [`EventEncoder`], in `stream.rs`). The wire types are private to this
//! module and read borrowed from the bytes; only opaque parts (tool schemas, tool_choice)
//! become `serde_json::Value`s.
//!
//! Reasoning that Anthropic signed (extended thinking) becomes a `reasoning` item whose
//! `encrypted_content` carries the signature behind [`ANTHROPIC_SIGNATURE_PREFIX`], so a
//! client that sends the item back (Codex does, with `store: false`) gives Anthropic its
//! thinking block again. Encrypted reasoning from anyone else is dropped on the bridge.

mod request;
mod stream;

pub use request::{
    echo_fields, expand_for_native, join_items, parse_request, request_to_chat, InRequest,
    RequestError, Translated,
};
pub use stream::{failure_message, EventDecoder, EventEncoder};

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::ir::{self, Completion, DecodeError, FinishReason};

/// Marks the `encrypted_content` of reasoning items made from Anthropic thinking; the
/// thinking block's signature follows.
pub const ANTHROPIC_SIGNATURE_PREFIX: &str = "memproxy:anthropic-signature:";

/// The request fields every response object repeats, with OpenAI's defaults, used when
/// an answer is encoded without its request.
const DEFAULT_ECHO: &str = r#""instructions":null,"max_output_tokens":null,"metadata":{},"parallel_tool_calls":true,"previous_response_id":null,"prompt_cache_key":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","user":null"#;

/// What a Responses answer carries beyond the IR: its id, creation time, model, and the
/// request fields it echoes.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    /// `resp_…`; output item ids are derived from it.
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The model the client asked for (until the upstream names its own).
    pub model: String,
    /// JSON object members, without braces, echoed from the request (see [`echo_fields`]).
    pub echo: String,
}

impl ResponseMeta {
    /// A new response for `model`, echoing `echo` (from [`echo_fields`]).
    pub fn new(model: &str, echo: String) -> Self {
        Self {
            id: new_response_id(),
            created_at: ir::now_secs(),
            model: model.to_string(),
            echo,
        }
    }

    /// A response with OpenAI's default echo, for answers encoded without their request.
    pub fn bare(model: &str) -> Self {
        Self::new(model, DEFAULT_ECHO.to_string())
    }

    /// The id of an output item: `prefix` and the response id's suffix (so a stream and
    /// the stored response name their items alike).
    fn item_id(&self, prefix: &str, n: Option<usize>) -> String {
        let suffix = self.id.strip_prefix("resp_").unwrap_or(&self.id);
        match n {
            Some(n) => format!("{prefix}_{suffix}_{n}"),
            None => format!("{prefix}_{suffix}"),
        }
    }
}

/// A fresh response id.
pub fn new_response_id() -> String {
    format!("resp_{}", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------------------
// Wire types, read side (request items and answers share parts).

/// A string or an array of content parts (message content, tool output).
enum TextOrParts<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Part<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for TextOrParts<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = TextOrParts<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TextOrParts::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TextOrParts::Text(Cow::Owned(v.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(2));
                while let Some(p) = seq.next_element()? {
                    parts.push(p);
                }
                Ok(TextOrParts::Parts(parts))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// One content part, flat: a part sets the fields of its `type` (`input_text`,
/// `output_text`, `input_image`, `input_file`, `refusal`, `summary_text`, …).
#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    image_url: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    detail: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    file_data: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    filename: Option<Cow<'a, str>>,
}

impl Part<'_> {
    /// The part's text, for text-like parts.
    fn text(&self) -> Option<&str> {
        match self.kind.as_ref() {
            "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text" => {
                self.text.as_deref()
            }
            "refusal" => self.refusal.as_deref(),
            _ => None,
        }
    }
}

/// One item (input or output), flat: an item sets the fields of its `type`.
#[derive(Deserialize)]
struct Item<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<TextOrParts<'a>>,
    #[serde(default, borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    output: Option<TextOrParts<'a>>,
    #[serde(default, borrow)]
    summary: Option<Vec<Part<'a>>>,
    #[serde(default, borrow)]
    encrypted_content: Option<Cow<'a, str>>,
}

impl Item<'_> {
    /// The item's type; an item with a role and no type is a message (OpenAI's
    /// "easy input message").
    fn kind(&self) -> &str {
        match (&self.kind, &self.role) {
            (Some(k), _) => k,
            (None, Some(_)) => "message",
            (None, None) => "",
        }
    }

    /// The joined text of a content list or string.
    fn content_text(content: Option<&TextOrParts>) -> String {
        match content {
            None => String::new(),
            Some(TextOrParts::Text(t)) => t.to_string(),
            Some(TextOrParts::Parts(parts)) => {
                let mut out = String::new();
                for t in parts.iter().filter_map(Part::text) {
                    out.push_str(t);
                }
                out
            }
        }
    }

    /// A reasoning item's visible text: its summaries, else its reasoning content.
    fn reasoning_text(&self) -> String {
        let summaries: Vec<&str> = self
            .summary
            .iter()
            .flatten()
            .filter_map(Part::text)
            .collect();
        if summaries.is_empty() {
            Self::content_text(self.content.as_ref())
        } else {
            summaries.join("\n\n")
        }
    }
}

/// A response object as an upstream returns it (also inside stream events).
#[derive(Default, Deserialize)]
struct WireResponse<'a> {
    #[serde(default, borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    created_at: Option<f64>,
    #[serde(default, borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    incomplete_details: Option<WireIncomplete<'a>>,
    #[serde(default, borrow)]
    output: Vec<Item<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default, borrow)]
    error: Option<WireError<'a>>,
}

#[derive(Deserialize)]
struct WireIncomplete<'a> {
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
}

/// The `error` of a failed response or an `error` event.
#[derive(Deserialize)]
struct WireError<'a> {
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<WireInputDetails>,
    #[serde(default)]
    output_tokens_details: Option<WireOutputDetails>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct WireInputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct WireOutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<WireUsage> for ir::Usage {
    fn from(u: WireUsage) -> Self {
        Self {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cached_input_tokens: u
                .input_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_creation_input_tokens: 0,
            reasoning_tokens: u
                .output_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// The finish reason a response's status and incomplete reason stand for.
fn finish_of(status: Option<&str>, incomplete: Option<&str>, has_calls: bool) -> FinishReason {
    match (status, incomplete) {
        (Some("incomplete"), Some("content_filter")) => FinishReason::ContentFilter,
        (Some("incomplete"), _) => FinishReason::Length,
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

// ---------------------------------------------------------------------------------------
// Wire types, write side.

/// An output item as written to clients.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutItem<'a> {
    Reasoning {
        id: String,
        summary: Vec<OutPart<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        encrypted_content: Option<String>,
    },
    Message {
        id: String,
        status: &'static str,
        role: &'static str,
        content: Vec<OutPart<'a>>,
    },
    FunctionCall {
        id: String,
        status: &'static str,
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
}

/// A content part as written to clients.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutPart<'a> {
    OutputText {
        text: &'a str,
        annotations: [(); 0],
        logprobs: [(); 0],
    },
    SummaryText {
        text: &'a str,
    },
}

impl<'a> OutPart<'a> {
    fn output_text(text: &'a str) -> Self {
        OutPart::OutputText {
            text,
            annotations: [],
            logprobs: [],
        }
    }
}

/// Usage as written to clients.
#[derive(Serialize)]
struct OutUsage {
    input_tokens: u64,
    input_tokens_details: OutInputDetails,
    output_tokens: u64,
    output_tokens_details: OutOutputDetails,
    total_tokens: u64,
}

#[derive(Serialize)]
struct OutInputDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct OutOutputDetails {
    reasoning_tokens: u64,
}

impl From<ir::Usage> for OutUsage {
    fn from(u: ir::Usage) -> Self {
        Self {
            input_tokens: u.input_tokens,
            input_tokens_details: OutInputDetails {
                cached_tokens: u.cached_input_tokens,
            },
            output_tokens: u.output_tokens,
            output_tokens_details: OutOutputDetails {
                reasoning_tokens: u.reasoning_tokens,
            },
            total_tokens: u.total(),
        }
    }
}

#[derive(Serialize)]
struct OutError<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct OutIncomplete {
    reason: &'static str,
}

/// The head of a response object; the echoed request fields are appended after it.
#[derive(Serialize)]
struct OutResponse<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'a str,
    background: bool,
    error: Option<OutError<'a>>,
    incomplete_details: Option<OutIncomplete>,
    model: &'a str,
    output: &'a [&'a RawValue],
    usage: Option<OutUsage>,
}

/// How a response ended, as its `status` (and `incomplete_details`) say.
fn status_of(finish: Option<&FinishReason>) -> (&'static str, Option<OutIncomplete>) {
    match finish {
        Some(FinishReason::Length) => (
            "incomplete",
            Some(OutIncomplete {
                reason: "max_output_tokens",
            }),
        ),
        Some(FinishReason::ContentFilter) => (
            "incomplete",
            Some(OutIncomplete {
                reason: "content_filter",
            }),
        ),
        _ => ("completed", None),
    }
}

/// A response object: `status`, the output items (already JSON), usage, error, and the
/// request fields of `meta`.
fn response_json(
    meta: &ResponseMeta,
    model: &str,
    status: &str,
    incomplete: Option<OutIncomplete>,
    output: &[&RawValue],
    usage: Option<ir::Usage>,
    error: Option<OutError>,
) -> String {
    let head = OutResponse {
        id: &meta.id,
        object: "response",
        created_at: meta.created_at,
        status,
        background: false,
        error,
        incomplete_details: incomplete,
        model,
        output,
        usage: usage.map(OutUsage::from),
    };
    let mut s = serde_json::to_string(&head).unwrap_or_else(|_| "{}".into());
    if !meta.echo.is_empty() && s.ends_with('}') {
        s.pop();
        s.push(',');
        s.push_str(&meta.echo);
        s.push('}');
    }
    s
}

fn raw(item: &impl Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(item).unwrap_or_default()
}

/// A reasoning item's `encrypted_content` for an Anthropic thinking signature.
fn signature_content(signature: Option<&str>) -> Option<String> {
    signature
        .filter(|s| !s.is_empty())
        .map(|s| format!("{ANTHROPIC_SIGNATURE_PREFIX}{s}"))
}

// ---------------------------------------------------------------------------------------
// Complete answers.

/// Decodes a response object (a native upstream's answer).
pub fn decode_completion(body: &[u8]) -> Result<Completion, DecodeError> {
    let w: WireResponse = serde_json::from_slice(body)
        .map_err(|e| DecodeError(format!("invalid Responses answer: {e}")))?;
    Ok(completion_of(w))
}

fn completion_of(w: WireResponse) -> Completion {
    let mut c = Completion {
        id: w.id.into_owned(),
        model: w.model.into_owned(),
        created: w.created_at.map_or_else(ir::now_secs, |t| t as u64),
        usage: w.usage.map(Into::into).unwrap_or_default(),
        ..Default::default()
    };
    for item in &w.output {
        match item.kind() {
            "message" => c.text.push_str(&Item::content_text(item.content.as_ref())),
            "reasoning" => {
                let text = item.reasoning_text();
                if !text.is_empty() {
                    c.reasoning.get_or_insert_with(String::new).push_str(&text);
                }
            }
            "function_call" => c.tool_calls.push(ir::ToolCall {
                id: item.call_id.as_deref().unwrap_or_default().to_string(),
                name: item.name.as_deref().unwrap_or_default().to_string(),
                arguments: item.arguments.as_deref().unwrap_or("{}").to_string(),
            }),
            _ => {}
        }
    }
    c.finish_reason = Some(finish_of(
        w.status.as_deref(),
        w.incomplete_details
            .as_ref()
            .and_then(|d| d.reason.as_deref()),
        !c.tool_calls.is_empty(),
    ));
    c
}

/// The output items of a completion: reasoning, the message, then function calls.
fn output_items(meta: &ResponseMeta, c: &Completion) -> Vec<Box<RawValue>> {
    let mut items = Vec::with_capacity(c.tool_calls.len() + 2);
    if let Some(r) = &c.reasoning {
        items.push(raw(&OutItem::Reasoning {
            id: meta.item_id("rs", None),
            summary: vec![OutPart::SummaryText { text: r }],
            encrypted_content: signature_content(c.reasoning_signature.as_deref()),
        }));
    }
    if !c.text.is_empty() || (c.tool_calls.is_empty() && c.reasoning.is_none()) {
        items.push(raw(&OutItem::Message {
            id: meta.item_id("msg", None),
            status: "completed",
            role: "assistant",
            content: vec![OutPart::output_text(&c.text)],
        }));
    }
    for (i, tc) in c.tool_calls.iter().enumerate() {
        items.push(raw(&OutItem::FunctionCall {
            id: meta.item_id("fc", Some(i)),
            status: "completed",
            call_id: &tc.id,
            name: &tc.name,
            arguments: &tc.arguments,
        }));
    }
    items
}

/// Encodes a completion as the response object `meta` describes.
pub fn encode_response(meta: &ResponseMeta, c: &Completion) -> Bytes {
    let items = output_items(meta, c);
    let refs: Vec<&RawValue> = items.iter().map(AsRef::as_ref).collect();
    let (status, incomplete) = status_of(c.finish_reason.as_ref());
    let model = if c.model.is_empty() {
        &meta.model
    } else {
        &c.model
    };
    Bytes::from(response_json(
        meta,
        model,
        status,
        incomplete,
        &refs,
        Some(c.usage),
        None,
    ))
}

/// Encodes a completion as a response object with a fresh id and default echo.
pub fn encode_completion(c: &Completion) -> Bytes {
    encode_response(&ResponseMeta::bare(&c.model), c)
}

/// The `output` array of a response object (stored responses), as JSON text.
pub fn output_of(response: &str) -> Option<&str> {
    #[derive(Deserialize)]
    struct Output<'a> {
        #[serde(borrow)]
        output: &'a RawValue,
    }
    serde_json::from_str::<Output>(response)
        .ok()
        .map(|o| o.output.get())
}

#[cfg(test)]
mod tests;
