//! Anthropic's streamed answers: named SSE events (`message_start`, `content_block_*`,
//! `message_delta`, `message_stop`, `ping`, `error`) decoded into stream events and
//! encoded from them.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    encode_error, finish_from, message_id, stop_reason, Block, OutUsage, WireError, WireMessage,
    WireUsage,
};
use crate::protocol::ir::{
    self, DecodeError, ErrorInfo, FinishReason, SseEvent, StreamDecoder, StreamEncoder, StreamEvent,
};

/// One streamed event, flat (its `type` says which fields are set).
#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default, borrow)]
    message: Option<WireMessage<'a>>,
    #[serde(default, borrow)]
    content_block: Option<Block<'a>>,
    #[serde(default, borrow)]
    delta: Option<WireDelta<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default, borrow)]
    error: Option<WireError<'a>>,
}

#[derive(Deserialize)]
struct WireDelta<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

/// Decodes Anthropic's named SSE events into stream events.
#[derive(Default)]
pub struct EventDecoder {
    /// (Anthropic block index, IR tool-call index) of each tool_use block so far.
    tool_blocks: Vec<(usize, usize)>,
    usage: WireUsage,
}

impl StreamDecoder for EventDecoder {
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<bool, DecodeError> {
        let data = ev.data.trim_ascii();
        if data.is_empty() {
            return Ok(false);
        }
        let w: WireEvent = serde_json::from_slice(data)
            .map_err(|e| DecodeError(format!("invalid Anthropic stream event: {e}")))?;
        match w.kind.as_ref() {
            "message_start" => {
                let m = w.message.unwrap_or_default();
                out.push(StreamEvent::Start {
                    id: m.id.into_owned(),
                    model: m.model.into_owned(),
                });
                if let Some(u) = m.usage {
                    self.usage.merge(u);
                    out.push(StreamEvent::Usage(self.usage.to_ir()));
                }
            }
            "content_block_start" => {
                let (Some(index), Some(b)) = (w.index, w.content_block) else {
                    return Ok(false);
                };
                match b.kind.as_ref() {
                    "tool_use" => {
                        let ir_index = self.tool_blocks.len();
                        self.tool_blocks.push((index, ir_index));
                        out.push(StreamEvent::ToolCallStart {
                            index: ir_index,
                            id: b.id.map(Cow::into_owned).unwrap_or_default(),
                            name: b.name.map(Cow::into_owned).unwrap_or_default(),
                        });
                    }
                    "text" => {
                        if let Some(t) = b.text.filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Text(t.into_owned()));
                        }
                    }
                    "thinking" => {
                        if let Some(t) = b.thinking.filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Reasoning(t.into_owned()));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let Some(d) = w.delta else {
                    return Ok(false);
                };
                match d.kind.as_deref() {
                    Some("text_delta") => {
                        if let Some(t) = d.text.filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Text(t.into_owned()));
                        }
                    }
                    Some("input_json_delta") => {
                        let tool = w.index.and_then(|i| {
                            self.tool_blocks
                                .iter()
                                .find(|(block, _)| *block == i)
                                .map(|(_, t)| *t)
                        });
                        if let (Some(index), Some(p)) =
                            (tool, d.partial_json.filter(|p| !p.is_empty()))
                        {
                            out.push(StreamEvent::ToolCallArgs {
                                index,
                                arguments: p.into_owned(),
                            });
                        }
                    }
                    Some("thinking_delta") => {
                        if let Some(t) = d.thinking.filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::Reasoning(t.into_owned()));
                        }
                    }
                    Some("signature_delta") => {
                        if let Some(s) = d.signature {
                            out.push(StreamEvent::ReasoningSignature(s.into_owned()));
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = w.delta.and_then(|d| d.stop_reason) {
                    out.push(StreamEvent::Finish(finish_from(&r)));
                }
                if let Some(u) = w.usage {
                    self.usage.merge(u);
                    out.push(StreamEvent::Usage(self.usage.to_ir()));
                }
            }
            "message_stop" => return Ok(true),
            "error" => {
                let e = w.error.unwrap_or(WireError {
                    kind: Cow::Borrowed("api_error"),
                    message: Cow::Borrowed("upstream stream error"),
                });
                return Err(DecodeError(format!("{}: {}", e.kind, e.message)));
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
        Ok(false)
    }
}

/// The kind of block the encoder has open.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    Tool(usize),
}

/// Encodes stream events as Anthropic's named SSE events, each as soon as it arrives.
pub struct EventEncoder {
    id: String,
    model: String,
    started: bool,
    /// The open block: its Anthropic index and kind.
    open: Option<(usize, Open)>,
    next_index: usize,
    /// Anthropic block index of each IR tool call.
    tool_blocks: Vec<usize>,
    usage: Option<ir::Usage>,
    finish: Option<FinishReason>,
}

impl EventEncoder {
    /// `model` names the answer until the upstream says otherwise.
    pub fn new(model: &str) -> Self {
        Self {
            id: message_id(""),
            model: model.to_string(),
            started: false,
            open: None,
            next_index: 0,
            tool_blocks: Vec::new(),
            usage: None,
            finish: None,
        }
    }

    fn start(&mut self, out: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let usage = OutUsage::from(self.usage.unwrap_or_default());
        out.push(event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": usage.input_tokens,
                          "cache_creation_input_tokens": usage.cache_creation_input_tokens,
                          "cache_read_input_tokens": usage.cache_read_input_tokens,
                          "output_tokens": 0}}}),
        ));
    }

    fn close(&mut self, out: &mut Vec<SseEvent>) {
        if let Some((index, _)) = self.open.take() {
            out.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
        }
    }

    /// Makes a block of `kind` the open one (opening it with `block` when it is not),
    /// returning its index.
    fn ensure(
        &mut self,
        kind: Open,
        block: impl FnOnce() -> Value,
        out: &mut Vec<SseEvent>,
    ) -> usize {
        self.start(out);
        if let Some((index, open)) = self.open {
            if open == kind {
                return index;
            }
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((index, kind));
        out.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block()}),
        ));
        index
    }

    fn delta(index: usize, delta: Value) -> SseEvent {
        event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": delta}),
        )
    }
}

fn event(name: &str, data: &Value) -> SseEvent {
    SseEvent::named(name, data.to_string())
}

impl StreamEncoder for EventEncoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<SseEvent>) {
        match ev {
            StreamEvent::Start { id, model } => {
                if !self.started {
                    self.id = message_id(id);
                    if !model.is_empty() {
                        self.model.clone_from(model);
                    }
                }
                self.start(out);
            }
            StreamEvent::Text(t) => {
                let i = self.ensure(Open::Text, || json!({"type": "text", "text": ""}), out);
                out.push(Self::delta(i, json!({"type": "text_delta", "text": t})));
            }
            StreamEvent::Reasoning(t) => {
                let i = self.ensure(
                    Open::Thinking,
                    || json!({"type": "thinking", "thinking": ""}),
                    out,
                );
                out.push(Self::delta(
                    i,
                    json!({"type": "thinking_delta", "thinking": t}),
                ));
            }
            StreamEvent::ReasoningSignature(s) => {
                let i = self.ensure(
                    Open::Thinking,
                    || json!({"type": "thinking", "thinking": ""}),
                    out,
                );
                out.push(Self::delta(
                    i,
                    json!({"type": "signature_delta", "signature": s}),
                ));
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                let block = self.ensure(
                    Open::Tool(*index),
                    || json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    out,
                );
                if self.tool_blocks.len() <= *index {
                    self.tool_blocks.resize(*index + 1, block);
                }
                self.tool_blocks[*index] = block;
            }
            StreamEvent::ToolCallArgs { index, arguments } => {
                // Arguments of a tool whose block was already closed (interleaved parallel
                // calls) still go to that block: SDKs accumulate deltas by index.
                let Some(&block) = self.tool_blocks.get(*index) else {
                    return;
                };
                self.start(out);
                out.push(Self::delta(
                    block,
                    json!({"type": "input_json_delta", "partial_json": arguments}),
                ));
            }
            StreamEvent::Finish(r) => self.finish = Some(r.clone()),
            StreamEvent::Usage(u) => self.usage = Some(*u),
        }
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        self.start(out);
        self.close(out);
        let reason = match &self.finish {
            Some(r) => stop_reason(r),
            None if self.tool_blocks.is_empty() => "end_turn",
            None => "tool_use",
        };
        let usage = OutUsage::from(self.usage.unwrap_or_default());
        out.push(event(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": null},
                    "usage": usage}),
        ));
        out.push(event("message_stop", &json!({"type": "message_stop"})));
    }

    fn fail(&mut self, err: &ErrorInfo, out: &mut Vec<SseEvent>) {
        out.push(SseEvent::named("error", encode_error(err)));
    }
}
