//! OpenAI chat requests: parsing, the message views memory reads, the upstream body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use memproxy::protocol::chat::ChatBody;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = ChatBody::parse(data) {
        for m in body.messages() {
            let _ = m.text();
        }
        let _ = body.to_upstream("fuzz-model");
        if let Ok(req) = body.to_request() {
            let _ = ChatBody::from_request(&req);
        }
    }
});
