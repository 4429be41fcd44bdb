//! Anthropic Messages requests: a client's request into the internal chat shape, and the
//! internal chat shape into a request for an Anthropic upstream.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::{Block, Input, OutBlock, OutSource, Source, TextOrBlocks, DEFAULT_MAX_TOKENS};
use crate::protocol::chat::{
    BodyError, ChatBody, ChatMessage, ChatRequest, Content, FunctionCall, FunctionDef, ImageUrl,
    Part, ToolDef, WireToolCall,
};

/// Why a body is not a usable Messages request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, not an object, or a required field missing.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// A field has the wrong shape; `field` is its path (`messages[1].content[0].source`).
    #[error("invalid `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RequestError {
    RequestError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Deserialize)]
struct InRequest<'a> {
    #[serde(default)]
    model: Option<String>,
    #[serde(default, borrow)]
    messages: Option<Vec<InMessage<'a>>>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default, borrow)]
    system: Option<TextOrBlocks<'a>>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<InToolChoice>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    metadata: Option<InMetadata>,
}

#[derive(Deserialize)]
struct InMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: TextOrBlocks<'a>,
}

#[derive(Deserialize)]
struct InTool {
    /// Absent or `custom` for client tools; versioned names for Anthropic's server tools.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
}

#[derive(Deserialize)]
struct InToolChoice {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    disable_parallel_tool_use: bool,
}

#[derive(Deserialize)]
struct InMetadata {
    #[serde(default)]
    user_id: Option<String>,
}

/// Translates an Anthropic Messages request into the internal (OpenAI chat shaped)
/// request. Tool results become `tool` messages placed before the rest of their user
/// turn; thinking blocks and the `thinking` setting are dropped (other providers reject
/// or misread them, and Anthropic upstreams receive the client's own body instead).
pub fn request_to_chat(body: &[u8]) -> Result<ChatBody<'static>, RequestError> {
    let req = parse_request(body)?;
    let model = match req.model {
        None => return Err(BodyError::Missing("model").into()),
        Some(m) if m.trim().is_empty() => return Err(invalid("model", "must not be empty")),
        Some(m) => m,
    };
    let Some(in_messages) = req.messages else {
        return Err(BodyError::Missing("messages").into());
    };
    if in_messages.is_empty() {
        return Err(invalid("messages", "must not be empty"));
    }
    let Some(max_tokens) = req.max_tokens else {
        return Err(BodyError::Missing("max_tokens").into());
    };

    let mut messages = Vec::with_capacity(in_messages.len() + 1);
    if let Some(system) = req.system {
        let text = match system {
            TextOrBlocks::Text(t) => t.into_owned(),
            TextOrBlocks::Blocks(blocks) => blocks
                .iter()
                .filter(|b| b.kind == "text")
                .filter_map(|b| b.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n\n"),
        };
        if !text.is_empty() {
            messages.push(text_message("system", text));
        }
    }
    for (i, m) in in_messages.into_iter().enumerate() {
        match m.role.as_ref() {
            "user" => user_turn(i, m.content, &mut messages)?,
            "assistant" => messages.push(assistant_turn(i, m.content)?),
            // Claude Code sends `system` messages between turns; other roles a newer
            // client adds keep their name and position (an Anthropic deployment gets the
            // client's own body; a translation passes them on as text).
            other => {
                let role = if other == "developer" {
                    "system"
                } else {
                    other
                };
                let text = match m.content {
                    TextOrBlocks::Text(t) => t.into_owned(),
                    TextOrBlocks::Blocks(blocks) => blocks
                        .iter()
                        .filter_map(|b| b.text.as_deref())
                        .collect::<Vec<_>>()
                        .join("\n\n"),
                };
                messages.push(text_message(role, text));
            }
        }
    }

    let tools: Vec<ToolDef> = req
        .tools
        .unwrap_or_default()
        .into_iter()
        // Anthropic's server tools (web search, bash, …) mean nothing to other providers.
        .filter(|t| t.kind.as_deref().is_none_or(|k| k == "custom"))
        .map(|t| ToolDef {
            kind: "function".into(),
            function: Some(FunctionDef {
                name: t.name,
                description: t.description,
                parameters: Some(
                    t.input_schema
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                ),
                strict: None,
            }),
            extra: Map::new(),
        })
        .collect();
    let (tool_choice, parallel_tool_calls) = match req.tool_choice {
        Some(c) if !tools.is_empty() => {
            let choice = match c.kind.as_str() {
                "auto" => json!("auto"),
                "any" => json!("required"),
                "none" => json!("none"),
                "tool" => {
                    let name = c.name.ok_or_else(|| {
                        invalid("tool_choice.name", "is required for type `tool`")
                    })?;
                    json!({"type": "function", "function": {"name": name}})
                }
                // A tool choice newer than this translation: the provider's default.
                _ => json!("auto"),
            };
            (Some(choice), c.disable_parallel_tool_use.then_some(false))
        }
        _ => (None, None),
    };

    let chat = ChatRequest {
        model,
        messages,
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        parallel_tool_calls,
        max_tokens: Some(max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        stop: req
            .stop_sequences
            .filter(|s| !s.is_empty())
            .map(|s| s.into()),
        stream: req.stream,
        user: req.metadata.and_then(|m| m.user_id),
        ..Default::default()
    };
    Ok(ChatBody::from_request(&chat)?)
}

fn parse_request(body: &[u8]) -> Result<InRequest<'_>, RequestError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(match serde_json::from_slice::<&RawValue>(body) {
            Ok(_) => BodyError::NotObject,
            Err(e) => BodyError::Json(e.to_string()),
        }
        .into());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let req: InRequest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            invalid(field, inner.to_string())
        } else {
            BodyError::Json(inner.to_string()).into()
        }
    })?;
    de.end().map_err(|e| BodyError::Json(e.to_string()))?;
    Ok(req)
}

fn text_message(role: &str, text: String) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: Some(Content::Text(text)),
        ..Default::default()
    }
}

/// A user turn: its tool results as `tool` messages first, then the rest as one message.
fn user_turn(
    i: usize,
    content: TextOrBlocks,
    out: &mut Vec<ChatMessage>,
) -> Result<(), RequestError> {
    let blocks = match content {
        TextOrBlocks::Text(t) => {
            out.push(text_message("user", t.into_owned()));
            return Ok(());
        }
        TextOrBlocks::Blocks(b) => b,
    };
    let mut parts = Vec::new();
    for (j, b) in blocks.into_iter().enumerate() {
        if b.kind != "tool_result" {
            parts.extend(part(b));
            continue;
        }
        let id = b.tool_use_id.ok_or_else(|| {
            invalid(
                format!("messages[{i}].content[{j}].tool_use_id"),
                "is required",
            )
        })?;
        let mut text = match b.content {
            None => String::new(),
            Some(TextOrBlocks::Text(t)) => t.into_owned(),
            Some(TextOrBlocks::Blocks(inner)) => {
                let mut texts = Vec::new();
                for mut ib in inner {
                    match ib.text.take().filter(|_| ib.kind == "text") {
                        Some(t) => texts.push(t),
                        // Chat tool messages carry text only: images go to the user turn.
                        None => parts.extend(part(ib)),
                    }
                }
                texts.join("\n")
            }
        };
        if b.is_error == Some(true) {
            // OpenAI's tool messages have no error flag; say it in the text.
            text.insert_str(0, "Error: ");
        }
        out.push(ChatMessage {
            tool_call_id: Some(id.into_owned()),
            ..text_message("tool", text)
        });
    }
    if !parts.is_empty() {
        let content = match parts.as_slice() {
            [p] if p.kind == "text" => Content::Text(p.text.clone().unwrap_or_default()),
            _ => Content::Parts(parts),
        };
        out.push(ChatMessage {
            role: "user".into(),
            content: Some(content),
            ..Default::default()
        });
    }
    Ok(())
}

/// A user content block as a chat content part (text, image, document); others dropped.
fn part(b: Block) -> Option<Part> {
    let text_part = |text: String| Part {
        kind: "text".into(),
        text: Some(text),
        ..Default::default()
    };
    match b.kind.as_ref() {
        "text" => Some(text_part(b.text?.into_owned())),
        "image" => {
            let url = source_url(b.source?)?;
            Some(Part {
                kind: "image_url".into(),
                image_url: Some(ImageUrl { url, detail: None }),
                ..Default::default()
            })
        }
        "document" => {
            let source = b.source?;
            match source.kind.as_ref() {
                "text" => Some(text_part(source.data?.into_owned())),
                _ => {
                    let file_data = source_url(source)?;
                    let filename = b.title.map_or("document.pdf".into(), Cow::into_owned);
                    let mut extra = Map::new();
                    extra.insert(
                        "file".into(),
                        json!({"file_data": file_data, "filename": filename}),
                    );
                    Some(Part {
                        kind: "file".into(),
                        extra,
                        ..Default::default()
                    })
                }
            }
        }
        _ => None,
    }
}

/// A base64 source as a `data:` URL, a URL source as its URL.
fn source_url(s: Source) -> Option<String> {
    match s.kind.as_ref() {
        "base64" => Some(format!(
            "data:{};base64,{}",
            s.media_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
            s.data?
        )),
        "url" => Some(s.url?.into_owned()),
        _ => None,
    }
}

fn assistant_turn(i: usize, content: TextOrBlocks) -> Result<ChatMessage, RequestError> {
    let blocks = match content {
        TextOrBlocks::Text(t) => return Ok(text_message("assistant", t.into_owned())),
        TextOrBlocks::Blocks(b) => b,
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.into_iter().enumerate() {
        match b.kind.as_ref() {
            "text" => text.push_str(b.text.as_deref().unwrap_or_default()),
            "tool_use" => {
                let at = |f: &str| format!("messages[{i}].content[{j}].{f}");
                calls.push(WireToolCall {
                    id: b
                        .id
                        .ok_or_else(|| invalid(at("id"), "is required"))?
                        .into_owned(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: b
                            .name
                            .ok_or_else(|| invalid(at("name"), "is required"))?
                            .into_owned(),
                        arguments: b.input.map_or("{}", RawValue::get).to_string(),
                    },
                });
            }
            // thinking / redacted_thinking: see `request_to_chat`.
            _ => {}
        }
    }
    let content = if text.is_empty() && !calls.is_empty() {
        None
    } else {
        Some(Content::Text(text))
    };
    Ok(ChatMessage {
        role: "assistant".into(),
        content,
        tool_calls: (!calls.is_empty()).then_some(calls),
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------------------
// Requests: internal chat shape → Anthropic.

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<OutSystem<'a>>,
    messages: Vec<OutMessage<'a>>,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<Value>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutSystem<'a> {
    Text(String),
    Blocks(Vec<OutBlock<'a>>),
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: Vec<OutBlock<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutTool<'a> {
    Custom {
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<&'a str>,
        input_schema: Cow<'a, Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    /// An Anthropic server tool given by an OpenAI client (LiteLLM convention), as is.
    Native {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(flatten)]
        rest: &'a Map<String, Value>,
    },
}

/// Serializes a chat request as an Anthropic Messages request for `upstream_model`:
/// system and developer messages joined into `system`, tool messages as `tool_result`
/// blocks of a user turn, consecutive same-role turns merged, images and PDFs as sources,
/// `max_tokens` defaulted, `reasoning_effort` as a thinking budget, `user` as metadata.
/// Parts' `cache_control` and assistant `thinking_blocks` (LiteLLM conventions) are kept.
pub fn chat_to_request(chat: &ChatRequest, upstream_model: &str) -> Bytes {
    let mut system = Vec::new();
    let mut messages: Vec<OutMessage> = Vec::with_capacity(chat.messages.len());
    for m in &chat.messages {
        let (role, blocks) = match m.role.as_str() {
            "system" | "developer" => {
                system.extend(content_blocks(m.content.as_ref()));
                continue;
            }
            "assistant" => ("assistant", assistant_blocks(m)),
            "tool" => (
                "user",
                vec![OutBlock::ToolResult {
                    tool_use_id: m.tool_call_id.as_deref().unwrap_or_default(),
                    content: content_blocks(m.content.as_ref()),
                }],
            ),
            _ => ("user", content_blocks(m.content.as_ref())),
        };
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(OutMessage {
                role,
                content: blocks,
            }),
        }
    }
    for m in &mut messages {
        if m.role == "user" {
            // Tool results must open the turn that answers the tool calls.
            let (mut results, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut m.content)
                .into_iter()
                .partition(|b| matches!(b, OutBlock::ToolResult { .. }));
            results.extend(rest);
            m.content = results;
        }
    }
    // A final assistant turn (prefill) must not end with whitespace.
    if let Some(OutMessage {
        role: "assistant",
        content,
    }) = messages.last_mut()
    {
        if let Some(OutBlock::Text { text, .. }) = content.last_mut() {
            if text.ends_with(char::is_whitespace) {
                *text = Cow::Owned(text.trim_end().to_string());
            }
        }
    }

    let system = if system.is_empty() {
        None
    } else if system.iter().all(|b| {
        matches!(
            b,
            OutBlock::Text {
                cache_control: None,
                ..
            }
        )
    }) {
        let texts: Vec<&str> = system
            .iter()
            .filter_map(|b| match b {
                OutBlock::Text { text, .. } => Some(text.as_ref()),
                _ => None,
            })
            .collect();
        Some(OutSystem::Text(texts.join("\n\n")))
    } else {
        Some(OutSystem::Blocks(system))
    };

    let tools: Vec<OutTool> = chat
        .tools
        .iter()
        .flatten()
        .filter_map(|t| match &t.function {
            Some(f) => Some(OutTool::Custom {
                name: &f.name,
                description: f.description.as_deref(),
                input_schema: f.parameters.as_ref().map_or_else(
                    || Cow::Owned(json!({"type": "object", "properties": {}})),
                    Cow::Borrowed,
                ),
                cache_control: t.extra.get("cache_control"),
            }),
            // Versioned Anthropic tool types such as `web_search_20250305`.
            None if t.kind.contains("_20") => Some(OutTool::Native {
                kind: &t.kind,
                rest: &t.extra,
            }),
            None => None,
        })
        .collect();
    let tool_choice = if tools.is_empty() {
        None
    } else {
        let mut choice = match &chat.tool_choice {
            Some(Value::String(s)) if s == "required" => json!({"type": "any"}),
            Some(Value::String(s)) if s == "none" => json!({"type": "none"}),
            Some(Value::Object(o)) => match o.get("function").and_then(|f| f.get("name")) {
                Some(name) => json!({"type": "tool", "name": name}),
                None => json!({"type": "auto"}),
            },
            _ => json!({"type": "auto"}),
        };
        let explicit = chat.tool_choice.is_some();
        if chat.parallel_tool_calls == Some(false) {
            choice["disable_parallel_tool_use"] = true.into();
        }
        (explicit || chat.parallel_tool_calls == Some(false)).then_some(choice)
    };

    let budget = match chat.reasoning_effort.as_deref() {
        Some("low") => Some(1024),
        Some("medium") => Some(2048),
        Some("high") => Some(4096),
        _ => None,
    };
    let mut max_tokens = chat
        .max_completion_tokens
        .or(chat.max_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    if let Some(b) = budget {
        if max_tokens <= b {
            max_tokens = b + DEFAULT_MAX_TOKENS;
        }
    }
    let stop_sequences = match &chat.stop {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let req = OutRequest {
        model: upstream_model,
        system,
        messages,
        max_tokens,
        // Extended thinking accepts no sampling changes.
        temperature: chat.temperature.filter(|_| budget.is_none()),
        top_p: chat.top_p.filter(|_| budget.is_none()),
        stop_sequences,
        stream: chat.stream == Some(true),
        tools,
        tool_choice,
        metadata: chat.user.as_ref().map(|u| json!({"user_id": u})),
        thinking: budget.map(|b| json!({"type": "enabled", "budget_tokens": b})),
    };
    Bytes::from(serde_json::to_vec(&req).unwrap_or_default())
}

/// The client's own Anthropic body with only `model` replaced, so that fields memproxy
/// does not translate (cache_control, thinking, metadata, betas) reach Anthropic intact.
pub fn native_with_model(native: &ChatBody<'_>, upstream_model: &str) -> Bytes {
    Bytes::from(native.to_json_with_model(upstream_model))
}

/// Chat content as Anthropic blocks: text (empty ones dropped), images, PDFs.
fn content_blocks(content: Option<&Content>) -> Vec<OutBlock<'_>> {
    match content {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![OutBlock::Text {
            text: Cow::Borrowed(t),
            cache_control: None,
        }],
        Some(Content::Parts(parts)) => parts.iter().filter_map(part_block).collect(),
    }
}

fn part_block(p: &Part) -> Option<OutBlock<'_>> {
    let cache_control = p.extra.get("cache_control");
    match p.kind.as_str() {
        "text" | "input_text" => {
            let text = p.text.as_deref().filter(|t| !t.is_empty())?;
            Some(OutBlock::Text {
                text: Cow::Borrowed(text),
                cache_control,
            })
        }
        "image_url" => Some(OutBlock::Image {
            source: url_source(&p.image_url.as_ref()?.url)?,
            cache_control,
        }),
        "file" => {
            let data = p.extra.get("file")?.get("file_data")?.as_str()?;
            Some(OutBlock::Document {
                source: url_source(data)?,
            })
        }
        _ => None,
    }
}

/// A `data:…;base64,` URL as a base64 source, an http(s) URL as a URL source.
fn url_source(url: &str) -> Option<OutSource<'_>> {
    match url.strip_prefix("data:") {
        Some(rest) => {
            let (meta, data) = rest.split_once(',')?;
            let media_type = meta.strip_suffix(";base64")?;
            Some(OutSource::Base64 { media_type, data })
        }
        None => Some(OutSource::Url { url }),
    }
}

fn assistant_blocks(m: &ChatMessage) -> Vec<OutBlock<'_>> {
    let mut blocks = Vec::new();
    for tb in m.thinking_blocks.iter().flatten() {
        let field = |k: &str| tb.get(k).and_then(Value::as_str);
        match field("type") {
            Some("thinking") => blocks.push(OutBlock::Thinking {
                thinking: field("thinking").unwrap_or_default(),
                signature: field("signature").unwrap_or_default(),
            }),
            Some("redacted_thinking") => {
                if let Some(data) = field("data") {
                    blocks.push(OutBlock::RedactedThinking { data });
                }
            }
            _ => {}
        }
    }
    blocks.extend(content_blocks(m.content.as_ref()));
    for tc in m.tool_calls.iter().flatten() {
        blocks.push(OutBlock::ToolUse {
            id: &tc.id,
            name: &tc.function.name,
            input: Input::parse(&tc.function.arguments),
        });
    }
    blocks
}
