//! Client-facing and provider wire formats, and the internal representation ([`ir`])
//! where they meet. The OpenAI chat request shape ([`chat::ChatBody`]) is the request IR;
//! answers are decoded into [`ir::Completion`] / [`ir::StreamEvent`] and encoded back.
//! One file per format: [`chat`] + [`chat_codec`] (OpenAI chat), [`anthropic`] (Anthropic
//! Messages), [`gemini`] (Google Gemini), [`responses`] (OpenAI Responses).

pub mod anthropic;
pub mod chat;
pub mod chat_codec;
pub mod gemini;
pub mod ir;
pub mod responses;

use bytes::Bytes;

use ir::{Completion, DecodeError, Format, StreamDecoder, StreamEncoder};

/// A stream decoder for answers in `format`.
pub fn decoder_for(format: Format) -> Box<dyn StreamDecoder> {
    match format {
        Format::OpenAiChat => Box::new(chat_codec::ChunkDecoder::default()),
        Format::Anthropic => Box::new(anthropic::EventDecoder::default()),
        Format::Gemini => Box::new(gemini::ChunkDecoder::default()),
        Format::Responses => Box::new(responses::EventDecoder::default()),
    }
}

/// A stream encoder producing `format` for a client; `model` names the answer's model
/// until the upstream says otherwise; `include_usage` asks for a usage chunk (OpenAI).
pub fn encoder_for(format: Format, model: &str, include_usage: bool) -> Box<dyn StreamEncoder> {
    match format {
        Format::OpenAiChat => Box::new(chat_codec::ChunkEncoder::new(model, include_usage)),
        Format::Anthropic => Box::new(anthropic::EventEncoder::new(model)),
        Format::Gemini => Box::new(gemini::ChunkEncoder::new(model)),
        Format::Responses => Box::new(responses::EventEncoder::new(std::sync::Arc::new(
            responses::ResponseMeta::bare(model),
        ))),
    }
}

/// Decodes a complete answer body in `format`.
pub fn decode_completion(format: Format, body: &[u8]) -> Result<Completion, DecodeError> {
    match format {
        Format::OpenAiChat => chat_codec::decode_completion(body),
        Format::Anthropic => anthropic::decode_completion(body),
        Format::Gemini => gemini::decode_completion(body),
        Format::Responses => responses::decode_completion(body),
    }
}

/// Decodes at least the id, model and usage of a complete answer body in `format` (the
/// content too where the format has no cheaper path).
pub fn decode_meta(format: Format, body: &[u8]) -> Result<Completion, DecodeError> {
    match format {
        Format::OpenAiChat => chat_codec::decode_meta(body),
        other => decode_completion(other, body),
    }
}

/// Encodes a complete answer for a client speaking `format`.
pub fn encode_completion(format: Format, c: &Completion) -> Bytes {
    match format {
        Format::OpenAiChat => chat_codec::encode_completion(c),
        Format::Anthropic => anthropic::encode_completion(c),
        Format::Gemini => gemini::encode_completion(c),
        Format::Responses => responses::encode_completion(c),
    }
}
