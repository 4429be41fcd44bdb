//! Gemini answers: decoded into [`ir`] values (JSON and SSE chunks), and [`ir`] values
//! encoded as Gemini answers and errors.

use super::*;

// ---------------------------------------------------------------------------------------
// Answers: Gemini → IR

/// Gemini's finish reason in the common vocabulary; `STOP` with function calls means
/// the model wants them run.
pub(super) fn finish_from(reason: &str, has_calls: bool) -> FinishReason {
    match reason {
        "STOP" if has_calls => FinishReason::ToolCalls,
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_string()),
    }
}

/// One part of an answer, read.
pub(super) enum Piece {
    Text(String),
    Reasoning(String),
    Call(ToolCall),
}

pub(super) fn read_part(part: Part) -> Option<Piece> {
    if let Some(fc) = part.function_call {
        let args = fc.args.unwrap_or_else(|| json!({}));
        return Some(Piece::Call(ToolCall {
            id: call_id(fc.id, part.thought_signature.as_deref()),
            name: fc.name,
            arguments: args.to_string(),
        }));
    }
    let text = part.text.filter(|t| !t.is_empty())?;
    Some(if part.thought {
        Piece::Reasoning(text)
    } else {
        Piece::Text(text)
    })
}

/// The first candidate's parts and finish reason (the gateway answers with one choice),
/// or the prompt's block reason when Gemini refused the prompt itself.
pub(super) fn first_candidate(r: &mut Response) -> (Vec<Part>, Option<String>) {
    match r.candidates.first_mut() {
        Some(c) => (
            c.content.take().map(|c| c.parts).unwrap_or_default(),
            c.finish_reason
                .take()
                .filter(|f| f != "FINISH_REASON_UNSPECIFIED"),
        ),
        None => (
            Vec::new(),
            // A refused prompt: whatever the block reason, the answer was filtered.
            r.prompt_feedback
                .as_ref()
                .and_then(|f| f.block_reason.as_ref())
                .map(|_| "PROHIBITED_CONTENT".to_string()),
        ),
    }
}

/// Decodes a `generateContent` answer.
pub fn decode_completion(body: &[u8]) -> Result<Completion, DecodeError> {
    let mut r: Response = serde_json::from_slice(body)
        .map_err(|e| DecodeError(format!("invalid Gemini response: {e}")))?;
    let (parts, finish) = first_candidate(&mut r);
    let mut c = Completion {
        id: r.response_id.unwrap_or_default(),
        model: r.model_version.unwrap_or_default(),
        created: ir::now_secs(),
        usage: r.usage_metadata.map(Into::into).unwrap_or_default(),
        ..Default::default()
    };
    for piece in parts.into_iter().filter_map(read_part) {
        match piece {
            Piece::Text(t) => c.text.push_str(&t),
            Piece::Reasoning(t) => c.reasoning.get_or_insert_with(String::new).push_str(&t),
            Piece::Call(tc) => c.tool_calls.push(tc),
        }
    }
    c.finish_reason = finish.map(|f| finish_from(&f, !c.tool_calls.is_empty()));
    Ok(c)
}

/// Decodes `streamGenerateContent?alt=sse` chunks. Gemini has no end marker: the stream
/// is complete when the connection closes after a chunk with a finish reason.
#[derive(Default)]
pub struct ChunkDecoder {
    started: bool,
    calls: usize,
    finished: bool,
    usage: Option<ir::Usage>,
}

impl ir::StreamDecoder for ChunkDecoder {
    fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<bool, DecodeError> {
        let data = ev.data.trim_ascii();
        if data.is_empty() {
            return Ok(false);
        }
        let mut r: Response = serde_json::from_slice(data)
            .map_err(|e| DecodeError(format!("invalid Gemini chunk: {e}")))?;
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: r.response_id.take().unwrap_or_default(),
                model: r.model_version.take().unwrap_or_default(),
            });
        }
        let (parts, finish) = first_candidate(&mut r);
        for piece in parts.into_iter().filter_map(read_part) {
            match piece {
                Piece::Text(t) => out.push(StreamEvent::Text(t)),
                Piece::Reasoning(t) => out.push(StreamEvent::Reasoning(t)),
                Piece::Call(tc) => {
                    let index = self.calls;
                    self.calls += 1;
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: tc.id,
                        name: tc.name,
                    });
                    out.push(StreamEvent::ToolCallArgs {
                        index,
                        arguments: tc.arguments,
                    });
                }
            }
        }
        if let Some(f) = finish {
            if !self.finished {
                self.finished = true;
                out.push(StreamEvent::Finish(finish_from(&f, self.calls > 0)));
            }
        }
        // Gemini repeats usage on many chunks; pass it on when it changed.
        if let Some(u) = r.usage_metadata.map(ir::Usage::from) {
            if self.usage != Some(u) {
                self.usage = Some(u);
                out.push(StreamEvent::Usage(u));
            }
        }
        Ok(false)
    }

    fn ends_at_close(&self) -> bool {
        self.finished
    }
}

// ---------------------------------------------------------------------------------------
// Answers: IR → Gemini

/// Gemini's name for a finish reason (tool calls end with `STOP` in Gemini).
pub(super) fn finish_str(r: &FinishReason) -> &str {
    match r {
        FinishReason::Stop | FinishReason::ToolCalls => "STOP",
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
        FinishReason::Other(s) if s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') => s,
        FinishReason::Other(_) => "OTHER",
    }
}

pub(super) fn call_part(tc: &ToolCall) -> Part {
    let (id, signature) = split_call_id(&tc.id);
    Part {
        function_call: Some(FunctionCall {
            id: (!id.is_empty()).then(|| id.to_string()),
            name: tc.name.clone(),
            args: Some(call_args(&tc.arguments)),
        }),
        thought_signature: signature,
        ..Default::default()
    }
}

pub(super) fn response(
    id: &str,
    model: &str,
    parts: Vec<Part>,
    finish: Option<&FinishReason>,
    usage: Option<ir::Usage>,
) -> Response {
    Response {
        candidates: vec![Candidate {
            content: (!parts.is_empty()).then(|| Content {
                role: Some("model".into()),
                parts,
            }),
            finish_reason: finish.map(|f| finish_str(f).to_string()),
            index: 0,
        }],
        prompt_feedback: None,
        usage_metadata: usage.map(Into::into),
        model_version: Some(model.to_string()),
        response_id: (!id.is_empty()).then(|| id.to_string()),
    }
}

pub(super) fn to_bytes(r: &Response) -> Bytes {
    // These types always serialize (string keys, no fallible impls).
    Bytes::from(serde_json::to_vec(r).unwrap_or_default())
}

/// Encodes a completion as a `generateContent` answer.
pub fn encode_completion(c: &Completion) -> Bytes {
    let mut parts = Vec::new();
    if let Some(r) = c.reasoning.as_ref().filter(|r| !r.is_empty()) {
        parts.push(Part {
            thought: true,
            ..Part::text(r.clone())
        });
    }
    if !c.text.is_empty() {
        parts.push(Part::text(c.text.clone()));
    }
    parts.extend(c.tool_calls.iter().map(call_part));
    let finish = c.finish_reason.clone().unwrap_or(FinishReason::Stop);
    to_bytes(&response(
        &c.id,
        &c.model,
        parts,
        Some(&finish),
        Some(c.usage),
    ))
}

/// The HTTP status as a Google RPC status name.
pub(super) fn rpc_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ if (400..500).contains(&code) => "FAILED_PRECONDITION",
        _ if (500..600).contains(&code) => "INTERNAL",
        _ => "UNKNOWN",
    }
}

/// The Google error body for `err`: `{"error":{"code","message","status"}}`.
pub fn error_json(err: &ErrorInfo) -> String {
    json!({"error": {"code": err.status, "message": err.message, "status": rpc_status(err.status)}})
        .to_string()
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum ErrorBody {
    /// Some Google endpoints wrap the error in a one-element array. (Tried first: serde
    /// would also read an array as the fields of a struct, in order.)
    Many(Vec<ErrorEnvelope>),
    One(ErrorEnvelope),
}

#[derive(Deserialize)]
pub(super) struct ErrorEnvelope {
    error: GoogleError,
}

/// An error a Google API answered with.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct GoogleError {
    #[serde(default)]
    pub message: String,
    /// The RPC status name (`RESOURCE_EXHAUSTED`, `INVALID_ARGUMENT`, …).
    #[serde(default)]
    pub status: Option<String>,
}

/// Reads a Google error body; `None` when the body has another shape.
pub fn parse_error(body: &[u8]) -> Option<GoogleError> {
    match serde_json::from_slice::<ErrorBody>(body).ok()? {
        ErrorBody::One(e) => Some(e.error),
        ErrorBody::Many(list) => list.into_iter().next().map(|e| e.error),
    }
    .filter(|e| !e.message.is_empty())
}

/// Encodes stream events as `streamGenerateContent?alt=sse` chunks. Text goes out as it
/// comes; tool calls (whole in Gemini), the finish reason and usage go in the last chunk.
pub struct ChunkEncoder {
    id: String,
    model: String,
    calls: Vec<ToolCall>,
    finish: Option<FinishReason>,
    usage: Option<ir::Usage>,
}

impl ChunkEncoder {
    /// `model` names the answer's model until the upstream says otherwise.
    pub fn new(model: &str) -> Self {
        Self {
            id: String::new(),
            model: model.to_string(),
            calls: Vec::new(),
            finish: None,
            usage: None,
        }
    }

    fn chunk(&self, parts: Vec<Part>, finish: Option<&FinishReason>) -> SseEvent {
        let r = response(&self.id, &self.model, parts, finish, None);
        SseEvent::data(to_bytes(&r))
    }
}

impl ir::StreamEncoder for ChunkEncoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<SseEvent>) {
        match ev {
            StreamEvent::Start { id, model } => {
                self.id.clone_from(id);
                if !model.is_empty() {
                    self.model.clone_from(model);
                }
            }
            StreamEvent::Text(t) => out.push(self.chunk(vec![Part::text(t.clone())], None)),
            StreamEvent::Reasoning(t) => {
                let part = Part {
                    thought: true,
                    ..Part::text(t.clone())
                };
                out.push(self.chunk(vec![part], None));
            }
            StreamEvent::ReasoningSignature(_) => {}
            StreamEvent::ToolCallStart { index, id, name } => {
                if self.calls.len() <= *index {
                    self.calls.resize_with(*index + 1, || ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                self.calls[*index].id.clone_from(id);
                self.calls[*index].name.clone_from(name);
            }
            StreamEvent::ToolCallArgs { index, arguments } => {
                if let Some(tc) = self.calls.get_mut(*index) {
                    tc.arguments.push_str(arguments);
                }
            }
            StreamEvent::Finish(r) => self.finish = Some(r.clone()),
            StreamEvent::Usage(u) => self.usage = Some(*u),
        }
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        let parts = self.calls.iter().map(call_part).collect();
        let finish = self.finish.take().unwrap_or(FinishReason::Stop);
        let r = response(&self.id, &self.model, parts, Some(&finish), self.usage);
        out.push(SseEvent::data(to_bytes(&r)));
    }

    fn fail(&mut self, err: &ErrorInfo, out: &mut Vec<SseEvent>) {
        out.push(SseEvent::data(error_json(err)));
    }
}
