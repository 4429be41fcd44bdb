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
mod tests;
