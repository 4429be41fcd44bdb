//! Anthropic Messages requests, translated to the chat IR and back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use memproxy::protocol::anthropic;

fuzz_target!(|data: &[u8]| {
    if let Ok(chat) = anthropic::request_to_chat(data) {
        let _ = anthropic::native_with_model(&chat, "fuzz-model");
        if let Ok(req) = chat.to_request() {
            let _ = anthropic::chat_to_request(&req, "fuzz-model");
        }
    }
});
