//! OpenAI chat completions: the request kept as raw JSON members (no `Value` tree, fields
//! the gateway does not know pass through byte for byte), and small typed views of the
//! parts the gateway reads (model, stream, messages, usage, chunk deltas).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Why a request body is not a usable chat completions request.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is not valid JSON: {0}")]
    Json(String),
    #[error("request body must be a JSON object")]
    NotObject,
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
}

/// A chat completions request: its members in order, borrowed from the request bytes
/// where possible, plus the few fields the gateway itself needs.
#[derive(Debug, Clone)]
pub struct ChatBody<'a> {
    members: Vec<(Cow<'a, str>, Cow<'a, RawValue>)>,
    /// The requested `model`.
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
}

struct Members<'a>(Vec<(Cow<'a, str>, Cow<'a, RawValue>)>);

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    // A repeated key: the last one wins, as in most JSON parsers.
                    if let Some(slot) = out.iter_mut().find(|(ek, _): &&mut (Cow<str>, _)| *ek == k)
                    {
                        slot.1 = Cow::Borrowed(v);
                    } else {
                        out.push((k, Cow::Borrowed(v)));
                    }
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Checks that `messages` is an array of objects with a string `role`, and counts them,
/// without building anything.
struct MessagesCheck(usize);

impl<'de> Deserialize<'de> for MessagesCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Role<'a> {
            #[serde(borrow)]
            #[allow(dead_code)]
            role: Cow<'a, str>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MessagesCheck;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut n = 0;
                while seq.next_element::<Role<'de>>()?.is_some() {
                    n += 1;
                }
                Ok(MessagesCheck(n))
            }
        }
        d.deserialize_seq(V)
    }
}

/// The parts of a message the gateway reads; everything else stays raw.
#[derive(Debug, Deserialize)]
pub struct MessageView<'a> {
    #[serde(borrow)]
    pub role: Cow<'a, str>,
    #[serde(borrow, default)]
    pub content: Option<&'a RawValue>,
}

impl<'a> ChatBody<'a> {
    /// Parses and validates a chat request body without building a JSON tree.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BodyError> {
        let body = Self::parse_object(bytes)?;
        body.validate_messages()?;
        Ok(body)
    }

    /// Parses any model request object (`model` required, `stream` optional), without
    /// the chat-specific `messages` check: embeddings and other endpoints use it.
    pub fn parse_object(bytes: &'a [u8]) -> Result<Self, BodyError> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            // Distinguish "not JSON" from "JSON but not an object" for a clearer message.
            return match serde_json::from_slice::<&RawValue>(bytes) {
                Ok(_) => Err(BodyError::NotObject),
                Err(e) => Err(BodyError::Json(e.to_string())),
            };
        }
        let Members(members) =
            serde_json::from_slice(bytes).map_err(|e| BodyError::Json(e.to_string()))?;
        let mut body = ChatBody {
            members,
            model: String::new(),
            stream: false,
        };
        body.model = match body.get("model") {
            None => return Err(BodyError::Missing("model")),
            Some(raw) => match serde_json::from_str::<Cow<str>>(raw.get()) {
                Ok(m) if !m.trim().is_empty() => m.into_owned(),
                Ok(_) => {
                    return Err(BodyError::WrongType {
                        field: "model",
                        expected: "must not be empty",
                    })
                }
                Err(_) => {
                    return Err(BodyError::WrongType {
                        field: "model",
                        expected: "must be a string",
                    })
                }
            },
        };
        body.stream = match body.get("stream").map(|r| r.get()) {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(BodyError::WrongType {
                    field: "stream",
                    expected: "must be a boolean",
                })
            }
        };
        Ok(body)
    }

    fn validate_messages(&self) -> Result<(), BodyError> {
        let raw = self.get("messages").ok_or(BodyError::Missing("messages"))?;
        let wrong = BodyError::WrongType {
            field: "messages",
            expected: "must be a non-empty array of objects, each with a string `role`",
        };
        let MessagesCheck(count) = serde_json::from_str(raw.get()).map_err(|_| wrong)?;
        if count == 0 {
            return Err(BodyError::WrongType {
                field: "messages",
                expected: "must not be empty",
            });
        }
        Ok(())
    }

    /// Detaches the body from the request bytes it borrows.
    pub fn into_owned(self) -> ChatBody<'static> {
        ChatBody {
            members: self
                .members
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())))
                .collect(),
            model: self.model,
            stream: self.stream,
        }
    }

    /// Builds a body from a typed request (used by translators from other client APIs).
    pub fn from_request(req: &ChatRequest) -> Result<ChatBody<'static>, BodyError> {
        let bytes = serde_json::to_vec(req).map_err(|e| BodyError::Json(e.to_string()))?;
        Ok(ChatBody::parse(&bytes)?.into_owned())
    }

    /// The typed view of the whole request, for translation to other wire formats.
    pub fn to_request(&self) -> Result<ChatRequest, BodyError> {
        let bytes = self.to_json();
        serde_json::from_slice(&bytes).map_err(|e| BodyError::Json(e.to_string()))
    }

    /// The request as JSON, unchanged.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            self.members
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
                + 2,
        );
        out.push(b'{');
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_str(&mut out, k);
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
        out
    }

    /// The request as JSON with `model` replaced (for native passthrough upstreams).
    pub fn to_json_with_model(&self, upstream_model: &str) -> Vec<u8> {
        let mut copy = self.clone();
        let mut m = Vec::with_capacity(upstream_model.len() + 2);
        write_json_str(&mut m, upstream_model);
        if let Ok(raw) = RawValue::from_string(String::from_utf8_lossy(&m).into_owned()) {
            copy.set("model", raw);
        }
        copy.to_json()
    }

    /// The raw JSON of a top-level member.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// Sets (or adds) a top-level member.
    pub fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.members.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = Cow::Owned(value),
            None => self
                .members
                .push((Cow::Owned(key.to_string()), Cow::Owned(value))),
        }
    }

    /// Removes a top-level member.
    pub fn remove(&mut self, key: &str) {
        self.members.retain(|(k, _)| k != key);
    }

    /// The messages, typed just enough to read roles and content.
    pub fn messages(&self) -> Vec<MessageView<'_>> {
        self.get("messages")
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default()
    }

    /// Serializes the request for an OpenAI-compatible upstream: `model` replaced by the
    /// upstream's name and, for streams, usage requested in the final chunk. Returns the
    /// bytes and whether usage reporting was added by the gateway (not asked by the client).
    pub fn to_upstream(&self, upstream_model: &str) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(
            self.members
                .iter()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
                + 64,
        );
        out.push(b'{');
        let mut first = true;
        let mut usage_added = false;
        let mut push_member = |out: &mut Vec<u8>, key: &str, value: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            write_json_str(out, key);
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        };
        for (k, v) in &self.members {
            match k.as_ref() {
                "model" => {
                    let mut m = Vec::with_capacity(upstream_model.len() + 2);
                    write_json_str(&mut m, upstream_model);
                    push_member(&mut out, k, std::str::from_utf8(&m).unwrap_or("\"\""));
                }
                "stream_options" if self.stream => {
                    let mut opts: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(v.get()).unwrap_or_default();
                    if opts.get("include_usage") != Some(&serde_json::Value::Bool(true)) {
                        opts.insert("include_usage".into(), true.into());
                        usage_added = true;
                    }
                    let text = serde_json::to_string(&opts).unwrap_or_else(|_| "{}".into());
                    push_member(&mut out, k, &text);
                }
                _ => push_member(&mut out, k, v.get()),
            }
        }
        if self.stream && self.get("stream_options").is_none() {
            push_member(&mut out, "stream_options", r#"{"include_usage":true}"#);
            usage_added = true;
        }
        out.push(b'}');
        (out, usage_added)
    }
}

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A chat completions request, typed for translation into other wire formats. Fields
/// the gateway does not model are kept in `extra`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolDef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// A string or an array of strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<serde_json::Value>,
    /// `low` | `medium` | `high` (OpenAI reasoning models; mapped to thinking budgets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One chat message.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<WireToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Reasoning text of an earlier assistant turn (DeepSeek/LiteLLM convention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Anthropic thinking blocks of an earlier assistant turn (LiteLLM convention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<Vec<serde_json::Value>>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Message content: a string or typed parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

impl Content {
    /// All text parts joined with newlines.
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// One content part (`text`, `image_url`, …); unknown part types keep their fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<ImageUrl>,
    /// Provider hints such as Anthropic's `cache_control`, kept as given.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// An image by URL or `data:` URI.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A tool call in an assistant message.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WireToolCall {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

/// The function part of a tool call; `arguments` is JSON text.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FunctionCall {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// A tool the model may call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ToolDef {
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDef>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A function tool's declaration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Token counts as OpenAI reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

/// `usage.completion_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl From<Usage> for super::ir::Usage {
    fn from(u: Usage) -> Self {
        Self {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            cached_input_tokens: u.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
            cache_creation_input_tokens: 0,
            reasoning_tokens: u
                .completion_tokens_details
                .map_or(0, |d| d.reasoning_tokens),
        }
    }
}

impl From<super::ir::Usage> for Usage {
    fn from(u: super::ir::Usage) -> Self {
        Self {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.total(),
            prompt_tokens_details: (u.cached_input_tokens > 0).then_some(PromptDetails {
                cached_tokens: u.cached_input_tokens,
            }),
            completion_tokens_details: (u.reasoning_tokens > 0).then_some(CompletionDetails {
                reasoning_tokens: u.reasoning_tokens,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unknown_fields_and_order() {
        let src = br#"{"model":"gpt-4","messages":[{"role":"user","content":"hi"}],"x_custom":{"a":[1,2]},"temperature":0.5}"#;
        let body = ChatBody::parse(src).unwrap();
        assert_eq!(body.model, "gpt-4");
        let (out, added) = body.to_upstream("gpt-4-0613");
        assert!(!added);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"model":"gpt-4-0613","messages":[{"role":"user","content":"hi"}],"x_custom":{"a":[1,2]},"temperature":0.5}"#
        );
    }

    #[test]
    fn streams_request_usage() {
        let body = ChatBody::parse(
            br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
        let (out, added) = body.to_upstream("m");
        assert!(added);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);

        let body = ChatBody::parse(br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}"#).unwrap();
        assert!(!body.to_upstream("m").1);
    }

    #[test]
    fn rejects_bad_shapes_clearly() {
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", "not valid JSON"),
            (b"[1,2]", "must be a JSON object"),
            (
                br#"{"messages":[{"role":"user","content":"x"}]}"#,
                "missing required field `model`",
            ),
            (br#"{"model":5,"messages":[]}"#, "`model` must be a string"),
            (
                br#"{"model":"m","stream":"yes","messages":[{"role":"user"}]}"#,
                "`stream` must be a boolean",
            ),
            (br#"{"model":"m","messages":"hi"}"#, "`messages`"),
            (br#"{"model":"m","messages":[]}"#, "must not be empty"),
            (
                br#"{"model":"m","messages":[1]}"#,
                "each with a string `role`",
            ),
            (
                br#"{"model":"m","messages":[{"content":"x"}]}"#,
                "each with a string `role`",
            ),
            (
                br#"{"model":"m","messages":[{"role":5}]}"#,
                "each with a string `role`",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user"},{}]}"#,
                "each with a string `role`",
            ),
            (b"{\"model\":\"m\xff\",\"messages\":[]}", "not valid JSON"),
        ];
        for (input, want) in cases {
            let err = ChatBody::parse(input).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{:?}: {err}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn escaped_keys_and_duplicates() {
        let body =
            ChatBody::parse(br#"{"mo\u0064el":"a","model":"b","messages":[{"role":"user"}]}"#)
                .unwrap();
        assert_eq!(body.model, "b");
    }
}
