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

mod answer;
mod request;
#[cfg(test)]
mod tests;

#[cfg(test)]
use answer::*;
pub use answer::{
    decode_completion, encode_completion, error_json, parse_error, ChunkDecoder, ChunkEncoder,
    GoogleError,
};
use request::*;
pub use request::{chat_to_request, RequestError};
