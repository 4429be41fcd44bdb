//! The config loader: YAML, `os.environ/` references, every section's checks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use memproxy::config::{self, Overrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lookup = |name: &str| (name == "FUZZ_SET").then(|| "value".to_string());
    let _ = config::parse(text, "fuzz.yaml", &Overrides::default(), &lookup);
});
