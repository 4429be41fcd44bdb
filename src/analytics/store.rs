//! What is stored and asked of the operations store: usage [`Record`]s, usage queries and
//! feedback. [`AnalyticsStore`] is the interface a backend implements (embedded SQLite,
//! PostgreSQL in `storage::postgres`); its methods are blocking and only ever run on the
//! store's own thread (see `writer`), never on an async worker. Virtual keys live in the
//! same database but behind their own trait, [`crate::keys::KeyStore`].

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

/// A stored row as the query API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct StoredRecord {
    /// Opaque, increasing row id.
    pub id: i64,
    pub time: String,
    #[serde(flatten)]
    pub record: Record,
    pub feedback_score: Option<f64>,
    pub feedback_comment: Option<String>,
}

/// How usage totals are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    User,
    Model,
    Key,
    Day,
    Client,
    Project,
}

/// `GET /v1/usage`.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub group_by: GroupBy,
    /// Inclusive lower bound, Unix ms.
    pub from_ms: Option<i64>,
    /// Exclusive upper bound, Unix ms.
    pub to_ms: Option<i64>,
}

/// Totals of one group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UsageGroup {
    pub group: String,
    /// For `group_by=key`: the key's alias, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_alias: Option<String>,
    pub requests: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    /// Requests answered with a status ≥ 400 or ended by an error.
    pub errors: u64,
    /// Nearest-rank percentiles of `total_ms`.
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
}

/// `GET /v1/usage/requests`: filters and one page.
#[derive(Debug, Clone, Default)]
pub struct RequestsQuery {
    pub user_id: Option<String>,
    pub client: Option<String>,
    pub model: Option<String>,
    pub key_id: Option<String>,
    pub request_id: Option<String>,
    /// Rows of this project (`""`: rows with none).
    pub project: Option<String>,
    pub status: Option<StatusFilter>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub limit: usize,
    /// Rows with an id below this one (the previous page's `next_cursor`).
    pub before_id: Option<i64>,
}

/// `GET /v1/usage/requests?status=`: failed rows, answered rows, or one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// A status of 400 or more, or an error that ended the answer (`error_type`).
    Errors,
    /// The others.
    Ok,
    Code(u16),
}

impl StatusFilter {
    /// `error`, `ok` or a status code.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "error" | "errors" => Some(Self::Errors),
            "ok" => Some(Self::Ok),
            code => code.parse().ok().map(Self::Code),
        }
    }

    /// The SQL condition (the same in SQLite and PostgreSQL; no user text in it).
    pub fn sql(self) -> String {
        match self {
            Self::Errors => "(status >= 400 OR error_type IS NOT NULL)".into(),
            Self::Ok => "(status < 400 AND error_type IS NULL)".into(),
            Self::Code(c) => format!("status = {c}"),
        }
    }
}

/// `POST /v1/feedback`.
#[derive(Debug, Clone)]
pub struct Feedback {
    pub request_id: String,
    pub score: Option<f64>,
    pub comment: Option<String>,
    /// Set when a virtual key sends it: only its own requests may be rated.
    pub key_id: Option<String>,
}

/// A store operation that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the analytics store is unavailable: {0}")]
    Unavailable(String),
    #[error("analytics database error: {0}")]
    Database(String),
}

impl From<rusqlite::Error> for StoreError {
    /// A full or read-only disk, an I/O error or a locked file passes: the rows are kept
    /// and written again once the disk takes them ([`StoreError::Unavailable`]). Anything
    /// else (a constraint, a malformed row) is the rows' own fault.
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        match e.sqlite_error_code() {
            Some(
                DiskFull | ReadOnly | SystemIoFailure | CannotOpen | DatabaseBusy | DatabaseLocked,
            ) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// A backend of the operations store. Implementations block; they run on one dedicated
/// thread, which owns the store, so `&mut self` needs no locking.
pub trait AnalyticsStore: Send {
    /// Writes a batch of rows atomically (one transaction) and adds each row's cost to
    /// its key's spend. A [`StoreError::Unavailable`] means the database could not be
    /// reached and the same batch may be tried again later.
    fn insert_records(&mut self, rows: &[Record]) -> Result<(), StoreError>;
    /// Totals per group.
    fn usage(&mut self, q: &UsageQuery) -> Result<Vec<UsageGroup>, StoreError>;
    /// One page of rows, newest first.
    fn requests(&mut self, q: &RequestsQuery) -> Result<Vec<StoredRecord>, StoreError>;
    /// Attaches feedback to the newest row of the request; false when there is none.
    fn set_feedback(&mut self, fb: &Feedback) -> Result<bool, StoreError>;
    /// Usage over time from the rollups (`GET /v1/usage/timeseries`).
    fn timeseries(
        &mut self,
        q: &super::rollup::TimeseriesQuery,
    ) -> Result<super::rollup::Timeseries, StoreError> {
        Ok(super::rollup::assemble(q, Vec::new()))
    }
    /// A cheap round trip proving the store answers (readiness).
    fn check(&mut self) -> Result<(), StoreError>;
}
