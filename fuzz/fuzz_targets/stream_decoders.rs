//! Upstream SSE events decoded by every wire format's stream decoder, and whole answers
//! decoded by every format's completion decoder. The first byte picks the format; the
//! rest is cut into events at blank lines (`event:` / `data:` lines as on the wire).
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use memproxy::protocol::{self, ir::Format, ir::SseEvent};

const FORMATS: [Format; 4] = [
    Format::OpenAiChat,
    Format::Anthropic,
    Format::Gemini,
    Format::Responses,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let format = FORMATS[pick as usize % FORMATS.len()];
    let _ = protocol::decode_completion(format, rest);
    let _ = protocol::decode_meta(format, rest);
    let mut decoder = protocol::decoder_for(format);
    let mut out = Vec::new();
    for block in rest.split(|&b| b == 0) {
        let text = String::from_utf8_lossy(block);
        let mut event = None;
        let mut payload = String::new();
        for line in text.lines() {
            if let Some(e) = line.strip_prefix("event:") {
                event = Some(e.trim().to_string());
            } else if let Some(d) = line.strip_prefix("data:") {
                payload.push_str(d.trim_start());
            } else {
                payload.push_str(line);
            }
        }
        let ev = SseEvent {
            event,
            data: Bytes::from(payload),
        };
        out.clear();
        if decoder.decode(&ev, &mut out).unwrap_or(true) {
            break;
        }
    }
    let _ = decoder.ends_at_close();
});
