//! The internal request (OpenAI chat) as an Ollama `/api/chat` request: messages with
//! their images as bare base64 `images`, tool calls with object `arguments`, tool results
//! naming their tool, and the sampling parameters as `options`.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::protocol::chat::{ChatMessage, ChatRequest, Content};

/// What cannot be sent to Ollama, as the client's 400 message.
pub(super) type Refusal = String;

#[derive(Serialize)]
pub(super) struct Request<'a> {
    model: &'a str,
    messages: Vec<Message>,
    /// Always sent: Ollama streams when it is absent.
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    options: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keep_alive: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    think: Option<bool>,
}

#[derive(Serialize, Default)]
struct Message {
    role: &'static str,
    content: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall>,
    /// The tool a `tool` message answers (Ollama's name for the link).
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
}

#[derive(Serialize)]
struct ToolCall {
    #[serde(skip_serializing_if = "String::is_empty")]
    id: String,
    function: Function,
}

#[derive(Serialize)]
struct Function {
    name: String,
    arguments: Value,
}

/// Deployment settings Ollama takes with every request (`litellm_params`).
#[derive(Default)]
pub(super) struct Defaults {
    /// `keep_alive`: how long the model stays loaded.
    pub keep_alive: Option<Value>,
    /// `num_ctx`: the context window to load the model with.
    pub num_ctx: Option<Value>,
}

impl Defaults {
    pub(super) fn from_params(params: &Map<String, Value>) -> Self {
        let get = |k: &str| params.get(k).filter(|v| !v.is_null()).cloned();
        Self {
            keep_alive: get("keep_alive"),
            num_ctx: get("num_ctx"),
        }
    }
}

/// Translates `req` for model `model`.
pub(super) fn build<'a>(
    req: &ChatRequest,
    model: &'a str,
    stream: bool,
    defaults: &Defaults,
) -> Result<Request<'a>, Refusal> {
    let no_tools = req.tool_choice.as_ref().and_then(Value::as_str) == Some("none");
    let mut tools = Vec::new();
    for t in req.tools.iter().flatten().filter(|_| !no_tools) {
        let Some(f) = &t.function else {
            return Err(format!(
                "Ollama accepts only function tools, not `{}` tools",
                t.kind
            ));
        };
        let mut function = Map::new();
        function.insert("name".into(), f.name.clone().into());
        if let Some(d) = &f.description {
            function.insert("description".into(), d.clone().into());
        }
        function.insert(
            "parameters".into(),
            f.parameters
                .clone()
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
        );
        tools.push(serde_json::json!({"type": "function", "function": function}));
    }
    Ok(Request {
        model,
        messages: messages(&req.messages)?,
        stream,
        tools,
        format: format(req.response_format.as_ref()),
        options: options(req, defaults),
        keep_alive: defaults.keep_alive.clone(),
        think: req
            .reasoning_effort
            .as_deref()
            .map(|e| !matches!(e, "none" | "minimal")),
    })
}

fn messages(list: &[ChatMessage]) -> Result<Vec<Message>, Refusal> {
    // Tool results name their tool; OpenAI's name only the call.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            "tool" | "function" => "tool",
            other => return Err(format!("messages[{i}]: unknown role `{other}`")),
        };
        let (content, images) = content(m.content.as_ref(), i)?;
        let mut msg = Message {
            role,
            content,
            images,
            thinking: m.reasoning_content.clone().filter(|t| !t.is_empty()),
            ..Default::default()
        };
        for tc in m.tool_calls.iter().flatten() {
            call_names.insert(&tc.id, &tc.function.name);
            msg.tool_calls.push(ToolCall {
                id: tc.id.clone(),
                function: Function {
                    name: tc.function.name.clone(),
                    arguments: arguments(&tc.function.arguments),
                },
            });
        }
        if role == "tool" {
            let id = m.tool_call_id.as_deref().unwrap_or_default();
            msg.tool_name = call_names
                .get(id)
                .map(|n| n.to_string())
                .or_else(|| m.name.clone());
            msg.tool_call_id = m.tool_call_id.clone();
        }
        out.push(msg);
    }
    Ok(out)
}

/// A tool call's JSON-text arguments as the object Ollama wants; text that is not a JSON
/// object (a model's malformed call replayed by the client) becomes an empty object.
fn arguments(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

/// The text of a message (text parts joined by newlines) and its images as bare base64.
fn content(c: Option<&Content>, i: usize) -> Result<(String, Vec<String>), Refusal> {
    let parts = match c {
        None => return Ok((String::new(), Vec::new())),
        Some(Content::Text(t)) => return Ok((t.clone(), Vec::new())),
        Some(Content::Parts(parts)) => parts,
    };
    let mut texts = Vec::new();
    let mut images = Vec::new();
    for p in parts {
        match p.kind.as_str() {
            "text" | "input_text" | "output_text" => {
                texts.push(p.text.as_deref().unwrap_or_default())
            }
            "image_url" => {
                let url = p.image_url.as_ref().map_or("", |u| u.url.as_str());
                images.push(base64_image(url).ok_or_else(|| {
                    format!(
                        "messages[{i}]: Ollama takes images inline only; send them as \
                         `data:<type>;base64,…` URLs, not `{}`",
                        url.chars().take(60).collect::<String>()
                    )
                })?);
            }
            other => {
                return Err(format!(
                    "messages[{i}]: Ollama does not accept `{other}` content parts"
                ))
            }
        }
    }
    Ok((texts.join("\n"), images))
}

/// The base64 payload of a `data:…;base64,` URL.
fn base64_image(url: &str) -> Option<String> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    meta.split(';')
        .any(|p| p == "base64")
        .then(|| data.to_string())
}

/// `response_format` as Ollama's `format`: `"json"` or the JSON schema.
fn format(rf: Option<&Value>) -> Option<Value> {
    let rf = rf?;
    match rf.get("type").and_then(Value::as_str)? {
        "json_object" => Some("json".into()),
        "json_schema" => rf
            .get("json_schema")
            .and_then(|s| s.get("schema"))
            .cloned()
            .or(Some("json".into())),
        _ => None,
    }
}

fn options(req: &ChatRequest, defaults: &Defaults) -> Map<String, Value> {
    let mut o = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            o.insert(k.to_string(), v);
        }
    };
    put("temperature", req.temperature.map(Value::from));
    put("top_p", req.top_p.map(Value::from));
    put(
        "num_predict",
        req.max_completion_tokens
            .or(req.max_tokens)
            .map(Value::from),
    );
    put(
        "stop",
        req.stop.clone().map(|s| match s {
            Value::String(one) => Value::Array(vec![one.into()]),
            other => other,
        }),
    );
    for k in ["seed", "frequency_penalty", "presence_penalty", "top_k"] {
        put(k, req.extra.get(k).cloned());
    }
    put("num_ctx", defaults.num_ctx.clone());
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn translate(v: Value) -> Value {
        let req: ChatRequest = serde_json::from_value(v).unwrap();
        let d = Defaults {
            keep_alive: Some("10m".into()),
            num_ctx: Some(8192.into()),
        };
        serde_json::to_value(build(&req, "llama3.2", true, &d).unwrap()).unwrap()
    }

    #[test]
    fn messages_images_and_tool_turns() {
        let out = translate(json!({"model": "m", "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is"},
                {"type": "text", "text": "this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
            {"role": "assistant", "content": null, "reasoning_content": "hmm",
             "tool_calls": [{"id": "call_1", "type": "function",
                             "function": {"name": "look", "arguments": "{\"q\":\"cat\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}]}));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is\nthis?", "images": ["iVBORw0KGgo="]},
                {"role": "assistant", "content": "", "thinking": "hmm",
                 "tool_calls": [{"id": "call_1", "function": {"name": "look", "arguments": {"q": "cat"}}}]},
                {"role": "tool", "content": "a cat", "tool_name": "look", "tool_call_id": "call_1"}
            ])
        );
        assert_eq!(out["stream"], true);
        assert_eq!(out["model"], "llama3.2");
        assert_eq!(out["keep_alive"], "10m");
    }

    #[test]
    fn parameters_become_options_and_format() {
        let out = translate(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "temperature": 0.3, "top_p": 0.9, "max_tokens": 100, "stop": "END", "seed": 7,
            "response_format": {"type": "json_object"}, "reasoning_effort": "low",
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}),
        );
        assert_eq!(
            out["options"],
            json!({"temperature": 0.3, "top_p": 0.9, "num_predict": 100, "stop": ["END"],
                   "seed": 7, "num_ctx": 8192})
        );
        assert_eq!(out["format"], "json");
        assert_eq!(out["think"], true);
        assert_eq!(
            out["tools"],
            json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let out = translate(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 5, "max_tokens": 9, "tool_choice": "none",
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}),
        );
        assert_eq!(out["format"], schema);
        assert_eq!(out["options"]["num_predict"], 5);
        assert!(
            out.get("tools").is_none(),
            "tool_choice none sends no tools"
        );
    }

    #[test]
    fn what_ollama_cannot_take_is_refused_clearly() {
        let req: ChatRequest = serde_json::from_value(json!({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]}]}))
        .unwrap();
        let err = build(&req, "m", false, &Defaults::default()).err().unwrap();
        assert!(
            err.contains("data:") && err.contains("https://x/cat.png"),
            "{err}"
        );
        let req: ChatRequest = serde_json::from_value(json!({"model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search"}]}))
        .unwrap();
        let err = build(&req, "m", false, &Defaults::default()).err().unwrap();
        assert!(err.contains("web_search"), "{err}");
        assert_eq!(arguments("not json"), json!({}));
    }
}
