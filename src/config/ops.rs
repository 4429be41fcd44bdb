//! The operations sections: `analytics` (the usage databank and its write queue),
//! `rate_limits` (with the original proxy's `ENABLE_RATE_LIMITING` /
//! `MAX_REQUESTS_PER_MINUTE`), `observability` (OTLP traces, `/metrics`), and the data
//! directory (`general_settings.data_dir`, `MEMPROXY_DATA_DIR`, `--data-dir`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// Default data directory (relative to the working directory).
pub const DEFAULT_OPS_DATA_DIR: &str = "./data";

/// `analytics`: one row per model request, written off the hot path.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyticsSettings {
    /// Off: no rows are recorded (the key store still opens). For benchmark comparisons.
    pub enabled: bool,
    /// Holds `analytics.db` (usage rows and virtual keys).
    pub data_dir: PathBuf,
    /// Rows waiting at most; beyond it new rows are dropped (counted and logged).
    pub queue_size: usize,
    /// Rows committed in one transaction at most.
    pub batch_size: usize,
    /// How long the writer lets rows gather before a write (fewer, larger transactions and
    /// fewer wake-ups); queries and flushes wait at most this long.
    #[serde(serialize_with = "super::ser_secs")]
    pub flush_interval: Duration,
}

/// `rate_limits`: token buckets per user id (virtual keys carry their own limits).
#[derive(Debug, Clone, Serialize)]
pub struct RateLimitSettings {
    /// Per-user limits on (`ENABLE_RATE_LIMITING`); key limits apply regardless.
    pub enabled: bool,
    /// Requests per minute per user id (`MAX_REQUESTS_PER_MINUTE`); none = unlimited.
    pub requests_per_minute: Option<u64>,
    /// Tokens (prompt + completion) per minute per user id; none = unlimited.
    pub tokens_per_minute: Option<u64>,
    /// Redis shared by every instance (`general_settings.redis_url`, `REDIS_URL`, or
    /// LiteLLM's `router_settings.redis_host`/`redis_port`/`redis_password`); none =
    /// buckets in this process only.
    pub redis_url: Option<crate::config::Secret<String>>,
    /// Prefix of every Redis key memproxy writes (several deployments can share a Redis).
    pub redis_prefix: String,
    /// With Redis unreachable: true = fall back to this instance's buckets (warned);
    /// false = refuse requests with 429 until it answers.
    pub fail_open: bool,
}

/// `observability`: traces and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct ObservabilitySettings {
    /// OTLP/HTTP endpoint for traces (`OTEL_EXPORTER_OTLP_ENDPOINT`); none = no traces.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the traces (`OTEL_SERVICE_NAME`).
    pub service_name: String,
    /// `/metrics` asks for the master key (LiteLLM's `require_auth_for_metrics_endpoint`).
    pub metrics_require_auth: bool,
}

/// The `analytics` section as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawAnalytics {
    pub enabled: Option<bool>,
    pub queue_size: Option<usize>,
    pub batch_size: Option<usize>,
    pub flush_interval_ms: Option<u64>,
}

/// The `rate_limits` section as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawRateLimits {
    pub enabled: Option<bool>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub fail_open: Option<bool>,
    pub redis_prefix: Option<String>,
}

/// The `observability` section as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawObservability {
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
    pub require_auth_for_metrics_endpoint: Option<bool>,
}

fn env_value(lookup: &dyn Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    lookup(var)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Validates `analytics`; the data dir is `override_dir` (`--data-dir`) >
/// `MEMPROXY_DATA_DIR` > `general_settings.data_dir` > `./data`.
pub fn analytics(
    raw: Option<RawAnalytics>,
    override_dir: Option<&str>,
    file_dir: Option<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<AnalyticsSettings, ConfigError> {
    let raw = raw.unwrap_or_default();
    let data_dir = override_dir
        .map(str::to_string)
        .or_else(|| env_value(lookup, "MEMPROXY_DATA_DIR"))
        .or(file_dir)
        .unwrap_or_else(|| DEFAULT_OPS_DATA_DIR.to_string());
    let queue_size = raw.queue_size.unwrap_or(10_000);
    if queue_size == 0 {
        return Err(invalid("analytics.queue_size", "must be at least 1"));
    }
    let batch_size = raw.batch_size.unwrap_or(512);
    if batch_size == 0 {
        return Err(invalid("analytics.batch_size", "must be at least 1"));
    }
    let flush_interval = Duration::from_millis(raw.flush_interval_ms.unwrap_or(25));
    if flush_interval > Duration::from_secs(10) {
        return Err(invalid(
            "analytics.flush_interval_ms",
            "must be at most 10000 (rows wait this long before they are written)",
        ));
    }
    Ok(AnalyticsSettings {
        enabled: raw.enabled.unwrap_or(true),
        data_dir: PathBuf::from(data_dir),
        queue_size,
        batch_size,
        flush_interval,
    })
}

fn env_bool(
    lookup: &dyn Fn(&str) -> Option<String>,
    var: &str,
) -> Result<Option<bool>, ConfigError> {
    match env_value(lookup, var) {
        None => Ok(None),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "0" | "false" | "no" | "off" => Ok(Some(false)),
            _ => Err(invalid(
                format!("environment variable {var}"),
                format!("`{v}` is not true or false"),
            )),
        },
    }
}

/// Validates `rate_limits`; `ENABLE_RATE_LIMITING` and `MAX_REQUESTS_PER_MINUTE` win
/// over the file. Enabled without a number means the original's 60 requests/minute.
pub fn rate_limits(
    raw: Option<RawRateLimits>,
    redis_url: Option<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<RateLimitSettings, ConfigError> {
    let raw = raw.unwrap_or_default();
    let env_rpm = match env_value(lookup, "MAX_REQUESTS_PER_MINUTE") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            invalid(
                "environment variable MAX_REQUESTS_PER_MINUTE",
                format!("`{v}` is not a whole number"),
            )
        })?),
    };
    let enabled = env_bool(lookup, "ENABLE_RATE_LIMITING")?
        .or(raw.enabled)
        .unwrap_or(false);
    let mut requests_per_minute = env_rpm.or(raw.requests_per_minute);
    if enabled && requests_per_minute.is_none() && raw.tokens_per_minute.is_none() {
        requests_per_minute = Some(60);
    }
    for (value, path) in [
        (requests_per_minute, "rate_limits.requests_per_minute"),
        (raw.tokens_per_minute, "rate_limits.tokens_per_minute"),
    ] {
        if value == Some(0) {
            return Err(invalid(path, "must be at least 1 (omit it for no limit)"));
        }
    }
    let redis_url = env_value(lookup, "REDIS_URL").or(redis_url);
    if let Some(u) = &redis_url {
        if !(u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("unix://")) {
            return Err(invalid(
                "general_settings.redis_url",
                "must be a redis://, rediss:// or unix:// URL",
            ));
        }
    }
    Ok(RateLimitSettings {
        enabled,
        requests_per_minute,
        tokens_per_minute: raw.tokens_per_minute,
        redis_url: redis_url.map(crate::config::Secret::new),
        redis_prefix: raw.redis_prefix.unwrap_or_else(|| "memproxy:".into()),
        fail_open: raw.fail_open.unwrap_or(true),
    })
}

/// Validates `observability`; the standard OpenTelemetry variables win over the file.
pub fn observability(
    raw: Option<RawObservability>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<ObservabilitySettings, ConfigError> {
    let raw = raw.unwrap_or_default();
    let otlp_endpoint = env_value(lookup, "OTEL_EXPORTER_OTLP_ENDPOINT")
        .or(raw.otlp_endpoint)
        .map(|e| e.trim_end_matches('/').to_string());
    if let Some(e) = &otlp_endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(invalid(
                "observability.otlp_endpoint",
                format!("`{e}` is not an http(s) URL (OTLP over HTTP is supported)"),
            ));
        }
    }
    Ok(ObservabilitySettings {
        otlp_endpoint,
        service_name: env_value(lookup, "OTEL_SERVICE_NAME")
            .or(raw.service_name)
            .unwrap_or_else(|| "memproxy".into()),
        metrics_require_auth: raw.require_auth_for_metrics_endpoint.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn original_rate_limit_variables_win_over_the_file() {
        let raw = || {
            Some(RawRateLimits {
                enabled: Some(false),
                requests_per_minute: Some(10),
                tokens_per_minute: None,
                ..Default::default()
            })
        };
        let s = rate_limits(raw(), None, &env(&[])).unwrap();
        assert!(!s.enabled);
        let s = rate_limits(
            raw(),
            None,
            &env(&[
                ("ENABLE_RATE_LIMITING", "true"),
                ("MAX_REQUESTS_PER_MINUTE", "5"),
            ]),
        )
        .unwrap();
        assert!(s.enabled);
        assert_eq!(s.requests_per_minute, Some(5));
        let s = rate_limits(None, None, &env(&[("ENABLE_RATE_LIMITING", "1")])).unwrap();
        assert_eq!(s.requests_per_minute, Some(60));
        assert!(rate_limits(None, None, &env(&[("MAX_REQUESTS_PER_MINUTE", "x")])).is_err());
        assert!(rate_limits(None, None, &env(&[("ENABLE_RATE_LIMITING", "maybe")])).is_err());
    }

    #[test]
    fn data_dir_precedence() {
        let a = analytics(None, None, Some("/file".into()), &env(&[])).unwrap();
        assert_eq!(a.data_dir, PathBuf::from("/file"));
        let a = analytics(
            None,
            None,
            Some("/file".into()),
            &env(&[("MEMPROXY_DATA_DIR", "/env")]),
        )
        .unwrap();
        assert_eq!(a.data_dir, PathBuf::from("/env"));
        let a = analytics(
            None,
            Some("/flag"),
            None,
            &env(&[("MEMPROXY_DATA_DIR", "/env")]),
        )
        .unwrap();
        assert_eq!(a.data_dir, PathBuf::from("/flag"));
        assert!(a.enabled);
    }
}
