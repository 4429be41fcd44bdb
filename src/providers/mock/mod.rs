//! `mock_response`: answers offline with fixed text, streamed or not, in OpenAI's wire
//! format, as LiteLLM's mock does. For demos, tests and trying memproxy without a key.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::json;

use super::Reply;
use crate::protocol::chat::{ChatBody, Usage};
use crate::protocol::ir::{Format, SseEvent};

pub struct Mock {
    text: String,
}

/// A rough token estimate (4 bytes per token) for offline answers.
fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4).max(1)
}

impl Mock {
    pub fn new(text: String) -> Self {
        Self { text }
    }

    pub fn chat(&self, body: &ChatBody<'_>, model: &str) -> Reply {
        let prompt = body.get("messages").map(|m| m.get().len()).unwrap_or(0);
        let usage = Usage {
            prompt_tokens: estimate_tokens(prompt),
            completion_tokens: estimate_tokens(self.text.len()),
            total_tokens: estimate_tokens(prompt) + estimate_tokens(self.text.len()),
            ..Default::default()
        };
        let id = format!("chatcmpl-mock-{}", uuid::Uuid::new_v4().simple());
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if !body.stream {
            let v = json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text},
                             "finish_reason": "stop", "logprobs": null}],
                "usage": usage,
            });
            return Reply::Complete {
                body: Bytes::from(v.to_string()),
                format: Format::OpenAiChat,
            };
        }
        let chunk = |delta: serde_json::Value, finish: Option<&str>| {
            SseEvent::data(
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                .to_string(),
            )
        };
        let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
        for piece in self.text.split_inclusive(' ') {
            chunks.push(chunk(json!({"content": piece}), None));
        }
        chunks.push(chunk(json!({}), Some("stop")));
        chunks.push(SseEvent::data(
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [], "usage": usage})
            .to_string(),
        ));
        chunks.push(SseEvent::data("[DONE]"));
        let client_wants_usage = body
            .get("stream_options")
            .and_then(|o| serde_json::from_str::<serde_json::Value>(o.get()).ok())
            .is_some_and(|o| o["include_usage"] == true);
        Reply::Stream {
            events: Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok))),
            format: Format::OpenAiChat,
            usage_added: !client_wants_usage,
        }
    }
}

/// Deterministic offline embeddings: each word hashed into one of 64 dimensions, the
/// vector normalised, so texts sharing words are close (good enough for demos and tests).
pub fn embed(body: &ChatBody<'_>, model: &str) -> Result<Bytes, super::ProviderError> {
    let inputs: Vec<String> = match body
        .get("input")
        .map(|r| serde_json::from_str::<serde_json::Value>(r.get()))
    {
        Some(Ok(serde_json::Value::String(s))) => vec![s],
        Some(Ok(serde_json::Value::Array(items))) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
        _ => {
            return Err(super::ProviderError::Status {
                status: axum::http::StatusCode::BAD_REQUEST,
                message: "`input` must be a string or an array of strings".into(),
                kind: Some("invalid_request_error".into()),
                code: None,
            })
        }
    };
    let data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| json!({"object": "embedding", "index": i, "embedding": hashed_vector(text)}))
        .collect();
    let tokens: usize = inputs.iter().map(|t| t.len().div_ceil(4)).sum();
    Ok(Bytes::from(
        json!({"object": "list", "data": data, "model": model,
               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
        .to_string(),
    ))
}

fn hashed_vector(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; 64];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in word.to_lowercase().bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        v[(h % 64) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

impl super::Upstream for Mock {
    fn chat<'a>(
        &'a self,
        _cfg: &'a crate::config::DeploymentConfig,
        req: &'a super::LlmRequest<'a>,
        upstream_model: &'a str,
        _ctx: &'a super::CallContext<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<Reply, super::ProviderError>> {
        Box::pin(std::future::ready(Ok(self.chat(&req.chat, upstream_model))))
    }

    fn embed<'a>(
        &'a self,
        _cfg: &'a crate::config::DeploymentConfig,
        body: &'a ChatBody<'a>,
        upstream_model: &'a str,
        _ctx: &'a super::CallContext<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<Bytes, super::ProviderError>> {
        Box::pin(std::future::ready(embed(body, upstream_model)))
    }
}
