//! ConverseStream answers as OpenAI chunks: the body read as it arrives, cut into
//! event-stream messages ([`super::eventstream`]), translated into internal events
//! ([`super::response`]) and encoded as `chat.completion.chunk` events, each as soon as its
//! frame is complete. Exceptions and broken streams end it with an error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::eventstream::{FrameReader, StreamMessage};
use super::response::{EventTranslator, Progress};
use super::{exception_error, snake_case};
use crate::protocol::chat_codec::ChunkEncoder;
use crate::protocol::ir::{SseEvent, StreamEncoder, StreamEvent};
use crate::providers::{EventStream, ProviderError};

/// A ConverseStream answer read frame by frame and re-encoded as OpenAI chunks, each as
/// soon as its frame is complete.
struct ConverseStream<B> {
    body: B,
    frames: FrameReader,
    translator: EventTranslator,
    encoder: ChunkEncoder,
    pending: VecDeque<SseEvent>,
    ended: bool,
    idle: Duration,
    url: Arc<str>,
}

pub(super) fn converse_stream<B, E>(
    body: B,
    idle: Duration,
    url: Arc<str>,
    id: String,
    model: &str,
) -> EventStream
where
    B: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display,
{
    let state = ConverseStream {
        body,
        frames: FrameReader::default(),
        translator: EventTranslator::new(id, model),
        // The usage chunk is always made; `usage_added` tells whether the client wants it.
        encoder: ChunkEncoder::new(model, true),
        pending: VecDeque::new(),
        ended: false,
        idle,
        url,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.ended {
                return None;
            }
            if let Err(e) = st.step().await {
                st.ended = true;
                return Some((Err(e), st));
            }
        }
    }))
}

impl<B, E> ConverseStream<B>
where
    B: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    /// Handles one buffered message, or reads more of the body.
    async fn step(&mut self) -> Result<(), ProviderError> {
        let next = self
            .frames
            .next_message()
            .map_err(|e| ProviderError::BadResponse(e.to_string()))?;
        if let Some(message) = next {
            return self.message(message);
        }
        match tokio::time::timeout(self.idle, self.body.next()).await {
            Err(_) => Err(ProviderError::Timeout(self.idle)),
            Ok(Some(Ok(chunk))) => {
                self.frames.push(&chunk);
                Ok(())
            }
            Ok(Some(Err(e))) => Err(ProviderError::Connect {
                upstream: self.url.to_string(),
                message: format!("stream interrupted: {e}"),
            }),
            Ok(None)
                if self.translator.progress() == Progress::Stopped
                    && !self.frames.has_partial() =>
            {
                self.finish();
                Ok(())
            }
            Ok(None) => Err(ProviderError::Connect {
                upstream: self.url.to_string(),
                message:
                    "stream interrupted: Bedrock closed the stream before the answer was complete"
                        .into(),
            }),
        }
    }

    fn message(&mut self, message: StreamMessage) -> Result<(), ProviderError> {
        match message {
            StreamMessage::Event { kind, payload } => {
                let mut events: Vec<StreamEvent> = Vec::new();
                self.translator
                    .event(&kind, &payload, &mut events)
                    .map_err(ProviderError::BadResponse)?;
                let mut out = Vec::new();
                for ev in &events {
                    self.encoder.encode(ev, &mut out);
                }
                self.pending.extend(out);
                if self.translator.progress() == Progress::Done {
                    self.finish();
                }
                Ok(())
            }
            StreamMessage::Exception { kind, payload } => Err(exception_error(&kind, &payload)),
            StreamMessage::Error { code, message } => Err(ProviderError::Status {
                status: StatusCode::BAD_GATEWAY,
                message: if message.is_empty() {
                    format!("Bedrock stream failed with {code}")
                } else {
                    message
                },
                kind: None,
                code: (!code.is_empty()).then(|| snake_case(&code)),
            }),
        }
    }

    /// The answer is complete: the finish chunk, the usage chunk and `[DONE]`.
    fn finish(&mut self) {
        let mut out = Vec::new();
        self.encoder.finish(&mut out);
        self.pending.extend(out);
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::bedrock::eventstream::tests::{event, frame};

    /// Runs the stream over `wire` cut into `cut`-byte chunks: the OpenAI chunks' data, and
    /// the error that ended it, if any.
    async fn run(wire: &[u8], cut: usize) -> (Vec<serde_json::Value>, Option<ProviderError>) {
        let chunks: Vec<Result<Bytes, std::io::Error>> = wire
            .chunks(cut)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let mut events = converse_stream(
            futures_util::stream::iter(chunks),
            Duration::from_secs(5),
            "http://bedrock.test".into(),
            "chatcmpl-t".into(),
            "m",
        );
        let (mut out, mut err) = (Vec::new(), None);
        while let Some(item) = events.next().await {
            match item {
                Ok(ev) if &ev.data[..] == b"[DONE]" => out.push(serde_json::Value::Null),
                Ok(ev) => out.push(serde_json::from_slice(&ev.data).unwrap()),
                Err(e) => err = Some(e),
            }
        }
        (out, err)
    }

    fn text_answer() -> Vec<u8> {
        let mut wire = event("messageStart", r#"{"role":"assistant"}"#);
        for piece in ["Hello ", "there"] {
            wire.extend(event(
                "contentBlockDelta",
                &format!(r#"{{"contentBlockIndex":0,"delta":{{"text":"{piece}"}}}}"#),
            ));
        }
        wire.extend(event("contentBlockStop", r#"{"contentBlockIndex":0}"#));
        wire.extend(event("messageStop", r#"{"stopReason":"end_turn"}"#));
        wire.extend(event(
            "metadata",
            r#"{"usage":{"inputTokens":3,"outputTokens":2,"totalTokens":5},"metrics":{"latencyMs":9}}"#,
        ));
        wire
    }

    #[tokio::test]
    async fn streams_become_openai_chunks_however_the_body_is_cut() {
        let wire = text_answer();
        for cut in [1, 7, 64, wire.len()] {
            let (out, err) = run(&wire, cut).await;
            assert!(err.is_none(), "cut {cut}: {err:?}");
            let text: String = out
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
                .collect();
            assert_eq!(text, "Hello there", "cut {cut}");
            assert_eq!(out[0]["id"], "chatcmpl-t");
            assert_eq!(out[0]["object"], "chat.completion.chunk");
            let n = out.len();
            assert_eq!(out[n - 3]["choices"][0]["finish_reason"], "stop");
            assert_eq!(out[n - 2]["usage"]["total_tokens"], 5);
            assert!(out[n - 1].is_null(), "ends with [DONE]");
        }
    }

    #[tokio::test]
    async fn exceptions_and_broken_frames_end_the_stream_with_errors() {
        let mut wire = event("messageStart", r#"{"role":"assistant"}"#);
        wire.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"partial"}}"#,
        ));
        let mut throttled = wire.clone();
        throttled.extend(frame(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
            ],
            br#"{"message":"Too many tokens, please wait"}"#,
        ));
        let (out, err) = run(&throttled, 10).await;
        assert!(out
            .iter()
            .any(|c| c["choices"][0]["delta"]["content"] == "partial"));
        assert!(!out.iter().any(serde_json::Value::is_null), "no [DONE]");
        assert!(
            matches!(&err, Some(ProviderError::Status { status, message, .. })
            if status.as_u16() == 429 && message == "Too many tokens, please wait"),
            "{err:?}"
        );

        let mut corrupt = text_answer();
        let n = corrupt.len();
        corrupt[n - 10] ^= 1;
        let (_, err) = run(&corrupt, 16).await;
        assert!(
            matches!(&err, Some(ProviderError::BadResponse(m)) if m.contains("malformed event stream")),
            "{err:?}"
        );

        // Closed before messageStop, or in the middle of a frame.
        let (_, err) = run(&wire, 5).await;
        assert!(
            matches!(&err, Some(ProviderError::Connect { message, .. }) if message.contains("before the answer was complete")),
            "{err:?}"
        );
        let full = text_answer();
        let (_, err) = run(&full[..full.len() - 3], 50).await;
        assert!(err.is_some());
    }

    #[tokio::test]
    async fn a_stream_without_metadata_still_finishes() {
        let wire = text_answer();
        let metadata_len = event(
            "metadata",
            r#"{"usage":{"inputTokens":3,"outputTokens":2,"totalTokens":5},"metrics":{"latencyMs":9}}"#,
        )
        .len();
        let (out, err) = run(&wire[..wire.len() - metadata_len], 100).await;
        assert!(err.is_none(), "{err:?}");
        assert!(out.last().unwrap().is_null());
    }
}
