//! Ollama's answers (`/api/chat` JSON, and the NDJSON lines of a stream) converted into
//! OpenAI chat: each line becomes [`StreamEvent`]s, encoded as `chat.completion.chunk`
//! events by the OpenAI chunk encoder, or collected into a chat completion body.

use std::collections::VecDeque;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::BodyDataStream;
use serde::Deserialize;
use serde_json::Value;

use super::super::http::UpstreamResponse;
use super::super::{EventStream, ProviderError};
use crate::protocol::chat_codec::{encode_completion, ChunkEncoder};
use crate::protocol::ir::{
    now_secs, Collector, FinishReason, SseEvent, StreamEncoder, StreamEvent, Usage,
};

/// One `/api/chat` answer, or one line of a streamed one.
#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    model: String,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    /// A failure reported inside a 200 stream.
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct ToolCall {
    /// Sent by newer Ollama versions; made up otherwise.
    #[serde(default)]
    id: Option<String>,
    function: Function,
}

#[derive(Deserialize)]
struct Function {
    #[serde(default)]
    name: String,
    /// An object (Ollama's shape); text is kept as it is.
    #[serde(default)]
    arguments: Value,
}

/// Turns Ollama lines into IR events, numbering tool calls across the answer.
struct Decoder {
    started: bool,
    tool_calls: usize,
    /// The answer's id (Ollama names none).
    id: String,
}

impl Decoder {
    fn new() -> Self {
        Self {
            started: false,
            tool_calls: 0,
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// Decodes one line; `Ok(true)` when it was the last (`done`).
    fn line(&mut self, l: Line, out: &mut Vec<StreamEvent>) -> Result<bool, ProviderError> {
        if let Some(message) = l.error {
            return Err(ProviderError::Status {
                status: StatusCode::BAD_GATEWAY,
                message,
                kind: Some("api_error".into()),
                code: None,
            });
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: self.id.clone(),
                model: l.model,
            });
        }
        if let Some(m) = l.message {
            if let Some(t) = m.thinking.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Reasoning(t));
            }
            if let Some(t) = m.content.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Text(t));
            }
            for tc in m.tool_calls.unwrap_or_default() {
                let index = self.tool_calls;
                self.tool_calls += 1;
                let id = tc
                    .id
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| format!("call_{}", uuid::Uuid::new_v4().simple()));
                out.push(StreamEvent::ToolCallStart {
                    index,
                    id,
                    name: tc.function.name,
                });
                let arguments = match tc.function.arguments {
                    Value::String(s) => s,
                    Value::Null => "{}".to_string(),
                    other => other.to_string(),
                };
                out.push(StreamEvent::ToolCallArgs { index, arguments });
            }
        }
        if !l.done {
            return Ok(false);
        }
        let finish = match l.done_reason.as_deref() {
            _ if self.tool_calls > 0 => FinishReason::ToolCalls,
            None | Some("stop") => FinishReason::Stop,
            Some("length") => FinishReason::Length,
            Some(other) => FinishReason::Other(other.to_string()),
        };
        out.push(StreamEvent::Finish(finish));
        out.push(StreamEvent::Usage(Usage {
            input_tokens: l.prompt_eval_count.unwrap_or(0),
            output_tokens: l.eval_count.unwrap_or(0),
            ..Default::default()
        }));
        Ok(true)
    }
}

fn parse(bytes: &[u8]) -> Result<Line, ProviderError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ProviderError::BadResponse(format!("invalid Ollama answer: {e}")))
}

/// A complete `/api/chat` answer as an OpenAI chat completion body.
pub(super) fn completion(bytes: &[u8]) -> Result<Bytes, ProviderError> {
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    decoder.line(parse(bytes)?, &mut events)?;
    let mut c = Collector::default();
    for ev in &events {
        c.push(ev);
    }
    let mut completion = c.completion;
    completion.created = now_secs();
    Ok(encode_completion(&completion))
}

/// Converts NDJSON lines into OpenAI chunk events (the final usage chunk and `[DONE]`
/// included).
struct Converter {
    decoder: Decoder,
    encoder: ChunkEncoder,
    irs: Vec<StreamEvent>,
    wire: Vec<SseEvent>,
}

impl Converter {
    fn new(model: &str) -> Self {
        Self {
            decoder: Decoder::new(),
            // The usage chunk is always made; the server hides it when only the gateway
            // wanted it.
            encoder: ChunkEncoder::new(model, true),
            irs: Vec::new(),
            wire: Vec::new(),
        }
    }

    /// Converts one line (blank ones are skipped); `Ok(true)` after the last.
    fn line(&mut self, line: &[u8], out: &mut VecDeque<SseEvent>) -> Result<bool, ProviderError> {
        let line = line.trim_ascii();
        if line.is_empty() {
            return Ok(false);
        }
        self.irs.clear();
        self.wire.clear();
        let done = self.decoder.line(parse(line)?, &mut self.irs)?;
        for ev in &self.irs {
            self.encoder.encode(ev, &mut self.wire);
        }
        if done {
            self.encoder.finish(&mut self.wire);
        }
        out.extend(self.wire.drain(..));
        Ok(done)
    }
}

/// Fuzzing: converts NDJSON `data` delivered in chunks of `chunk` bytes, line by line.
#[cfg(feature = "fuzzing")]
pub fn fuzz_lines(data: &[u8], chunk: usize) {
    let mut converter = Converter::new("fuzz-model");
    let mut out = VecDeque::new();
    let mut buf = BytesMut::new();
    for part in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(part);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(pos + 1);
            match converter.line(&line, &mut out) {
                Ok(false) => {}
                Ok(true) | Err(_) => return,
            }
        }
    }
    let _ = converter.line(&buf, &mut out);
}

struct State {
    body: BodyDataStream<hyper::body::Incoming>,
    buf: BytesMut,
    out: VecDeque<SseEvent>,
    converter: Converter,
    idle: Duration,
    url: String,
    finished: bool,
}

impl State {
    /// Converts every complete line in the buffer (and, at the end of the body, the rest).
    fn drain_lines(&mut self, at_end: bool) -> Result<(), ProviderError> {
        while !self.finished {
            let line = match self.buf.iter().position(|b| *b == b'\n') {
                Some(pos) => self.buf.split_to(pos + 1),
                None if at_end && !self.buf.is_empty() => self.buf.split(),
                None => break,
            };
            self.finished = self.converter.line(&line, &mut self.out)?;
        }
        Ok(())
    }
}

/// An Ollama NDJSON stream as OpenAI chunk events, each converted as its line arrives; an
/// upstream silent longer than `idle` ends the stream with a timeout, and one that closes
/// before its `done` line leaves the stream without `[DONE]` (the server reports it).
pub(super) fn events(
    resp: UpstreamResponse,
    idle: Duration,
    url: &str,
    model: &str,
) -> EventStream {
    let state = State {
        body: BodyDataStream::new(resp.into_body()),
        buf: BytesMut::new(),
        out: VecDeque::new(),
        converter: Converter::new(model),
        idle,
        url: url.to_string(),
        finished: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.out.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.finished {
                return None;
            }
            let next = tokio::time::timeout(st.idle, st.body.next()).await;
            let result = match next {
                Err(_) => Err(ProviderError::Timeout(st.idle)),
                Ok(None) => st.drain_lines(true).map(|()| st.finished = true),
                Ok(Some(Ok(bytes))) => {
                    st.buf.extend_from_slice(&bytes);
                    st.drain_lines(false)
                }
                Ok(Some(Err(e))) => Err(ProviderError::Connect {
                    upstream: st.url.clone(),
                    message: format!("stream interrupted: {e}"),
                }),
            };
            if let Err(e) = result {
                st.finished = true;
                st.out.clear();
                return Some((Err(e), st));
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_complete_answer_becomes_a_chat_completion() {
        let body = json!({"model": "llama3.2", "created_at": "2025-10-17T23:14:07Z",
            "message": {"role": "assistant", "content": "Hello!", "thinking": "greet"},
            "done": true, "done_reason": "stop", "prompt_eval_count": 11, "eval_count": 18});
        let out: Value =
            serde_json::from_slice(&completion(body.to_string().as_bytes()).unwrap()).unwrap();
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["model"], "llama3.2");
        assert!(out["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(out["choices"][0]["message"]["content"], "Hello!");
        assert_eq!(out["choices"][0]["message"]["reasoning_content"], "greet");
        assert_eq!(out["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 11, "completion_tokens": 18, "total_tokens": 29})
        );

        let body = json!({"model": "m", "message": {"role": "assistant", "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                           {"id": "call_x", "function": {"name": "f", "arguments": {}}}]},
            "done": true, "done_reason": "stop"});
        let out: Value =
            serde_json::from_slice(&completion(body.to_string().as_bytes()).unwrap()).unwrap();
        let calls = &out["choices"][0]["message"]["tool_calls"];
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(calls[1]["id"], "call_x");
        assert!(out["choices"][0]["message"]["content"].is_null());
    }

    #[test]
    fn lines_become_chunks_with_usage_and_done() {
        let mut c = Converter::new("asked");
        let mut out = VecDeque::new();
        for l in [
            r#"{"model":"m","message":{"role":"assistant","content":"Hel"},"done":false}"#,
            "",
            r#"{"model":"m","message":{"role":"assistant","content":"lo"},"done":false}"#,
        ] {
            assert!(!c.line(l.as_bytes(), &mut out).unwrap());
        }
        let last = r#"{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"length","prompt_eval_count":3,"eval_count":2}"#;
        assert!(c.line(last.as_bytes(), &mut out).unwrap());
        let data: Vec<String> = out
            .iter()
            .map(|e| String::from_utf8(e.data.to_vec()).unwrap())
            .collect();
        assert_eq!(data.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[0]["model"], "m");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hello");
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "length");
        assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 5);
        assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));
    }

    #[test]
    fn an_error_line_ends_the_stream_with_its_message() {
        let mut c = Converter::new("m");
        let mut out = VecDeque::new();
        let err = c
            .line(
                br#"{"error":"model runner has unexpectedly stopped"}"#,
                &mut out,
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "model runner has unexpectedly stopped");
        assert!(c.line(b"{not json", &mut out).is_err());
    }
}
