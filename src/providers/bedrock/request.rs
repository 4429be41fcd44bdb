//! The internal request (OpenAI chat shape) as a Bedrock Converse request body:
//! `system` blocks, alternating `user`/`assistant` messages of content blocks (`text`,
//! `image`, `document`, `toolUse`, `toolResult`, `reasoningContent`, `cachePoint`),
//! `inferenceConfig`, `toolConfig`, and `additionalModelRequestFields` for the settings
//! only some models take (Anthropic's extended thinking).
//!
//! Converse takes media only as bytes: images and documents must arrive as `data:` URLs;
//! an http(s) URL is refused rather than fetched by the gateway.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::protocol::chat::{ChatMessage, ChatRequest, Content, Part};

/// Output tokens asked for when extended thinking is on and the client named no limit
/// above the thinking budget (Bedrock requires `maxTokens` > `budget_tokens`).
const THINKING_ANSWER_TOKENS: u64 = 4096;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConverseRequest<'a> {
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<Block<'a>>,
    #[serde(skip_serializing_if = "InferenceConfig::is_empty")]
    inference_config: InferenceConfig<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    additional_model_request_fields: Map<String, Value>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

/// A content block: Converse's unions are objects with one member named by the variant.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Block<'a> {
    Text(Cow<'a, str>),
    Image(Media<'a>),
    Document(Document<'a>),
    ToolUse(ToolUse<'a>),
    ToolResult(ToolResult<'a>),
    ReasoningContent(Reasoning<'a>),
    CachePoint(CachePoint),
}

#[derive(Serialize)]
struct Media<'a> {
    format: &'static str,
    source: Source<'a>,
}

/// Media bytes, base64 in JSON.
#[derive(Serialize)]
struct Source<'a> {
    bytes: &'a str,
}

#[derive(Serialize)]
struct Document<'a> {
    format: &'static str,
    name: String,
    source: Source<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolUse<'a> {
    tool_use_id: &'a str,
    name: &'a str,
    input: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolResult<'a> {
    tool_use_id: &'a str,
    content: Vec<Block<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Reasoning<'a> {
    ReasoningText {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        signature: Option<&'a str>,
    },
    RedactedContent(&'a str),
}

#[derive(Serialize)]
struct CachePoint {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
}

impl InferenceConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_empty()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tool<'a> {
    tool_spec: ToolSpec<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolSpec<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: InputSchema,
}

#[derive(Serialize)]
struct InputSchema {
    json: Value,
}

/// Whether `model` is an Anthropic model (a foundation model id, a cross-region inference
/// profile such as `us.anthropic.…`, or an ARN naming one).
pub(super) fn is_anthropic(model: &str) -> bool {
    model.contains("anthropic.")
}

/// Serializes `chat` as a Converse request body for `model`; `Err` says why the request
/// cannot be expressed (an image by URL, …).
pub(super) fn converse_request(chat: &ChatRequest, model: &str) -> Result<Vec<u8>, String> {
    let mut system = Vec::new();
    let mut messages: Vec<Message<'_>> = Vec::with_capacity(chat.messages.len());
    let mut documents = 0usize;
    for m in &chat.messages {
        let (role, blocks) = match m.role.as_str() {
            "system" | "developer" => {
                system.extend(content_blocks(m.content.as_ref(), &mut documents)?);
                continue;
            }
            "assistant" => ("assistant", assistant_blocks(m, &mut documents)?),
            "tool" => ("user", vec![tool_result(m, &mut documents)?]),
            _ => ("user", content_blocks(m.content.as_ref(), &mut documents)?),
        };
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(Message {
                role,
                content: blocks,
            }),
        }
    }
    for m in &mut messages {
        if m.role == "user" {
            // Tool results open the turn that answers the tool calls.
            let (mut results, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut m.content)
                .into_iter()
                .partition(|b| matches!(b, Block::ToolResult(_)));
            results.extend(rest);
            m.content = results;
        }
    }
    // A final assistant turn (prefill) must not end with whitespace.
    if let Some(Message {
        role: "assistant",
        content,
    }) = messages.last_mut()
    {
        if let Some(Block::Text(text)) = content.last_mut() {
            if text.ends_with(char::is_whitespace) {
                *text = Cow::Owned(text.trim_end().to_string());
            }
        }
    }

    let mut extra = Map::new();
    let thinking = thinking(chat, model);
    let budget = thinking
        .as_ref()
        .and_then(|t| t.get("budget_tokens"))
        .and_then(Value::as_u64);
    let mut max_tokens = chat.max_completion_tokens.or(chat.max_tokens);
    if let Some(b) = budget {
        if max_tokens.is_none_or(|m| m <= b) {
            max_tokens = Some(b + THINKING_ANSWER_TOKENS);
        }
    }
    if let Some(t) = thinking {
        extra.insert("thinking".into(), t);
    }
    let stop_sequences = match &chat.stop {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let request = ConverseRequest {
        tool_config: tool_config(chat, &messages),
        messages,
        system,
        inference_config: InferenceConfig {
            max_tokens,
            // Extended thinking accepts no sampling changes.
            temperature: chat.temperature.filter(|_| budget.is_none()),
            top_p: chat.top_p.filter(|_| budget.is_none()),
            stop_sequences,
        },
        additional_model_request_fields: extra,
    };
    serde_json::to_vec(&request).map_err(|e| format!("cannot encode the request: {e}"))
}

/// Anthropic's extended thinking: a `thinking` setting as sent (LiteLLM accepts it in
/// OpenAI requests), or a budget for `reasoning_effort`. Other models get neither.
fn thinking(chat: &ChatRequest, model: &str) -> Option<Value> {
    if !is_anthropic(model) {
        return None;
    }
    if let Some(t) = chat.extra.get("thinking").filter(|t| t.is_object()) {
        return Some(t.clone());
    }
    let budget = match chat.reasoning_effort.as_deref() {
        Some("low") => 1024,
        Some("medium") => 2048,
        Some("high") => 4096,
        _ => return None,
    };
    Some(json!({"type": "enabled", "budget_tokens": budget}))
}

/// The tools, and `toolChoice` when the client chose. A conversation that holds tool
/// calls needs a tool list even when the client sent none (Bedrock refuses `toolUse`
/// blocks otherwise): the tools it used are declared with an open schema.
fn tool_config<'a>(chat: &'a ChatRequest, messages: &[Message<'a>]) -> Option<ToolConfig<'a>> {
    let mut tools: Vec<Tool<'a>> = chat
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref())
        .map(|f| Tool {
            tool_spec: ToolSpec {
                name: &f.name,
                description: f.description.as_deref().filter(|d| !d.is_empty()),
                input_schema: InputSchema {
                    json: f
                        .parameters
                        .clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                },
            },
        })
        .collect();
    let used: Vec<&'a str> = messages
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|b| match b {
            Block::ToolUse(t) => Some(t.name),
            _ => None,
        })
        .collect();
    let none = matches!(&chat.tool_choice, Some(Value::String(s)) if s == "none");
    if tools.is_empty() || none {
        // Without tools to offer, only the ones the history used are declared.
        tools.retain(|t| used.contains(&t.tool_spec.name));
        for name in used {
            if !tools.iter().any(|t| t.tool_spec.name == name) {
                tools.push(Tool {
                    tool_spec: ToolSpec {
                        name,
                        description: None,
                        input_schema: InputSchema {
                            json: json!({"type": "object", "properties": {}}),
                        },
                    },
                });
            }
        }
        if tools.is_empty() {
            return None;
        }
        return Some(ToolConfig {
            tools,
            tool_choice: None,
        });
    }
    let tool_choice = match &chat.tool_choice {
        Some(Value::String(s)) if s == "required" => Some(json!({"any": {}})),
        Some(Value::String(s)) if s == "auto" => Some(json!({"auto": {}})),
        Some(Value::Object(o)) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(|name| json!({"tool": {"name": name}})),
        _ => None,
    };
    Some(ToolConfig { tools, tool_choice })
}

/// Chat content as blocks: text (empty ones dropped), images, documents; a part's
/// `cache_control` becomes a cache point after it.
fn content_blocks<'a>(
    content: Option<&'a Content>,
    documents: &mut usize,
) -> Result<Vec<Block<'a>>, String> {
    let mut out = Vec::new();
    match content {
        None => {}
        Some(Content::Text(t)) if t.is_empty() => {}
        Some(Content::Text(t)) => out.push(Block::Text(Cow::Borrowed(t))),
        Some(Content::Parts(parts)) => {
            for p in parts {
                if let Some(block) = part_block(p, documents)? {
                    out.push(block);
                    if p.extra.get("cache_control").is_some_and(|c| !c.is_null()) {
                        out.push(Block::CachePoint(CachePoint { kind: "default" }));
                    }
                }
            }
        }
    }
    Ok(out)
}

fn part_block<'a>(p: &'a Part, documents: &mut usize) -> Result<Option<Block<'a>>, String> {
    Ok(match p.kind.as_str() {
        "text" | "input_text" => p
            .text
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| Block::Text(Cow::Borrowed(t))),
        "image_url" => {
            let Some(image) = &p.image_url else {
                return Ok(None);
            };
            let (mime, data) = data_url(&image.url, "image")?;
            let format = image_format(mime).ok_or_else(|| {
                format!("Bedrock does not take `{mime}` images (png, jpeg, gif and webp only)")
            })?;
            Some(Block::Image(Media {
                format,
                source: Source { bytes: data },
            }))
        }
        "file" => {
            let Some(file) = p.extra.get("file") else {
                return Ok(None);
            };
            let Some(url) = file.get("file_data").and_then(Value::as_str) else {
                return Err(
                    "Bedrock takes files only inline (`file.file_data` as a data: URL)".into(),
                );
            };
            let (mime, data) = data_url(url, "file")?;
            if let Some(format) = image_format(mime) {
                return Ok(Some(Block::Image(Media {
                    format,
                    source: Source { bytes: data },
                })));
            }
            let format = document_format(mime)
                .ok_or_else(|| format!("Bedrock does not take `{mime}` documents"))?;
            *documents += 1;
            let name = file
                .get("filename")
                .and_then(Value::as_str)
                .map(document_name)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("document {documents}"));
            Some(Block::Document(Document {
                format,
                name,
                source: Source { bytes: data },
            }))
        }
        _ => None,
    })
}

/// The media type and base64 data of a `data:…;base64,…` URL.
fn data_url<'a>(url: &'a str, what: &str) -> Result<(&'a str, &'a str), String> {
    let refused = || {
        format!(
            "Bedrock takes {what}s only as bytes: send the {what} as a `data:<type>;base64,…` URL, not a link"
        )
    };
    let rest = url.strip_prefix("data:").ok_or_else(refused)?;
    let (meta, data) = rest.split_once(',').ok_or_else(refused)?;
    let mime = meta.strip_suffix(";base64").ok_or_else(refused)?;
    Ok((mime, data))
}

fn image_format(mime: &str) -> Option<&'static str> {
    Some(match mime.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => return None,
    })
}

fn document_format(mime: &str) -> Option<&'static str> {
    Some(match mime.to_ascii_lowercase().as_str() {
        "application/pdf" => "pdf",
        "text/csv" => "csv",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "text/html" => "html",
        "text/plain" => "txt",
        "text/markdown" => "md",
        _ => return None,
    })
}

/// A file name as Bedrock accepts document names (letters, digits, single spaces,
/// hyphens, parentheses, square brackets), without its extension.
fn document_name(filename: &str) -> String {
    let stem = filename.rsplit_once('.').map_or(filename, |(s, _)| s);
    let kept: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-()[]".contains(c) {
                c
            } else {
                ' '
            }
        })
        .collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn assistant_blocks<'a>(
    m: &'a ChatMessage,
    documents: &mut usize,
) -> Result<Vec<Block<'a>>, String> {
    let mut blocks = Vec::new();
    for tb in m.thinking_blocks.iter().flatten() {
        let field = |k: &str| tb.get(k).and_then(Value::as_str);
        match field("type") {
            Some("thinking") => blocks.push(Block::ReasoningContent(Reasoning::ReasoningText {
                text: field("thinking").unwrap_or_default(),
                signature: field("signature"),
            })),
            Some("redacted_thinking") => {
                if let Some(data) = field("data") {
                    blocks.push(Block::ReasoningContent(Reasoning::RedactedContent(data)));
                }
            }
            _ => {}
        }
    }
    blocks.extend(content_blocks(m.content.as_ref(), documents)?);
    for tc in m.tool_calls.iter().flatten() {
        let input = serde_json::from_str::<Value>(&tc.function.arguments)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        blocks.push(Block::ToolUse(ToolUse {
            tool_use_id: &tc.id,
            name: &tc.function.name,
            input,
        }));
    }
    Ok(blocks)
}

/// A `tool` message as a `toolResult` block; an empty result says so (Bedrock refuses
/// blank text).
fn tool_result<'a>(m: &'a ChatMessage, documents: &mut usize) -> Result<Block<'a>, String> {
    let mut content: Vec<Block<'a>> = content_blocks(m.content.as_ref(), documents)?
        .into_iter()
        .filter(|b| matches!(b, Block::Text(_) | Block::Image(_) | Block::Document(_)))
        .collect();
    if content.is_empty() {
        content.push(Block::Text(Cow::Borrowed("(empty)")));
    }
    Ok(Block::ToolResult(ToolResult {
        tool_use_id: m.tool_call_id.as_deref().unwrap_or_default(),
        content,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: Value, model: &str) -> Value {
        let chat: ChatRequest = serde_json::from_value(body).unwrap();
        serde_json::from_slice(&converse_request(&chat, model).unwrap()).unwrap()
    }

    fn refused(body: Value) -> String {
        let chat: ChatRequest = serde_json::from_value(body).unwrap();
        converse_request(&chat, "m").unwrap_err()
    }

    #[test]
    fn system_messages_and_inference_config() {
        let v = translate(
            json!({"model": "x", "max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "stop": "END",
                   "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Dev."}]},
                {"role": "user", "content": "hi"},
                {"role": "user", "content": [{"type": "text", "text": "again"}, {"type": "text", "text": ""}]},
                {"role": "assistant", "content": "Hello "}]}),
            "meta.llama3-70b-instruct-v1:0",
        );
        assert_eq!(
            v["system"],
            json!([{"text": "Be terse."}, {"text": "Dev."}])
        );
        assert_eq!(
            v["messages"],
            json!([{"role": "user", "content": [{"text": "hi"}, {"text": "again"}]},
                   {"role": "assistant", "content": [{"text": "Hello"}]}])
        );
        assert_eq!(
            v["inferenceConfig"],
            json!({"maxTokens": 50, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]})
        );
        assert!(v.get("toolConfig").is_none());
        assert!(v.get("additionalModelRequestFields").is_none());
        assert!(v.get("model").is_none());
    }

    #[test]
    fn tool_round_trip_and_choice() {
        let v = translate(
            json!({"model": "x", "tool_choice": "required", "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "t2", "type": "function", "function": {"name": "get_weather", "arguments": "not json"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "t2", "content": ""},
                {"role": "user", "content": "thanks"}]}),
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
        );
        assert_eq!(
            v["toolConfig"],
            json!({"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather",
                    "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}],
                   "toolChoice": {"any": {}}})
        );
        assert_eq!(
            v["messages"][1],
            json!({"role": "assistant", "content": [
                {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "t2", "name": "get_weather", "input": {}}}]})
        );
        assert_eq!(
            v["messages"][2],
            json!({"role": "user", "content": [
                {"toolResult": {"toolUseId": "t1", "content": [{"text": "sunny"}]}},
                {"toolResult": {"toolUseId": "t2", "content": [{"text": "(empty)"}]}},
                {"text": "thanks"}]})
        );
        let named = translate(
            json!({"model": "x", "tool_choice": {"type": "function", "function": {"name": "f"}},
                   "tools": [{"type": "function", "function": {"name": "f"}}],
                   "messages": [{"role": "user", "content": "x"}]}),
            "m",
        );
        assert_eq!(
            named["toolConfig"],
            json!({"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object", "properties": {}}}}}],
                   "toolChoice": {"tool": {"name": "f"}}})
        );
    }

    #[test]
    fn tool_history_without_tools_declares_the_used_ones() {
        let v = translate(
            json!({"model": "x", "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "done"}]}),
            "m",
        );
        assert_eq!(
            v["toolConfig"],
            json!({"tools": [{"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object", "properties": {}}}}}]})
        );
        let none = translate(
            json!({"model": "x", "tool_choice": "none",
                   "tools": [{"type": "function", "function": {"name": "f"}}],
                   "messages": [{"role": "user", "content": "x"}]}),
            "m",
        );
        assert!(none.get("toolConfig").is_none(), "{none}");
    }

    #[test]
    fn images_documents_and_cache_points() {
        let v = translate(
            json!({"model": "x", "messages": [
                {"role": "system", "content": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "file", "file": {"filename": "report v2.final.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
                    {"type": "file", "file": {"file_data": "data:text/plain;base64,aGk="}}]}]}),
            "m",
        );
        assert_eq!(
            v["system"],
            json!([{"text": "S"}, {"cachePoint": {"type": "default"}}])
        );
        assert_eq!(
            v["messages"][0]["content"],
            json!([{"text": "What is this?"},
                   {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}},
                   {"document": {"format": "pdf", "name": "report v2 final", "source": {"bytes": "JVBERi0="}}},
                   {"document": {"format": "txt", "name": "document 2", "source": {"bytes": "aGk="}}}])
        );
        let e = refused(
            json!({"model": "x", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
        );
        assert!(e.contains("data:"), "{e}");
        let e = refused(
            json!({"model": "x", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]}),
        );
        assert!(e.contains("image/tiff"), "{e}");
    }

    #[test]
    fn thinking_for_anthropic_models_only() {
        let body = json!({"model": "x", "reasoning_effort": "low", "max_tokens": 100, "temperature": 0.5,
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "ok",
                 "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "s1"},
                                     {"type": "redacted_thinking", "data": "abc"}]},
                {"role": "user", "content": "more"}]});
        let v = translate(body.clone(), "us.anthropic.claude-sonnet-4-20250514-v1:0");
        assert_eq!(
            v["additionalModelRequestFields"],
            json!({"thinking": {"type": "enabled", "budget_tokens": 1024}})
        );
        assert_eq!(v["inferenceConfig"], json!({"maxTokens": 1024 + 4096}));
        assert_eq!(
            v["messages"][1]["content"],
            json!([{"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "s1"}}},
                   {"reasoningContent": {"redactedContent": "abc"}},
                   {"text": "ok"}])
        );
        let other = translate(body, "amazon.nova-pro-v1:0");
        assert!(other.get("additionalModelRequestFields").is_none());
        assert_eq!(
            other["inferenceConfig"],
            json!({"maxTokens": 100, "temperature": 0.5})
        );
        let given = translate(
            json!({"model": "x", "thinking": {"type": "enabled", "budget_tokens": 3000}, "max_tokens": 8000,
                   "messages": [{"role": "user", "content": "hi"}]}),
            "anthropic.claude-3-7-sonnet-20250219-v1:0",
        );
        assert_eq!(
            given["additionalModelRequestFields"]["thinking"]["budget_tokens"],
            3000
        );
        assert_eq!(given["inferenceConfig"]["maxTokens"], 8000);
    }
}
