//! Google Gemini `generateContent` / `streamGenerateContent?alt=sse` (API v1beta): the
//! internal request ([`ChatBody`], OpenAI chat shape) translated into a Gemini request,
//! Gemini answers (JSON, and SSE chunks that are each a whole response) decoded into
//! [`ir`] values, and [`ir`] values encoded as Gemini answers and errors. Wire types are
//! private to this file.
//!
//! Tool call ids: Gemini does not name its function calls, so ids are generated
//! (`call_<random>`). A function call's `thoughtSignature`, which thinking models want
//! back with the call in later turns, travels inside the id as
//! `call_<random>__ts__<signature in base64url>` and is restored from it, so the
//! signature survives any client format.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::chat::{BodyError, ChatBody, ChatMessage, ChatRequest, Content as ChatContent};
use super::ir::{
    self, Completion, DecodeError, ErrorInfo, FinishReason, SseEvent, StreamEvent, ToolCall,
};

// ---------------------------------------------------------------------------------------
// Wire types (request and response share contents and parts)

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    /// The text is the model's reasoning.
    #[serde(default, skip_serializing_if = "is_false")]
    thought: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thought_signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inline_data: Option<Blob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file_data: Option<FileData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    function_response: Option<FunctionResponse>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Part {
    fn text(text: impl Into<String>) -> Self {
        Part {
            text: Some(text.into()),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Blob {
    mime_type: String,
    data: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileData {
    mime_type: String,
    file_uri: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    args: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FunctionResponse {
    name: String,
    response: Value,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Request {
    contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tool {
    function_declarations: Vec<FunctionDeclaration>,
}

#[derive(Serialize)]
struct FunctionDeclaration {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    function_calling_config: FunctionCallingConfig,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<Vec<String>>,
}

#[derive(Serialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<ThinkingConfig>,
}

impl GenerationConfig {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    thinking_budget: u64,
    include_thoughts: bool,
}

/// A `GenerateContentResponse`: a whole answer, or one chunk of a stream.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_id: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finish_reason: Option<String>,
    #[serde(default)]
    index: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    block_reason: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    cached_content_token_count: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    thoughts_token_count: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    tool_use_prompt_token_count: u64,
    #[serde(default)]
    total_token_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<UsageMetadata> for ir::Usage {
    fn from(u: UsageMetadata) -> Self {
        Self {
            input_tokens: u.prompt_token_count + u.tool_use_prompt_token_count,
            output_tokens: u.candidates_token_count + u.thoughts_token_count,
            cached_input_tokens: u.cached_content_token_count,
            cache_creation_input_tokens: 0,
            reasoning_tokens: u.thoughts_token_count,
        }
    }
}

impl From<ir::Usage> for UsageMetadata {
    fn from(u: ir::Usage) -> Self {
        Self {
            prompt_token_count: u.input_tokens,
            candidates_token_count: u.output_tokens.saturating_sub(u.reasoning_tokens),
            cached_content_token_count: u.cached_input_tokens,
            thoughts_token_count: u.reasoning_tokens,
            tool_use_prompt_token_count: 0,
            total_token_count: u.total(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Request: internal (OpenAI chat) → Gemini

/// Why a chat request cannot be expressed as a Gemini request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("messages[{index}]: {reason}")]
    Message { index: usize, reason: String },
}

/// Translates the internal request into a Gemini `generateContent` body (the model goes
/// in the URL, the stream choice in the method name, so neither is in the body).
pub fn chat_to_request(chat: &ChatBody<'_>) -> Result<Bytes, RequestError> {
    let req = chat.to_request()?;
    let mut out = Request::default();
    let mut system = Vec::new();
    for (index, m) in req.messages.iter().enumerate() {
        let fail = |reason: String| RequestError::Message { index, reason };
        match m.role.as_str() {
            "system" | "developer" => {
                let text = m
                    .content
                    .as_ref()
                    .map(ChatContent::text)
                    .unwrap_or_default();
                if !text.is_empty() {
                    system.push(Part::text(text));
                }
            }
            "user" => push_content(&mut out.contents, "user", user_parts(m).map_err(fail)?),
            "assistant" => push_content(&mut out.contents, "model", model_parts(m)),
            "tool" | "function" => {
                let part = tool_result(&req.messages[..index], m).map_err(fail)?;
                push_content(&mut out.contents, "user", vec![part]);
            }
            other => return Err(fail(format!("role `{other}` cannot be sent to Gemini"))),
        }
    }
    if !system.is_empty() {
        out.system_instruction = Some(Content {
            role: None,
            parts: system,
        });
    }
    let declarations: Vec<FunctionDeclaration> = req
        .tools
        .iter()
        .flatten()
        // Built-in tools of other providers (web_search, …) have no Gemini declaration.
        .filter(|t| t.kind == "function")
        .filter_map(|t| t.function.as_ref())
        .map(|f| FunctionDeclaration {
            name: f.name.clone(),
            description: f.description.clone(),
            parameters: f.parameters.as_ref().map(gemini_schema).filter(has_fields),
        })
        .collect();
    if !declarations.is_empty() {
        out.tools.push(Tool {
            function_declarations: declarations,
        });
    }
    out.tool_config = req.tool_choice.as_ref().and_then(tool_config);
    out.generation_config = generation_config(&req);
    let bytes = serde_json::to_vec(&out).map_err(|e| BodyError::Json(e.to_string()))?;
    Ok(Bytes::from(bytes))
}

/// Appends parts to the conversation; Gemini wants consecutive turns of one role merged.
fn push_content(contents: &mut Vec<Content>, role: &str, parts: Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
        _ => contents.push(Content {
            role: Some(role.to_string()),
            parts,
        }),
    }
}

fn user_parts(m: &ChatMessage) -> Result<Vec<Part>, String> {
    let parts = match &m.content {
        None => return Ok(Vec::new()),
        // Gemini rejects empty text parts.
        Some(ChatContent::Text(t)) if t.is_empty() => return Ok(Vec::new()),
        Some(ChatContent::Text(t)) => return Ok(vec![Part::text(t.clone())]),
        Some(ChatContent::Parts(parts)) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        match p.kind.as_str() {
            "text" | "input_text" => {
                if let Some(t) = p.text.as_ref().filter(|t| !t.is_empty()) {
                    out.push(Part::text(t.clone()));
                }
            }
            "image_url" => {
                let url = p.image_url.as_ref().map(|u| u.url.as_str()).unwrap_or("");
                out.push(media_part(url)?);
            }
            "input_audio" => {
                let audio = &p.extra["input_audio"];
                let (Some(data), Some(format)) = (audio["data"].as_str(), audio["format"].as_str())
                else {
                    return Err("input_audio needs `data` and `format`".into());
                };
                out.push(Part {
                    inline_data: Some(Blob {
                        mime_type: format!("audio/{format}"),
                        data: data.to_string(),
                    }),
                    ..Default::default()
                });
            }
            "file" => match p.extra["file"]["file_data"].as_str() {
                Some(url) => out.push(media_part(url)?),
                None => return Err("file parts need `file.file_data` (a data: URL)".into()),
            },
            other => {
                return Err(format!(
                    "content part type `{other}` cannot be sent to Gemini"
                ))
            }
        }
    }
    Ok(out)
}

/// An image or file by `data:` URL (inline) or http(s) URL (by reference).
fn media_part(url: &str) -> Result<Part, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| "malformed data: URL".to_string())?;
        let mut params = meta.split(';');
        let mime = params
            .next()
            .filter(|m| !m.is_empty())
            .unwrap_or("image/jpeg");
        if !params.any(|p| p == "base64") {
            return Err("data: URLs must be base64-encoded".into());
        }
        return Ok(Part {
            inline_data: Some(Blob {
                mime_type: mime.to_string(),
                data: data.to_string(),
            }),
            ..Default::default()
        });
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(Part {
            file_data: Some(FileData {
                mime_type: guess_mime(url).to_string(),
                file_uri: url.to_string(),
            }),
            ..Default::default()
        });
    }
    Err("image URLs must be data: or http(s) URLs".into())
}

/// The media type for a URL's file extension; images are the common case.
fn guess_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        Some("pdf") => "application/pdf",
        Some("mp3") => "audio/mp3",
        Some("wav") => "audio/wav",
        Some("mp4") => "video/mp4",
        _ => "image/jpeg",
    }
}

fn model_parts(m: &ChatMessage) -> Vec<Part> {
    let mut out = Vec::new();
    if let Some(text) = m.content.as_ref().map(ChatContent::text) {
        if !text.is_empty() {
            out.push(Part::text(text));
        }
    }
    for tc in m.tool_calls.iter().flatten() {
        let (_, signature) = split_call_id(&tc.id);
        out.push(Part {
            function_call: Some(FunctionCall {
                id: None,
                name: tc.function.name.clone(),
                args: Some(call_args(&tc.function.arguments)),
            }),
            thought_signature: signature,
            ..Default::default()
        });
    }
    out
}

/// Gemini wants an object. Arguments a model once produced broken (cut off by
/// `max_tokens`, say) are kept as text under `arguments` rather than failing every later
/// turn of the conversation.
fn call_args(text: &str) -> Value {
    if text.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({ "arguments": text }),
    }
}

/// A `tool` message as a `functionResponse`; Gemini matches results to calls by name,
/// found from the earlier assistant call with the same id.
fn tool_result(earlier: &[ChatMessage], m: &ChatMessage) -> Result<Part, String> {
    let id = m.tool_call_id.as_deref().unwrap_or("");
    let name = earlier
        .iter()
        .rev()
        .flat_map(|e| e.tool_calls.iter().flatten())
        .find(|tc| !id.is_empty() && tc.id == id)
        .map(|tc| tc.function.name.clone())
        .or_else(|| m.name.clone())
        .ok_or_else(|| format!("tool result `{id}` answers no earlier tool call"))?;
    let content = m
        .content
        .as_ref()
        .map(ChatContent::text)
        .unwrap_or_default();
    Ok(Part {
        function_response: Some(FunctionResponse {
            name,
            response: json!({ "content": content }),
        }),
        ..Default::default()
    })
}

/// Schema keywords Gemini's OpenAPI-subset `Schema` accepts; any other key is rejected
/// with 400 ("Unknown name …"), so everything else (`$schema`, `$id`, `$comment`,
/// `additionalProperties`, `strict`, `examples`, `not`, `exclusiveMinimum`,
/// `exclusiveMaximum`, `multipleOf`, `uniqueItems`, `patternProperties`, …) is dropped,
/// at every depth, once [`clean_schema`] has converted what it can.
const SCHEMA_KEYS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// A JSON schema as Gemini accepts it: local `$ref`s (`#/$defs/…`, `#/definitions/…`)
/// and a lone `allOf` inlined, `type: [T, "null"]` turned into `type: T, nullable: true`,
/// `oneOf` into `anyOf`, `const` into a one-value `enum`, enum values into strings,
/// `format` kept only where Gemini knows it, and every key outside [`SCHEMA_KEYS`]
/// dropped.
fn gemini_schema(schema: &Value) -> Value {
    let defs = ["$defs", "definitions"]
        .iter()
        .filter_map(|k| schema.get(k).and_then(Value::as_object))
        .flat_map(|m| m.iter())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<Map<String, Value>>();
    clean_schema(schema, &defs, 0)
}

fn clean_schema(v: &Value, defs: &Map<String, Value>, depth: usize) -> Value {
    let Value::Object(obj) = v else {
        return v.clone();
    };
    if let Some(target) = obj.get("$ref").and_then(Value::as_str) {
        let name = target
            .strip_prefix("#/$defs/")
            .or_else(|| target.strip_prefix("#/definitions/"));
        // Recursive schemas cannot be inlined; past a few levels they become "any".
        return match name.and_then(|n| defs.get(n)) {
            Some(def) if depth < 8 => clean_schema(def, defs, depth + 1),
            _ => json!({}),
        };
    }
    let mut out = Map::new();
    for (k, val) in obj {
        let key = if k == "oneOf" { "anyOf" } else { k.as_str() };
        match key {
            "type" => match val {
                Value::Array(types) => {
                    if types.iter().any(|t| t == "null") {
                        out.insert("nullable".into(), true.into());
                    }
                    if let Some(t) = types.iter().find(|t| *t != "null") {
                        out.insert("type".into(), t.clone());
                    }
                }
                _ => {
                    out.insert("type".into(), val.clone());
                }
            },
            "properties" => {
                let props = val
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(name, s)| (name.clone(), clean_schema(s, defs, depth)))
                            .collect::<Map<_, _>>()
                    })
                    .unwrap_or_default();
                out.insert("properties".into(), Value::Object(props));
            }
            "items" => {
                out.insert("items".into(), clean_schema(val, defs, depth));
            }
            "anyOf" => {
                let alts = val
                    .as_array()
                    .map(|a| a.iter().map(|s| clean_schema(s, defs, depth)).collect())
                    .unwrap_or_default();
                out.insert("anyOf".into(), Value::Array(alts));
            }
            "format" => {
                if matches!(
                    val.as_str(),
                    Some("enum" | "date-time" | "int32" | "int64" | "float" | "double")
                ) {
                    out.insert("format".into(), val.clone());
                }
            }
            // Gemini's enum values are strings, whatever the type.
            "enum" | "const" => {
                let values = match val {
                    Value::Array(a) => a.iter().collect(),
                    one => vec![one],
                };
                let values = values
                    .into_iter()
                    .filter(|v| !v.is_null())
                    .map(|v| match v {
                        Value::String(_) => v.clone(),
                        other => Value::String(other.to_string()),
                    })
                    .collect();
                out.insert("enum".into(), Value::Array(values));
            }
            // A single `allOf` (pydantic's way to describe a `$ref`) is merged in.
            "allOf" => {
                if let Some([only]) = val.as_array().map(Vec::as_slice) {
                    if let Value::Object(inner) = clean_schema(only, defs, depth) {
                        for (k, v) in inner {
                            out.entry(k).or_insert(v);
                        }
                    }
                }
            }
            _ if SCHEMA_KEYS.contains(&key) => {
                out.insert(key.into(), val.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

/// Gemini rejects object parameters without properties; a function without arguments
/// simply has no `parameters`.
fn has_fields(schema: &Value) -> bool {
    schema["type"] != "object"
        || schema["properties"]
            .as_object()
            .is_some_and(|p| !p.is_empty())
}

fn tool_config(choice: &Value) -> Option<ToolConfig> {
    let (mode, names) = match choice {
        Value::String(s) => match s.as_str() {
            "auto" => ("AUTO", None),
            "none" => ("NONE", None),
            "required" => ("ANY", None),
            _ => return None,
        },
        Value::Object(_) => {
            let name = choice["function"]["name"].as_str()?;
            ("ANY", Some(vec![name.to_string()]))
        }
        _ => return None,
    };
    Some(ToolConfig {
        function_calling_config: FunctionCallingConfig {
            mode,
            allowed_function_names: names,
        },
    })
}

fn generation_config(req: &ChatRequest) -> GenerationConfig {
    let extra = |k: &str| req.extra.get(k);
    let stop_sequences = match &req.stop {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let (response_mime_type, response_schema) = match &req.response_format {
        Some(f) if f["type"] == "json_schema" => (
            Some("application/json"),
            f["json_schema"].get("schema").map(gemini_schema),
        ),
        Some(f) if f["type"] == "json_object" => (Some("application/json"), None),
        _ => (None, None),
    };
    // OpenAI's effort levels as thinking budgets (LiteLLM's values).
    let thinking_config = match req.reasoning_effort.as_deref() {
        Some("low") => Some((1024, true)),
        Some("medium") => Some((2048, true)),
        Some("high") => Some((4096, true)),
        Some("none" | "disable") => Some((0, false)),
        _ => None,
    }
    .map(|(thinking_budget, include_thoughts)| ThinkingConfig {
        thinking_budget,
        include_thoughts,
    });
    GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: extra("top_k").and_then(Value::as_u64),
        max_output_tokens: req.max_completion_tokens.or(req.max_tokens),
        stop_sequences,
        candidate_count: extra("n").and_then(Value::as_u64),
        presence_penalty: extra("presence_penalty").and_then(Value::as_f64),
        frequency_penalty: extra("frequency_penalty").and_then(Value::as_f64),
        seed: extra("seed").and_then(Value::as_i64),
        response_mime_type,
        response_schema,
        thinking_config,
    }
}

// ---------------------------------------------------------------------------------------
// Tool call ids

const SIGNATURE_MARK: &str = "__ts__";

/// The id for a Gemini function call: Gemini's own when it sent one, else generated; the
/// part's thought signature appended (base64url, so the id stays `[A-Za-z0-9_-]`).
fn call_id(given: Option<String>, signature: Option<&str>) -> String {
    let base = given
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| format!("call_{}", &uuid::Uuid::new_v4().simple().to_string()[..24]));
    match signature.filter(|s| !s.is_empty()) {
        Some(sig) => {
            let sig = sig.replace('+', "-").replace('/', "_");
            format!("{base}{SIGNATURE_MARK}{}", sig.trim_end_matches('='))
        }
        None => base,
    }
}

/// A tool call id split into its plain id and the thought signature it carries.
fn split_call_id(id: &str) -> (&str, Option<String>) {
    match id.split_once(SIGNATURE_MARK) {
        Some((base, sig)) if !sig.is_empty() => {
            let mut sig = sig.replace('-', "+").replace('_', "/");
            while sig.len() % 4 != 0 {
                sig.push('=');
            }
            (base, Some(sig))
        }
        _ => (id, None),
    }
}

// ---------------------------------------------------------------------------------------
// Answers: Gemini → IR

/// Gemini's finish reason in the common vocabulary; `STOP` with function calls means
/// the model wants them run.
fn finish_from(reason: &str, has_calls: bool) -> FinishReason {
    match reason {
        "STOP" if has_calls => FinishReason::ToolCalls,
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_string()),
    }
}

/// One part of an answer, read.
enum Piece {
    Text(String),
    Reasoning(String),
    Call(ToolCall),
}

fn read_part(part: Part) -> Option<Piece> {
    if let Some(fc) = part.function_call {
        let args = fc.args.unwrap_or_else(|| json!({}));
        return Some(Piece::Call(ToolCall {
            id: call_id(fc.id, part.thought_signature.as_deref()),
            name: fc.name,
            arguments: args.to_string(),
        }));
    }
    let text = part.text.filter(|t| !t.is_empty())?;
    Some(if part.thought {
        Piece::Reasoning(text)
    } else {
        Piece::Text(text)
    })
}

/// The first candidate's parts and finish reason (the gateway answers with one choice),
/// or the prompt's block reason when Gemini refused the prompt itself.
fn first_candidate(r: &mut Response) -> (Vec<Part>, Option<String>) {
    match r.candidates.first_mut() {
        Some(c) => (
            c.content.take().map(|c| c.parts).unwrap_or_default(),
            c.finish_reason
                .take()
                .filter(|f| f != "FINISH_REASON_UNSPECIFIED"),
        ),
        None => (
            Vec::new(),
            // A refused prompt: whatever the block reason, the answer was filtered.
            r.prompt_feedback
                .as_ref()
                .and_then(|f| f.block_reason.as_ref())
                .map(|_| "PROHIBITED_CONTENT".to_string()),
        ),
    }
}

/// Decodes a `generateContent` answer.
pub fn decode_completion(body: &[u8]) -> Result<Completion, DecodeError> {
    let mut r: Response = serde_json::from_slice(body)
        .map_err(|e| DecodeError(format!("invalid Gemini response: {e}")))?;
    let (parts, finish) = first_candidate(&mut r);
    let mut c = Completion {
        id: r.response_id.unwrap_or_default(),
        model: r.model_version.unwrap_or_default(),
        created: ir::now_secs(),
        usage: r.usage_metadata.map(Into::into).unwrap_or_default(),
        ..Default::default()
    };
    for piece in parts.into_iter().filter_map(read_part) {
        match piece {
            Piece::Text(t) => c.text.push_str(&t),
            Piece::Reasoning(t) => c.reasoning.get_or_insert_with(String::new).push_str(&t),
            Piece::Call(tc) => c.tool_calls.push(tc),
        }
    }
    c.finish_reason = finish.map(|f| finish_from(&f, !c.tool_calls.is_empty()));
    Ok(c)
}

/// Decodes `streamGenerateContent?alt=sse` chunks. Gemini has no end marker: the stream
/// is complete when the connection closes after a chunk with a finish reason.
#[derive(Default)]
pub struct ChunkDecoder {
    started: bool,
    calls: usize,
    finished: bool,
    usage: Option<ir::Usage>,
}

impl ir::StreamDecoder for ChunkDecoder {
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<bool, DecodeError> {
        let data = ev.data.trim_ascii();
        if data.is_empty() {
            return Ok(false);
        }
        let mut r: Response = serde_json::from_slice(data)
            .map_err(|e| DecodeError(format!("invalid Gemini chunk: {e}")))?;
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: r.response_id.take().unwrap_or_default(),
                model: r.model_version.take().unwrap_or_default(),
            });
        }
        let (parts, finish) = first_candidate(&mut r);
        for piece in parts.into_iter().filter_map(read_part) {
            match piece {
                Piece::Text(t) => out.push(StreamEvent::Text(t)),
                Piece::Reasoning(t) => out.push(StreamEvent::Reasoning(t)),
                Piece::Call(tc) => {
                    let index = self.calls;
                    self.calls += 1;
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: tc.id,
                        name: tc.name,
                    });
                    out.push(StreamEvent::ToolCallArgs {
                        index,
                        arguments: tc.arguments,
                    });
                }
            }
        }
        if let Some(f) = finish {
            if !self.finished {
                self.finished = true;
                out.push(StreamEvent::Finish(finish_from(&f, self.calls > 0)));
            }
        }
        // Gemini repeats usage on many chunks; pass it on when it changed.
        if let Some(u) = r.usage_metadata.map(ir::Usage::from) {
            if self.usage != Some(u) {
                self.usage = Some(u);
                out.push(StreamEvent::Usage(u));
            }
        }
        Ok(false)
    }

    fn ends_at_close(&self) -> bool {
        self.finished
    }
}

// ---------------------------------------------------------------------------------------
// Answers: IR → Gemini

/// Gemini's name for a finish reason (tool calls end with `STOP` in Gemini).
fn finish_str(r: &FinishReason) -> &str {
    match r {
        FinishReason::Stop | FinishReason::ToolCalls => "STOP",
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
        FinishReason::Other(s) if s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') => s,
        FinishReason::Other(_) => "OTHER",
    }
}

fn call_part(tc: &ToolCall) -> Part {
    let (id, signature) = split_call_id(&tc.id);
    Part {
        function_call: Some(FunctionCall {
            id: (!id.is_empty()).then(|| id.to_string()),
            name: tc.name.clone(),
            args: Some(call_args(&tc.arguments)),
        }),
        thought_signature: signature,
        ..Default::default()
    }
}

fn response(
    id: &str,
    model: &str,
    parts: Vec<Part>,
    finish: Option<&FinishReason>,
    usage: Option<ir::Usage>,
) -> Response {
    Response {
        candidates: vec![Candidate {
            content: (!parts.is_empty()).then(|| Content {
                role: Some("model".into()),
                parts,
            }),
            finish_reason: finish.map(|f| finish_str(f).to_string()),
            index: 0,
        }],
        prompt_feedback: None,
        usage_metadata: usage.map(Into::into),
        model_version: Some(model.to_string()),
        response_id: (!id.is_empty()).then(|| id.to_string()),
    }
}

fn to_bytes(r: &Response) -> Bytes {
    // These types always serialize (string keys, no fallible impls).
    Bytes::from(serde_json::to_vec(r).unwrap_or_default())
}

/// Encodes a completion as a `generateContent` answer.
pub fn encode_completion(c: &Completion) -> Bytes {
    let mut parts = Vec::new();
    if let Some(r) = c.reasoning.as_ref().filter(|r| !r.is_empty()) {
        parts.push(Part {
            thought: true,
            ..Part::text(r.clone())
        });
    }
    if !c.text.is_empty() {
        parts.push(Part::text(c.text.clone()));
    }
    parts.extend(c.tool_calls.iter().map(call_part));
    let finish = c.finish_reason.clone().unwrap_or(FinishReason::Stop);
    to_bytes(&response(
        &c.id,
        &c.model,
        parts,
        Some(&finish),
        Some(c.usage),
    ))
}

/// The HTTP status as a Google RPC status name.
fn rpc_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ if (400..500).contains(&code) => "FAILED_PRECONDITION",
        _ if (500..600).contains(&code) => "INTERNAL",
        _ => "UNKNOWN",
    }
}

/// The Google error body for `err`: `{"error":{"code","message","status"}}`.
pub fn error_json(err: &ErrorInfo) -> String {
    json!({"error": {"code": err.status, "message": err.message, "status": rpc_status(err.status)}})
        .to_string()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody {
    /// Some Google endpoints wrap the error in a one-element array. (Tried first: serde
    /// would also read an array as the fields of a struct, in order.)
    Many(Vec<ErrorEnvelope>),
    One(ErrorEnvelope),
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: GoogleError,
}

/// An error a Google API answered with.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct GoogleError {
    #[serde(default)]
    pub message: String,
    /// The RPC status name (`RESOURCE_EXHAUSTED`, `INVALID_ARGUMENT`, …).
    #[serde(default)]
    pub status: Option<String>,
}

/// Reads a Google error body; `None` when the body has another shape.
pub fn parse_error(body: &[u8]) -> Option<GoogleError> {
    match serde_json::from_slice::<ErrorBody>(body).ok()? {
        ErrorBody::One(e) => Some(e.error),
        ErrorBody::Many(list) => list.into_iter().next().map(|e| e.error),
    }
    .filter(|e| !e.message.is_empty())
}

/// Encodes stream events as `streamGenerateContent?alt=sse` chunks. Text goes out as it
/// comes; tool calls (whole in Gemini), the finish reason and usage go in the last chunk.
pub struct ChunkEncoder {
    id: String,
    model: String,
    calls: Vec<ToolCall>,
    finish: Option<FinishReason>,
    usage: Option<ir::Usage>,
}

impl ChunkEncoder {
    /// `model` names the answer's model until the upstream says otherwise.
    pub fn new(model: &str) -> Self {
        Self {
            id: String::new(),
            model: model.to_string(),
            calls: Vec::new(),
            finish: None,
            usage: None,
        }
    }

    fn chunk(&self, parts: Vec<Part>, finish: Option<&FinishReason>) -> SseEvent {
        let r = response(&self.id, &self.model, parts, finish, None);
        SseEvent::data(to_bytes(&r))
    }
}

impl ir::StreamEncoder for ChunkEncoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<SseEvent>) {
        match ev {
            StreamEvent::Start { id, model } => {
                self.id.clone_from(id);
                if !model.is_empty() {
                    self.model.clone_from(model);
                }
            }
            StreamEvent::Text(t) => out.push(self.chunk(vec![Part::text(t.clone())], None)),
            StreamEvent::Reasoning(t) => {
                let part = Part {
                    thought: true,
                    ..Part::text(t.clone())
                };
                out.push(self.chunk(vec![part], None));
            }
            StreamEvent::ReasoningSignature(_) => {}
            StreamEvent::ToolCallStart { index, id, name } => {
                if self.calls.len() <= *index {
                    self.calls.resize_with(*index + 1, || ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                self.calls[*index].id.clone_from(id);
                self.calls[*index].name.clone_from(name);
            }
            StreamEvent::ToolCallArgs { index, arguments } => {
                if let Some(tc) = self.calls.get_mut(*index) {
                    tc.arguments.push_str(arguments);
                }
            }
            StreamEvent::Finish(r) => self.finish = Some(r.clone()),
            StreamEvent::Usage(u) => self.usage = Some(*u),
        }
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        let parts = self.calls.iter().map(call_part).collect();
        let finish = self.finish.take().unwrap_or(FinishReason::Stop);
        let r = response(&self.id, &self.model, parts, Some(&finish), self.usage);
        out.push(SseEvent::data(to_bytes(&r)));
    }

    fn fail(&mut self, err: &ErrorInfo, out: &mut Vec<SseEvent>) {
        out.push(SseEvent::data(error_json(err)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ir::{StreamDecoder as _, StreamEncoder as _};

    fn translate(body: Value) -> Value {
        let bytes = serde_json::to_vec(&body).unwrap();
        let chat = ChatBody::parse(&bytes).unwrap();
        serde_json::from_slice(&chat_to_request(&chat).unwrap()).unwrap()
    }

    #[test]
    fn request_roles_system_and_merging() {
        let v = translate(json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three"},
            {"role": "user", "content": "four"},
        ]}));
        assert_eq!(
            v["systemInstruction"],
            json!({"parts": [{"text": "Be brief."}, {"text": "No emoji."}]})
        );
        assert_eq!(
            v["contents"],
            json!([
                {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
                {"role": "model", "parts": [{"text": "three"}]},
                {"role": "user", "parts": [{"text": "four"}]},
            ])
        );
        assert!(v.get("generationConfig").is_none());
        assert!(v.get("tools").is_none());
    }

    #[test]
    fn request_images() {
        let v = translate(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a/cat.WEBP?s=1"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/photo"}},
            ]}]}),
        );
        let parts = &v["contents"][0]["parts"];
        assert_eq!(
            parts[0],
            json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}})
        );
        assert_eq!(
            parts[1],
            json!({"fileData": {"mimeType": "image/webp", "fileUri": "https://x.test/a/cat.WEBP?s=1"}})
        );
        assert_eq!(parts[2]["fileData"]["mimeType"], "image/jpeg");

        let bytes = serde_json::to_vec(
            &json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
        )
        .unwrap();
        let err = chat_to_request(&ChatBody::parse(&bytes).unwrap()).unwrap_err();
        assert!(err.to_string().starts_with("messages[0]:"), "{err}");
    }

    #[test]
    fn request_tool_round_trip() {
        let v = translate(json!({"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2__ts__c2ln-_w", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2__ts__c2ln-_w", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "thanks"},
        ]}));
        let c = &v["contents"];
        assert_eq!(c.as_array().unwrap().len(), 3);
        assert_eq!(c[1]["role"], "model");
        assert_eq!(
            c[1]["parts"][0],
            json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}})
        );
        assert_eq!(
            c[1]["parts"][1],
            json!({"functionCall": {"name": "get_time", "args": {}}, "thoughtSignature": "c2ln+/w="})
        );
        assert_eq!(c[2]["role"], "user");
        assert_eq!(
            c[2]["parts"],
            json!([
                {"functionResponse": {"name": "get_weather", "response": {"content": "18C"}}},
                {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
                {"text": "thanks"},
            ])
        );

        let bytes = serde_json::to_vec(&json!({"model": "m", "messages": [
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "nope", "content": "r"}]}))
        .unwrap();
        let err = chat_to_request(&ChatBody::parse(&bytes).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "messages[1]: tool result `nope` answers no earlier tool call"
        );
    }

    #[test]
    fn request_tools_config_and_schema_cleaning() {
        let v = translate(json!({
            "model": "m", "messages": [{"role": "user", "content": "x"}],
            "tools": [
                {"type": "function", "function": {"name": "lookup", "description": "Find", "strict": true,
                 "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "q": {"type": ["string", "null"], "format": "uri", "description": "query"},
                        "where": {"$ref": "#/$defs/Place"},
                        "tags": {"type": "array", "items": {"type": "string", "additionalProperties": false}},
                        "kind": {"const": "exact"},
                        "level": {"type": "integer", "enum": [1, 2, null]},
                        "home": {"allOf": [{"$ref": "#/$defs/Place"}], "description": "Home town"},
                        "any": {"oneOf": [{"type": "integer", "format": "int64"}, {"type": "string"}]}
                    },
                    "required": ["q"],
                    "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": false}}}}},
                {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
                {"type": "web_search"}
            ],
            "tool_choice": {"type": "function", "function": {"name": "lookup"}},
            "temperature": 0.3, "top_p": 0.9, "max_tokens": 100, "max_completion_tokens": 200,
            "stop": "END", "n": 1, "seed": 7,
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "strict": true,
                "schema": {"type": "object", "properties": {"a": {"type": "number"}}, "additionalProperties": false}}}
        }));
        let decls = &v["tools"][0]["functionDeclarations"];
        assert_eq!(decls.as_array().unwrap().len(), 2);
        assert_eq!(
            decls[0]["parameters"],
            json!({"type": "object", "required": ["q"], "properties": {
                "q": {"type": "string", "nullable": true, "description": "query"},
                "where": {"type": "object", "properties": {"city": {"type": "string"}}},
                "tags": {"type": "array", "items": {"type": "string"}},
                "kind": {"enum": ["exact"]},
                "level": {"type": "integer", "enum": ["1", "2"]},
                "home": {"type": "object", "properties": {"city": {"type": "string"}}, "description": "Home town"},
                "any": {"anyOf": [{"type": "integer", "format": "int64"}, {"type": "string"}]}
            }})
        );
        assert_eq!(decls[0]["description"], "Find");
        assert_eq!(decls[1], json!({"name": "ping"}));
        assert_eq!(
            v["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}})
        );
        assert_eq!(
            v["generationConfig"],
            json!({"temperature": 0.3, "topP": 0.9, "maxOutputTokens": 200, "stopSequences": ["END"],
                   "candidateCount": 1, "seed": 7, "responseMimeType": "application/json",
                   "responseSchema": {"type": "object", "properties": {"a": {"type": "number"}}}})
        );
        for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
            let v = translate(
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                     "tool_choice": choice, "reasoning_effort": "low"}),
            );
            assert_eq!(v["toolConfig"]["functionCallingConfig"]["mode"], mode);
            assert_eq!(
                v["generationConfig"]["thinkingConfig"],
                json!({"thinkingBudget": 1024, "includeThoughts": true})
            );
        }
    }

    const ANSWER: &str = r#"{"candidates":[{"content":{"role":"model","parts":[
        {"text":"Let me think","thought":true},{"text":"Hello"},{"text":" world"},
        {"functionCall":{"name":"get","args":{"a":1}},"thoughtSignature":"ab+/cd=="}]},
        "finishReason":"STOP","index":0}],
        "usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"thoughtsTokenCount":3,
        "cachedContentTokenCount":4,"totalTokenCount":18},
        "modelVersion":"gemini-2.5-flash","responseId":"resp-1"}"#;

    #[test]
    fn completion_decodes() {
        let c = decode_completion(ANSWER.as_bytes()).unwrap();
        assert_eq!(c.id, "resp-1");
        assert_eq!(c.model, "gemini-2.5-flash");
        assert_eq!(c.text, "Hello world");
        assert_eq!(c.reasoning.as_deref(), Some("Let me think"));
        assert_eq!(c.tool_calls.len(), 1);
        assert_eq!(c.tool_calls[0].name, "get");
        assert_eq!(c.tool_calls[0].arguments, r#"{"a":1}"#);
        assert!(c.tool_calls[0].id.starts_with("call_"));
        assert!(c.tool_calls[0].id.ends_with("__ts__ab-_cd"));
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            c.usage,
            ir::Usage {
                input_tokens: 10,
                output_tokens: 8,
                cached_input_tokens: 4,
                cache_creation_input_tokens: 0,
                reasoning_tokens: 3,
            }
        );
        // And back: the signature is restored on the function call.
        let v: Value = serde_json::from_slice(&encode_completion(&c)).unwrap();
        let parts = &v["candidates"][0]["content"]["parts"];
        assert_eq!(parts[0], json!({"text": "Let me think", "thought": true}));
        assert_eq!(parts[2]["thoughtSignature"], "ab+/cd==");
        assert_eq!(parts[2]["functionCall"]["args"], json!({"a": 1}));
        assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 5);
        assert_eq!(v["usageMetadata"]["totalTokenCount"], 18);
        let again = decode_completion(&encode_completion(&c)).unwrap();
        assert_eq!(again.tool_calls[0].arguments, c.tool_calls[0].arguments);
        assert_eq!(again.usage, c.usage);
    }

    #[test]
    fn finish_reasons() {
        for (wire, want) in [
            ("STOP", FinishReason::Stop),
            ("MAX_TOKENS", FinishReason::Length),
            ("SAFETY", FinishReason::ContentFilter),
            ("RECITATION", FinishReason::ContentFilter),
            ("PROHIBITED_CONTENT", FinishReason::ContentFilter),
            (
                "MALFORMED_FUNCTION_CALL",
                FinishReason::Other("MALFORMED_FUNCTION_CALL".into()),
            ),
        ] {
            let body = format!(r#"{{"candidates":[{{"finishReason":"{wire}"}}]}}"#);
            assert_eq!(
                decode_completion(body.as_bytes()).unwrap().finish_reason,
                Some(want)
            );
        }
        let blocked = br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":3}}"#;
        let c = decode_completion(blocked).unwrap();
        assert_eq!(c.finish_reason, Some(FinishReason::ContentFilter));
        assert_eq!(c.usage.input_tokens, 3);
        assert_eq!(finish_str(&FinishReason::Other("end_turn".into())), "OTHER");
    }

    #[test]
    fn stream_decodes_and_completes_at_close() {
        let mut d = ChunkDecoder::default();
        let mut evs = Vec::new();
        for data in [
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}],"usageMetadata":{"promptTokenCount":4},"modelVersion":"g","responseId":"r"}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"lo"},{"functionCall":{"name":"f","args":{"x":[1]}}}]}}],"usageMetadata":{"promptTokenCount":4}}"#,
            r#"{"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6,"totalTokenCount":10}}"#,
        ] {
            assert!(!d.decode(&SseEvent::data(data), &mut evs).unwrap());
        }
        assert!(d.ends_at_close());
        assert_eq!(
            evs[0],
            StreamEvent::Start {
                id: "r".into(),
                model: "g".into()
            }
        );
        assert_eq!(evs[1], StreamEvent::Text("Hel".into()));
        assert!(matches!(evs[2], StreamEvent::Usage(u) if u.input_tokens == 4));
        assert_eq!(evs[3], StreamEvent::Text("lo".into()));
        assert!(
            matches!(&evs[4], StreamEvent::ToolCallStart { index: 0, name, .. } if name == "f")
        );
        assert_eq!(
            evs[5],
            StreamEvent::ToolCallArgs {
                index: 0,
                arguments: r#"{"x":[1]}"#.into()
            }
        );
        // The repeated, unchanged usage of the second chunk is not passed on.
        assert_eq!(evs[6], StreamEvent::Finish(FinishReason::ToolCalls));
        assert!(matches!(evs[7], StreamEvent::Usage(u) if u.output_tokens == 6));
        assert_eq!(evs.len(), 8);

        let mut d = ChunkDecoder::default();
        d.decode(
            &SseEvent::data(r#"{"candidates":[{"content":{"parts":[{"text":"cut"}]}}]}"#),
            &mut evs,
        )
        .unwrap();
        assert!(
            !d.ends_at_close(),
            "no finish reason yet: a close is a truncation"
        );
        assert!(d.decode(&SseEvent::data("{oops"), &mut evs).is_err());
    }

    #[test]
    fn stream_encodes_as_gemini_chunks() {
        let mut e = ChunkEncoder::new("client-model");
        let mut out = Vec::new();
        for ev in [
            StreamEvent::Start {
                id: "r1".into(),
                model: String::new(),
            },
            StreamEvent::Text("Hi".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "t1".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                arguments: "{\"a\":".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                arguments: "2}".into(),
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(ir::Usage {
                input_tokens: 2,
                output_tokens: 3,
                ..Default::default()
            }),
        ] {
            e.encode(&ev, &mut out);
        }
        e.finish(&mut out);
        assert_eq!(out.len(), 2);
        let first: Value = serde_json::from_slice(&out[0].data).unwrap();
        assert_eq!(first["candidates"][0]["content"]["parts"][0]["text"], "Hi");
        assert_eq!(first["modelVersion"], "client-model");
        assert_eq!(first["responseId"], "r1");
        let last: Value = serde_json::from_slice(&out[1].data).unwrap();
        assert_eq!(
            last["candidates"][0]["content"]["parts"][0]["functionCall"],
            json!({"id": "t1", "name": "f", "args": {"a": 2}})
        );
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["totalTokenCount"], 5);
        // Decoding our own output gives the same answer back.
        let mut d = ChunkDecoder::default();
        let mut evs = Vec::new();
        for ev in &out {
            d.decode(ev, &mut evs).unwrap();
        }
        let mut c = ir::Collector::default();
        evs.iter().for_each(|ev| c.push(ev));
        assert_eq!(c.completion.text, "Hi");
        assert_eq!(c.completion.tool_calls[0].arguments, r#"{"a":2}"#);
        assert_eq!(c.completion.finish_reason, Some(FinishReason::ToolCalls));

        let mut out = Vec::new();
        let err = ErrorInfo {
            status: 429,
            message: "slow down".into(),
            kind: "rate_limit_error".into(),
            code: None,
        };
        e.fail(&err, &mut out);
        let v: Value = serde_json::from_slice(&out[0].data).unwrap();
        assert_eq!(
            v,
            json!({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}})
        );
    }

    #[test]
    fn errors_parse() {
        let e = parse_error(
            br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[]}}"#,
        )
        .unwrap();
        assert_eq!(e.message, "Quota exceeded");
        assert_eq!(e.status.as_deref(), Some("RESOURCE_EXHAUSTED"));
        let e =
            parse_error(br#"[{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}]"#)
                .unwrap();
        assert_eq!(e.message, "bad");
        assert!(parse_error(br#"{"error":"plain"}"#).is_none());
        assert!(parse_error(b"<html>").is_none());
    }

    #[test]
    fn call_ids_carry_signatures() {
        let id = call_id(None, Some("a+b/cQ=="));
        assert!(id.starts_with("call_"));
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        assert_eq!(split_call_id(&id).1.as_deref(), Some("a+b/cQ=="));
        assert_eq!(call_id(Some("fc-1".into()), None), "fc-1");
        assert_eq!(split_call_id("call_x"), ("call_x", None));
        assert_eq!(call_args("{broken"), json!({"arguments": "{broken"}));
    }
}
