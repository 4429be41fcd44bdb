//! Streamed Responses answers: the typed SSE events (`response.created`, …,
//! `response.output_text.delta`, …, `response.completed`), each with its
//! `sequence_number`, encoded from stream events as they arrive and decoded into them.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    finish_of, raw, response_json, signature_content, status_of, Item, OutError, OutItem, OutPart,
    ResponseMeta, WireError, WireResponse,
};
use crate::protocol::ir::{
    self, DecodeError, ErrorInfo, FinishReason, SseEvent, StreamDecoder, StreamEncoder, StreamEvent,
};

/// One event as written: the fields of every event type, those not set left out.
#[derive(Serialize)]
struct OutEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    sequence_number: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    part: Option<OutPart<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<[(); 0]>,
}

impl<'a> OutEvent<'a> {
    fn new(kind: &'a str) -> Self {
        Self {
            kind,
            sequence_number: 0,
            response: None,
            item_id: None,
            output_index: None,
            content_index: None,
            summary_index: None,
            item: None,
            part: None,
            delta: None,
            text: None,
            name: None,
            arguments: None,
            logprobs: None,
        }
    }
}

/// Numbers `ev` and queues it.
fn emit(seq: &mut u64, mut ev: OutEvent, out: &mut Vec<SseEvent>) {
    ev.sequence_number = *seq;
    *seq += 1;
    out.push(SseEvent::named(
        ev.kind,
        serde_json::to_vec(&ev).unwrap_or_default(),
    ));
}

/// The item the encoder has open (text and reasoning; function calls are kept in
/// `tools`).
enum Open {
    Message {
        output_index: usize,
        id: String,
        text: String,
    },
    Reasoning {
        output_index: usize,
        id: String,
        text: String,
        signature: Option<String>,
    },
}

/// A function call item: open until the answer moves on to text or ends.
struct Tool {
    output_index: usize,
    id: String,
    call_id: String,
    name: String,
    arguments: String,
    done: bool,
}

/// Encodes stream events as the Responses API's typed SSE events, each as soon as it
/// arrives.
pub struct EventEncoder {
    meta: Arc<ResponseMeta>,
    model: String,
    seq: u64,
    started: bool,
    next_output: usize,
    /// Message and reasoning items opened so far (the first of each has the plain id).
    messages: usize,
    reasonings: usize,
    open: Option<Open>,
    tools: Vec<Tool>,
    /// Finished output items (JSON) with their output index, for the final response.
    done_items: Vec<(usize, Box<RawValue>)>,
    usage: Option<ir::Usage>,
    finish: Option<FinishReason>,
}

impl EventEncoder {
    /// An encoder for the response `meta` describes.
    pub fn new(meta: Arc<ResponseMeta>) -> Self {
        Self {
            model: meta.model.clone(),
            meta,
            seq: 0,
            started: false,
            next_output: 0,
            messages: 0,
            reasonings: 0,
            open: None,
            tools: Vec::new(),
            done_items: Vec::new(),
            usage: None,
            finish: None,
        }
    }

    fn push(&mut self, ev: OutEvent, out: &mut Vec<SseEvent>) {
        emit(&mut self.seq, ev, out);
    }

    fn response(&self, status: &str, error: Option<OutError>) -> Box<RawValue> {
        let mut items: Vec<&(usize, Box<RawValue>)> = self.done_items.iter().collect();
        items.sort_by_key(|(i, _)| *i);
        let output: Vec<&RawValue> = items.iter().map(|(_, r)| r.as_ref()).collect();
        let (_, incomplete) = status_of(self.finish.as_ref());
        let incomplete = incomplete.filter(|_| status == "incomplete");
        let json = response_json(
            &self.meta,
            &self.model,
            status,
            incomplete,
            &output,
            self.usage.filter(|_| status != "in_progress"),
            error,
        );
        RawValue::from_string(json).unwrap_or_default()
    }

    fn start(&mut self, out: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let resp = self.response("in_progress", None);
        for kind in ["response.created", "response.in_progress"] {
            self.push(
                OutEvent {
                    response: Some(&resp),
                    ..OutEvent::new(kind)
                },
                out,
            );
        }
    }

    fn item_event(
        &mut self,
        kind: &str,
        output_index: usize,
        item: &OutItem,
        out: &mut Vec<SseEvent>,
    ) {
        let item = raw(item);
        self.push(
            OutEvent {
                output_index: Some(output_index),
                item: Some(&item),
                ..OutEvent::new(kind)
            },
            out,
        );
        if kind == "response.output_item.done" {
            self.done_items.push((output_index, item));
        }
    }

    /// Closes the open text or reasoning item.
    fn close_open(&mut self, out: &mut Vec<SseEvent>) {
        match self.open.take() {
            None => {}
            Some(Open::Message {
                output_index,
                id,
                text,
            }) => {
                let at = |kind| OutEvent {
                    item_id: Some(&id),
                    output_index: Some(output_index),
                    content_index: Some(0),
                    ..OutEvent::new(kind)
                };
                self.push(
                    OutEvent {
                        text: Some(&text),
                        logprobs: Some([]),
                        ..at("response.output_text.done")
                    },
                    out,
                );
                self.push(
                    OutEvent {
                        part: Some(OutPart::output_text(&text)),
                        ..at("response.content_part.done")
                    },
                    out,
                );
                let item = OutItem::Message {
                    id: id.clone(),
                    status: "completed",
                    role: "assistant",
                    content: vec![OutPart::output_text(&text)],
                };
                self.item_event("response.output_item.done", output_index, &item, out);
            }
            Some(Open::Reasoning {
                output_index,
                id,
                text,
                signature,
            }) => {
                let at = |kind| OutEvent {
                    item_id: Some(&id),
                    output_index: Some(output_index),
                    summary_index: Some(0),
                    ..OutEvent::new(kind)
                };
                self.push(
                    OutEvent {
                        text: Some(&text),
                        ..at("response.reasoning_summary_text.done")
                    },
                    out,
                );
                self.push(
                    OutEvent {
                        part: Some(OutPart::SummaryText { text: &text }),
                        ..at("response.reasoning_summary_part.done")
                    },
                    out,
                );
                let item = OutItem::Reasoning {
                    id: id.clone(),
                    summary: vec![OutPart::SummaryText { text: &text }],
                    encrypted_content: signature_content(signature.as_deref()),
                };
                self.item_event("response.output_item.done", output_index, &item, out);
            }
        }
    }

    /// Closes every function call still open.
    fn close_tools(&mut self, out: &mut Vec<SseEvent>) {
        for i in 0..self.tools.len() {
            if self.tools[i].done {
                continue;
            }
            self.tools[i].done = true;
            let t = &self.tools[i];
            let (output_index, id, call_id, name, arguments) = (
                t.output_index,
                t.id.clone(),
                t.call_id.clone(),
                t.name.clone(),
                t.arguments.clone(),
            );
            self.push(
                OutEvent {
                    item_id: Some(&id),
                    output_index: Some(output_index),
                    name: Some(&name),
                    arguments: Some(&arguments),
                    ..OutEvent::new("response.function_call_arguments.done")
                },
                out,
            );
            let item = OutItem::FunctionCall {
                id,
                status: "completed",
                call_id: &call_id,
                name: &name,
                arguments: &arguments,
            };
            self.item_event("response.output_item.done", output_index, &item, out);
        }
    }

    fn text(&mut self, t: &str, out: &mut Vec<SseEvent>) {
        self.start(out);
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close_open(out);
            self.close_tools(out);
            let output_index = self.next_output;
            self.next_output += 1;
            let id = self
                .meta
                .item_id("msg", (self.messages > 0).then_some(output_index));
            self.messages += 1;
            let item = OutItem::Message {
                id: id.clone(),
                status: "in_progress",
                role: "assistant",
                content: Vec::new(),
            };
            self.item_event("response.output_item.added", output_index, &item, out);
            self.push(
                OutEvent {
                    item_id: Some(&id),
                    output_index: Some(output_index),
                    content_index: Some(0),
                    part: Some(OutPart::output_text("")),
                    ..OutEvent::new("response.content_part.added")
                },
                out,
            );
            self.open = Some(Open::Message {
                output_index,
                id,
                text: String::new(),
            });
        }
        if let Some(Open::Message {
            output_index,
            id,
            text,
        }) = &mut self.open
        {
            text.push_str(t);
            let ev = OutEvent {
                item_id: Some(id),
                output_index: Some(*output_index),
                content_index: Some(0),
                delta: Some(t),
                logprobs: Some([]),
                ..OutEvent::new("response.output_text.delta")
            };
            emit(&mut self.seq, ev, out);
        }
    }

    fn reasoning(&mut self, t: &str, signature: Option<&str>, out: &mut Vec<SseEvent>) {
        self.start(out);
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close_open(out);
            self.close_tools(out);
            let output_index = self.next_output;
            self.next_output += 1;
            let id = self
                .meta
                .item_id("rs", (self.reasonings > 0).then_some(output_index));
            self.reasonings += 1;
            let item = OutItem::Reasoning {
                id: id.clone(),
                summary: Vec::new(),
                encrypted_content: None,
            };
            self.item_event("response.output_item.added", output_index, &item, out);
            self.push(
                OutEvent {
                    item_id: Some(&id),
                    output_index: Some(output_index),
                    summary_index: Some(0),
                    part: Some(OutPart::SummaryText { text: "" }),
                    ..OutEvent::new("response.reasoning_summary_part.added")
                },
                out,
            );
            self.open = Some(Open::Reasoning {
                output_index,
                id,
                text: String::new(),
                signature: None,
            });
        }
        if let Some(Open::Reasoning {
            output_index,
            id,
            text,
            signature: sig,
        }) = &mut self.open
        {
            if let Some(s) = signature {
                sig.get_or_insert_with(String::new).push_str(s);
            }
            if t.is_empty() {
                return;
            }
            text.push_str(t);
            let ev = OutEvent {
                item_id: Some(id),
                output_index: Some(*output_index),
                summary_index: Some(0),
                delta: Some(t),
                ..OutEvent::new("response.reasoning_summary_text.delta")
            };
            emit(&mut self.seq, ev, out);
        }
    }

    fn tool_start(&mut self, index: usize, call_id: &str, name: &str, out: &mut Vec<SseEvent>) {
        self.start(out);
        self.close_open(out);
        let output_index = self.next_output;
        self.next_output += 1;
        let id = self.meta.item_id("fc", Some(index));
        let item = OutItem::FunctionCall {
            id: id.clone(),
            status: "in_progress",
            call_id,
            name,
            arguments: "",
        };
        self.item_event("response.output_item.added", output_index, &item, out);
        let tool = Tool {
            output_index,
            id,
            call_id: call_id.to_string(),
            name: name.to_string(),
            arguments: String::new(),
            done: false,
        };
        if self.tools.len() <= index {
            self.tools.resize_with(index + 1, || Tool {
                output_index: usize::MAX,
                id: String::new(),
                call_id: String::new(),
                name: String::new(),
                arguments: String::new(),
                done: true,
            });
        }
        self.tools[index] = tool;
    }

    fn tool_args(&mut self, index: usize, arguments: &str, out: &mut Vec<SseEvent>) {
        let Some(t) = self.tools.get_mut(index).filter(|t| !t.done) else {
            return;
        };
        t.arguments.push_str(arguments);
        let ev = OutEvent {
            item_id: Some(&t.id),
            output_index: Some(t.output_index),
            delta: Some(arguments),
            ..OutEvent::new("response.function_call_arguments.delta")
        };
        emit(&mut self.seq, ev, out);
    }
}

impl StreamEncoder for EventEncoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<SseEvent>) {
        match ev {
            StreamEvent::Start { model, .. } => {
                if !self.started && !model.is_empty() {
                    self.model.clone_from(model);
                }
                self.start(out);
            }
            StreamEvent::Text(t) => self.text(t, out),
            StreamEvent::Reasoning(t) => self.reasoning(t, None, out),
            StreamEvent::ReasoningSignature(s) => self.reasoning("", Some(s), out),
            StreamEvent::ToolCallStart { index, id, name } => {
                self.tool_start(*index, id, name, out)
            }
            StreamEvent::ToolCallArgs { index, arguments } => {
                self.tool_args(*index, arguments, out)
            }
            StreamEvent::Finish(r) => self.finish = Some(r.clone()),
            StreamEvent::Usage(u) => self.usage = Some(*u),
        }
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        self.start(out);
        self.close_open(out);
        self.close_tools(out);
        let (status, _) = status_of(self.finish.as_ref());
        let resp = self.response(status, None);
        let kind = if status == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.push(
            OutEvent {
                response: Some(&resp),
                ..OutEvent::new(kind)
            },
            out,
        );
    }

    fn opened_upstream(&mut self) {
        self.started = true;
    }

    fn fail(&mut self, err: &ErrorInfo, out: &mut Vec<SseEvent>) {
        self.start(out);
        let code = err.code.as_deref().unwrap_or(if err.status == 429 {
            "rate_limit_exceeded"
        } else {
            "server_error"
        });
        let resp = self.response(
            "failed",
            Some(OutError {
                code,
                message: &err.message,
            }),
        );
        self.push(
            OutEvent {
                response: Some(&resp),
                ..OutEvent::new("response.failed")
            },
            out,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Decoding a native upstream's stream.

/// One streamed event, flat (its `type` says which fields are set).
#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    response: Option<WireResponse<'a>>,
    #[serde(default)]
    output_index: Option<usize>,
    #[serde(default, borrow)]
    item: Option<Item<'a>>,
    #[serde(default, borrow)]
    delta: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
}

/// Decodes a native upstream's Responses events into stream events.
#[derive(Default)]
pub struct EventDecoder {
    started: bool,
    /// Output index of each function call, in IR tool order, and whether its arguments
    /// arrived.
    tools: Vec<(usize, bool)>,
    /// Output indexes of message items whose text arrived as deltas.
    text_seen: Vec<usize>,
}

impl EventDecoder {
    fn tool(&self, output_index: Option<usize>) -> Option<usize> {
        let oi = output_index?;
        self.tools.iter().position(|(i, _)| *i == oi)
    }
}

/// The message of a failed response or an `error` event.
pub fn failure_message(data: &[u8]) -> Option<String> {
    let w: WireEvent = serde_json::from_slice(data).ok()?;
    match w.kind.as_ref() {
        "response.failed" => {
            let e = w.response.and_then(|r| r.error);
            Some(describe(e.as_ref()))
        }
        "error" => {
            let e = WireError {
                code: w.code,
                message: w.message,
            };
            Some(describe(Some(&e)))
        }
        _ => None,
    }
}

fn describe(e: Option<&WireError>) -> String {
    match e {
        Some(WireError {
            code: Some(c),
            message: Some(m),
        }) => format!("{c}: {m}"),
        Some(WireError {
            message: Some(m), ..
        }) => m.to_string(),
        _ => "the upstream reported a failed response".into(),
    }
}

impl StreamDecoder for EventDecoder {
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<bool, DecodeError> {
        let data = ev.data.trim_ascii();
        if data.is_empty() || data == b"[DONE]" {
            return Ok(false);
        }
        let w: WireEvent = serde_json::from_slice(data)
            .map_err(|e| DecodeError(format!("invalid Responses stream event: {e}")))?;
        if !self.started && w.kind.starts_with("response.") {
            self.started = true;
            let (id, model) = w
                .response
                .as_ref()
                .map(|r| (r.id.to_string(), r.model.to_string()))
                .unwrap_or_default();
            out.push(StreamEvent::Start { id, model });
        }
        match w.kind.as_ref() {
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(oi) = w.output_index {
                    if !self.text_seen.contains(&oi) {
                        self.text_seen.push(oi);
                    }
                }
                if let Some(d) = w.delta.filter(|d| !d.is_empty()) {
                    out.push(StreamEvent::Text(d.into_owned()));
                }
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                if let Some(d) = w.delta.filter(|d| !d.is_empty()) {
                    out.push(StreamEvent::Reasoning(d.into_owned()));
                }
            }
            "response.output_item.added" | "response.output_item.done" => {
                let (Some(item), Some(oi)) = (w.item, w.output_index) else {
                    return Ok(false);
                };
                match item.kind() {
                    "function_call" if self.tool(Some(oi)).is_none() => {
                        let index = self.tools.len();
                        out.push(StreamEvent::ToolCallStart {
                            index,
                            id: item.call_id.as_deref().unwrap_or_default().to_string(),
                            name: item.name.as_deref().unwrap_or_default().to_string(),
                        });
                        let args = item.arguments.filter(|a| !a.is_empty());
                        self.tools.push((oi, args.is_some()));
                        if let Some(a) = args {
                            out.push(StreamEvent::ToolCallArgs {
                                index,
                                arguments: a.into_owned(),
                            });
                        }
                    }
                    "function_call" if w.kind == "response.output_item.done" => {
                        // Arguments that came only with the finished item.
                        if let Some(index) = self.tool(Some(oi)) {
                            if !self.tools[index].1 {
                                self.tools[index].1 = true;
                                if let Some(a) = item.arguments.filter(|a| !a.is_empty()) {
                                    out.push(StreamEvent::ToolCallArgs {
                                        index,
                                        arguments: a.into_owned(),
                                    });
                                }
                            }
                        }
                    }
                    "message"
                        if w.kind == "response.output_item.done"
                            && !self.text_seen.contains(&oi) =>
                    {
                        let text = Item::content_text(item.content.as_ref());
                        if !text.is_empty() {
                            out.push(StreamEvent::Text(text));
                        }
                    }
                    _ => {}
                }
            }
            "response.function_call_arguments.delta" => {
                if let (Some(index), Some(d)) = (self.tool(w.output_index), w.delta) {
                    self.tools[index].1 = true;
                    if !d.is_empty() {
                        out.push(StreamEvent::ToolCallArgs {
                            index,
                            arguments: d.into_owned(),
                        });
                    }
                }
            }
            "response.function_call_arguments.done" => {
                if let Some(index) = self.tool(w.output_index) {
                    if !self.tools[index].1 {
                        self.tools[index].1 = true;
                        if let Some(a) = w.arguments.filter(|a| !a.is_empty()) {
                            out.push(StreamEvent::ToolCallArgs {
                                index,
                                arguments: a.into_owned(),
                            });
                        }
                    }
                }
            }
            "response.completed" | "response.incomplete" => {
                let r = w.response.unwrap_or_default();
                if let Some(u) = r.usage {
                    out.push(StreamEvent::Usage(u.into()));
                }
                let has_calls =
                    !self.tools.is_empty() || r.output.iter().any(|i| i.kind() == "function_call");
                out.push(StreamEvent::Finish(finish_of(
                    r.status.as_deref(),
                    r.incomplete_details
                        .as_ref()
                        .and_then(|d| d.reason.as_deref()),
                    has_calls,
                )));
                return Ok(true);
            }
            "response.failed" | "error" => {
                let message = failure_message(data).unwrap_or_default();
                return Err(DecodeError(message));
            }
            _ => {}
        }
        Ok(false)
    }
}
