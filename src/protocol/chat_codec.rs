//! OpenAI chat completions answers ↔ the internal representation: completion JSON and
//! streamed chunks decoded into [`ir`] values and encoded back.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::chat::Usage as WireUsage;
use super::ir::{
    self, Completion, DecodeError, ErrorInfo, FinishReason, SseEvent, StreamDecoder, StreamEncoder,
    StreamEvent,
};

/// OpenAI's name for a finish reason.
pub fn finish_str(r: &FinishReason) -> &str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Other(s) => s,
    }
}

/// The finish reason for OpenAI's name.
pub fn finish_from(s: &str) -> FinishReason {
    match s {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_string()),
    }
}

#[derive(Deserialize)]
struct WireCompletion<'a> {
    #[serde(default, borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    created: u64,
    #[serde(default, borrow)]
    choices: Vec<WireChoice<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice<'a> {
    #[serde(default, borrow)]
    message: Option<WireMessage<'a>>,
    #[serde(default, borrow)]
    delta: Option<WireMessage<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCallDelta>>,
}

#[derive(Deserialize)]
struct WireToolCallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionDelta>,
}

#[derive(Deserialize)]
struct WireFunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireMeta<'a> {
    #[serde(default, borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    created: u64,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Decodes only the id, model, creation time and usage of a chat completion body (the
/// choices are skipped, not copied): what accounting needs of an answer passed through.
pub fn decode_meta(bytes: &[u8]) -> Result<Completion, DecodeError> {
    let w: WireMeta = serde_json::from_slice(bytes)
        .map_err(|e| DecodeError(format!("invalid chat completion: {e}")))?;
    Ok(Completion {
        id: w.id.into_owned(),
        model: w.model.into_owned(),
        created: w.created,
        usage: w.usage.map(Into::into).unwrap_or_default(),
        ..Default::default()
    })
}

/// Decodes a chat completion body.
pub fn decode_completion(bytes: &[u8]) -> Result<Completion, DecodeError> {
    let w: WireCompletion = serde_json::from_slice(bytes)
        .map_err(|e| DecodeError(format!("invalid chat completion: {e}")))?;
    let mut c = Completion {
        id: w.id.into_owned(),
        model: w.model.into_owned(),
        created: w.created,
        usage: w.usage.map(Into::into).unwrap_or_default(),
        ..Default::default()
    };
    if let Some(choice) = w.choices.into_iter().next() {
        c.finish_reason = choice.finish_reason.as_deref().map(finish_from);
        if let Some(m) = choice.message {
            c.text = m.content.map(Cow::into_owned).unwrap_or_default();
            c.reasoning = m.reasoning_content.map(Cow::into_owned);
            for tc in m.tool_calls.unwrap_or_default() {
                let f = tc.function.unwrap_or(WireFunctionDelta {
                    name: None,
                    arguments: None,
                });
                c.tool_calls.push(ir::ToolCall {
                    id: tc.id.unwrap_or_default(),
                    name: f.name.unwrap_or_default(),
                    arguments: f.arguments.unwrap_or_default(),
                });
            }
        }
    }
    Ok(c)
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// Encodes a completion as an OpenAI chat completion body.
pub fn encode_completion(c: &Completion) -> Bytes {
    let tool_calls: Vec<OutToolCall> = c
        .tool_calls
        .iter()
        .map(|t| OutToolCall {
            id: &t.id,
            kind: "function",
            function: OutFunction {
                name: &t.name,
                arguments: &t.arguments,
            },
        })
        .collect();
    let mut message = json!({
        "role": "assistant",
        "content": if c.text.is_empty() && !tool_calls.is_empty() { serde_json::Value::Null } else { c.text.clone().into() },
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = json!(tool_calls);
    }
    if let Some(r) = &c.reasoning {
        message["reasoning_content"] = r.clone().into();
    }
    let v = json!({
        "id": c.id,
        "object": "chat.completion",
        "created": c.created,
        "model": c.model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": c.finish_reason.as_ref().map(finish_str).unwrap_or("stop"),
            "logprobs": null,
        }],
        "usage": WireUsage::from(c.usage),
    });
    Bytes::from(v.to_string())
}

/// The OpenAI error body for `err`.
pub fn error_json(err: &ErrorInfo) -> String {
    json!({"error": {"message": err.message, "type": err.kind, "code": err.code, "param": null}})
        .to_string()
}

/// Decodes OpenAI chunk payloads into stream events.
#[derive(Default)]
pub struct ChunkDecoder {
    started: bool,
    /// OpenAI tool-call indexes seen so far, in order (IR indexes count from 0).
    tool_indexes: Vec<usize>,
}

impl StreamDecoder for ChunkDecoder {
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<bool, DecodeError> {
        let data = ev.data.trim_ascii();
        if data == b"[DONE]" {
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let w: WireCompletion =
            serde_json::from_slice(data).map_err(|e| DecodeError(format!("invalid chunk: {e}")))?;
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: w.id.into_owned(),
                model: w.model.into_owned(),
            });
        }
        for choice in w.choices.into_iter().take(1) {
            if let Some(d) = choice.delta {
                if let Some(r) = d.reasoning_content.filter(|r| !r.is_empty()) {
                    out.push(StreamEvent::Reasoning(r.into_owned()));
                }
                if let Some(t) = d.content.filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::Text(t.into_owned()));
                }
                for tc in d.tool_calls.unwrap_or_default() {
                    let wire_index = tc.index.unwrap_or(self.tool_indexes.len());
                    let (name, args) = match tc.function {
                        Some(f) => (f.name, f.arguments),
                        None => (None, None),
                    };
                    let index = match self.tool_indexes.iter().position(|i| *i == wire_index) {
                        Some(i) => i,
                        None => {
                            self.tool_indexes.push(wire_index);
                            let index = self.tool_indexes.len() - 1;
                            out.push(StreamEvent::ToolCallStart {
                                index,
                                id: tc.id.unwrap_or_default(),
                                name: name.unwrap_or_default(),
                            });
                            index
                        }
                    };
                    if let Some(a) = args.filter(|a| !a.is_empty()) {
                        out.push(StreamEvent::ToolCallArgs {
                            index,
                            arguments: a,
                        });
                    }
                }
            }
            if let Some(f) = choice.finish_reason {
                out.push(StreamEvent::Finish(finish_from(&f)));
            }
        }
        if let Some(u) = w.usage {
            out.push(StreamEvent::Usage(u.into()));
        }
        Ok(false)
    }
}

/// Encodes stream events as OpenAI chunks.
pub struct ChunkEncoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    usage: Option<ir::Usage>,
    finish: Option<FinishReason>,
}

impl ChunkEncoder {
    /// `include_usage`: the client asked for a final usage chunk.
    pub fn new(model: &str, include_usage: bool) -> Self {
        Self {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            model: model.to_string(),
            created: ir::now_secs(),
            include_usage,
            usage: None,
            finish: None,
        }
    }

    fn chunk(&self, delta: serde_json::Value, finish: Option<&str>) -> SseEvent {
        SseEvent::data(
            json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                   "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            .to_string(),
        )
    }
}

impl StreamEncoder for ChunkEncoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<SseEvent>) {
        match ev {
            StreamEvent::Start { id, model } => {
                if !id.is_empty() {
                    self.id.clone_from(id);
                }
                if !model.is_empty() {
                    self.model.clone_from(model);
                }
                out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
            }
            StreamEvent::Text(t) => out.push(self.chunk(json!({"content": t}), None)),
            StreamEvent::Reasoning(t) => {
                out.push(self.chunk(json!({"reasoning_content": t}), None))
            }
            StreamEvent::ReasoningSignature(_) => {}
            StreamEvent::ToolCallStart { index, id, name } => out.push(self.chunk(
                json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                       "function": {"name": name, "arguments": ""}}]}),
                None,
            )),
            StreamEvent::ToolCallArgs { index, arguments } => out.push(self.chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
                None,
            )),
            StreamEvent::Finish(r) => self.finish = Some(r.clone()),
            StreamEvent::Usage(u) => self.usage = Some(*u),
        }
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        let reason = self.finish.take().unwrap_or(FinishReason::Stop);
        out.push(self.chunk(json!({}), Some(finish_str(&reason))));
        if self.include_usage {
            let usage = WireUsage::from(self.usage.unwrap_or_default());
            out.push(SseEvent::data(
                json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                       "model": self.model, "choices": [], "usage": usage})
                .to_string(),
            ));
        }
        out.push(SseEvent::data("[DONE]"));
    }

    fn fail(&mut self, err: &ErrorInfo, out: &mut Vec<SseEvent>) {
        out.push(SseEvent::data(error_json(err)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_round_trip() {
        let body = br#"{"id":"x","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"get","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":2}}}"#;
        let c = decode_completion(body).unwrap();
        assert_eq!(c.tool_calls[0].name, "get");
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(c.usage.cached_input_tokens, 2);
        let again = decode_completion(&encode_completion(&c)).unwrap();
        assert_eq!(again.tool_calls, c.tool_calls);
        assert_eq!(again.usage, c.usage);
        let meta = decode_meta(body).unwrap();
        assert_eq!((meta.id.as_str(), meta.model.as_str()), ("x", "m"));
        assert_eq!(meta.usage, c.usage);
        assert!(meta.tool_calls.is_empty() && meta.text.is_empty());
        assert!(decode_meta(b"{\"choices\": [").is_err());
    }

    #[test]
    fn chunks_decode_and_encode() {
        let mut d = ChunkDecoder::default();
        let mut evs = Vec::new();
        for data in [
            r#"{"id":"a","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}"#,
            r#"{"id":"a","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
            r#"{"id":"a","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#,
            r#"{"id":"a","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"a","model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
        ] {
            assert!(!d.decode(&SseEvent::data(data), &mut evs).unwrap());
        }
        assert!(d.decode(&SseEvent::data("[DONE]"), &mut evs).unwrap());
        assert_eq!(evs[1], StreamEvent::Text("Hi".into()));
        assert_eq!(
            evs[2],
            StreamEvent::ToolCallStart {
                index: 0,
                id: "t1".into(),
                name: "f".into()
            }
        );
        assert_eq!(evs[4], StreamEvent::Finish(FinishReason::ToolCalls));

        let mut e = ChunkEncoder::new("m", true);
        let mut out = Vec::new();
        for ev in &evs {
            e.encode(ev, &mut out);
        }
        e.finish(&mut out);
        assert_eq!(out.last().unwrap().data, "[DONE]");
        let usage: serde_json::Value = serde_json::from_slice(&out[out.len() - 2].data).unwrap();
        assert_eq!(usage["usage"]["total_tokens"], 3);
    }
}
