//! Accounting for one model request: its analytics row, metrics, key spend, token-limit
//! settlement and the GenAI trace span. The pipeline starts an [`Accounting`] when a
//! request reaches it and finishes it from the completion hook (or with the error that
//! ended the request); an accounting dropped unfinished still writes its row. Every row
//! is written by an [`Accounting`], once: the gateway middleware opens it when a model
//! request arrives ([`RowSlot`] in the request's context), the pipeline takes it over
//! (`RequestCtx::take_row` in the middleware), and one nobody took over was refused before the pipeline
//! ([`Accounting::refuse`], by the middleware).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::error::ApiError;
use super::respond::Exchange;
use super::AppState;
use crate::analytics::pricing::{self, Price};
use crate::analytics::store::Injected;
use crate::analytics::Record;
use crate::config::{DeploymentConfig, ProviderKind};
use crate::keys::VirtualKey;
use crate::protocol::ir::{Format, Usage};
use crate::ratelimit::{fmt_reset, Dimension, Quota, TokenCharge};
use crate::routing::Deployment;

/// The model group that answered, on the response (the metrics' `model` label).
#[derive(Clone)]
pub struct RoutedGroup(pub Arc<Deployment>);

/// The client API's name in rows.
pub fn endpoint_name(format: Format) -> &'static str {
    match format {
        Format::OpenAiChat => "chat",
        Format::Anthropic => "messages",
        Format::Gemini => "gemini",
        Format::Responses => "responses",
    }
}

/// The OpenTelemetry GenAI semantic-conventions name of a provider.
fn genai_provider(cfg: &DeploymentConfig) -> &str {
    match cfg.provider {
        ProviderKind::Gemini => "gcp.gemini",
        ProviderKind::VertexAi => "gcp.vertex_ai",
        ProviderKind::Bedrock => "aws.bedrock",
        ProviderKind::Azure => "azure.ai.openai",
        _ => &cfg.provider_name,
    }
}

/// A rough prompt size for token limits: 4 bytes per token.
pub fn estimate_tokens(body_bytes: usize) -> u64 {
    (body_bytes as u64).div_ceil(4).max(1)
}

/// Where the answer came from.
struct RoutedInfo {
    deployment: Arc<Deployment>,
    upstream_model: String,
    attempts: u32,
    price: Option<Price>,
}

/// One model request's bookkeeping, from the pipeline to the end of its answer.
pub struct Accounting {
    state: Arc<AppState>,
    record: Record,
    started: Instant,
    key: Option<Arc<VirtualKey>>,
    charge: Option<TokenCharge>,
    /// Time spent in the router call (headers of a stream, whole answer otherwise).
    upstream: Option<Duration>,
    routed: Option<RoutedInfo>,
    span: tracing::Span,
    finished: bool,
}

/// A model request as the gateway saw it arrive.
#[derive(Clone, Copy)]
pub struct Arrival<'a> {
    pub request_id: &'a str,
    /// The client API's name in rows (see [`endpoint_name`]).
    pub endpoint: &'static str,
    /// The client program (see `identity::client_name`).
    pub client: &'a str,
    pub started: Instant,
}

/// The row of a model request while nobody has taken it over: the gateway middleware
/// opens it, the pipeline takes it over (`RequestCtx::take_row`), and whatever is still here when
/// the handler has answered was refused before the pipeline ([`Accounting::refuse`]).
/// Either way the row is written once, by its [`Accounting`].
#[derive(Clone, Default)]
pub struct RowSlot(Arc<std::sync::Mutex<Option<Accounting>>>);

impl RowSlot {
    pub fn put(&self, acct: Accounting) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(acct);
    }

    pub fn take(&self) -> Option<Accounting> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl std::fmt::Debug for RowSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowSlot")
    }
}

/// Who made a model request, as the gateway admitted it.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    /// Wall-clock arrival time, Unix milliseconds (the row's time).
    pub arrived_ms: i64,
    pub user_id: &'a str,
    pub key: Option<&'a Arc<VirtualKey>>,
    pub project: Option<&'a str>,
}

impl Accounting {
    /// Opens the row of a model request: who asked (`caller`, when the request was
    /// admitted) and how it arrived.
    pub fn open(state: &Arc<AppState>, caller: Option<Caller<'_>>, a: Arrival<'_>) -> Self {
        let key = caller.and_then(|c| c.key.cloned());
        Self {
            record: Record {
                ts_ms: caller.map_or_else(crate::analytics::timefmt::now_ms, |c| c.arrived_ms),
                request_id: a.request_id.to_string(),
                user_id: caller.map(|c| c.user_id.to_string()).unwrap_or_default(),
                client: a.client.to_string(),
                key_id: key.as_ref().map(|k| k.row.hash.clone()),
                key_alias: key.as_ref().and_then(|k| k.row.alias.clone()),
                project: caller
                    .and_then(|c| c.project)
                    .unwrap_or_default()
                    .to_string(),
                endpoint: a.endpoint.to_string(),
                ..Default::default()
            },
            state: state.clone(),
            started: a.started,
            key,
            charge: None,
            upstream: None,
            routed: None,
            span: tracing::Span::none(),
            finished: false,
        }
    }

    /// The pipeline has the request: `model` spoken in `format`.
    pub fn begin(&mut self, format: Format, model: &str, stream: bool) {
        let endpoint = endpoint_name(format);
        if self.record.endpoint != endpoint {
            self.record.endpoint = endpoint.to_string();
        }
        self.record.model = model.to_string();
        self.record.stream = stream;
        if self.state.genai_spans {
            let operation = "chat";
            self.span = tracing::info_span!(
                target: "memproxy::genai",
                "gen_ai",
                otel.name = %format_args!("{operation} {model}"),
                otel.kind = "client",
                gen_ai.operation.name = operation,
                gen_ai.request.model = %model,
                gen_ai.system = tracing::field::Empty,
                gen_ai.provider.name = tracing::field::Empty,
                gen_ai.response.model = tracing::field::Empty,
                gen_ai.response.id = tracing::field::Empty,
                gen_ai.usage.input_tokens = tracing::field::Empty,
                gen_ai.usage.output_tokens = tracing::field::Empty,
                error.type = tracing::field::Empty,
                memproxy.request_id = %self.record.request_id,
            );
        }
    }

    /// The request was refused before the pipeline (authentication, budget, rate limit,
    /// bad body…) with `status`.
    pub fn refuse(mut self, status: u16, error: Option<&str>, model: Option<&str>) {
        self.record.status = status;
        self.record.error_type = error.map(str::to_string);
        if let Some(m) = model {
            self.record.model = m.to_string();
        }
        self.write(Usage::default(), None, Duration::ZERO, Duration::ZERO);
    }

    /// The span around the model call (disabled unless traces are exported).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Keeps the up-front token charge, to settle it with the real usage.
    pub fn charged(&mut self, charge: TokenCharge) {
        self.charge = Some(charge);
    }

    /// Records the memories injected (memory retrieval).
    pub fn memories_injected(&mut self, list: Vec<Injected>) {
        self.record.memories_injected = list.len() as u32;
        self.record.injected = list;
    }

    /// Sets how many memory-tool rounds the proxy ran.
    pub fn tool_rounds(&mut self, n: u32) {
        self.record.tool_rounds = n;
    }

    /// Notes the deployment that answered and the time the router call took; returns the
    /// price of its model, if known.
    pub fn routed(
        &mut self,
        deployment: &Arc<Deployment>,
        attempts: u32,
        requested: &str,
        upstream: Duration,
    ) -> Option<Price> {
        let cfg = &deployment.config;
        let upstream_model = if cfg.upstream_model.contains('*') {
            requested.to_string()
        } else {
            cfg.upstream_model.clone()
        };
        let price = pricing::price_for(cfg, &upstream_model);
        self.span
            .record("gen_ai.system", cfg.provider_name.as_str());
        self.span
            .record("gen_ai.provider.name", genai_provider(cfg));
        self.upstream = Some(upstream);
        self.routed = Some(RoutedInfo {
            deployment: deployment.clone(),
            upstream_model,
            attempts,
            price,
        });
        price
    }

    /// The request ended with `err` before any answer; returns the error for the client.
    pub fn fail(mut self, err: ApiError, upstream: Option<Duration>) -> ApiError {
        self.upstream = upstream;
        self.record.status = err.status().as_u16();
        self.record.error_type = Some(err.label().to_string());
        self.span.record("error.type", err.label());
        if matches!(err, ApiError::Route(_)) {
            self.state.metrics.upstream_error(err.label());
        }
        if let ApiError::RateLimited(d) = &err {
            self.state.metrics.rate_limited(
                d.scope.label(),
                match d.dimension {
                    Dimension::Requests => "requests",
                    Dimension::Tokens => "tokens",
                },
            );
        }
        self.write(Usage::default(), None, Duration::ZERO, Duration::ZERO);
        err
    }

    /// The completion hook: the answer is complete (or the client left).
    pub fn finish(mut self, ex: &Exchange) {
        self.record.status = 200;
        self.record.error_type = match (ex.error, ex.completed) {
            (Some(e), _) => {
                self.state.metrics.upstream_error(e);
                Some(e.to_string())
            }
            (None, false) => Some("client_closed".into()),
            (None, true) => None,
        };
        self.record.ttft_ms = ex.ttft.map(ms);
        let usage = ex.completion.usage;
        self.span
            .record("gen_ai.response.model", ex.completion.model.as_str());
        self.span
            .record("gen_ai.response.id", ex.completion.id.as_str());
        self.span
            .record("gen_ai.usage.input_tokens", usage.input_tokens);
        self.span
            .record("gen_ai.usage.output_tokens", usage.output_tokens);
        if let Some(e) = &self.record.error_type {
            self.span.record("error.type", e.as_str());
        }
        self.write(usage, ex.ttft, ex.upstream_wait, ex.client_wait);
    }

    fn write(
        &mut self,
        usage: Usage,
        ttft: Option<Duration>,
        upstream_wait: Duration,
        client_wait: Duration,
    ) {
        self.finished = true;
        let total = self.started.elapsed();
        let upstream = self.upstream.map(|u| u + upstream_wait);
        let overhead = total
            .saturating_sub(upstream.unwrap_or_default())
            .saturating_sub(client_wait);
        let cost = self
            .routed
            .as_ref()
            .and_then(|r| r.price)
            .map(|p| p.cost(&usage));
        let r = &mut self.record;
        r.tokens_in = usage.input_tokens;
        r.tokens_out = usage.output_tokens;
        r.tokens_cached = usage.cached_input_tokens;
        r.tokens_reasoning = usage.reasoning_tokens;
        r.cost_usd = cost;
        r.total_ms = ms(total);
        r.upstream_ms = upstream.map(ms);
        r.overhead_ms = ms(overhead);
        if let Some(routed) = &self.routed {
            let cfg = &routed.deployment.config;
            r.deployment = Some(cfg.model_name.clone());
            r.provider = Some(cfg.provider_name.as_str().to_string());
            r.upstream_model = Some(routed.upstream_model.clone());
            r.attempts = routed.attempts;
            if let Some(m) = self.state.metrics.model(&cfg.model_name) {
                m.observe(&usage, cost, upstream, ttft);
            }
        }
        self.state.metrics.overhead(overhead);
        if let (Some(k), Some(c)) = (&self.key, cost) {
            k.add_spend(c);
        }
        if let Some(charge) = &self.charge {
            self.state.limits.settle_tokens(charge, usage.total());
        }
        self.state
            .analytics
            .record(std::mem::take(&mut self.record));
    }
}

impl Drop for Accounting {
    /// An accounting dropped unfinished (the answer could not be built) still leaves a row.
    fn drop(&mut self) {
        if !self.finished {
            self.record.status = 502;
            self.record.error_type = Some("unfinished".into());
            self.write(Usage::default(), None, Duration::ZERO, Duration::ZERO);
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Adds `x-ratelimit-*` headers of one dimension.
pub fn quota_headers(h: &mut HeaderMap, dimension: Dimension, q: &Quota) {
    let dim = match dimension {
        Dimension::Requests => "requests",
        Dimension::Tokens => "tokens",
    };
    let values = [
        ("limit", q.limit.to_string()),
        ("remaining", q.remaining.to_string()),
        ("reset", fmt_reset(q.reset_ms)),
    ];
    for (what, value) in values {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(format!("x-ratelimit-{what}-{dim}").as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            h.insert(n, v);
        }
    }
}

/// `x-memproxy-cost` (USD, when the price is known) and `x-memproxy-overhead-ms`.
pub fn cost_headers(h: &mut HeaderMap, cost: Option<f64>, overhead: Duration) {
    if let Some(c) = cost.filter(|c| c.is_finite() && *c >= 0.0) {
        let nano_cents = (c * 1e8).round() as u64;
        if let Ok(v) = HeaderValue::from_str(&fixed(nano_cents, 8)) {
            h.insert("x-memproxy-cost", v);
        }
    }
    let micros = overhead.as_micros().min(u128::from(u64::MAX)) as u64;
    if let Ok(v) = HeaderValue::from_str(&fixed(micros, 3)) {
        h.insert("x-memproxy-overhead-ms", v);
    }
}

/// `units / 10^decimals` written with exactly `decimals` decimals (integer arithmetic:
/// float formatting is a measurable share of a request's time).
fn fixed(units: u64, decimals: u32) -> String {
    let scale = 10u64.pow(decimals);
    let frac = (units % scale).to_string();
    let mut out = (units / scale).to_string();
    out.push('.');
    out.extend(std::iter::repeat_n('0', decimals as usize - frac.len()));
    out.push_str(&frac);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_header_values() {
        assert_eq!(fixed(0, 3), "0.000");
        assert_eq!(fixed(1234, 3), "1.234");
        assert_eq!(fixed(5, 3), "0.005");
        assert_eq!(fixed(123_456_789, 8), "1.23456789");
        let mut h = HeaderMap::new();
        cost_headers(&mut h, Some(0.000_012_5), Duration::from_micros(187));
        assert_eq!(h["x-memproxy-cost"], "0.00001250");
        assert_eq!(h["x-memproxy-overhead-ms"], "0.187");
        cost_headers(&mut h, Some(f64::NAN), Duration::ZERO);
        assert_eq!(h["x-memproxy-overhead-ms"], "0.000");
    }
}
