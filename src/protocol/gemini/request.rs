//! Gemini requests: the internal (OpenAI chat) request translated into a Gemini body.

use super::*;

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
pub(super) fn push_content(contents: &mut Vec<Content>, role: &str, parts: Vec<Part>) {
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

pub(super) fn user_parts(m: &ChatMessage) -> Result<Vec<Part>, String> {
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
pub(super) fn media_part(url: &str) -> Result<Part, String> {
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
pub(super) fn guess_mime(url: &str) -> &'static str {
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

pub(super) fn model_parts(m: &ChatMessage) -> Vec<Part> {
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
pub(super) fn call_args(text: &str) -> Value {
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
pub(super) fn tool_result(earlier: &[ChatMessage], m: &ChatMessage) -> Result<Part, String> {
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
pub(super) const SCHEMA_KEYS: &[&str] = &[
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
pub(super) fn gemini_schema(schema: &Value) -> Value {
    let defs = ["$defs", "definitions"]
        .iter()
        .filter_map(|k| schema.get(k).and_then(Value::as_object))
        .flat_map(|m| m.iter())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<Map<String, Value>>();
    clean_schema(schema, &defs, 0)
}

pub(super) fn clean_schema(v: &Value, defs: &Map<String, Value>, depth: usize) -> Value {
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
pub(super) fn has_fields(schema: &Value) -> bool {
    schema["type"] != "object"
        || schema["properties"]
            .as_object()
            .is_some_and(|p| !p.is_empty())
}

pub(super) fn tool_config(choice: &Value) -> Option<ToolConfig> {
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

pub(super) fn generation_config(req: &ChatRequest) -> GenerationConfig {
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
