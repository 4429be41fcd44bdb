//! The `config.yaml` schema as written by users: LiteLLM's keys plus memproxy's own
//! sections. Only parsing lives here; `super::load` validates it into [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub model_list: Vec<RawModel>,
    #[serde(default)]
    pub general_settings: RawGeneral,
    #[serde(default)]
    pub router_settings: RawRouter,
    #[serde(default)]
    pub litellm_settings: RawLitellm,
    pub user_id_mappings: Option<RawUserIdMappings>,
    #[serde(default)]
    pub server: RawServer,
    pub context_retrieval: Option<RawContextRetrieval>,
    pub tool_execution: Option<RawToolExecution>,
    pub memory: Option<RawMemory>,
    pub analytics: Option<super::ops::RawAnalytics>,
    pub rate_limits: Option<super::ops::RawRateLimits>,
    pub observability: Option<super::ops::RawObservability>,
}

/// `context_retrieval` (the original proxy's names).
#[derive(Debug, Default, Deserialize)]
pub struct RawContextRetrieval {
    pub enabled: Option<bool>,
    pub query_strategy: Option<String>,
    pub injection_strategy: Option<String>,
    pub max_context_length: Option<usize>,
    pub max_results: Option<usize>,
    pub enabled_for_models: Option<Vec<String>>,
    /// `project_then_user` (default) or `project_only`.
    pub project_scope: Option<String>,
}

/// `tool_execution` (the original proxy's names).
#[derive(Debug, Default, Deserialize)]
pub struct RawToolExecution {
    pub enabled: Option<bool>,
    pub max_iterations: Option<u32>,
    /// Seconds.
    pub timeout_per_tool: Option<f64>,
    pub enabled_for_models: Option<Vec<String>>,
    /// The original proxy's key for its hosted memory; memproxy's tools use its own store.
    pub supermemory_api_key: Option<String>,
}

/// `memory` (memproxy's own section).
#[derive(Debug, Default, Deserialize)]
pub struct RawMemory {
    pub enabled: Option<bool>,
    pub capture: Option<bool>,
    pub backend: Option<String>,
    pub data_dir: Option<String>,
    pub embedding_model: Option<String>,
    pub embedder: Option<String>,
    pub embedder_path: Option<String>,
    pub embedder_fallback: Option<String>,
    #[serde(alias = "memory_ttl_seconds")]
    pub ttl_seconds: Option<f64>,
    pub max_context_messages: Option<usize>,
    pub max_memories_per_user: Option<u64>,
    pub queue_size: Option<usize>,
    pub batch_size: Option<usize>,
    pub embed_timeout_seconds: Option<f64>,
    pub supermemory: Option<RawSupermemory>,
}

/// `memory.supermemory`: the hosted Supermemory API (`memory.backend: supermemory`).
#[derive(Debug, Default, Deserialize)]
pub struct RawSupermemory {
    pub api_key: Option<String>,
    pub base_url: Option<String>,
    pub timeout_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct RawModel {
    #[serde(default)]
    pub model_name: String,
    /// Absent in entries LiteLLM itself cannot load: skipped with a warning.
    #[serde(default)]
    pub litellm_params: Option<RawParams>,
    #[serde(default)]
    pub model_info: Option<RawModelInfo>,
    /// Every `litellm_params` member as written (env references resolved), for the
    /// provider-specific keys that only a provider reads (credentials, regions, projects).
    #[serde(skip)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

/// Provider-specific `litellm_params` keys LiteLLM accepts. They are not fields of
/// [`RawParams`]: the providers read them from [`RawModel::params`]; listed here so they
/// are not warned about as unknown.
pub const PROVIDER_PARAM_KEYS: &[&str] = &[
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_region_name",
    "aws_bedrock_runtime_endpoint",
    "aws_profile_name",
    "aws_role_name",
    "aws_session_name",
    "vertex_project",
    "vertex_location",
    "vertex_credentials",
    "azure_ad_token",
    "azure_ad_token_provider",
    "tenant_id",
    "client_id",
    "client_secret",
    "azure_username",
    "azure_password",
    "base_model",
    "keep_alive",
    "num_ctx",
    "max_tokens",
    "temperature",
    "top_p",
    "stream",
    "use_in_pass_through",
    "use_litellm_proxy",
    "merge_reasoning_content_in_choices",
    "input_cost_per_token",
    "output_cost_per_token",
    "input_cost_per_second",
    "output_cost_per_second",
    "tags",
    "region_name",
    "order",
    "model_id",
    "litellm_credential_name",
    "configurable_clientside_auth_params",
    "headers",
    "api_type",
];

#[derive(Debug, Deserialize)]
pub struct RawParams {
    /// `provider/model`; an entry without it is skipped with a warning.
    #[serde(default)]
    pub model: Option<String>,
    pub api_base: Option<String>,
    pub api_key: Option<String>,
    pub custom_llm_provider: Option<String>,
    pub mock_response: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub timeout: Option<f64>,
    pub stream_timeout: Option<f64>,
    pub max_retries: Option<u32>,
    pub weight: Option<f64>,
    pub api_version: Option<String>,
    pub organization: Option<String>,
    pub extra_headers: Option<BTreeMap<String, String>>,
    pub drop_params: Option<bool>,
}

/// LiteLLM's `model_info`; the fields not read yet are accepted so configs load cleanly.
#[derive(Debug, Deserialize)]
#[expect(dead_code, reason = "accepted LiteLLM keys, read by later features")]
pub struct RawModelInfo {
    pub id: Option<String>,
    pub supported_endpoints: Option<Vec<String>>,
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    pub cache_read_input_token_cost: Option<f64>,
    pub mode: Option<String>,
    pub base_model: Option<String>,
    pub max_tokens: Option<u64>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawGeneral {
    pub master_key: Option<String>,
    pub database_url: Option<String>,
    /// LiteLLM's request size limit in megabytes.
    pub max_request_size_mb: Option<f64>,
    /// Where the embedded databases live (memproxy's own key).
    pub data_dir: Option<String>,
    /// Redis shared by several instances (rate limits, key changes).
    pub redis_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRouter {
    pub num_retries: Option<u32>,
    pub timeout: Option<f64>,
    pub fallbacks: Option<Vec<BTreeMap<String, Vec<String>>>>,
    pub retry_after: Option<f64>,
    pub routing_strategy: Option<String>,
    /// LiteLLM's way to name its Redis.
    pub redis_host: Option<String>,
    pub redis_port: Option<serde_json::Value>,
    pub redis_password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLitellm {
    pub drop_params: Option<bool>,
    pub num_retries: Option<u32>,
    pub request_timeout: Option<f64>,
    pub fallbacks: Option<Vec<BTreeMap<String, Vec<String>>>>,
}

#[derive(Debug, Deserialize)]
pub struct RawUserIdMappings {
    pub custom_header: Option<String>,
    pub header_patterns: Option<Vec<RawHeaderPattern>>,
    pub default_user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawHeaderPattern {
    pub header: String,
    pub pattern: String,
    pub user_id: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub upstream: Option<String>,
    pub upstream_api_key: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub worker_threads: Option<usize>,
    pub shutdown_grace_seconds: Option<f64>,
}
