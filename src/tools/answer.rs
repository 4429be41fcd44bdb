//! The loop's answer, handed back to the pipeline as a provider [`Reply`] in the
//! upstream's wire format, so the respond stage passes it through or translates it like
//! any other: the last round's answer without memproxy's own tool calls, with the usage
//! of every round, as a body or, for a streaming client, as a stream.

use futures_util::stream;

use crate::protocol;
use crate::protocol::ir::{Completion, FinishReason, Format, SseEvent, ToolCall, Usage};
use crate::providers::{EventStream, ProviderError, Reply};

/// Removes the calls `ours` says are memproxy's. When none of the client's remain, the
/// answer is a plain one (finish reason `stop` instead of `tool_calls`). Returns how many
/// were removed.
pub fn strip_calls(c: &mut Completion, ours: impl Fn(&ToolCall) -> bool) -> usize {
    let before = c.tool_calls.len();
    c.tool_calls.retain(|tc| !ours(tc));
    let removed = before - c.tool_calls.len();
    if removed > 0 && c.tool_calls.is_empty() && c.finish_reason == Some(FinishReason::ToolCalls) {
        c.finish_reason = Some(FinishReason::Stop);
    }
    removed
}

/// Adds one round's token counts to the total.
pub fn add_usage(total: &mut Usage, round: &Usage) {
    total.input_tokens += round.input_tokens;
    total.output_tokens += round.output_tokens;
    total.cached_input_tokens += round.cached_input_tokens;
    total.cache_creation_input_tokens += round.cache_creation_input_tokens;
    total.reasoning_tokens += round.reasoning_tokens;
}

/// The answer as a reply in `format`: a body, or (`stream`) the events of a stream, the
/// usage chunk included; `include_usage` says the client asked for that chunk (OpenAI
/// chat clients), so a passthrough relay hides it otherwise.
pub fn reply(c: &Completion, format: Format, stream: bool, include_usage: bool) -> Reply {
    if !stream {
        return Reply::Complete {
            body: protocol::encode_completion(format, c),
            format,
        };
    }
    let mut encoder = protocol::encoder_for(format, &c.model, true);
    let mut wire: Vec<SseEvent> = Vec::new();
    for ev in c.to_events() {
        encoder.encode(&ev, &mut wire);
    }
    encoder.finish(&mut wire);
    let events: EventStream = Box::pin(stream::iter(
        wire.into_iter().map(Ok::<SseEvent, ProviderError>),
    ));
    Reply::Stream {
        events,
        format,
        usage_added: !include_usage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ir::Collector;
    use futures_util::StreamExt;

    fn call(name: &str) -> ToolCall {
        ToolCall {
            id: format!("id-{name}"),
            name: name.into(),
            arguments: "{}".into(),
        }
    }

    fn answer() -> Completion {
        Completion {
            id: "a1".into(),
            model: "m".into(),
            text: "Looking.".into(),
            tool_calls: vec![call("memory_search"), call("get_weather")],
            finish_reason: Some(FinishReason::ToolCalls),
            usage: Usage {
                input_tokens: 10,
                output_tokens: 2,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_memproxys_calls_are_removed() {
        let mut c = answer();
        assert_eq!(strip_calls(&mut c, |t| t.name == "memory_search"), 1);
        assert_eq!(c.tool_calls, vec![call("get_weather")]);
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(strip_calls(&mut c, |t| t.name == "get_weather"), 1);
        assert_eq!(c.finish_reason, Some(FinishReason::Stop));
    }

    #[test]
    fn usage_adds_up() {
        let mut total = Usage::default();
        add_usage(&mut total, &answer().usage);
        add_usage(&mut total, &answer().usage);
        assert_eq!((total.input_tokens, total.output_tokens), (20, 4));
    }

    #[tokio::test]
    async fn streams_decode_back_to_the_answer_in_every_format() {
        for format in [Format::OpenAiChat, Format::Anthropic, Format::Gemini] {
            let c = answer();
            let Reply::Stream { mut events, .. } = reply(&c, format, true, false) else {
                panic!("not a stream");
            };
            let mut decoder = protocol::decoder_for(format);
            let mut collected = Collector::default();
            let mut irs = Vec::new();
            while let Some(ev) = events.next().await {
                irs.clear();
                decoder.decode(&ev.unwrap(), &mut irs).unwrap();
                irs.iter().for_each(|e| collected.push(e));
            }
            let got = collected.completion;
            assert_eq!(got.text, c.text, "{format:?}");
            assert_eq!(got.tool_calls.len(), 2, "{format:?}");
            assert_eq!(got.tool_calls[1].name, "get_weather", "{format:?}");
            assert_eq!(got.usage.output_tokens, 2, "{format:?}");
        }
    }

    #[test]
    fn bodies_decode_back_to_the_answer() {
        let c = answer();
        let Reply::Complete { body, format } = reply(&c, Format::Anthropic, false, false) else {
            panic!("not a body");
        };
        let got = protocol::decode_completion(format, &body).unwrap();
        assert_eq!(got.text, c.text);
        assert_eq!(got.tool_calls.len(), 2);
    }
}
