use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tracing_subscriber::layer::SubscriberExt;

use super::*;

fn escaped(s: &str) -> String {
    let mut out = String::new();
    write_str(&mut out, s);
    out
}

#[test]
fn strings_are_escaped() {
    assert_eq!(escaped("plain"), r#""plain""#);
    assert_eq!(escaped(""), r#""""#);
    assert_eq!(escaped(r#"say "hi""#), r#""say \"hi\"""#);
    assert_eq!(escaped(r"C:\dir\"), r#""C:\\dir\\""#);
    assert_eq!(escaped("a\nb\r\tc"), r#""a\nb\r\tc""#);
    assert_eq!(escaped("\u{8}\u{c}"), r#""\b\f""#);
    assert_eq!(
        escaped("\u{0}\u{1}\u{1b}[31m\u{1f}"),
        r#""\u0000\u0001\u001b[31m\u001f""#
    );
    assert_eq!(escaped("\u{7f}"), "\"\u{7f}\"");
    // Non-ASCII passes through as UTF-8.
    assert_eq!(escaped("café 日本 🦀"), "\"café 日本 🦀\"");
    assert_eq!(escaped("é\"ü\n"), "\"é\\\"ü\\n\"");
    for s in ["x\"\\\n\u{1}y", "日\u{0}本", "\\\\\"\"", "🦀\t"] {
        assert_eq!(serde_json::from_str::<String>(&escaped(s)).unwrap(), s);
    }
}

#[test]
fn escaping_matches_serde_json_at_every_position() {
    let pieces = [
        "a", "Z", "0", " ", "~", "\u{7f}", "\"", "\\", "\n", "\r", "\t", "\u{8}", "\u{c}", "\u{0}",
        "\u{1}", "\u{1b}", "\u{1f}", "é", "日", "🦀", "!", "#", "[", "]", "{",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    for len in 0..40 {
        for _ in 0..200 {
            let s: String = (0..len)
                .map(|_| {
                    // Mostly plain text, so whole clean words occur.
                    if rng.u8(..4) == 0 {
                        pieces[rng.usize(..pieces.len())]
                    } else {
                        "x"
                    }
                })
                .collect();
            assert_eq!(escaped(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
        }
    }
    // Every byte value below 0x80 alone, at each position of a 17-byte string.
    for b in 0u8..0x80 {
        for at in 0..17 {
            let mut s = "y".repeat(17);
            s.replace_range(at..=at, char::from(b).encode_utf8(&mut [0; 4]));
            assert_eq!(escaped(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
        }
    }
}

#[test]
fn the_word_test_is_exact() {
    // Neighbours next to the matching values, and bytes with the high bit set.
    for fill in [
        b'a', 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff,
    ] {
        for b in 0u8..=255 {
            let expect = b < 0x20 || b == b'"' || b == b'\\';
            for at in 0..8 {
                let mut w = [fill; 8];
                w[at] = b;
                let got = any_to_escape(u64::from_le_bytes(w));
                assert_eq!(got, expect, "{b:#x} at {at} among {fill:#x}");
            }
        }
    }
}

#[test]
fn integers_and_floats_are_numbers() {
    let num = |f: &dyn Fn(&mut String)| {
        let mut s = String::new();
        f(&mut s);
        s
    };
    assert_eq!(num(&|o| write_u64(o, 0)), "0");
    assert_eq!(num(&|o| write_u64(o, 7)), "7");
    assert_eq!(num(&|o| write_u64(o, u64::MAX)), "18446744073709551615");
    assert_eq!(num(&|o| write_f64(o, 1.5)), "1.5");
    assert_eq!(num(&|o| write_f64(o, 1.0)), "1.0");
    assert_eq!(num(&|o| write_f64(o, -0.25)), "-0.25");
    assert_eq!(num(&|o| write_f64(o, f64::NAN)), "null");
    assert_eq!(num(&|o| write_f64(o, f64::INFINITY)), "null");
    assert_eq!(num(&|o| write_f64(o, f64::NEG_INFINITY)), "null");
    for v in [
        0.1 + 0.2,
        1e-7,
        1e300,
        -1.7976931348623157e308,
        5e-324,
        -0.0,
        1.0508119999999999,
    ] {
        let text = num(&|o| write_f64(o, v));
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(json.is_f64(), "{text}");
        // Exact: the shortest text that reads back as the same value.
        assert_eq!(
            text.parse::<f64>().unwrap().to_bits(),
            v.to_bits(),
            "{text}"
        );
    }
}

fn at(secs: i64, micros: u32) -> String {
    let t = if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, micros * 1000)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_micros(micros.into())
    };
    let mut s = String::new();
    write_timestamp(&mut s, t);
    s
}

#[test]
fn timestamps_are_rfc3339_utc_with_microseconds() {
    assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
    assert_eq!(at(1_000_000_000, 123_456), "2001-09-09T01:46:40.123456Z");
    // Leap days: 2024 (divisible by 4), 2000 (by 400); 2100 is no leap year.
    assert_eq!(at(1_709_251_199, 999_999), "2024-02-29T23:59:59.999999Z");
    assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
    assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000000Z");
    assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
    // End of year.
    assert_eq!(at(1_704_067_199, 999_999), "2023-12-31T23:59:59.999999Z");
    assert_eq!(at(1_704_067_200, 0), "2024-01-01T00:00:00.000000Z");
    assert_eq!(at(4_102_444_799, 500_000), "2099-12-31T23:59:59.500000Z");
    assert_eq!(at(253_402_300_799, 999_999), "9999-12-31T23:59:59.999999Z");
    // Before the epoch.
    assert_eq!(at(-1, 0), "1969-12-31T23:59:59.000000Z");
    assert_eq!(at(-1, 999_999), "1969-12-31T23:59:59.999999Z");
    // Sub-microsecond parts are cut, not rounded.
    let mut s = String::new();
    write_timestamp(&mut s, UNIX_EPOCH + Duration::from_nanos(1_999));
    assert_eq!(s, "1970-01-01T00:00:00.000001Z");
    // Past year 9999 the year simply gets longer.
    assert_eq!(at(253_402_300_800, 0), "10000-01-01T00:00:00.000000Z");
    // The text form agrees with the analytics one (milliseconds).
    let now = SystemTime::now();
    let ms = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut s = String::new();
    write_timestamp(&mut s, now);
    assert_eq!(&s[..23], &timefmt::format_ms(ms)[..23]);
}

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The lines logged by `f` under a subscriber using this format.
fn lines(f: impl FnOnce()) -> Vec<String> {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::registry().with(JsonLayer::new(move || writer.clone()));
    tracing::subscriber::with_default(subscriber, f);
    let bytes = capture.0.lock().unwrap().clone();
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.ends_with('\n'), "{text:?}");
    text.lines().map(str::to_string).collect()
}

fn parse(line: &str) -> serde_json::Map<String, Value> {
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(m)) => m,
        other => panic!("not a JSON object: {line}: {other:?}"),
    }
}

#[derive(Debug)]
#[allow(dead_code)]
struct Thing {
    name: &'static str,
    n: u8,
}

#[test]
fn a_line_is_one_json_object_with_the_fields() {
    let path = "/v1/chat/completions";
    let got = lines(|| {
        tracing::info!(
            target: "memproxy::access",
            request_id = %"r-1",
            user_id = "alice \"the\" user\n",
            method = %"POST",
            path = %path,
            status = 200u16,
            latency_ms = 1.25,
            tokens = -3i64,
            big = u64::MAX,
            wide = i128::MIN,
            stream = true,
            ratio = f64::NAN,
            thing = ?Thing { name: "a\"b", n: 1 },
            "request"
        );
        tracing::warn!(error = %"boom: \"x\"\tü", "upstream \u{1} {} failed", "call");
    });
    assert_eq!(got.len(), 2, "{got:?}");
    let line = parse(&got[0]);
    assert_eq!(line.len(), 16, "{}", got[0]);
    // The members, in this order.
    let keys = [
        "timestamp",
        "level",
        "message",
        "request_id",
        "user_id",
        "method",
        "path",
        "status",
        "latency_ms",
        "tokens",
        "big",
        "wide",
        "stream",
        "ratio",
        "thing",
        "target",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|k| {
            got[0]
                .find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k}"))
        })
        .collect();
    assert!(at.is_sorted(), "{}", got[0]);
    let ts = line["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), "2026-11-23T14:48:03.909010Z".len(), "{ts}");
    assert!(timefmt::parse(ts).is_some(), "{ts}");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["target"], "memproxy::access");
    assert_eq!(line["message"], "request");
    assert_eq!(line["request_id"], "r-1");
    assert_eq!(line["user_id"], "alice \"the\" user\n");
    assert_eq!(line["path"], path);
    assert_eq!(line["status"], 200);
    assert_eq!(line["latency_ms"], 1.25);
    assert_eq!(line["tokens"], -3);
    assert_eq!(line["big"], json!(u64::MAX));
    assert!(
        got[0].contains(&format!(r#""wide":{},"#, i128::MIN)),
        "{}",
        got[0]
    );
    assert_eq!(line["stream"], true);
    assert_eq!(line["ratio"], Value::Null);
    assert_eq!(line["thing"], r#"Thing { name: "a\"b", n: 1 }"#);
    assert!(
        got[0].contains(r#""status":200,"latency_ms":1.25,"#),
        "{}",
        got[0]
    );

    let warn = parse(&got[1]);
    assert_eq!(warn["level"], "WARN");
    assert_eq!(warn["message"], "upstream \u{1} call failed");
    assert_eq!(warn["error"], "boom: \"x\"\tü");
    assert_eq!(warn["target"], module_path!());
    assert!(!warn.contains_key("span"));
}

#[test]
fn events_in_a_span_name_it_and_its_fields() {
    let got = lines(|| {
        let span = tracing::info_span!(
            "request",
            request_id = %"r-2",
            n = 3u32,
            later = tracing::field::Empty,
            note = "a,\"b\":c"
        );
        let _in = span.enter();
        tracing::warn!(attempt = 2, "retrying");
        span.record("later", 1.5);
        span.record("n", 4u32);
        span.record("note", "x");
        tracing::error!("failed");
        let inner = tracing::debug_span!("empty");
        inner.in_scope(|| tracing::info!("inside"));
    });
    assert_eq!(got.len(), 3, "{got:?}");
    let first = parse(&got[0]);
    assert_eq!(first["attempt"], 2);
    assert_eq!(
        first["span"],
        json!({"request_id": "r-2", "n": 3, "note": "a,\"b\":c", "name": "request"})
    );
    // Recorded values replace the earlier ones: each key once.
    assert!(
        got[1].ends_with(
            r#""span":{"request_id":"r-2","later":1.5,"n":4,"note":"x","name":"request"}}"#
        ),
        "{}",
        got[1]
    );
    assert_eq!(parse(&got[2])["span"], json!({"name": "empty"}));
}

/// Logs while it is being formatted.
struct Chatty;

impl fmt::Debug for Chatty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        tracing::info!(inner = true, "logged from Debug");
        f.write_str("chatty \"value\"")
    }
}

#[test]
fn an_event_logged_while_formatting_leaves_the_line_whole() {
    // (`tracing` drops the inner event: the dispatcher is busy with the outer one.)
    let got = lines(|| tracing::info!(value = ?Chatty, "outer"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(parse(&got[0])["value"], "chatty \"value\"");
}

#[test]
fn log_crate_records_name_their_own_target() {
    let got = lines(|| {
        tracing_log::format_trace(
            &log::Record::builder()
                .target("rustls::conn")
                .level(log::Level::Warn)
                .module_path_static(Some("rustls::conn"))
                .file_static(Some("conn.rs"))
                .line(Some(7))
                .args(format_args!("alert \"{}\"", 42))
                .build(),
        )
        .unwrap()
    });
    assert_eq!(got.len(), 1, "{got:?}");
    let line = parse(&got[0]);
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["target"], "rustls::conn");
    assert_eq!(line["message"], "alert \"42\"");
    assert_eq!(line["log.target"], "rustls::conn");
    assert_eq!(line["log.module_path"], "rustls::conn");
    assert_eq!(line["log.file"], "conn.rs");
    assert_eq!(line["log.line"], 7);
}

#[test]
fn fragments_split_into_members() {
    let f = r#""a":1,"b\"":"x,\"y\\","c":true,"d":null"#;
    let got: Vec<(&str, &str)> = members(f).map(|(k, r)| (k, &f[r])).collect();
    assert_eq!(
        got,
        [
            (r#""a""#, r#""a":1"#),
            (r#""b\"""#, r#""b\"":"x,\"y\\""#),
            (r#""c""#, r#""c":true"#),
            (r#""d""#, r#""d":null"#),
        ]
    );
    assert_eq!(members("").count(), 0);
}
