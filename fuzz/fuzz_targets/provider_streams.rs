//! Provider stream framings memproxy reads itself: AWS event-stream frames (Bedrock) and
//! Ollama's NDJSON lines, fed in chunks cut at every position the input chooses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use memproxy::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    fuzzing::bedrock_frames(rest, cut as usize + 1);
    fuzzing::ollama_lines(rest, cut as usize + 1);
});
