//! Prometheus metrics (`GET /metrics`): one process-wide recorder, rendered on our own
//! route. Labels are low-cardinality by construction: routes are route templates, models
//! are configured model groups (never the client's free text), errors are kinds, and user
//! ids never appear.
//!
//! Per-model handles are registered once at start-up so the completion hook only bumps
//! atomics.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::analytics::AnalyticsStats;
use crate::protocol::ir::Usage;

/// Latency buckets in seconds, from 0.25 ms (proxy overhead) to 10 minutes (long streams).
const BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0, 600.0,
];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often histogram samples are drained into their buckets. Histograms keep every
/// sample until then: drained every 5 s, the samples of ~35k requests/s (several
/// histograms each) raised peak RSS under 50 connections by ~10 MiB (41.6 -> 32.1 MiB
/// over the benchmark's phases at 500 ms).
const UPKEEP_EVERY: Duration = Duration::from_millis(500);

/// Installs the process-wide recorder once (later calls reuse it) and starts its upkeep.
fn recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = match PrometheusBuilder::new().set_buckets(BUCKETS) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "metrics disabled: bad buckets");
                    return None;
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                tracing::error!(error = %e, "metrics disabled: another recorder is installed");
                return None;
            }
            describe();
            let upkeep = handle.clone();
            // Drains histogram samples when nobody scrapes, so they cannot pile up.
            let _ = std::thread::Builder::new()
                .name("memproxy-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "memproxy_requests_total",
        "HTTP requests by route template, status and model group"
    );
    describe_histogram!(
        "memproxy_request_duration_seconds",
        Unit::Seconds,
        "Time from arrival to response headers, by route template"
    );
    describe_histogram!(
        "memproxy_upstream_duration_seconds",
        Unit::Seconds,
        "Time spent waiting for the provider per answered model request"
    );
    describe_histogram!(
        "memproxy_ttft_seconds",
        Unit::Seconds,
        "Time to the first streamed content event"
    );
    describe_histogram!(
        "memproxy_overhead_seconds",
        Unit::Seconds,
        "memproxy's own time per model request (total minus upstream)"
    );
    describe_histogram!(
        "memproxy_memory_retrieval_seconds",
        Unit::Seconds,
        "Memory search and injection time per request"
    );
    describe_counter!("memproxy_tokens_total", "Tokens by model group and kind");
    describe_gauge!(
        "memproxy_cost_usd",
        "USD spent since start-up, by model group"
    );
    describe_counter!(
        "memproxy_upstream_errors_total",
        "Failed model requests by error kind"
    );
    describe_counter!(
        "memproxy_rate_limited_total",
        "Requests refused by a rate limit, by scope and dimension"
    );
    describe_gauge!(
        "memproxy_memory_reembed_pending",
        "Memories still to be embedded by the background re-embedding"
    );
    describe_gauge!(
        "memproxy_analytics_queue_depth",
        "Analytics rows waiting to be written"
    );
    describe_counter!(
        "memproxy_analytics_rows_written_total",
        "Analytics rows written since start-up"
    );
    describe_counter!(
        "memproxy_analytics_rows_dropped_total",
        "Analytics rows lost since start-up, by reason (queue_full, store_error)"
    );
    describe_gauge!(
        "memproxy_analytics_store_up",
        "1 when the analytics store's last operation succeeded"
    );
}

/// Handles for one model group.
pub struct ModelMetrics {
    tokens_in: Counter,
    tokens_out: Counter,
    tokens_cached: Counter,
    tokens_reasoning: Counter,
    cost: Gauge,
    upstream: Histogram,
    ttft: Histogram,
}

impl ModelMetrics {
    fn new(model: &str) -> Self {
        let tokens = |kind: &'static str| counter!("memproxy_tokens_total", "model" => model.to_string(), "kind" => kind);
        Self {
            tokens_in: tokens("input"),
            tokens_out: tokens("output"),
            tokens_cached: tokens("cached_input"),
            tokens_reasoning: tokens("reasoning"),
            cost: gauge!("memproxy_cost_usd", "model" => model.to_string()),
            upstream: histogram!("memproxy_upstream_duration_seconds", "model" => model.to_string()),
            ttft: histogram!("memproxy_ttft_seconds", "model" => model.to_string()),
        }
    }

    /// Counts one answered request.
    pub fn observe(
        &self,
        usage: &Usage,
        cost: Option<f64>,
        upstream: Option<Duration>,
        ttft: Option<Duration>,
    ) {
        self.tokens_in.increment(usage.input_tokens);
        self.tokens_out.increment(usage.output_tokens);
        self.tokens_cached.increment(usage.cached_input_tokens);
        self.tokens_reasoning.increment(usage.reasoning_tokens);
        if let Some(c) = cost {
            self.cost.increment(c);
        }
        if let Some(u) = upstream {
            self.upstream.record(u.as_secs_f64());
        }
        if let Some(t) = ttft {
            self.ttft.record(t.as_secs_f64());
        }
    }
}

/// The handles of one (route, status, model) of `memproxy_requests_total`.
struct RequestHandles {
    count: Counter,
    duration: Histogram,
}

/// The metrics of one app: the recorder's handle and per-model handles.
pub struct Metrics {
    handle: Option<&'static PrometheusHandle>,
    models: HashMap<String, ModelMetrics>,
    requests: dashmap::DashMap<String, RequestHandles>,
    overhead: Histogram,
    memory_retrieval: Histogram,
}

impl Metrics {
    /// Registers the handles for the configured model groups.
    pub fn new<'a>(model_groups: impl IntoIterator<Item = &'a str>) -> Self {
        let handle = recorder();
        Self {
            // Registered up front so the series exists before the first observation.
            memory_retrieval: histogram!("memproxy_memory_retrieval_seconds"),
            handle,
            models: model_groups
                .into_iter()
                .map(|m| (m.to_string(), ModelMetrics::new(m)))
                .collect(),
            requests: dashmap::DashMap::new(),
            overhead: histogram!("memproxy_overhead_seconds"),
        }
    }

    /// The handles of a configured model group.
    pub fn model(&self, group: &str) -> Option<&ModelMetrics> {
        self.models.get(group)
    }

    /// memproxy's own time for one model request.
    pub fn overhead(&self, d: Duration) {
        self.overhead.record(d.as_secs_f64());
    }

    /// Memory search and injection time of one request.
    pub fn memory_retrieval(&self, d: Duration) {
        self.memory_retrieval.record(d.as_secs_f64());
    }

    /// Counts one HTTP request. The handles of each (route, status, model) are registered
    /// once and then found by a lookup that allocates nothing.
    pub fn request(&self, route: &str, status: u16, model: &str, elapsed: Duration) {
        thread_local! {
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        KEY.with_borrow_mut(|key| {
            key.clear();
            key.push_str(route);
            key.push('\u{1}');
            key.push_str(model);
            key.push('\u{1}');
            for d in [status / 100 % 10, status / 10 % 10, status % 10] {
                key.push(char::from(b'0' + d as u8));
            }
            let found = self.requests.get(key.as_str());
            let handles = match found {
                Some(h) => h,
                None => {
                    let h = RequestHandles {
                        count: counter!("memproxy_requests_total", "route" => route.to_string(),
                                        "status" => status.to_string(), "model" => model.to_string()),
                        duration: histogram!("memproxy_request_duration_seconds",
                                             "route" => route.to_string()),
                    };
                    self.requests.entry(key.clone()).or_insert(h).downgrade()
                }
            };
            handles.count.increment(1);
            handles.duration.record(elapsed.as_secs_f64());
        });
    }

    /// Counts a failed model request by kind.
    pub fn upstream_error(&self, kind: &'static str) {
        counter!("memproxy_upstream_errors_total", "kind" => kind).increment(1);
    }

    /// Counts a rate-limit refusal.
    pub fn rate_limited(&self, scope: &'static str, dimension: &'static str) {
        counter!("memproxy_rate_limited_total", "scope" => scope, "dimension" => dimension)
            .increment(1);
    }

    /// The Prometheus text exposition, with the analytics gauges brought up to date.
    pub fn render(&self, analytics: AnalyticsStats) -> String {
        gauge!("memproxy_analytics_queue_depth").set(analytics.queue_depth as f64);
        counter!("memproxy_analytics_rows_written_total").absolute(analytics.written);
        counter!("memproxy_analytics_rows_dropped_total", "reason" => "queue_full")
            .absolute(analytics.dropped_queue_full);
        counter!("memproxy_analytics_rows_dropped_total", "reason" => "store_error")
            .absolute(analytics.dropped_store_error);
        gauge!("memproxy_analytics_store_up").set(if analytics.store_ok { 1.0 } else { 0.0 });
        self.handle.map(|h| h.render()).unwrap_or_default()
    }
}
