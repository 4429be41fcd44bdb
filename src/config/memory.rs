//! The memory sections: `context_retrieval` (retrieval and injection) and
//! `tool_execution` (the memory tools), both with the original proxy's names, and
//! `memory` (store, sessions, write queue), with the environment variables
//! `MEMORY_TTL_SECONDS`, `MAX_CONTEXT_MESSAGES` and `MEMPROXY_DATA_DIR`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use crate::memory::scope::ProjectScope;

use super::raw::{RawContextRetrieval, RawMemory, RawSupermemory, RawToolExecution};
use super::secret::Secret;
use super::{invalid, ser_secs, ConfigError, DeploymentConfig};

/// Default data directory (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "./data";

/// `memory.max_memories_per_user` unless set: enough for years of daily use, small enough
/// that one user cannot fill the disk.
pub const DEFAULT_MAX_MEMORIES_PER_USER: u64 = 1_000_000;

/// Which message text the memory search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryStrategy {
    /// The last user message (default).
    LastUser,
    /// The first user message (the conversation's topic).
    FirstUser,
    /// All user messages joined.
    AllUser,
    /// The last assistant message (the last user message when there is none).
    LastAssistant,
}

/// Where found memories go in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectionStrategy {
    /// Prepended to the system message, or a new system message (default).
    System,
    /// Before the last user message's text.
    UserPrefix,
    /// After the last user message's text.
    UserSuffix,
}

/// `context_retrieval`: searching a user's memories before each model call.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalSettings {
    /// Off when the section is absent; on by default when it is present.
    pub enabled: bool,
    pub query_strategy: QueryStrategy,
    pub injection_strategy: InjectionStrategy,
    /// Memories injected at most.
    pub max_results: usize,
    /// Characters of memory text injected at most.
    pub max_context_length: usize,
    /// Models that get memories (`*` wildcards allowed); empty means all.
    pub enabled_for_models: Vec<String>,
    /// Where a request with a project looks for memories.
    pub project_scope: ProjectScope,
}

/// `tool_execution`: the memory tools (`memory_search`, `memory_get`) offered to the
/// model, whose calls memproxy runs itself, round after round.
#[derive(Debug, Clone, Serialize)]
pub struct ToolSettings {
    /// Off when the section is absent; on by default when it is present.
    pub enabled: bool,
    /// Rounds of memory tool calls at most; then one last call must answer in text.
    pub max_iterations: u32,
    /// Longest wait for one tool call (each of its attempts).
    #[serde(serialize_with = "ser_secs")]
    pub timeout_per_tool: Duration,
    /// Models that get the tools (`*` wildcards allowed); empty means all.
    pub enabled_for_models: Vec<String>,
}

/// The store behind memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryBackend {
    /// A SQLite file in `data_dir`; no server.
    Embedded,
    /// The PostgreSQL database of `database_url` (the default when one is set).
    Postgres,
    /// The hosted Supermemory API (`memory.supermemory`); sessions stay embedded.
    Supermemory,
}

/// Default Supermemory API.
pub const SUPERMEMORY_BASE_URL: &str = "https://api.supermemory.ai";

/// `memory.supermemory`: where and how the Supermemory backend is reached.
#[derive(Debug, Clone, Serialize)]
pub struct SupermemorySettings {
    /// `SUPERMEMORY_API_KEY` (or `memory.supermemory.api_key`).
    pub api_key: Secret<String>,
    /// `SUPERMEMORY_BASE_URL` (or `memory.supermemory.base_url`), without a trailing `/`.
    pub base_url: String,
    /// Longest wait for one Supermemory call.
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
}

/// Where memory's vectors come from (`memory.embedder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedderKind {
    /// The built-in static model (weights from `scripts/fetch-model.sh`); the default
    /// without `embedding_model`.
    Builtin,
    /// The `/embeddings` of `memory.embedding_model` (the default when that is set).
    External,
    /// No vectors: lexical retrieval only.
    None,
}

/// What start-up does when the built-in model's weights are missing or corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedderFallback {
    /// Retrieve lexically, with a loud warning (the default).
    Lexical,
    /// Refuse to start, naming the fix.
    Fail,
}

/// `memory`: where and how memories and sessions are kept.
#[derive(Debug, Clone, Serialize)]
pub struct MemorySettings {
    /// Off: no store is opened, nothing is captured, the memory API answers 503.
    pub enabled: bool,
    /// Store completed exchanges (the new user message and the answer).
    pub capture: bool,
    pub backend: MemoryBackend,
    /// Holds `memproxy.db` (`MEMPROXY_DATA_DIR`, `--data-dir`).
    pub data_dir: PathBuf,
    /// A `model_list` name whose `/embeddings` give semantic ranking; none → lexical only.
    pub embedding_model: Option<String>,
    /// Where vectors come from: the built-in model, `embedding_model`, or nowhere.
    pub embedder: EmbedderKind,
    /// The built-in model's directory (default: `$MEMPROXY_MODEL_DIR`, else the cache
    /// that `scripts/fetch-model.sh` writes).
    pub embedder_path: PathBuf,
    /// Missing or corrupt built-in weights: lexical retrieval with a warning, or no start.
    pub embedder_fallback: EmbedderFallback,
    /// Sessions unused this long expire (`MEMORY_TTL_SECONDS`); 0 = never.
    #[serde(serialize_with = "ser_secs")]
    pub session_ttl: Duration,
    /// Session messages kept and prepended at most (`MAX_CONTEXT_MESSAGES`).
    pub max_context_messages: usize,
    /// Memories one user may keep, their projects' included (0: no limit). Past it an
    /// explicit add is refused (403) and captures are skipped (counted in /metrics).
    pub max_memories_per_user: u64,
    /// Captured writes waiting at most before new ones are dropped.
    pub queue_size: usize,
    /// Writes committed in one transaction at most.
    pub batch_size: usize,
    /// Longest wait for the embedding model (queries fall back to lexical after it).
    #[serde(serialize_with = "ser_secs")]
    pub embed_timeout: Duration,
    /// Present when `backend` is `supermemory`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supermemory: Option<SupermemorySettings>,
}

fn env_number<T: std::str::FromStr>(
    lookup: &dyn Fn(&str) -> Option<String>,
    var: &str,
) -> Result<Option<T>, ConfigError> {
    match lookup(var).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            invalid(
                format!("environment variable {var}"),
                format!("`{v}` is not a valid number"),
            )
        }),
    }
}

fn secs(v: f64, path: &str) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| invalid(path, "must be a non-negative number of seconds"))
}

fn query_strategy(s: &str) -> Result<QueryStrategy, ConfigError> {
    Ok(match s {
        "last_user" => QueryStrategy::LastUser,
        "first_user" => QueryStrategy::FirstUser,
        "all_user" => QueryStrategy::AllUser,
        "last_assistant" => QueryStrategy::LastAssistant,
        _ => {
            return Err(invalid(
                "context_retrieval.query_strategy",
                format!("`{s}` is not one of last_user, first_user, all_user, last_assistant"),
            ))
        }
    })
}

fn injection_strategy(s: &str) -> Result<InjectionStrategy, ConfigError> {
    Ok(match s {
        "system" => InjectionStrategy::System,
        "user_prefix" => InjectionStrategy::UserPrefix,
        "user_suffix" => InjectionStrategy::UserSuffix,
        _ => {
            return Err(invalid(
                "context_retrieval.injection_strategy",
                format!("`{s}` is not one of system, user_prefix, user_suffix"),
            ))
        }
    })
}

/// Validates `context_retrieval`.
pub fn retrieval(raw: Option<RawContextRetrieval>) -> Result<RetrievalSettings, ConfigError> {
    let present = raw.is_some();
    let raw = raw.unwrap_or_default();
    let max_results = raw.max_results.unwrap_or(5);
    if max_results == 0 {
        return Err(invalid(
            "context_retrieval.max_results",
            "must be at least 1",
        ));
    }
    let max_context_length = raw.max_context_length.unwrap_or(4000);
    if max_context_length == 0 {
        return Err(invalid(
            "context_retrieval.max_context_length",
            "must be at least 1",
        ));
    }
    Ok(RetrievalSettings {
        enabled: raw.enabled.unwrap_or(present),
        query_strategy: query_strategy(raw.query_strategy.as_deref().unwrap_or("last_user"))?,
        injection_strategy: injection_strategy(
            raw.injection_strategy.as_deref().unwrap_or("system"),
        )?,
        max_results,
        max_context_length,
        enabled_for_models: raw.enabled_for_models.unwrap_or_default(),
        project_scope: match raw.project_scope.as_deref() {
            None | Some("project_then_user") => ProjectScope::ProjectThenUser,
            Some("project_only") => ProjectScope::ProjectOnly,
            Some(other) => {
                return Err(invalid(
                    "context_retrieval.project_scope",
                    format!("`{other}` is not one of project_then_user, project_only"),
                ))
            }
        },
    })
}

/// Validates `tool_execution`.
pub fn tool_execution(
    raw: Option<RawToolExecution>,
    warnings: &mut Vec<String>,
) -> Result<ToolSettings, ConfigError> {
    let present = raw.is_some();
    let raw = raw.unwrap_or_default();
    let max_iterations = raw.max_iterations.unwrap_or(10);
    if max_iterations == 0 {
        return Err(invalid(
            "tool_execution.max_iterations",
            "must be at least 1 (use `enabled: false` to turn the tools off)",
        ));
    }
    let timeout_per_tool = secs(
        raw.timeout_per_tool.unwrap_or(30.0),
        "tool_execution.timeout_per_tool",
    )?;
    if timeout_per_tool.is_zero() {
        return Err(invalid(
            "tool_execution.timeout_per_tool",
            "must be more than 0 seconds",
        ));
    }
    if raw.supermemory_api_key.is_some() {
        warnings.push(
            "tool_execution.supermemory_api_key is not used: the memory tools search \
             memproxy's own memory store"
                .into(),
        );
    }
    Ok(ToolSettings {
        enabled: raw.enabled.unwrap_or(present),
        max_iterations,
        timeout_per_tool,
        enabled_for_models: raw.enabled_for_models.unwrap_or_default(),
    })
}

/// Validates `memory`; `data_dir_override` is the `--data-dir` flag.
pub fn memory(
    raw: Option<RawMemory>,
    data_dir_override: Option<&str>,
    models: &[DeploymentConfig],
    lookup: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<MemorySettings, ConfigError> {
    let raw = raw.unwrap_or_default();
    let backend = match raw.backend.as_deref().unwrap_or("embedded") {
        "embedded" | "sqlite" => MemoryBackend::Embedded,
        "postgres" | "postgresql" => MemoryBackend::Postgres,
        "supermemory" => MemoryBackend::Supermemory,
        other => {
            return Err(invalid(
                "memory.backend",
                format!("`{other}` is not one of embedded, postgres, supermemory"),
            ))
        }
    };
    let data_dir = data_dir_override
        .map(str::to_string)
        .or_else(|| lookup("MEMPROXY_DATA_DIR").filter(|v| !v.trim().is_empty()))
        .or(raw.data_dir)
        .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string());
    let ttl = match env_number::<f64>(lookup, "MEMORY_TTL_SECONDS")? {
        Some(v) => secs(v, "environment variable MEMORY_TTL_SECONDS")?,
        None => secs(raw.ttl_seconds.unwrap_or(86_400.0), "memory.ttl_seconds")?,
    };
    let max_context_messages = env_number::<usize>(lookup, "MAX_CONTEXT_MESSAGES")?
        .or(raw.max_context_messages)
        .unwrap_or(20);
    if let Some(m) = &raw.embedding_model {
        if !models.iter().any(|d| d.model_name == *m) {
            return Err(invalid(
                "memory.embedding_model",
                format!("`{m}` is not a model_name of model_list"),
            ));
        }
    }
    let embedder = match raw.embedder.as_deref() {
        None if raw.embedding_model.is_some() => EmbedderKind::External,
        // Hybrid by default: the built-in model (with lexical retrieval and a loud warning
        // while its weights are missing, unless `embedder_fallback: fail`).
        None | Some("builtin") => EmbedderKind::Builtin,
        Some("external") => EmbedderKind::External,
        Some("none") => EmbedderKind::None,
        Some(other) => {
            return Err(invalid(
                "memory.embedder",
                format!("`{other}` is not one of builtin, external, none"),
            ))
        }
    };
    if embedder == EmbedderKind::External && raw.embedding_model.is_none() {
        return Err(invalid(
            "memory.embedder",
            "`external` needs memory.embedding_model (a model_name of model_list)",
        ));
    }
    let embedder_fallback = match raw.embedder_fallback.as_deref().unwrap_or("lexical") {
        "lexical" => EmbedderFallback::Lexical,
        "fail" => EmbedderFallback::Fail,
        other => {
            return Err(invalid(
                "memory.embedder_fallback",
                format!("`{other}` is not one of lexical, fail"),
            ))
        }
    };
    let embedder_path = raw
        .embedder_path
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::memory::embed::default_dir(lookup));
    let queue_size = raw.queue_size.unwrap_or(10_000);
    let batch_size = raw.batch_size.unwrap_or(256);
    if queue_size == 0 || batch_size == 0 {
        return Err(invalid(
            "memory.queue_size",
            "queue_size and batch_size must be at least 1",
        ));
    }
    let supermemory = match backend {
        MemoryBackend::Supermemory => {
            Some(supermemory(raw.supermemory.unwrap_or_default(), lookup)?)
        }
        _ => {
            if raw.supermemory.is_some() {
                warnings.push(
                    "memory.supermemory is set but memory.backend is not supermemory; it is not used"
                        .into(),
                );
            }
            None
        }
    };
    if raw.enabled == Some(false) && raw.embedding_model.is_some() {
        warnings.push("memory.embedding_model is set but memory is disabled".into());
    }
    Ok(MemorySettings {
        enabled: raw.enabled.unwrap_or(true),
        capture: raw.capture.unwrap_or(true),
        backend,
        data_dir: PathBuf::from(data_dir),
        embedding_model: raw.embedding_model,
        embedder,
        embedder_path,
        embedder_fallback,
        session_ttl: ttl,
        max_context_messages,
        max_memories_per_user: raw
            .max_memories_per_user
            .unwrap_or(DEFAULT_MAX_MEMORIES_PER_USER),
        queue_size,
        batch_size,
        embed_timeout: secs(
            raw.embed_timeout_seconds.unwrap_or(10.0),
            "memory.embed_timeout_seconds",
        )?,
        supermemory,
    })
}

/// Validates `memory.supermemory`; the environment wins over the file.
fn supermemory(
    raw: RawSupermemory,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<SupermemorySettings, ConfigError> {
    let set = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let api_key = set(lookup("SUPERMEMORY_API_KEY"))
        .or(set(raw.api_key))
        .ok_or_else(|| {
            invalid(
                "memory.supermemory.api_key",
                "memory.backend is supermemory but no API key is set (SUPERMEMORY_API_KEY)",
            )
        })?;
    let base_url = set(lookup("SUPERMEMORY_BASE_URL"))
        .or(set(raw.base_url))
        .unwrap_or_else(|| SUPERMEMORY_BASE_URL.to_string());
    let parsed = url::Url::parse(base_url.trim()).map_err(|e| {
        invalid(
            "memory.supermemory.base_url",
            format!("`{base_url}` is not a URL: {e}"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(
            "memory.supermemory.base_url",
            "must be an http:// or https:// URL",
        ));
    }
    let timeout = secs(
        raw.timeout_seconds.unwrap_or(10.0),
        "memory.supermemory.timeout_seconds",
    )?;
    if timeout.is_zero() {
        return Err(invalid(
            "memory.supermemory.timeout_seconds",
            "must be more than 0 seconds",
        ));
    }
    Ok(SupermemorySettings {
        api_key: Secret::new(api_key.trim().to_string()),
        base_url: base_url.trim().trim_end_matches('/').to_string(),
        timeout,
    })
}
