//! OpenAI Responses requests: parsing and translation to chat.
#![no_main]
use libfuzzer_sys::fuzz_target;
use memproxy::protocol::responses;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = responses::parse_request(data) {
        let _ = responses::request_to_chat(&req, None);
        let _ = responses::request_to_chat(&req, Some("[]"));
    }
});
