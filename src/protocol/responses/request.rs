//! Responses requests: a client's request read into the internal chat shape (input items
//! → messages, instructions → system, function tools, `text.format` → `response_format`,
//! …), the request fields a response object echoes, and a native upstream's body with an
//! earlier conversation expanded into `input`.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::{Item, Part, TextOrParts, ANTHROPIC_SIGNATURE_PREFIX};
use crate::protocol::chat::{
    BodyError, ChatBody, ChatMessage, ChatRequest, Content, FunctionCall, FunctionDef, ImageUrl,
    ToolDef, WireToolCall,
};

/// Why a body is not a usable Responses request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, not an object, or a required field missing.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// A field has the wrong shape; `field` is its path (`input[2].call_id`).
    #[error("invalid `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RequestError {
    RequestError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `input`: a string (one user message) or a list of items, kept raw for the store.
enum Input<'a> {
    Text(Cow<'a, str>),
    Items(Vec<&'a RawValue>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Input<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Input<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of input items")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Input::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Input::Text(Cow::Owned(v.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
                while let Some(i) = seq.next_element()? {
                    items.push(i);
                }
                Ok(Input::Items(items))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A Responses request, typed where the gateway reads it.
#[derive(Deserialize)]
pub struct InRequest<'a> {
    #[serde(default)]
    model: Option<String>,
    #[serde(default, borrow)]
    input: Option<Input<'a>>,
    #[serde(default, borrow)]
    instructions: Option<Cow<'a, str>>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    reasoning: Option<InReasoning>,
    #[serde(default)]
    text: Option<InText>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    prompt_cache_key: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    safety_identifier: Option<String>,
}

#[derive(Deserialize)]
struct InTool {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct InReasoning {
    #[serde(default)]
    effort: Option<String>,
}

#[derive(Deserialize)]
struct InText {
    #[serde(default)]
    format: Option<Value>,
}

impl InRequest<'_> {
    /// The requested model.
    pub fn model(&self) -> &str {
        self.model.as_deref().unwrap_or_default()
    }

    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether the response is to be stored (OpenAI's default: yes).
    pub fn store(&self) -> bool {
        self.store != Some(false)
    }

    /// The response this one continues.
    pub fn previous_response_id(&self) -> Option<&str> {
        self.previous_response_id
            .as_deref()
            .filter(|id| !id.is_empty())
    }
}

/// Parses and checks a Responses request (`model` required, `input` unless the request
/// continues an earlier response).
pub fn parse_request(body: &[u8]) -> Result<InRequest<'_>, RequestError> {
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
    match req.model.as_deref() {
        None => return Err(BodyError::Missing("model").into()),
        Some(m) if m.trim().is_empty() => return Err(invalid("model", "must not be empty")),
        Some(_) => {}
    }
    if req.input.is_none() && req.previous_response_id().is_none() {
        return Err(BodyError::Missing("input").into());
    }
    Ok(req)
}

/// A Responses request in the internal shape.
pub struct Translated {
    /// The request as a chat request (the whole conversation when it continues one).
    pub chat: ChatBody<'static>,
    /// The conversation's input items as a JSON array: the earlier conversation's items
    /// followed by this request's (what a stored response keeps as its input).
    pub items: String,
    /// Built-in tools (`web_search`, …) left out because a chat upstream cannot run them.
    pub dropped_tools: Vec<String>,
}

/// Concatenates JSON arrays (each given as text) into one array.
pub fn join_items(arrays: &[&str]) -> Result<String, RequestError> {
    let mut out = String::from("[");
    for a in arrays {
        let items: Vec<&RawValue> = serde_json::from_str(a)
            .map_err(|e| invalid("input", format!("stored items are unreadable: {e}")))?;
        for item in items {
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(item.get());
        }
    }
    out.push(']');
    Ok(out)
}

/// Translates a Responses request into the internal chat shape. `earlier` is the
/// conversation a `previous_response_id` names (its input and output items, a JSON array).
pub fn request_to_chat(req: &InRequest, earlier: Option<&str>) -> Result<Translated, RequestError> {
    let new_items = match &req.input {
        None => "[]".to_string(),
        Some(Input::Text(t)) => json!([{"type": "message", "role": "user",
                                        "content": [{"type": "input_text", "text": t}]}])
        .to_string(),
        Some(Input::Items(items)) => {
            let mut s = String::from("[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(item.get());
            }
            s.push(']');
            s
        }
    };
    let items = match earlier {
        Some(e) => join_items(&[e, &new_items])?,
        None => new_items,
    };
    let list: Vec<&RawValue> =
        serde_json::from_str(&items).map_err(|e| invalid("input", e.to_string()))?;

    let mut messages = Vec::with_capacity(list.len() + 1);
    if let Some(text) = req.instructions.as_deref().filter(|t| !t.is_empty()) {
        messages.push(text_message("system", text.to_string()));
    }
    let first_new = list.len() - item_count(&req.input);
    items_to_messages(&list, first_new, &mut messages)?;
    if messages.iter().all(|m| m.role == "system") {
        return Err(invalid("input", "must contain at least one message"));
    }

    let mut dropped_tools = Vec::new();
    let mut tools = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        if t.kind != "function" {
            dropped_tools.push(t.kind.clone());
            continue;
        }
        let name = t
            .name
            .clone()
            .ok_or_else(|| invalid(format!("tools[{i}].name"), "is required"))?;
        tools.push(ToolDef {
            kind: "function".into(),
            function: Some(FunctionDef {
                name,
                description: t.description.clone(),
                parameters: Some(
                    t.parameters
                        .clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                ),
                strict: t.strict,
            }),
            extra: Map::new(),
        });
    }
    let tool_choice = if tools.is_empty() {
        None
    } else {
        req.tool_choice.as_ref().and_then(chat_tool_choice)
    };
    let reasoning_effort = req
        .reasoning
        .as_ref()
        .and_then(|r| r.effort.as_deref())
        .and_then(|e| match e {
            "none" => None,
            "minimal" => Some("low"),
            "xhigh" => Some("high"),
            other => Some(other),
        })
        .map(str::to_string);
    let response_format = req
        .text
        .as_ref()
        .and_then(|t| t.format.as_ref())
        .and_then(chat_response_format);

    let mut extra = Map::new();
    if let Some(k) = &req.prompt_cache_key {
        extra.insert("prompt_cache_key".into(), k.clone().into());
    }
    let chat = ChatRequest {
        model: req.model().to_string(),
        messages,
        parallel_tool_calls: req.parallel_tool_calls.filter(|_| !tools.is_empty()),
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
        max_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stream: req.stream,
        user: req.user.clone().or_else(|| req.safety_identifier.clone()),
        response_format,
        reasoning_effort,
        extra,
        ..Default::default()
    };
    Ok(Translated {
        chat: ChatBody::from_request(&chat)?,
        items,
        dropped_tools,
    })
}

fn item_count(input: &Option<Input>) -> usize {
    match input {
        None => 0,
        Some(Input::Text(_)) => 1,
        Some(Input::Items(items)) => items.len(),
    }
}

fn text_message(role: &str, text: String) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: Some(Content::Text(text)),
        ..Default::default()
    }
}

/// Items into chat messages. `first_new` is the index of the request's own first item
/// (earlier ones came from the store), for error paths.
fn items_to_messages(
    items: &[&RawValue],
    first_new: usize,
    out: &mut Vec<ChatMessage>,
) -> Result<(), RequestError> {
    // Anthropic thinking (from a reasoning item) waiting for the assistant turn it opens.
    let mut thinking: Option<Value> = None;
    for (i, raw) in items.iter().enumerate() {
        let at = |f: &str| {
            let base = match i.checked_sub(first_new) {
                Some(n) => format!("input[{n}]"),
                None => format!("previous_response_id (stored item {i})"),
            };
            if f.is_empty() {
                base
            } else {
                format!("{base}.{f}")
            }
        };
        let item: Item =
            serde_json::from_str(raw.get()).map_err(|e| invalid(at(""), e.to_string()))?;
        match item.kind() {
            "message" => {
                let role = item.role.as_deref().unwrap_or_default();
                match role {
                    "system" | "developer" => {
                        let text = Item::content_text(item.content.as_ref());
                        if !text.is_empty() {
                            out.push(text_message("system", text));
                        }
                    }
                    "user" => out.extend(user_message(item.content)),
                    "assistant" => {
                        let text = Item::content_text(item.content.as_ref());
                        out.push(ChatMessage {
                            role: "assistant".into(),
                            content: Some(Content::Text(text)),
                            thinking_blocks: thinking.take().map(|t| vec![t]),
                            ..Default::default()
                        });
                    }
                    other => {
                        return Err(invalid(
                            at("role"),
                            format!("must be user, assistant, system or developer, not {other:?}"),
                        ))
                    }
                }
            }
            "function_call" => {
                let call = WireToolCall {
                    id: item
                        .call_id
                        .ok_or_else(|| invalid(at("call_id"), "is required"))?
                        .into_owned(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: item
                            .name
                            .ok_or_else(|| invalid(at("name"), "is required"))?
                            .into_owned(),
                        arguments: item
                            .arguments
                            .map_or_else(|| "{}".to_string(), Cow::into_owned),
                    },
                };
                match out.last_mut() {
                    // Calls following the assistant's text (or other calls) join its turn.
                    Some(last) if last.role == "assistant" && thinking.is_none() => {
                        if last.content.as_ref().is_some_and(|c| c.text().is_empty()) {
                            last.content = None;
                        }
                        last.tool_calls.get_or_insert_with(Vec::new).push(call);
                    }
                    _ => out.push(ChatMessage {
                        role: "assistant".into(),
                        tool_calls: Some(vec![call]),
                        thinking_blocks: thinking.take().map(|t| vec![t]),
                        ..Default::default()
                    }),
                }
            }
            "function_call_output" => {
                let call_id = item
                    .call_id
                    .ok_or_else(|| invalid(at("call_id"), "is required"))?
                    .into_owned();
                let (text, images) = match item.output {
                    None => (String::new(), Vec::new()),
                    Some(TextOrParts::Text(t)) => (t.into_owned(), Vec::new()),
                    Some(TextOrParts::Parts(parts)) => {
                        let text = parts.iter().filter_map(Part::text).collect::<String>();
                        let images: Vec<_> = parts.into_iter().filter_map(media_part).collect();
                        (text, images)
                    }
                };
                out.push(ChatMessage {
                    tool_call_id: Some(call_id),
                    ..text_message("tool", text)
                });
                if !images.is_empty() {
                    // Chat tool messages carry text only: images go to a user turn.
                    out.push(ChatMessage {
                        role: "user".into(),
                        content: Some(Content::Parts(images)),
                        ..Default::default()
                    });
                }
            }
            "reasoning" => {
                // Only thinking that Anthropic signed can be replayed; other providers'
                // encrypted reasoning means nothing to a chat upstream.
                let signature = item
                    .encrypted_content
                    .as_deref()
                    .and_then(|c| c.strip_prefix(ANTHROPIC_SIGNATURE_PREFIX));
                if let Some(sig) = signature {
                    thinking = Some(
                        json!({"type": "thinking", "thinking": item.reasoning_text(),
                                           "signature": sig}),
                    );
                }
            }
            // item_reference and built-in tool calls: nothing a chat upstream can use.
            _ => {}
        }
    }
    Ok(())
}

/// A user message's content as chat content: one string when it is all text.
fn user_message(content: Option<TextOrParts>) -> Option<ChatMessage> {
    let content = match content? {
        TextOrParts::Text(t) => Content::Text(t.into_owned()),
        TextOrParts::Parts(parts) => {
            let mut out: Vec<crate::protocol::chat::Part> = Vec::with_capacity(parts.len());
            for p in parts {
                if let Some(t) = p.text() {
                    out.push(crate::protocol::chat::Part {
                        kind: "text".into(),
                        text: Some(t.to_string()),
                        ..Default::default()
                    });
                } else if let Some(m) = media_part(p) {
                    out.push(m);
                }
            }
            match out.as_slice() {
                [] => return None,
                [only] if only.kind == "text" => {
                    Content::Text(only.text.clone().unwrap_or_default())
                }
                _ => Content::Parts(out),
            }
        }
    };
    Some(ChatMessage {
        role: "user".into(),
        content: Some(content),
        ..Default::default()
    })
}

/// An `input_image` or `input_file` part as a chat part (uploaded-file ids dropped).
fn media_part(p: Part) -> Option<crate::protocol::chat::Part> {
    match p.kind.as_ref() {
        "input_image" => Some(crate::protocol::chat::Part {
            kind: "image_url".into(),
            image_url: Some(ImageUrl {
                url: p.image_url?.into_owned(),
                detail: p.detail.map(Cow::into_owned),
            }),
            ..Default::default()
        }),
        "input_file" => {
            let mut file = Map::new();
            file.insert("file_data".into(), p.file_data?.into_owned().into());
            if let Some(name) = p.filename {
                file.insert("filename".into(), name.into_owned().into());
            }
            let mut extra = Map::new();
            extra.insert("file".into(), Value::Object(file));
            Some(crate::protocol::chat::Part {
                kind: "file".into(),
                extra,
                ..Default::default()
            })
        }
        _ => None,
    }
}

/// A Responses `tool_choice` as a chat `tool_choice` (built-in tool choices: none).
fn chat_tool_choice(choice: &Value) -> Option<Value> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Some(choice.clone())
        }
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = o.get("name")?;
                Some(json!({"type": "function", "function": {"name": name}}))
            }
            Some("allowed_tools") => o.get("mode").cloned(),
            _ => None,
        },
        _ => None,
    }
}

/// A Responses `text.format` as a chat `response_format` (plain text: none).
fn chat_response_format(format: &Value) -> Option<Value> {
    match format.get("type").and_then(Value::as_str)? {
        "json_schema" => {
            let mut schema = Map::new();
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        "json_object" => Some(json!({"type": "json_object"})),
        _ => None,
    }
}

/// The request fields a response object echoes, as JSON members without braces: the
/// client's values, OpenAI's defaults for the rest.
pub fn echo_fields(body: &ChatBody<'_>) -> String {
    const FIELDS: &[(&str, &str)] = &[
        ("instructions", "null"),
        ("max_output_tokens", "null"),
        ("metadata", "{}"),
        ("parallel_tool_calls", "true"),
        ("previous_response_id", "null"),
        ("prompt_cache_key", "null"),
        ("reasoning", r#"{"effort":null,"summary":null}"#),
        ("store", "true"),
        ("temperature", "1.0"),
        ("text", r#"{"format":{"type":"text"}}"#),
        ("tool_choice", r#""auto""#),
        ("tools", "[]"),
        ("top_p", "1.0"),
        ("truncation", r#""disabled""#),
        ("user", "null"),
    ];
    let mut out = String::new();
    for (key, default) in FIELDS {
        let value = body
            .get(key)
            .map(RawValue::get)
            .filter(|v| *v != "null")
            .unwrap_or(default);
        if !out.is_empty() {
            out.push(',');
        }
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        out.push_str(value);
    }
    out
}

/// The client's body for a native upstream that does not hold the earlier response:
/// `previous_response_id` replaced by the whole conversation in `input` (`items`, a JSON
/// array). Item ids and reasoning items are left out: the upstream did not make them and
/// would refuse them.
pub fn expand_for_native(
    body: &ChatBody<'_>,
    items: &str,
) -> Result<ChatBody<'static>, RequestError> {
    let list: Vec<Map<String, Value>> =
        serde_json::from_str(items).map_err(|e| invalid("input", e.to_string()))?;
    let kept: Vec<Map<String, Value>> = list
        .into_iter()
        .filter(|item| item.get("type").and_then(Value::as_str) != Some("reasoning"))
        .map(|mut item| {
            item.remove("id");
            item
        })
        .collect();
    let input =
        serde_json::value::to_raw_value(&kept).map_err(|e| invalid("input", e.to_string()))?;
    let mut out = body.clone().into_owned();
    out.remove("previous_response_id");
    out.set("input", input);
    Ok(out)
}
