//! Configuration: LiteLLM's `config.yaml` schema (plus memproxy's own sections), the
//! built-in offline defaults, `os.environ/NAME` references, and the precedence
//! CLI flags > environment variables > file > defaults.
//!
//! Parsing happens in [`raw`]; [`load`] resolves environment references, warns about
//! unknown keys (naming their path), and validates everything into [`Config`], failing at
//! start-up with the config path of whatever is wrong.

mod deployments;
mod env;
mod memory;
mod ops;
mod raw;
mod secret;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use regex::{Regex, RegexBuilder};
use serde::Serialize;
use serde_json::Value;

pub use memory::{
    EmbedderFallback, EmbedderKind, InjectionStrategy, MemoryBackend, MemorySettings, ProjectScope,
    QueryStrategy, RetrievalSettings, SupermemorySettings, ToolSettings, DEFAULT_DATA_DIR,
    SUPERMEMORY_BASE_URL,
};
pub use ops::{AnalyticsSettings, ObservabilitySettings, RateLimitSettings, DEFAULT_OPS_DATA_DIR};
pub use secret::Secret;

use crate::identity::{validate_user_id, HeaderPattern, IdentityConfig};
use deployments::deployment;
use raw::RawConfig;

/// Default port, as the original proxy's `PROXY_PORT`.
pub const DEFAULT_PORT: u16 = 8764;
/// Default request body limit: 32 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// How long open streams may go on after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default upstream timeout (LiteLLM's router default).
pub const DEFAULT_TIMEOUT_SECS: f64 = 600.0;

/// The configuration used when no file is given: works offline, no key needed.
pub const BUILTIN_CONFIG: &str = r#"
model_list:
  - model_name: mock
    litellm_params:
      model: openai/mock
      mock_response: "Hello from memproxy! This answer comes from the built-in mock model; add your providers to a config.yaml to talk to real models."
  - model_name: gpt-4o-mini-mock
    litellm_params:
      model: openai/gpt-4o-mini
      mock_response: "Hello from memproxy's mock gpt-4o-mini."
"#;

/// Why a configuration could not be used. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid YAML: {message}")]
    Yaml { path: String, message: String },
    #[error("environment variable {var} is not set (referenced as os.environ/{var} at {path})")]
    MissingEnv { var: String, path: String },
    #[error("invalid config at {path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// Async worker threads by default: one per CPU but one, at least one. memproxy has
/// threads of its own besides (log, analytics and store writers, the blocking pool that
/// runs memory searches) and usually shares the machine with its clients. Measured on 2
/// cores with the load generator and the mock upstream on the same machine (50
/// connections, memory off): one worker used 22.5-23.1 µs of CPU per request where two
/// used 24.0-25.0 µs (fewer cross-thread wake-ups), and served more requests per second.
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// Values given on the command line or in environment variables; they win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub upstream: Option<String>,
    pub master_key: Option<String>,
    /// Memory data directory (`--data-dir`).
    pub data_dir: Option<String>,
    /// Async worker threads (`--workers`, `MEMPROXY_WORKER_THREADS`).
    pub worker_threads: Option<usize>,
}

/// The fully resolved configuration the server runs with.
#[derive(Debug, Serialize)]
pub struct Config {
    pub server: ServerSettings,
    /// The admin key; when absent, requests are not authenticated (loopback only).
    pub master_key: Option<Secret<String>>,
    /// Where durable state is kept: a `postgres://` URL (`DATABASE_URL`, else
    /// `general_settings.database_url`); absent means the embedded SQLite files in the
    /// data dir.
    pub database_url: Option<Secret<String>>,
    pub models: Vec<DeploymentConfig>,
    pub router: RouterSettings,
    pub identity: IdentityConfig,
    /// Drop request fields a provider does not accept (LiteLLM's `drop_params`).
    pub drop_params: bool,
    /// `analytics`: the usage databank (also holds virtual keys).
    pub analytics: AnalyticsSettings,
    /// `rate_limits`: per-user token buckets.
    pub rate_limits: RateLimitSettings,
    /// `observability`: OTLP traces, `/metrics`.
    pub observability: ObservabilitySettings,
    /// `context_retrieval`: memory search and injection before model calls.
    pub retrieval: RetrievalSettings,
    /// `tool_execution`: memory tools the model calls, run by memproxy.
    pub tool_execution: ToolSettings,
    /// `memory`: store, sessions, write queue.
    pub memory: MemorySettings,
    /// Sent as `x-supermemory-api-key` to Supermemory routers (`SUPERMEMORY_API_KEY`).
    pub supermemory_api_key: Option<Secret<String>>,
    /// `model_list` entries that cannot be served, with the reason (also in `warnings`).
    pub skipped: Vec<SkippedDeployment>,
    /// Warnings found while loading (unknown keys, unsupported providers).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// A `model_list` entry left out of the served models, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedDeployment {
    /// Its position in `model_list`.
    pub index: usize,
    pub model_name: String,
    pub reason: String,
}

/// Where and how the HTTP server listens.
#[derive(Debug, Serialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// Request bodies above this size get 413.
    pub max_body_bytes: usize,
    /// Threads of the async runtime that serves requests (see [`default_worker_threads`]).
    pub worker_threads: usize,
    /// After a shutdown signal, how long open streams may go on before they are ended
    /// with an error event.
    #[serde(serialize_with = "ser_secs")]
    pub shutdown_grace: Duration,
    /// Upstream mode: forward every model request to this OpenAI-compatible gateway.
    pub upstream: Option<String>,
    /// Key sent to the upstream gateway in upstream mode.
    pub upstream_api_key: Option<Secret<String>>,
}

/// Retries, timeouts and fallbacks across deployments (LiteLLM's `router_settings`).
#[derive(Debug, Serialize)]
pub struct RouterSettings {
    /// Extra attempts after a retryable failure (429, 5xx, connect error, timeout).
    pub num_retries: u32,
    /// Upstream timeout when a deployment sets none.
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
    /// Pause before a retry.
    #[serde(serialize_with = "ser_secs")]
    pub retry_after: Duration,
    /// model_name → model names tried in order once its own deployments failed.
    pub fallbacks: BTreeMap<String, Vec<String>>,
}

/// The wire protocol a deployment speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI or any OpenAI-compatible server (vLLM, Ollama, LM Studio, LiteLLM).
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    Gemini,
    /// Azure OpenAI (`azure/`) and Azure AI Foundry (`azure_ai/`).
    Azure,
    /// AWS Bedrock (Converse API, SigV4).
    Bedrock,
    /// Google Vertex AI (Gemini and Anthropic models, service-account OAuth).
    VertexAi,
    /// Ollama's native `/api/chat` (NDJSON streams).
    Ollama,
    /// A provider memproxy does not speak; requests to it get 501.
    Unsupported(String),
}

/// One entry of `model_list`: a deployment clients reach by `model_name`.
#[derive(Debug, Serialize)]
pub struct DeploymentConfig {
    /// The name clients send (may contain `*` wildcards, as in LiteLLM).
    pub model_name: String,
    /// The wire family the deployment speaks.
    pub provider: ProviderKind,
    /// The LiteLLM provider prefix as written (`mistral`, `azure_ai`, `bedrock`, …), for
    /// usage rows and messages.
    pub provider_name: String,
    /// The model name sent upstream (may contain `*`, replaced by the wildcard match).
    pub upstream_model: String,
    pub api_base: String,
    pub api_key: Option<Secret<String>>,
    /// Answer offline with this text instead of calling any upstream.
    pub mock_response: Option<String>,
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
    /// Per-deployment retry count, overriding `router_settings.num_retries`.
    pub max_retries: Option<u32>,
    /// Load-balancing weight (LiteLLM's `weight`, else `rpm`, else 1).
    pub weight: f64,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub api_version: Option<String>,
    pub extra_headers: BTreeMap<String, String>,
    /// Endpoints the deployment serves natively (LiteLLM `model_info.supported_endpoints`).
    pub supported_endpoints: Option<Vec<String>>,
    /// Price overrides (LiteLLM `model_info`), USD per token; else the built-in table.
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    /// USD per cached prompt token (LiteLLM `model_info.cache_read_input_token_cost`).
    pub cache_read_input_token_cost: Option<f64>,
    /// The api_base is a Supermemory router: memory is handled there, not injected here.
    pub supermemory_router: bool,
    /// The single upstream of upstream mode (`--upstream`): every model goes there, with
    /// the client's own key when none is configured.
    pub upstream_mode: bool,
    /// Drop OpenAI parameters this provider cannot express instead of refusing the
    /// request (`litellm_params.drop_params`, else `litellm_settings.drop_params`).
    pub drop_params: bool,
    /// Every `litellm_params` member as written, env references resolved, plus the
    /// standard environment variables of its provider (`AWS_REGION`, `VERTEXAI_PROJECT`,
    /// …): provider-specific settings (credentials, regions) that only a provider reads.
    pub params: Secret<serde_json::Map<String, Value>>,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Config {
    /// True when the server would listen on a loopback address only.
    pub fn is_loopback(&self) -> bool {
        let host = self
            .server
            .host
            .trim_start_matches('[')
            .trim_end_matches(']');
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// Checks that the server may start as configured.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if self.master_key.is_none() && !self.is_loopback() {
            return Err(invalid(
                "general_settings.master_key",
                format!(
                    "refusing to listen on {} without a master key: anyone on the network could use \
                     your providers and read every user's memory. Set general_settings.master_key \
                     (e.g. `master_key: os.environ/LITELLM_MASTER_KEY`), or pass --master-key / \
                     LITELLM_MASTER_KEY, or bind to 127.0.0.1",
                    self.server.host
                ),
            ));
        }
        Ok(())
    }
}

/// Loads `path` (or the built-in defaults when `None`), resolves `os.environ/` references
/// through `lookup`, applies `overrides`, and validates.
pub fn load(
    path: Option<&str>,
    overrides: &Overrides,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let (text, origin) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_string(),
                source,
            })?,
            p.to_string(),
        ),
        None => (
            BUILTIN_CONFIG.to_string(),
            "(built-in defaults)".to_string(),
        ),
    };
    parse(&text, &origin, overrides, lookup)
}

/// Like [`load`], from YAML text; `origin` names it in errors.
pub fn parse(
    text: &str,
    origin: &str,
    overrides: &Overrides,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut tree: Value = if text.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml {
            path: origin.to_string(),
            message: e.to_string(),
        })?
    };
    if tree.is_null() {
        tree = Value::Object(Default::default());
    }
    env::resolve(&mut tree, lookup)?;

    let mut warnings = Vec::new();
    let raw: RawConfig = {
        let mut on_unknown = |path: serde_ignored::Path<'_>| {
            // Optional sections show as `?` segments; they are not part of the key.
            let path = path.to_string();
            let key: Vec<&str> = path.split('.').filter(|s| *s != "?").collect();
            // Provider-specific litellm_params keys are read by the providers.
            if let ["model_list", _, "litellm_params", name] = key.as_slice() {
                if raw::PROVIDER_PARAM_KEYS.contains(name) {
                    return;
                }
            }
            let key = key.join(".");
            if !warnings
                .iter()
                .any(|w: &String| w.contains(&format!("`{key}`")))
            {
                warnings.push(format!("unknown config key `{key}` ignored"));
            }
        };
        let de = serde_ignored::Deserializer::new(&tree, &mut on_unknown);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            invalid(path, e.into_inner().to_string())
        })?
    };
    let mut raw = raw;
    if let Some(Value::Array(list)) = tree.get_mut("model_list") {
        for (m, entry) in raw.model_list.iter_mut().zip(list.iter_mut()) {
            if let Some(Value::Object(params)) = entry.get_mut("litellm_params").map(Value::take) {
                m.params = params;
            }
        }
    }
    validate(raw, overrides, lookup, warnings)
}

fn secs(v: f64, path: &str) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| invalid(path, "must be a non-negative number of seconds"))
}

fn validate(
    raw: RawConfig,
    overrides: &Overrides,
    lookup: &dyn Fn(&str) -> Option<String>,
    mut warnings: Vec<String>,
) -> Result<Config, ConfigError> {
    let router = RouterSettings {
        num_retries: raw
            .router_settings
            .num_retries
            .or(raw.litellm_settings.num_retries)
            .unwrap_or(2),
        timeout: secs(
            raw.router_settings
                .timeout
                .or(raw.litellm_settings.request_timeout)
                .unwrap_or(DEFAULT_TIMEOUT_SECS),
            "router_settings.timeout",
        )?,
        retry_after: secs(
            raw.router_settings.retry_after.unwrap_or(0.0),
            "router_settings.retry_after",
        )?,
        fallbacks: raw
            .router_settings
            .fallbacks
            .clone()
            .or(raw.litellm_settings.fallbacks)
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect(),
    };
    if let Some(strategy) = &raw.router_settings.routing_strategy {
        if strategy != "simple-shuffle" {
            warnings.push(format!(
                "router_settings.routing_strategy `{strategy}` is not supported; using simple-shuffle"
            ));
        }
    }

    let listed = raw.model_list.len();
    let mut models = Vec::with_capacity(listed);
    let mut skipped = Vec::new();
    for (i, m) in raw.model_list.into_iter().enumerate() {
        let name = m.model_name.clone();
        match deployment(i, m, &router, lookup, &mut warnings) {
            Ok(mut dep) => {
                dep.drop_params =
                    dep.drop_params || raw.litellm_settings.drop_params.unwrap_or(false);
                models.push(dep);
            }
            Err(reason) => {
                warnings.push(format!("model_list[{i}] (`{name}`) is skipped: {reason}"));
                skipped.push(SkippedDeployment {
                    index: i,
                    model_name: name,
                    reason,
                });
            }
        }
    }
    if listed > 0
        && models.is_empty()
        && raw.server.upstream.is_none()
        && overrides.upstream.is_none()
    {
        return Err(invalid(
            "model_list",
            format!(
                "none of its {listed} entries can be served ({})",
                skipped
                    .iter()
                    .map(|s| format!("`{}`: {}", s.model_name, s.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ));
    }
    for (from, to) in &router.fallbacks {
        for name in std::iter::once(from).chain(to) {
            if !models.iter().any(|m| m.model_name == *name) {
                warnings.push(format!(
                    "router_settings.fallbacks names model `{name}` which is not in model_list"
                ));
            }
        }
    }

    let identity = identity_config(raw.user_id_mappings)?;

    let max_body_bytes = match (
        raw.server.max_body_bytes,
        raw.general_settings.max_request_size_mb,
    ) {
        (Some(b), _) => b,
        (None, Some(mb)) if mb > 0.0 => (mb * 1024.0 * 1024.0) as usize,
        _ => DEFAULT_MAX_BODY_BYTES,
    };
    let worker_threads = overrides
        .worker_threads
        .or(raw.server.worker_threads)
        .unwrap_or_else(default_worker_threads);
    if worker_threads == 0 {
        return Err(invalid("server.worker_threads", "must be at least 1"));
    }
    let shutdown_grace = match raw.server.shutdown_grace_seconds {
        None => DEFAULT_SHUTDOWN_GRACE,
        Some(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Duration::from_secs_f64(s),
        Some(_) => {
            return Err(invalid(
                "server.shutdown_grace_seconds",
                "must be between 0 and 86400",
            ))
        }
    };
    let server = ServerSettings {
        shutdown_grace,
        host: overrides
            .host
            .clone()
            .or(raw.server.host)
            .unwrap_or_else(|| "127.0.0.1".into()),
        port: overrides.port.or(raw.server.port).unwrap_or(DEFAULT_PORT),
        max_body_bytes,
        worker_threads,
        upstream: overrides
            .upstream
            .clone()
            .or(raw.server.upstream)
            .map(|u| u.trim_end_matches('/').to_string()),
        upstream_api_key: raw
            .server
            .upstream_api_key
            .or_else(|| lookup("LITELLM_API_KEY"))
            .map(Secret::new),
    };
    if let Some(u) = &server.upstream {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(invalid(
                "server.upstream",
                format!("`{u}` is not an http(s) URL"),
            ));
        }
    }
    let master_key = overrides
        .master_key
        .clone()
        .or(raw.general_settings.master_key)
        .filter(|k| !k.is_empty())
        .map(Secret::new);

    let retrieval = memory::retrieval(raw.context_retrieval)?;
    let tool_execution = memory::tool_execution(raw.tool_execution, &mut warnings)?;
    let memory_backend_given = raw.memory.as_ref().and_then(|m| m.backend.clone());
    let mut memory = memory::memory(
        raw.memory,
        overrides.data_dir.as_deref(),
        &models,
        lookup,
        &mut warnings,
    )?;
    if tool_execution.enabled && !memory.enabled {
        warnings.push(
            "tool_execution is enabled but memory is disabled (memory.enabled: false); the \
             memory tools are off"
                .into(),
        );
    }
    let database_url = database_url(raw.general_settings.database_url, lookup)?;
    if database_url.is_some() && memory_backend_given.is_none() {
        memory.backend = MemoryBackend::Postgres;
    }
    if memory.backend == MemoryBackend::Postgres && database_url.is_none() {
        return Err(invalid(
            "memory.backend",
            "`postgres` needs general_settings.database_url (or DATABASE_URL) set to a \
             postgres:// URL",
        ));
    }

    let analytics = ops::analytics(
        raw.analytics,
        overrides.data_dir.as_deref(),
        raw.general_settings.data_dir,
        lookup,
    )?;
    let redis_url = raw.general_settings.redis_url.clone().or_else(|| {
        let r = &raw.router_settings;
        r.redis_host.as_ref().filter(|h| !h.is_empty()).map(|host| {
            let port = match &r.redis_port {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => "6379".into(),
            };
            match r.redis_password.as_deref().filter(|p| !p.is_empty()) {
                Some(pw) => format!("redis://:{pw}@{host}:{port}"),
                None => format!("redis://{host}:{port}"),
            }
        })
    });
    let rate_limits = ops::rate_limits(raw.rate_limits, redis_url, lookup)?;
    let observability = ops::observability(raw.observability, lookup)?;

    Ok(Config {
        server,
        master_key,
        database_url: database_url.map(Secret::new),
        models,
        router,
        identity,
        drop_params: raw.litellm_settings.drop_params.unwrap_or(false),
        analytics,
        rate_limits,
        observability,
        retrieval,
        tool_execution,
        memory,
        supermemory_api_key: lookup("SUPERMEMORY_API_KEY")
            .filter(|k| !k.is_empty())
            .map(Secret::new),
        skipped,
        warnings,
    })
}

/// `DATABASE_URL`, else `general_settings.database_url`; it must name PostgreSQL.
fn database_url(
    configured: Option<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    let (url, path) = match lookup("DATABASE_URL").filter(|v| !v.trim().is_empty()) {
        Some(v) => (Some(v), "environment variable DATABASE_URL"),
        None => (configured, "general_settings.database_url"),
    };
    let Some(url) = url.map(|u| u.trim().to_string()).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid(
            path,
            "must be a postgres:// or postgresql:// URL (leave it out for the embedded store)",
        ));
    }
    Ok(Some(url))
}

/// Built-in client patterns, used when the config has no `header_patterns`.
const BUILTIN_PATTERNS: &[(&str, &str, &str)] = &[
    ("user-agent", "OpenAIClientImpl/Java", "pycharm-ai"),
    ("user-agent", "^Claude Code|claude-cli", "claude-code"),
    ("user-agent", "^codex_(exec|cli_rs)", "codex"),
];

fn compile(pattern: &str, path: &str) -> Result<Regex, ConfigError> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| invalid(path, format!("invalid regex `{pattern}`: {e}")))
}

fn header_name(name: &str, path: &str) -> Result<axum::http::HeaderName, ConfigError> {
    axum::http::HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
        .map_err(|_| invalid(path, format!("`{name}` is not a valid header name")))
}

fn identity_config(raw: Option<raw::RawUserIdMappings>) -> Result<IdentityConfig, ConfigError> {
    let raw = raw.unwrap_or(raw::RawUserIdMappings {
        custom_header: None,
        header_patterns: None,
        default_user_id: None,
    });
    let custom_header = header_name(
        raw.custom_header.as_deref().unwrap_or("x-memory-user-id"),
        "user_id_mappings.custom_header",
    )?;
    let patterns = match raw.header_patterns {
        Some(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let at = format!("user_id_mappings.header_patterns[{i}]");
                validate_user_id(&p.user_id)
                    .map_err(|e| invalid(format!("{at}.user_id"), e.to_string()))?;
                Ok(HeaderPattern {
                    header: header_name(&p.header, &format!("{at}.header"))?,
                    regex: compile(&p.pattern, &format!("{at}.pattern"))?,
                    user_id: p.user_id,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?,
        None => BUILTIN_PATTERNS
            .iter()
            .map(|(h, p, u)| {
                Ok(HeaderPattern {
                    header: header_name(h, "builtin")?,
                    regex: compile(p, "builtin")?,
                    user_id: (*u).to_string(),
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?,
    };
    let default_user_id = raw.default_user_id.unwrap_or_else(|| "default-dev".into());
    validate_user_id(&default_user_id)
        .map_err(|e| invalid("user_id_mappings.default_user_id", e.to_string()))?;
    Ok(IdentityConfig {
        custom_header,
        patterns,
        default_user_id,
    })
}

#[cfg(test)]
mod tests;
