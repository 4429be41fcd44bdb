//! Logging and tracing: JSON log lines through `tracing` (level from `LOG_LEVEL`, or
//! `RUST_LOG` filters; the line format is [`json`]), and — when an OTLP endpoint is
//! configured and the `otel` feature is built — OpenTelemetry traces exported over
//! OTLP/HTTP (protobuf) by a background thread.
//! Model calls get a span following the GenAI semantic conventions (see
//! `server::accounting`).

pub mod json;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::ObservabilitySettings;

static TRACES: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (so model calls get their GenAI span).
pub fn traces_enabled() -> bool {
    TRACES.load(Ordering::Relaxed)
}

/// Keeps the log writer and the trace exporter alive; dropping it flushes the log lines
/// and spans not yet written.
#[derive(Default)]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    log_guard: Option<writer::Guard>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "could not flush the last traces");
            }
        }
    }
}

fn filter(level: &str) -> EnvFilter {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(level.to_ascii_lowercase()).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// Installs the JSON log subscriber; `level` is a level or a full filter directive.
pub fn init_logging(level: &str) {
    let _ = tracing_subscriber::registry()
        .with(filter(level))
        .with(json::JsonLayer::new(std::io::stdout))
        .try_init();
}

/// Installs JSON logging and, when `obs.otlp_endpoint` is set, the OTLP trace exporter.
/// Log lines are written to stdout by a background thread ([`writer`]: request threads
/// only queue them; when the queue is full they wait rather than drop lines).
pub fn init(level: &str, obs: &ObservabilitySettings) -> Telemetry {
    match writer::spawn(std::io::stdout()) {
        Ok((writer, guard)) => {
            let mut t = init_with(level, obs, writer);
            t.log_guard = Some(guard);
            t
        }
        Err(e) => {
            init_logging(level);
            tracing::warn!(error = %e, "cannot start the log writer thread; logging directly");
            Telemetry::default()
        }
    }
}

fn init_with(level: &str, obs: &ObservabilitySettings, writer: writer::LineWriter) -> Telemetry {
    let registry = tracing_subscriber::registry()
        .with(filter(level))
        .with(json::JsonLayer::new(writer));
    let Some(endpoint) = &obs.otlp_endpoint else {
        let _ = registry.try_init();
        return Telemetry::default();
    };
    #[cfg(feature = "otel")]
    {
        match otel::provider(endpoint, &obs.service_name) {
            Ok(provider) => {
                use opentelemetry::trace::TracerProvider as _;
                let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("memproxy"));
                if registry.with(layer).try_init().is_ok() {
                    TRACES.store(true, Ordering::Relaxed);
                    tracing::info!(endpoint = %endpoint, "exporting traces over OTLP/HTTP");
                }
                Telemetry {
                    provider: Some(provider),
                    log_guard: None,
                }
            }
            Err(e) => {
                let _ = registry.try_init();
                tracing::error!(error = %e, endpoint = %endpoint, "cannot set up trace export; continuing without traces");
                Telemetry::default()
            }
        }
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = registry.try_init();
        tracing::warn!(
            endpoint = %endpoint,
            "an OTLP endpoint is configured but this build has no `otel` feature; no traces"
        );
        Telemetry::default()
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;

    /// A tracer provider batching spans to `{endpoint}/v1/traces` on its own thread (the
    /// blocking HTTP client needs no async runtime).
    pub fn provider(
        endpoint: &str,
        service_name: &str,
    ) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
        // The exporter's HTTP client uses the process's one rustls provider (ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = if endpoint.ends_with("/v1/traces") {
            endpoint.to_string()
        } else {
            format!("{endpoint}/v1/traces")
        };
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .build()?;
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(service_name.to_string())
                    .build(),
            )
            .build())
    }
}
