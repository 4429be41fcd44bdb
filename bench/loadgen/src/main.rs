//! `loadgen`: a small HTTP/1.1 load generator for memproxy's benchmark.
//!
//! N keep-alive connections each send one request after another (closed loop) for a fixed
//! time or a fixed number of requests, after a warm-up whose requests are not counted. For
//! every request it records the total latency (request sent to last body byte) and the time
//! to the first body byte (TTFB: the first non-empty body frame, which for a streamed SSE
//! answer is the first event). It prints one line: `key=value` pairs or a JSON object.
//!
//! With `--rate R` the load is open-loop instead: requests are due at a fixed total rate R
//! spread evenly over the connections (connection i sends at t0 + (i + k·N) / R), whatever
//! the answers' speed, so that latency can be measured below saturation. A connection
//! still busy with its previous request when the next one is due sends it as soon as it is
//! free, and that request's latency counts from when it was due (no coordinated omission);
//! otherwise latency counts from the actual send (the timer's own lateness is not the
//! server's). `behind` counts the requests that were due while their connection was busy.

mod stats;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const USAGE: &str = "\
usage: loadgen --url http://HOST:PORT/PATH [options]

  --url URL            target (plain http)
  --method M           HTTP method (default: POST with a body, else GET)
  --body FILE          request body from a file (content-type defaults to application/json)
  --body-str TEXT      request body given inline
  --header 'K: V'      extra request header (repeatable)
  --connections N      concurrent keep-alive connections (default 1)
  --duration SECS      measured time after the warm-up (default 10)
  --requests N         stop after N measured requests instead of after --duration
  --warmup SECS        warm-up time, not measured (default 1)
  --timeout SECS       per-request timeout (default 10)
  --threads N          runtime threads; 1 = single-threaded runtime (default 1)
  --rate R             open loop: R requests/s in total, spread over the connections
                       (default: closed loop, each connection sends when the last answer is in)
  --expect TEXT        the answer body must contain TEXT, else it counts as an error (repeatable)
  --label NAME         name echoed in the output
  --format kv|json     output format (default json)
";

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Kv,
    Json,
}

/// What to send and how; fixed for the whole run.
struct Opts {
    addr: String,
    path: Uri,
    method: Method,
    body: Bytes,
    headers: HeaderMap,
    connections: usize,
    duration: Duration,
    requests: Option<u64>,
    warmup: Duration,
    timeout: Duration,
    threads: usize,
    /// Open loop: total requests per second.
    rate: Option<f64>,
    expect: Vec<Vec<u8>>,
    label: String,
    format: Format,
}

fn parse_args(args: &[String]) -> Result<Opts, String> {
    let mut url: Option<String> = None;
    let mut method: Option<Method> = None;
    let mut body: Option<Bytes> = None;
    let mut extra: Vec<(HeaderName, HeaderValue)> = Vec::new();
    let mut o = Opts {
        addr: String::new(),
        path: Uri::from_static("/"),
        method: Method::GET,
        body: Bytes::new(),
        headers: HeaderMap::new(),
        connections: 1,
        duration: Duration::from_secs(10),
        requests: None,
        warmup: Duration::from_secs(1),
        timeout: Duration::from_secs(10),
        threads: 1,
        rate: None,
        expect: Vec::new(),
        label: String::new(),
        format: Format::Json,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .as_str();
        let bad = |what: &str| format!("{flag}: {what}: {value:?}");
        match flag.as_str() {
            "--url" => url = Some(value.to_string()),
            "--method" => method = Some(value.parse().map_err(|_| bad("not a method"))?),
            "--body" => {
                let b = std::fs::read(value).map_err(|e| bad(&e.to_string()))?;
                body = Some(Bytes::from(b));
            }
            "--body-str" => body = Some(Bytes::from(value.to_string())),
            "--header" => {
                let (k, v) = value
                    .split_once(':')
                    .ok_or_else(|| bad("want 'Name: value'"))?;
                let k = HeaderName::try_from(k.trim()).map_err(|_| bad("bad header name"))?;
                let v = HeaderValue::try_from(v.trim()).map_err(|_| bad("bad header value"))?;
                extra.push((k, v));
            }
            "--connections" => o.connections = positive(value).ok_or_else(|| bad("want N > 0"))?,
            "--threads" => o.threads = positive(value).ok_or_else(|| bad("want N > 0"))?,
            "--requests" => {
                o.requests = Some(positive(value).ok_or_else(|| bad("want N > 0"))? as u64)
            }
            "--duration" => o.duration = seconds(value).ok_or_else(|| bad("want seconds"))?,
            "--warmup" => o.warmup = seconds(value).ok_or_else(|| bad("want seconds"))?,
            "--timeout" => o.timeout = seconds(value).ok_or_else(|| bad("want seconds"))?,
            "--rate" => {
                o.rate = Some(
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite() && *r > 0.0)
                        .ok_or_else(|| bad("want requests/s > 0"))?,
                )
            }
            "--expect" => o.expect.push(value.as_bytes().to_vec()),
            "--label" => o.label = value.to_string(),
            "--format" => {
                o.format = match value {
                    "kv" => Format::Kv,
                    "json" => Format::Json,
                    _ => return Err(bad("want kv or json")),
                }
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let url: Uri = url
        .ok_or("--url is required")?
        .parse()
        .map_err(|e| format!("--url: {e}"))?;
    if url.scheme_str().is_some_and(|s| s != "http") {
        return Err("--url: only http:// is supported".into());
    }
    let authority = url.authority().ok_or("--url: no host")?.clone();
    o.addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    o.path = url
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .map_err(|e| format!("--url: {e}"))?;
    o.headers.insert(
        HOST,
        HeaderValue::try_from(authority.as_str()).map_err(|e| format!("--url: {e}"))?,
    );
    if let Some(b) = body {
        o.headers
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        o.body = b;
        o.method = Method::POST;
    }
    if let Some(m) = method {
        o.method = m;
    }
    for (k, v) in extra {
        o.headers.insert(k, v);
    }
    Ok(o)
}

fn positive(s: &str) -> Option<usize> {
    s.parse().ok().filter(|n| *n > 0)
}

fn seconds(s: &str) -> Option<Duration> {
    s.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .map(Duration::from_secs_f64)
}

/// The run's clock: warm-up until `warm_end`, then measured until `end` (or until the
/// request budget `left` is spent).
struct Plan {
    warm_end: Instant,
    end: Instant,
    left: Option<AtomicU64>,
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Warm,
    Measure,
    Stop,
}

impl Plan {
    /// Whether to start another request now, and whether it counts.
    fn next(&self) -> Phase {
        let now = Instant::now();
        if now < self.warm_end {
            return Phase::Warm;
        }
        match &self.left {
            Some(left) => match left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            {
                Ok(_) => Phase::Measure,
                Err(_) => Phase::Stop,
            },
            None if now < self.end => Phase::Measure,
            None => Phase::Stop,
        }
    }

    /// In a timed run, a request that ends after the window is not counted.
    fn counts(&self, finished: Instant) -> bool {
        self.left.is_some() || finished <= self.end
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Connect,
    Http,
    Status,
    Body,
    Timeout,
}

/// One connection's results.
#[derive(Default)]
struct Tally {
    latency: Vec<Duration>,
    ttfb: Vec<Duration>,
    bytes: u64,
    warm_requests: u64,
    errors: [u64; 5],
    reconnects: u64,
    /// Open loop: measured requests that were due while their connection was busy.
    behind: u64,
    last_finish: Option<Instant>,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, kind: Kind, msg: impl FnOnce() -> String) {
        self.errors[kind as usize] += 1;
        if self.first_error.is_none() {
            self.first_error = Some(msg());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency.extend(other.latency);
        self.ttfb.extend(other.ttfb);
        self.bytes += other.bytes;
        self.warm_requests += other.warm_requests;
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
        self.reconnects += other.reconnects;
        self.behind += other.behind;
        self.last_finish = self.last_finish.max(other.last_finish);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// A completed exchange.
struct Done {
    total: Duration,
    ttfb: Duration,
    bytes: u64,
}

async fn connect(o: &Opts) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(&o.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", o.addr))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request and its whole answer; times count from `origin` when given (an open-loop
/// request that was due earlier), else from the send.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    o: &Opts,
    origin: Option<Instant>,
) -> Result<Done, (Kind, String)> {
    let mut req = Request::new(Full::new(o.body.clone()));
    *req.method_mut() = o.method.clone();
    *req.uri_mut() = o.path.clone();
    *req.headers_mut() = o.headers.clone();
    let started = origin.unwrap_or_else(Instant::now);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| (Kind::Http, format!("request: {e}")))?;
    let status = resp.status();
    let keep = !o.expect.is_empty() || !status.is_success();
    let mut seen = Vec::new();
    let mut ttfb = None;
    let mut bytes = 0u64;
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| (Kind::Http, format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if data.is_empty() {
                continue;
            }
            ttfb.get_or_insert_with(|| started.elapsed());
            bytes += data.len() as u64;
            if keep {
                seen.extend_from_slice(&data);
            }
        }
    }
    let total = started.elapsed();
    if !status.is_success() {
        return Err((Kind::Status, status_error(status, &seen)));
    }
    for want in &o.expect {
        if !seen.windows(want.len()).any(|w| w == want.as_slice()) {
            let head = String::from_utf8_lossy(&seen[..seen.len().min(300)]).into_owned();
            return Err((
                Kind::Body,
                format!(
                    "answer lacks {:?}: {head}",
                    String::from_utf8_lossy(want.as_slice())
                ),
            ));
        }
    }
    Ok(Done {
        total,
        ttfb: ttfb.unwrap_or(total),
        bytes,
    })
}

fn status_error(status: StatusCode, body: &[u8]) -> String {
    let head = String::from_utf8_lossy(&body[..body.len().min(300)]);
    format!("status {status}: {head}")
}

/// When connection `index` sends in an open-loop run: its first request's due time and
/// the interval after which the next is due.
fn schedule(o: &Opts, index: usize, start: Instant) -> Option<(Instant, Duration)> {
    let rate = o.rate?;
    // A few ms of slack, so that the first requests are not due before the tasks run.
    let first = start + Duration::from_millis(5) + Duration::from_secs_f64(index as f64 / rate);
    Some((first, Duration::from_secs_f64(o.connections as f64 / rate)))
}

/// One connection's loop: closed (send, read the whole answer, repeat) or, with `--rate`,
/// open (send when due).
async fn worker(o: Arc<Opts>, plan: Arc<Plan>, index: usize, start: Instant) -> Tally {
    let mut t = Tally::default();
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    let mut connected_before = false;
    let mut due = schedule(&o, index, start);
    loop {
        // Open loop: wait until the next request is due; one due while the connection was
        // busy goes at once and its latency counts from when it was due.
        let mut origin = None;
        if let Some((at, every)) = due.as_mut() {
            if Instant::now() < *at {
                tokio::time::sleep_until((*at).into()).await;
            } else {
                origin = Some(*at);
            }
            *at += *every;
        }
        let phase = plan.next();
        if phase == Phase::Stop {
            break;
        }
        // A closed or failed connection is replaced before the next request.
        if let Some(s) = conn.as_mut() {
            if s.ready().await.is_err() {
                conn = None;
            }
        }
        let sender = match conn.as_mut() {
            Some(s) => s,
            None => match connect(&o).await {
                Ok(s) => {
                    if connected_before {
                        t.reconnects += 1;
                    }
                    connected_before = true;
                    conn.insert(s)
                }
                Err(e) => {
                    t.error(Kind::Connect, || e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match tokio::time::timeout(o.timeout, exchange(sender, &o, origin)).await {
            Ok(Ok(done)) => {
                let finished = Instant::now();
                if phase == Phase::Warm {
                    t.warm_requests += 1;
                } else if plan.counts(finished) {
                    t.behind += u64::from(origin.is_some());
                    t.latency.push(done.total);
                    t.ttfb.push(done.ttfb);
                    t.bytes += done.bytes;
                    t.last_finish = Some(finished);
                }
            }
            Ok(Err((kind, msg))) => {
                if matches!(kind, Kind::Http) {
                    conn = None;
                }
                t.error(kind, || msg);
            }
            Err(_) => {
                conn = None;
                t.error(Kind::Timeout, || {
                    format!("no complete answer within {:?}", o.timeout)
                });
            }
        }
    }
    t
}

async fn run(o: Arc<Opts>) -> (Tally, Duration) {
    let start = Instant::now();
    let warm_end = start + o.warmup;
    let plan = Arc::new(Plan {
        warm_end,
        end: warm_end + o.duration,
        left: o.requests.map(AtomicU64::new),
    });
    let tasks: Vec<_> = (0..o.connections)
        .map(|i| tokio::spawn(worker(o.clone(), plan.clone(), i, start)))
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => all.merge(t),
            Err(e) => all.error(Kind::Http, || format!("worker failed: {e}")),
        }
    }
    let window = match o.requests {
        Some(_) => all
            .last_finish
            .map(|f| f.saturating_duration_since(warm_end))
            .unwrap_or_default(),
        None => o.duration,
    };
    (all, window)
}

/// This process's CPU time so far (user + system) in clock ticks, from `/proc/self/stat`
/// (Linux only), so that the caller can tell the load generator's share of the machine.
fn own_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

fn report(o: &Opts, mut t: Tally, window: Duration) -> String {
    let n = t.latency.len() as u64;
    let secs = window.as_secs_f64();
    let rps = if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let lat = stats::summarize(&mut t.latency);
    let ttfb = stats::summarize(&mut t.ttfb);
    let errors: u64 = t.errors.iter().sum();
    let mut fields: Vec<(String, String)> = [
        ("connections", o.connections.to_string()),
        ("requests", n.to_string()),
        ("errors", errors.to_string()),
        ("err_connect", t.errors[Kind::Connect as usize].to_string()),
        ("err_http", t.errors[Kind::Http as usize].to_string()),
        ("err_status", t.errors[Kind::Status as usize].to_string()),
        ("err_body", t.errors[Kind::Body as usize].to_string()),
        ("err_timeout", t.errors[Kind::Timeout as usize].to_string()),
        ("reconnects", t.reconnects.to_string()),
        (
            "rate",
            o.rate
                .map_or_else(|| "0".to_string(), |r| format!("{r:.1}")),
        ),
        ("behind", t.behind.to_string()),
        ("seconds", format!("{secs:.3}")),
        ("rps", format!("{rps:.1}")),
        ("bytes", t.bytes.to_string()),
        ("warm_requests", t.warm_requests.to_string()),
        ("cpu_ticks", own_cpu_ticks().unwrap_or(0).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (prefix, s) in [("lat", lat), ("ttfb", ttfb)] {
        for (name, v) in [
            ("mean", s.mean),
            ("p50", s.p50),
            ("p90", s.p90),
            ("p99", s.p99),
            ("max", s.max),
        ] {
            fields.push((format!("{prefix}_{name}_us"), format!("{v:.1}")));
        }
    }
    match o.format {
        Format::Kv => {
            let mut line = format!("label={}", o.label.replace(char::is_whitespace, "_"));
            for (k, v) in &fields {
                line.push_str(&format!(" {k}={v}"));
            }
            line
        }
        Format::Json => {
            let label = o.label.replace('\\', "\\\\").replace('"', "\\\"");
            let mut line = format!("{{\"label\":\"{label}\"");
            for (k, v) in &fields {
                line.push_str(&format!(",\"{k}\":{v}"));
            }
            line.push('}');
            line
        }
    }
}

#[expect(clippy::print_stdout, clippy::print_stderr, reason = "CLI output")]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse_args(&args) {
        Ok(o) => Arc::new(o),
        Err(e) => {
            if !e.is_empty() {
                eprintln!("loadgen: {e}");
            }
            eprint!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let runtime = if o.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(o.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (tally, window) = runtime.block_on(run(o.clone()));
    if let Some(e) = &tally.first_error {
        eprintln!("loadgen {}: first error: {e}", o.label);
    }
    println!("{}", report(&o, tally, window));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_schedule_spreads_the_rate_over_the_connections() {
        let args: Vec<String> = [
            "--url",
            "http://127.0.0.1:1/x",
            "--connections",
            "50",
            "--rate",
            "1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = parse_args(&args).unwrap();
        let t0 = Instant::now();
        let (a, every) = schedule(&o, 0, t0).unwrap();
        let (b, _) = schedule(&o, 1, t0).unwrap();
        // 1000/s over 50 connections: each sends every 50 ms, staggered by 1 ms.
        assert_eq!(every, Duration::from_millis(50));
        assert_eq!(b - a, Duration::from_millis(1));
        let closed = parse_args(&args[..4]).unwrap();
        assert!(schedule(&closed, 0, t0).is_none());
    }
}
