//! Converse answers into the internal representation: a Converse response body into an
//! [`ir::Completion`], ConverseStream events into [`ir::StreamEvent`]s. The provider then
//! encodes both as OpenAI chat answers.

use serde::Deserialize;
use serde_json::Value;

use crate::protocol::ir::{self, Completion, FinishReason, StreamEvent, ToolCall};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    #[serde(default)]
    output: Option<Output>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Output {
    #[serde(default)]
    message: Option<OutMessage>,
}

#[derive(Deserialize)]
struct OutMessage {
    #[serde(default)]
    content: Vec<OutBlock>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutBlock {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<OutToolUse>,
    #[serde(default)]
    reasoning_content: Option<OutReasoning>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutToolUse {
    #[serde(default)]
    tool_use_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    input: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutReasoning {
    #[serde(default)]
    reasoning_text: Option<ReasoningText>,
}

#[derive(Deserialize)]
struct ReasoningText {
    #[serde(default)]
    text: String,
    #[serde(default)]
    signature: Option<String>,
}

/// Token counts; Bedrock's `inputTokens` excludes cache reads and writes.
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
    #[serde(default)]
    cache_write_input_tokens: u64,
}

impl From<Usage> for ir::Usage {
    fn from(u: Usage) -> Self {
        Self {
            input_tokens: u.input_tokens + u.cache_read_input_tokens + u.cache_write_input_tokens,
            output_tokens: u.output_tokens,
            cached_input_tokens: u.cache_read_input_tokens,
            cache_creation_input_tokens: u.cache_write_input_tokens,
            reasoning_tokens: 0,
        }
    }
}

/// The finish reason for a Converse `stopReason`.
fn finish_from(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_string()),
    }
}

/// A tool call's input as JSON text.
fn arguments(input: &Value) -> String {
    match input {
        Value::Null => "{}".into(),
        other => other.to_string(),
    }
}

/// Decodes a Converse response body; `id` and `model` name the answer (Bedrock's body
/// carries neither).
pub(super) fn decode_completion(
    body: &[u8],
    id: String,
    model: &str,
) -> Result<Completion, String> {
    let r: ConverseResponse =
        serde_json::from_slice(body).map_err(|e| format!("invalid Converse response: {e}"))?;
    let mut c = Completion {
        id,
        model: model.to_string(),
        created: ir::now_secs(),
        ..Default::default()
    };
    let blocks = r.output.and_then(|o| o.message).map(|m| m.content);
    for b in blocks.into_iter().flatten() {
        if let Some(t) = b.text {
            c.text.push_str(&t);
        }
        if let Some(t) = b.tool_use {
            c.tool_calls.push(ToolCall {
                arguments: arguments(&t.input),
                id: t.tool_use_id,
                name: t.name,
            });
        }
        if let Some(r) = b.reasoning_content.and_then(|r| r.reasoning_text) {
            c.reasoning
                .get_or_insert_with(String::new)
                .push_str(&r.text);
            if r.signature.is_some() {
                c.reasoning_signature = r.signature;
            }
        }
    }
    c.finish_reason = r.stop_reason.as_deref().map(finish_from);
    c.usage = r.usage.unwrap_or_default().into();
    Ok(c)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    #[serde(default)]
    content_block_index: usize,
    #[serde(default)]
    start: Option<StartKind>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartKind {
    #[serde(default)]
    tool_use: Option<StartToolUse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartToolUse {
    #[serde(default)]
    tool_use_id: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    #[serde(default)]
    content_block_index: usize,
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Delta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolUseDelta>,
    #[serde(default)]
    reasoning_content: Option<ReasoningDelta>,
}

#[derive(Deserialize)]
struct ToolUseDelta {
    #[serde(default)]
    input: String,
}

#[derive(Deserialize)]
struct ReasoningDelta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    signature: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageStop {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    usage: Option<Usage>,
}

/// Where a ConverseStream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// More events are expected.
    Open,
    /// `messageStop` arrived; only `metadata` (usage) may follow.
    Stopped,
    /// `metadata` arrived: the answer is complete.
    Done,
}

/// Turns ConverseStream events into stream events, numbering tool calls from 0 in the
/// order their blocks start.
pub(super) struct EventTranslator {
    id: String,
    model: String,
    started: bool,
    /// Content block index of each tool call, by tool call index.
    tool_blocks: Vec<usize>,
    progress: Progress,
}

impl EventTranslator {
    pub(super) fn new(id: String, model: &str) -> Self {
        Self {
            id,
            model: model.to_string(),
            started: false,
            tool_blocks: Vec::new(),
            progress: Progress::Open,
        }
    }

    pub(super) fn progress(&self) -> Progress {
        self.progress
    }

    /// Translates one event (`:event-type` and its JSON payload); unknown events are
    /// skipped.
    pub(super) fn event(
        &mut self,
        kind: &str,
        payload: &[u8],
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), String> {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: self.id.clone(),
                model: self.model.clone(),
            });
        }
        let parse_error = |e: serde_json::Error| format!("invalid `{kind}` event: {e}");
        match kind {
            "contentBlockStart" => {
                let s: BlockStart = serde_json::from_slice(payload).map_err(parse_error)?;
                if let Some(t) = s.start.and_then(|s| s.tool_use) {
                    self.tool_blocks.push(s.content_block_index);
                    out.push(StreamEvent::ToolCallStart {
                        index: self.tool_blocks.len() - 1,
                        id: t.tool_use_id,
                        name: t.name,
                    });
                }
            }
            "contentBlockDelta" => {
                let d: BlockDelta = serde_json::from_slice(payload).map_err(parse_error)?;
                let Some(delta) = d.delta else {
                    return Ok(());
                };
                if let Some(t) = delta.text.filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::Text(t));
                }
                if let Some(t) = delta.tool_use.filter(|t| !t.input.is_empty()) {
                    let index = self
                        .tool_blocks
                        .iter()
                        .position(|b| *b == d.content_block_index)
                        .ok_or_else(|| {
                            format!(
                                "tool input for block {} that started no tool call",
                                d.content_block_index
                            )
                        })?;
                    out.push(StreamEvent::ToolCallArgs {
                        index,
                        arguments: t.input,
                    });
                }
                if let Some(r) = delta.reasoning_content {
                    if let Some(t) = r.text.filter(|t| !t.is_empty()) {
                        out.push(StreamEvent::Reasoning(t));
                    }
                    if let Some(s) = r.signature.filter(|s| !s.is_empty()) {
                        out.push(StreamEvent::ReasoningSignature(s));
                    }
                }
            }
            "messageStop" => {
                let s: MessageStop = serde_json::from_slice(payload).map_err(parse_error)?;
                let reason = match s.stop_reason.as_deref() {
                    Some(r) => finish_from(r),
                    None if self.tool_blocks.is_empty() => FinishReason::Stop,
                    None => FinishReason::ToolCalls,
                };
                out.push(StreamEvent::Finish(reason));
                self.progress = Progress::Stopped;
            }
            "metadata" => {
                let m: Metadata = serde_json::from_slice(payload).map_err(parse_error)?;
                if let Some(u) = m.usage {
                    out.push(StreamEvent::Usage(u.into()));
                }
                self.progress = Progress::Done;
            }
            // messageStart, contentBlockStop and events added later carry nothing needed.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_with_text_tools_reasoning_and_usage() {
        let body = br#"{"output":{"message":{"role":"assistant","content":[
            {"reasoningContent":{"reasoningText":{"text":"think","signature":"sig"}}},
            {"text":"Let me check."},
            {"toolUse":{"toolUseId":"tooluse_1","name":"get_weather","input":{"city":"Paris"}}}]}},
            "stopReason":"tool_use",
            "usage":{"inputTokens":10,"outputTokens":5,"totalTokens":15,"cacheReadInputTokens":4,"cacheWriteInputTokens":2},
            "metrics":{"latencyMs":300}}"#;
        let c = decode_completion(body, "chatcmpl-1".into(), "m").unwrap();
        assert_eq!(c.text, "Let me check.");
        assert_eq!(c.reasoning.as_deref(), Some("think"));
        assert_eq!(c.reasoning_signature.as_deref(), Some("sig"));
        assert_eq!(
            c.tool_calls,
            vec![ToolCall {
                id: "tooluse_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into()
            }]
        );
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(c.usage.input_tokens, 16);
        assert_eq!(c.usage.cached_input_tokens, 4);
        assert_eq!(c.usage.cache_creation_input_tokens, 2);
        assert_eq!(c.usage.output_tokens, 5);
        assert_eq!((c.id.as_str(), c.model.as_str()), ("chatcmpl-1", "m"));
        assert!(decode_completion(b"<html>", "x".into(), "m").is_err());
    }

    #[test]
    fn stop_reasons() {
        assert_eq!(finish_from("end_turn"), FinishReason::Stop);
        assert_eq!(finish_from("stop_sequence"), FinishReason::Stop);
        assert_eq!(finish_from("max_tokens"), FinishReason::Length);
        assert_eq!(
            finish_from("guardrail_intervened"),
            FinishReason::ContentFilter
        );
        assert_eq!(finish_from("tool_use"), FinishReason::ToolCalls);
    }

    #[test]
    fn stream_events_translate_in_order() {
        let mut t = EventTranslator::new("id1".into(), "m");
        let mut out = Vec::new();
        let events: &[(&str, &str)] = &[
            ("messageStart", r#"{"role":"assistant"}"#),
            (
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"hm"}}}"#,
            ),
            (
                "contentBlockDelta",
                r#"{"contentBlockIndex":0,"delta":{"reasoningContent":{"signature":"sg"}}}"#,
            ),
            ("contentBlockStop", r#"{"contentBlockIndex":0}"#),
            (
                "contentBlockDelta",
                r#"{"contentBlockIndex":1,"delta":{"text":"Hi"},"p":"abc"}"#,
            ),
            (
                "contentBlockStart",
                r#"{"contentBlockIndex":2,"start":{"toolUse":{"toolUseId":"tu1","name":"f"}}}"#,
            ),
            (
                "contentBlockDelta",
                r#"{"contentBlockIndex":2,"delta":{"toolUse":{"input":"{\"a\":"}}}"#,
            ),
            (
                "contentBlockDelta",
                r#"{"contentBlockIndex":2,"delta":{"toolUse":{"input":"1}"}}}"#,
            ),
            ("contentBlockStop", r#"{"contentBlockIndex":2}"#),
        ];
        for (kind, payload) in events {
            t.event(kind, payload.as_bytes(), &mut out).unwrap();
        }
        assert_eq!(t.progress(), Progress::Open);
        t.event("messageStop", br#"{"stopReason":"tool_use"}"#, &mut out)
            .unwrap();
        assert_eq!(t.progress(), Progress::Stopped);
        t.event(
            "metadata",
            br#"{"usage":{"inputTokens":3,"outputTokens":7,"totalTokens":10},"metrics":{"latencyMs":1}}"#,
            &mut out,
        )
        .unwrap();
        assert_eq!(t.progress(), Progress::Done);
        assert_eq!(
            out,
            vec![
                StreamEvent::Start {
                    id: "id1".into(),
                    model: "m".into()
                },
                StreamEvent::Reasoning("hm".into()),
                StreamEvent::ReasoningSignature("sg".into()),
                StreamEvent::Text("Hi".into()),
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "tu1".into(),
                    name: "f".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    arguments: "{\"a\":".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    arguments: "1}".into()
                },
                StreamEvent::Finish(FinishReason::ToolCalls),
                StreamEvent::Usage(ir::Usage {
                    input_tokens: 3,
                    output_tokens: 7,
                    ..Default::default()
                }),
            ]
        );
    }

    #[test]
    fn malformed_events_are_errors() {
        let mut t = EventTranslator::new("id".into(), "m");
        let mut out = Vec::new();
        assert!(t.event("messageStop", b"not json", &mut out).is_err());
        let e = t
            .event(
                "contentBlockDelta",
                br#"{"contentBlockIndex":4,"delta":{"toolUse":{"input":"{}"}}}"#,
                &mut out,
            )
            .unwrap_err();
        assert!(e.contains("block 4"), "{e}");
    }
}
