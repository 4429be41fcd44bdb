//! The internal representation where every client API and every provider meet.
//!
//! Requests travel as [`super::chat::ChatBody`] (OpenAI chat shape, raw members), read
//! through the typed views of [`super::chat`]. Answers are decoded from any provider's
//! wire format into a [`Completion`] or a sequence of [`StreamEvent`]s, and encoded from
//! those into the client's wire format. So each wire format adds one decoder/encoder pair,
//! never one translator per partner format. Same-format pairs skip the IR and pass through.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A wire format spoken by a client API or a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// OpenAI chat completions (also every OpenAI-compatible server).
    OpenAiChat,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini generateContent.
    Gemini,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    /// A provider reason with no common equivalent, kept verbatim.
    Other(String),
}

/// Token counts, in the common vocabulary of all providers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Prompt tokens served from a cache (subset of `input_tokens`).
    pub cached_input_tokens: u64,
    /// Prompt tokens written to a cache (Anthropic `cache_creation_input_tokens`).
    pub cache_creation_input_tokens: u64,
    /// Output tokens spent on reasoning (subset of `output_tokens`).
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Input plus output tokens.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

/// One tool call the model made; `arguments` is JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// A complete (non-streamed) answer.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    pub id: String,
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// The answer's text (all text blocks joined).
    pub text: String,
    /// Visible reasoning ("thinking"), when the provider returned it.
    pub reasoning: Option<String>,
    /// Anthropic's thinking signature, needed to send thinking back in a later turn.
    pub reasoning_signature: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<FinishReason>,
    pub usage: Usage,
}

impl Completion {
    /// The stream events that carry this answer, in the order providers send them
    /// (a [`Collector`] fed with them gives the answer back), for answering a streaming
    /// client with an answer that was not streamed.
    pub fn to_events(&self) -> Vec<StreamEvent> {
        let mut out = vec![StreamEvent::Start {
            id: self.id.clone(),
            model: self.model.clone(),
        }];
        if let Some(r) = &self.reasoning {
            out.push(StreamEvent::Reasoning(r.clone()));
        }
        if let Some(s) = &self.reasoning_signature {
            out.push(StreamEvent::ReasoningSignature(s.clone()));
        }
        if !self.text.is_empty() {
            out.push(StreamEvent::Text(self.text.clone()));
        }
        for (index, tc) in self.tool_calls.iter().enumerate() {
            out.push(StreamEvent::ToolCallStart {
                index,
                id: tc.id.clone(),
                name: tc.name.clone(),
            });
            if !tc.arguments.is_empty() {
                out.push(StreamEvent::ToolCallArgs {
                    index,
                    arguments: tc.arguments.clone(),
                });
            }
        }
        let finish = match &self.finish_reason {
            Some(r) => r.clone(),
            None if self.tool_calls.is_empty() => FinishReason::Stop,
            None => FinishReason::ToolCalls,
        };
        out.push(StreamEvent::Finish(finish));
        out.push(StreamEvent::Usage(self.usage));
        out
    }
}

/// One step of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The answer begins (sent once, first).
    Start { id: String, model: String },
    /// Answer text.
    Text(String),
    /// Reasoning ("thinking") text.
    Reasoning(String),
    /// The signature closing a thinking block.
    ReasoningSignature(String),
    /// A tool call begins; `index` counts tool calls from 0 within the answer.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// A piece of a tool call's JSON arguments.
    ToolCallArgs { index: usize, arguments: String },
    /// The model stopped.
    Finish(FinishReason),
    /// Token counts (may come more than once; later values replace earlier ones).
    Usage(Usage),
}

/// One server-sent event on the wire: optional `event:` name and its `data:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: Bytes,
}

impl SseEvent {
    /// A data-only event (OpenAI style).
    pub fn data(data: impl Into<Bytes>) -> Self {
        Self {
            event: None,
            data: data.into(),
        }
    }

    /// A named event (Anthropic style).
    pub fn named(event: &str, data: impl Into<Bytes>) -> Self {
        Self {
            event: Some(event.to_string()),
            data: data.into(),
        }
    }

    /// The event framed for the wire.
    pub fn to_frame(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.data.len() + 32);
        if let Some(name) = &self.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        }
        for line in self.data.split(|b| *b == b'\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.push(b'\n');
        Bytes::from(out)
    }
}

/// An error to report inside a stream or body, in whatever shape the client expects.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub status: u16,
    pub message: String,
    /// OpenAI-style error type (`invalid_request_error`, `api_error`, …).
    pub kind: String,
    pub code: Option<String>,
}

/// A provider's wire answer could not be decoded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// Turns one wire format's stream events into [`StreamEvent`]s.
pub trait StreamDecoder: Send {
    /// Decodes one wire event; may produce zero or more IR events. `Ok(true)` means the
    /// wire stream said it is complete.
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<bool, DecodeError>;

    /// The upstream closed the stream before `decode` reported completion: whether that
    /// close is this format's normal end. Formats with an end marker say no (the
    /// default); Gemini, which has none, says yes once a finish reason arrived.
    fn ends_at_close(&self) -> bool {
        false
    }
}

/// Turns [`StreamEvent`]s into one wire format's stream events.
pub trait StreamEncoder: Send {
    fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<SseEvent>);
    /// The stream ended normally: close open blocks, send the terminator.
    fn finish(&mut self, out: &mut Vec<SseEvent>);
    /// The stream failed mid-way: send the format's error event.
    fn fail(&mut self, err: &ErrorInfo, out: &mut Vec<SseEvent>);
    /// Passthrough: the upstream, speaking this format, already sent the stream's opening,
    /// so a later [`fail`](Self::fail) must not open it again.
    fn opened_upstream(&mut self) {}
}

/// Accumulates streamed events into a [`Completion`] (for capture, logs and analytics).
#[derive(Debug, Default)]
pub struct Collector {
    pub completion: Completion,
    pub saw_finish: bool,
}

impl Collector {
    pub fn push(&mut self, ev: &StreamEvent) {
        let c = &mut self.completion;
        match ev {
            StreamEvent::Start { id, model } => {
                c.id.clone_from(id);
                c.model.clone_from(model);
            }
            StreamEvent::Text(t) => c.text.push_str(t),
            StreamEvent::Reasoning(t) => c.reasoning.get_or_insert_with(String::new).push_str(t),
            StreamEvent::ReasoningSignature(s) => c.reasoning_signature = Some(s.clone()),
            StreamEvent::ToolCallStart { index, id, name } => {
                if c.tool_calls.len() <= *index {
                    c.tool_calls.resize(
                        *index + 1,
                        ToolCall {
                            id: String::new(),
                            name: String::new(),
                            arguments: String::new(),
                        },
                    );
                }
                c.tool_calls[*index].id.clone_from(id);
                c.tool_calls[*index].name.clone_from(name);
            }
            StreamEvent::ToolCallArgs { index, arguments } => {
                if let Some(tc) = c.tool_calls.get_mut(*index) {
                    tc.arguments.push_str(arguments);
                }
            }
            StreamEvent::Finish(r) => {
                c.finish_reason = Some(r.clone());
                self.saw_finish = true;
            }
            StreamEvent::Usage(u) => c.usage = *u,
        }
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_named_and_multiline_events() {
        let f = SseEvent::named("message_stop", "{\"a\":1}").to_frame();
        assert_eq!(&f[..], b"event: message_stop\ndata: {\"a\":1}\n\n");
        let f = SseEvent::data("x\ny").to_frame();
        assert_eq!(&f[..], b"data: x\ndata: y\n\n");
    }

    #[test]
    fn a_completion_streams_as_events_that_collect_back() {
        let c = Completion {
            id: "r1".into(),
            model: "m".into(),
            text: "Hi".into(),
            reasoning: Some("think".into()),
            reasoning_signature: Some("sig".into()),
            tool_calls: vec![ToolCall {
                id: "t".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }],
            finish_reason: Some(FinishReason::ToolCalls),
            usage: Usage {
                input_tokens: 3,
                output_tokens: 4,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut back = Collector::default();
        for ev in c.to_events() {
            back.push(&ev);
        }
        let b = back.completion;
        assert_eq!(
            (b.id, b.model, b.text),
            ("r1".into(), "m".into(), "Hi".into())
        );
        assert_eq!(b.reasoning, c.reasoning);
        assert_eq!(b.reasoning_signature, c.reasoning_signature);
        assert_eq!(b.tool_calls, c.tool_calls);
        assert_eq!(b.finish_reason, c.finish_reason);
        assert_eq!(b.usage, c.usage);
    }

    #[test]
    fn collector_assembles_tool_calls() {
        let mut c = Collector::default();
        for ev in [
            StreamEvent::Start {
                id: "1".into(),
                model: "m".into(),
            },
            StreamEvent::Text("Hi".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "t".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                arguments: "{\"a\":".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                arguments: "1}".into(),
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
        ] {
            c.push(&ev);
        }
        assert_eq!(c.completion.tool_calls[0].arguments, "{\"a\":1}");
        assert_eq!(c.completion.text, "Hi");
        assert!(c.saw_finish);
    }
}
