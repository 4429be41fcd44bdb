//! The usage row: one model request as the databank keeps it, with the memories that
//! were injected into it.

use serde::{Deserialize, Serialize};

/// One model request, as written to the databank.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Record {
    /// When the request arrived, Unix milliseconds.
    pub ts_ms: i64,
    pub request_id: String,
    /// The detected user id (memory scope); empty when the request was refused before.
    pub user_id: String,
    /// The client program, from its user agent (`claude-code`, `codex`, `openai-python`,
    /// … see `identity::client_name`); empty in rows written before the column existed.
    pub client: String,
    /// SHA-256 (hex) of the virtual key used; none for the master key or open mode.
    pub key_id: Option<String>,
    pub key_alias: Option<String>,
    /// The client API: `chat`, `messages`, `responses`, `embeddings`.
    pub endpoint: String,
    /// The model name the client asked for.
    pub model: String,
    /// The `model_name` of the deployment that answered (differs on fallback).
    pub deployment: Option<String>,
    /// The provider's name for the model.
    pub upstream_model: Option<String>,
    pub provider: Option<String>,
    pub stream: bool,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Prompt tokens served from the provider's cache (part of `tokens_in`).
    pub tokens_cached: u64,
    /// Output tokens spent on reasoning (part of `tokens_out`).
    pub tokens_reasoning: u64,
    /// USD; none when the model has no known price.
    pub cost_usd: Option<f64>,
    /// From arrival to the last byte handed to the client.
    pub total_ms: f64,
    /// Streams: from arrival to the first content event.
    pub ttft_ms: Option<f64>,
    /// Time spent waiting for the provider (retries included).
    pub upstream_ms: Option<f64>,
    /// memproxy's own time: total − upstream (− the client's reading time for streams).
    pub overhead_ms: f64,
    pub status: u16,
    /// Low-cardinality error label (`upstream_status`, `rate_limited`, …).
    pub error_type: Option<String>,
    pub memories_injected: u32,
    pub tool_rounds: u32,
    /// Upstream calls made, retries and fallbacks included.
    pub attempts: u32,
    /// The project the request worked in (key binding, `/p/<project>` or
    /// `x-memory-project`); empty when none.
    pub project: String,
    /// The memories injected into the request, in the order they were placed (empty in
    /// rows written before the column existed, which keep only `memories_injected`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub injected: Vec<Injected>,
}

/// One memory injected into a request, and why: where it ranked, in which scope group,
/// with what score.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Injected {
    /// The memory's id (it may have been edited or deleted since).
    pub id: String,
    /// 1-based position in the injected block.
    pub position: u32,
    /// `project` (the request's project's memories) or `user` (its user's memories
    /// outside any project).
    pub scope: String,
    /// The retrieval's fused score (comparable within one request only).
    pub score: f64,
    /// The score as a share of the best score of the request (1.0 for the best).
    pub share: f64,
    /// How old the memory was when it was injected, seconds.
    pub age_s: i64,
    /// Its text was cut to fit the block's `max_context_length`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// The `injected` column: a JSON array, or none.
pub fn injected_to_json(list: &[Injected]) -> Option<String> {
    (!list.is_empty()).then(|| serde_json::to_string(list).unwrap_or_default())
}

/// Reads the `injected` column (a bad value reads as nothing).
pub fn injected_from_json(s: Option<String>) -> Vec<Injected> {
    s.and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}
