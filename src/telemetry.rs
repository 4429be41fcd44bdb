//! Logging: JSON lines through `tracing`, level from `LOG_LEVEL` (or `RUST_LOG` filters).

use tracing_subscriber::EnvFilter;

/// Installs the JSON log subscriber; `level` is a level or a full filter directive.
pub fn init_logging(level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(level.to_ascii_lowercase()).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init();
}
