//! The AWS event-stream framing of ConverseStream answers
//! (`application/vnd.amazon.eventstream`): binary messages, each a 12-byte prelude (total
//! length, headers length, CRC32 of those eight bytes), typed headers, a payload and the
//! CRC32 of everything before it. The prelude is checked here as soon as it arrives (so a
//! corrupt length cannot make the reader wait for gigabytes); the AWS SDK's own reader
//! (`aws-smithy-eventstream`) parses the headers and checks the message CRC.
//!
//! Messages are events (`:message-type: event`, named by `:event-type`), modelled
//! exceptions (`:message-type: exception`, named by `:exception-type`) or protocol errors
//! (`:message-type: error` with `:error-code` and `:error-message`).

use aws_smithy_types::event_stream::{HeaderValue, Message};
use bytes::{Buf, Bytes, BytesMut};

/// Prelude: total length, headers length, prelude CRC.
const PRELUDE_LEN: usize = 12;
/// Prelude and message CRC: the size of a message with no headers and no payload.
const MIN_MESSAGE_LEN: usize = PRELUDE_LEN + 4;
/// AWS caps event-stream messages at 16 MiB; a larger length is a corrupt frame.
const MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024 + MIN_MESSAGE_LEN;

/// A message of the stream, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StreamMessage {
    /// An event: its `:event-type` and JSON payload.
    Event { kind: String, payload: Bytes },
    /// A modelled exception (`throttlingException`, …) and its JSON payload.
    Exception { kind: String, payload: Bytes },
    /// A protocol-level error.
    Error { code: String, message: String },
}

/// The stream's bytes are not well-formed event-stream messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event stream: {0}")]
pub(super) struct FrameError(pub String);

/// Reassembles messages from body chunks cut anywhere.
#[derive(Default)]
pub(super) struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// Appends a chunk of the body.
    pub(super) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Whether bytes of an unfinished message are waiting.
    pub(super) fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next complete message, `None` until all its bytes arrived.
    pub(super) fn next_message(&mut self) -> Result<Option<StreamMessage>, FrameError> {
        if self.buf.len() < PRELUDE_LEN {
            return Ok(None);
        }
        let mut prelude = &self.buf[..PRELUDE_LEN];
        let total = prelude.get_u32() as usize;
        let headers = prelude.get_u32() as usize;
        let crc = prelude.get_u32();
        let want = crc32fast::hash(&self.buf[..8]);
        if crc != want {
            return Err(FrameError(format!(
                "prelude checksum {crc:#010x}, computed {want:#010x}"
            )));
        }
        if !(MIN_MESSAGE_LEN..=MAX_MESSAGE_LEN).contains(&total) {
            return Err(FrameError(format!("message length {total}")));
        }
        if headers > total - MIN_MESSAGE_LEN {
            return Err(FrameError(format!(
                "headers length {headers} in a message of {total} bytes"
            )));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let frame = self.buf.split_to(total).freeze();
        let message = aws_smithy_eventstream::frame::read_message_from(frame)
            .map_err(|e| FrameError(e.to_string()))?;
        Ok(Some(classify(&message)))
    }
}

fn string_header<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            HeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

fn classify(message: &Message) -> StreamMessage {
    let header = |name: &str| string_header(message, name).unwrap_or_default().to_string();
    let payload = message.payload().clone();
    match string_header(message, ":message-type") {
        Some("exception") => StreamMessage::Exception {
            kind: header(":exception-type"),
            payload,
        },
        Some("error") => StreamMessage::Error {
            code: header(":error-code"),
            message: header(":error-message"),
        },
        _ => StreamMessage::Event {
            kind: header(":event-type"),
            payload,
        },
    }
}

/// Fuzzing: reads every message of `data` delivered in chunks of `chunk` bytes.
#[cfg(feature = "fuzzing")]
pub fn fuzz_frames(data: &[u8], chunk: usize) {
    let mut reader = FrameReader::default();
    for part in data.chunks(chunk.max(1)) {
        reader.push(part);
        while let Ok(Some(_)) = reader.next_message() {}
    }
    let _ = reader.has_partial();
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Encodes one message with string headers, independently of the SDK's writer.
    pub(crate) fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut h = Vec::new();
        for (name, value) in headers {
            h.push(name.len() as u8);
            h.extend_from_slice(name.as_bytes());
            h.push(7);
            h.extend_from_slice(&(value.len() as u16).to_be_bytes());
            h.extend_from_slice(value.as_bytes());
        }
        let total = (MIN_MESSAGE_LEN + h.len() + payload.len()) as u32;
        let mut out = Vec::new();
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&(h.len() as u32).to_be_bytes());
        let prelude_crc = crc32fast::hash(&out);
        out.extend_from_slice(&prelude_crc.to_be_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(payload);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    pub(crate) fn event(kind: &str, payload: &str) -> Vec<u8> {
        frame(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    #[test]
    fn reads_messages_cut_at_every_byte() {
        let mut wire = event("messageStart", r#"{"role":"assistant"}"#);
        wire.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hé"}}"#,
        ));
        wire.extend(frame(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            br#"{"message":"slow down"}"#,
        ));
        wire.extend(frame(
            &[
                (":message-type", "error"),
                (":error-code", "InternalFailure"),
                (":error-message", "oops"),
            ],
            b"",
        ));
        for cut in 1..wire.len() {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for piece in wire.chunks(cut) {
                r.push(piece);
                while let Some(m) = r.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert!(!r.has_partial(), "cut {cut}");
            assert_eq!(got.len(), 4, "cut {cut}");
            assert_eq!(
                got[1],
                StreamMessage::Event {
                    kind: "contentBlockDelta".into(),
                    payload: Bytes::from_static(
                        r#"{"contentBlockIndex":0,"delta":{"text":"Hé"}}"#.as_bytes()
                    ),
                }
            );
            assert_eq!(
                got[2],
                StreamMessage::Exception {
                    kind: "throttlingException".into(),
                    payload: Bytes::from_static(br#"{"message":"slow down"}"#),
                }
            );
            assert_eq!(
                got[3],
                StreamMessage::Error {
                    code: "InternalFailure".into(),
                    message: "oops".into()
                }
            );
        }
    }

    #[test]
    fn a_bad_message_crc_is_an_error() {
        let mut wire = event("messageStop", r#"{"stopReason":"end_turn"}"#);
        let n = wire.len();
        wire[n - 6] ^= 0x20; // a payload byte
        let mut r = FrameReader::default();
        r.push(&wire);
        let err = r.next_message().unwrap_err();
        assert!(
            err.to_string().contains("checksum") || err.to_string().contains("crc"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_prelude_is_refused_before_the_message_arrives() {
        let mut wire = event("messageStop", "{}");
        wire[3] = wire[3].wrapping_add(1); // the total length
        let mut r = FrameReader::default();
        r.push(&wire[..PRELUDE_LEN]);
        let err = r.next_message().unwrap_err();
        assert!(err.0.contains("prelude checksum"), "{err}");

        // A consistent prelude announcing an absurd length.
        let mut huge = Vec::new();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32fast::hash(&huge);
        huge.extend_from_slice(&crc.to_be_bytes());
        let mut r = FrameReader::default();
        r.push(&huge);
        assert!(r.next_message().unwrap_err().0.contains("length"));
    }

    #[test]
    fn waits_for_more_bytes_without_error() {
        let wire = event("messageStart", r#"{"role":"assistant"}"#);
        let mut r = FrameReader::default();
        r.push(&wire[..5]);
        assert_eq!(r.next_message().unwrap(), None);
        r.push(&wire[5..wire.len() - 1]);
        assert_eq!(r.next_message().unwrap(), None);
        assert!(r.has_partial());
        r.push(&wire[wire.len() - 1..]);
        assert!(matches!(
            r.next_message().unwrap(),
            Some(StreamMessage::Event { kind, .. }) if kind == "messageStart"
        ));
    }
}
