//! The identity rules: user id validation and detection from arbitrary header values.
#![no_main]
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use memproxy::identity::{validate_user_id, IdentityConfig};
use std::sync::OnceLock;

/// Built once: loading the config compiles the header patterns.
static RULES: OnceLock<IdentityConfig> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if validate_user_id(text).is_ok() {
            assert!(text.bytes().all(|b| b.is_ascii_graphic()), "{text:?}");
        }
    }
    let identity = RULES.get_or_init(memproxy::fuzzing::identity_rules);
    let mut headers = HeaderMap::new();
    for (i, part) in data.split(|&b| b == b'\n').enumerate().take(8) {
        let name = [
            "x-memory-user-id",
            "user-agent",
            "x-user-id",
            "authorization",
        ][i % 4];
        if let Ok(v) = HeaderValue::from_bytes(part) {
            headers.append(HeaderName::from_static(name), v);
        }
    }
    if let Ok(decision) = identity.detect(&headers, None) {
        assert!(validate_user_id(&decision.user_id).is_ok(), "{decision:?}");
    }
});
