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
