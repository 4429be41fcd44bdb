//! OpenAI chat requests: parsing, the message views memory reads, the upstream body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use memproxy::protocol::chat::ChatBody;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = ChatBody::parse(data) {
        let _ = body.messages().len();
        let _ = body.to_upstream("fuzz-model");
        if let Ok(req) = body.to_request() {
            for m in &req.messages {
                if let Some(c) = &m.content {
                    let _ = c.text();
                }
            }
            let _ = ChatBody::from_request(&req);
        }
    }
});
