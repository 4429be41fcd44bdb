//! The JSON log lines: one object per line:
//!
//! ```text
//! {"timestamp":"2026-11-23T14:48:03.909010Z","level":"INFO","message":"request","request_id":"…","status":200,…,"target":"memproxy::access"}
//! ```
//!
//! `timestamp` (RFC 3339, UTC, microseconds), `level`, the event's fields in the order
//! they were given (`message` first), `target`, and — for an event inside a span — `span`:
//! the current span's fields plus its `name`. Strings and `Debug`/`Display` values are JSON
//! strings, integers and finite floats JSON numbers (NaN and infinities `null`), booleans
//! JSON booleans. Events from the `log` crate name their own target (and keep their
//! `log.target`, `log.module_path`, `log.file`, `log.line` fields).
//!
//! [`JsonLayer`] writes each line into a reused per-thread buffer (no `serde_json::Value`,
//! no `String` per field; values are formatted straight into the line, escaped on the
//! way) and hands it to its writer in one `write_all`. A span's fields are kept as
//! ready-made JSON members in the span's extensions, so an event only copies them. (A
//! layer of its own rather than a `FormatEvent` for `tracing_subscriber::fmt`: the buffer
//! is a plain `String`, where the fmt layer's `Writer` costs two dynamic calls per
//! write.)

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::analytics::timefmt;

/// The layer writing the JSON log lines (see the module docs) to `W`'s writers.
pub struct JsonLayer<W> {
    make_writer: W,
}

impl<W> JsonLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    /// Lines go to `make_writer`'s writers, one `write_all` per line.
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

/// A span's fields as the members of a JSON object, without the braces
/// (`"request_id":"…","n":3`).
struct SpanFields(String);

/// A thread's line buffer that grew past this is dropped after use (one huge line does not
/// keep its memory).
const KEEP_BUFFER: usize = 64 * 1024;

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = String::new();
        attrs.record(&mut Fields::new(&mut fields, false));
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        match ext.get_mut::<SpanFields>() {
            Some(fields) => add_fields(&mut fields.0, values),
            None => {
                let mut fields = String::new();
                values.record(&mut Fields::new(&mut fields, false));
                ext.insert(SpanFields(fields));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        thread_local! {
            static LINE: RefCell<String> = const { RefCell::new(String::new()) };
        }
        LINE.with(|cell| {
            // Re-entered while formatting (a `Debug` impl logging through another
            // dispatcher; `tracing` drops nested events of the same one): a buffer of
            // its own.
            let mut own;
            let mut borrowed;
            let line: &mut String = match cell.try_borrow_mut() {
                Ok(b) => {
                    borrowed = b;
                    &mut borrowed
                }
                Err(_) => {
                    own = String::new();
                    &mut own
                }
            };
            line.clear();
            write_event(line, event, ctx.event_span(event));
            // Nowhere to report a failing log writer.
            let _ = self
                .make_writer
                .make_writer_for(event.metadata())
                .write_all(line.as_bytes());
            if line.capacity() > KEEP_BUFFER {
                *line = String::new();
            }
        });
    }
}

/// Writes `event`'s line, newline included.
fn write_event<S>(line: &mut String, event: &Event<'_>, span: Option<SpanRef<'_, S>>)
where
    S: for<'a> LookupSpan<'a>,
{
    let normalized = event.normalized_metadata();
    let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
    line.push_str("{\"timestamp\":\"");
    write_timestamp(line, SystemTime::now());
    line.push_str("\",\"level\":\"");
    line.push_str(meta.level().as_str());
    line.push('"');
    event.record(&mut Fields::new(line, true));
    line.push_str(",\"target\":");
    write_str(line, meta.target());
    if let Some(span) = span {
        line.push_str(",\"span\":{");
        if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
            if !fields.is_empty() {
                line.push_str(fields);
                line.push(',');
            }
        }
        line.push_str("\"name\":");
        write_str(line, span.name());
        line.push('}');
    }
    line.push_str("}\n");
}

/// Adds recorded values to a span's fields; they replace earlier values of the same
/// name (one member per key).
fn add_fields(current: &mut String, values: &Record<'_>) {
    let mut fresh = String::new();
    values.record(&mut Fields::new(&mut fresh, false));
    if fresh.is_empty() {
        return;
    }
    let replaced: Vec<&str> = members(&fresh).map(|(key, _)| key).collect();
    let old = std::mem::take(current);
    for (key, range) in members(&old) {
        if !replaced.contains(&key) {
            current.push_str(&old[range]);
            current.push(',');
        }
    }
    current.push_str(&fresh);
}

/// Writes a span's or event's fields as JSON members (`"name":value`).
struct Fields<'a> {
    out: &'a mut String,
    /// Whether the next member needs a comma before it.
    comma: bool,
}

impl<'a> Fields<'a> {
    fn new(out: &'a mut String, comma: bool) -> Self {
        Self { out, comma }
    }

    /// Writes the member's key; returns the buffer for its value.
    fn key(&mut self, field: &Field) -> &mut String {
        if std::mem::replace(&mut self.comma, true) {
            self.out.push(',');
        }
        write_str(self.out, field.name());
        self.out.push(':');
        self.out
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let out = self.key(field);
        write_str(out, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        let out = self.key(field);
        out.push_str(if value { "true" } else { "false" });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        let out = self.key(field);
        if value < 0 {
            out.push('-');
        }
        write_u64(out, value.unsigned_abs());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let out = self.key(field);
        write_u64(out, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let out = self.key(field);
        let _ = write!(out, "{value}");
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let out = self.key(field);
        let _ = write!(out, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let out = self.key(field);
        write_f64(out, value);
    }

    /// `Debug` values, and `Display` ones (`%value`, the message): a JSON string, formatted
    /// straight into the line through an escaping writer.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let out = self.key(field);
        out.push('"');
        // A failing `Debug` impl leaves what it wrote; the string is closed anyway.
        let _ = write!(Escaping(out), "{value:?}");
        out.push('"');
    }
}

/// Appends text JSON-escaped (for formatting a value straight into a JSON string).
struct Escaping<'a>(&'a mut String);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_escaped(self.0, s);
        Ok(())
    }
}

/// Appends `s` as a JSON string, quotes included.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    write_escaped(out, s);
    out.push('"');
}

/// Appends `s` escaped for the inside of a JSON string: `"` and `\` backslashed, control
/// characters as `\n`, `\r`, `\t`, `\b`, `\f` or `\u00XX`; everything else, non-ASCII
/// included, as it is. Text with nothing to escape (nearly all) is checked 8 bytes at a
/// time and copied whole.
fn write_escaped(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    if !needs_escaping(bytes) {
        out.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        // `b` is ASCII, so `i` is a character boundary.
        out.push_str(&s[start..i]);
        start = i + 1;
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
    out.push_str(&s[start..]);
}

/// Whether any byte of `bytes` needs escaping, tested 8 bytes at a time.
fn needs_escaping(bytes: &[u8]) -> bool {
    let word = |c: &[u8]| <[u8; 8]>::try_from(c).map_or(0, u64::from_le_bytes);
    let mut chunks = bytes.chunks_exact(8);
    if chunks.any(|c| any_to_escape(word(c))) {
        return true;
    }
    let rest = chunks.remainder();
    if rest.is_empty() {
        false
    } else if bytes.len() >= 8 {
        // The last 8 bytes, overlapping ones already tested.
        any_to_escape(word(&bytes[bytes.len() - 8..]))
    } else {
        let mut last = [b' '; 8];
        last[..rest.len()].copy_from_slice(rest);
        any_to_escape(u64::from_le_bytes(last))
    }
}

/// Whether any of the 8 bytes in `w` needs escaping (below 0x20, `"` or `\`). Bytes of
/// 0x80 and above never match.
#[inline]
fn any_to_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte's high bit is set in `below(x, n)` only if some byte of `x` is below `n`
    // (n <= 0x80): exact as a test for any.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    below(w, 0x20) | below(quote, 1) | below(backslash, 1) != 0
}

/// Appends the decimal digits of `v`.
fn write_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    push_ascii(out, &buf[i..]);
}

/// Appends ASCII bytes.
fn push_ascii(out: &mut String, ascii: &[u8]) {
    out.push_str(std::str::from_utf8(ascii).unwrap_or_default());
}

/// Appends a finite float as the shortest decimal that reads back as the same value
/// (`1.5`, `1.0`, `1e-7`: every form `Debug` prints for finite floats is a JSON number);
/// NaN and infinities as `null`.
fn write_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v:?}");
    } else {
        out.push_str("null");
    }
}

/// Appends `t` as `2026-11-23T14:48:03.909010Z` (RFC 3339, UTC, microseconds).
fn write_timestamp(out: &mut String, t: SystemTime) {
    const DAY_US: i64 = 86_400_000_000;
    let us = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |us| -us),
    };
    let (y, m, d) = timefmt::civil_from_days(us.div_euclid(DAY_US));
    let in_day = us.rem_euclid(DAY_US) as u64;
    let secs = in_day / 1_000_000;
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    digits(&mut buf[5..7], m as u64);
    digits(&mut buf[8..10], d as u64);
    digits(&mut buf[11..13], secs / 3600);
    digits(&mut buf[14..16], secs / 60 % 60);
    digits(&mut buf[17..19], secs % 60);
    digits(&mut buf[20..26], in_day % 1_000_000);
    if (0..=9999).contains(&y) {
        digits(&mut buf[0..4], y as u64);
        push_ascii(out, &buf);
    } else {
        let _ = write!(out, "{y:04}");
        push_ascii(out, &buf[4..]);
    }
}

/// Fills `buf` with the last `buf.len()` decimal digits of `v`, zero-padded.
fn digits(buf: &mut [u8], mut v: u64) {
    for b in buf.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// The members of a fragment written by [`Fields`]: each one's key (quoted, as written)
/// and the byte range of the whole `"key":value`.
fn members(fragment: &str) -> impl Iterator<Item = (&str, Range<usize>)> {
    let b = fragment.as_bytes();
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= b.len() {
            return None;
        }
        let start = pos;
        let key_end = string_end(b, start);
        // Keys are followed by `:`; values are a string, or a number, boolean or `null`
        // (which hold no comma).
        let value = (key_end + 1).min(b.len());
        let end = if b.get(value) == Some(&b'"') {
            string_end(b, value)
        } else {
            b[value..]
                .iter()
                .position(|&c| c == b',')
                .map_or(b.len(), |n| value + n)
        };
        pos = end + 1;
        Some((&fragment[start..key_end], start..end))
    })
}

/// The index just past the JSON string starting at `b[start]` (a `"`).
fn string_end(b: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
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
            "a", "Z", "0", " ", "~", "\u{7f}", "\"", "\\", "\n", "\r", "\t", "\u{8}", "\u{c}",
            "\u{0}", "\u{1}", "\u{1b}", "\u{1f}", "é", "日", "🦀", "!", "#", "[", "]", "{",
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
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
                + Duration::from_micros(micros.into())
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
        let subscriber =
            tracing_subscriber::registry().with(JsonLayer::new(move || writer.clone()));
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
}
