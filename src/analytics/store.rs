//! What is stored and asked of the operations store: usage [`Record`]s, usage queries,
//! feedback, and virtual keys. [`AnalyticsStore`] is the interface a backend implements
//! (embedded SQLite now, PostgreSQL later); its methods are blocking and only ever run on
//! the store's own thread (see `writer`), never on an async worker.

use serde::Serialize;

use super::series::Series;
use crate::keys::KeyRow;

/// One model request, as written to the databank.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Record {
    /// When the request arrived, Unix milliseconds.
    pub ts_ms: i64,
    pub request_id: String,
    /// The detected user id (memory scope); empty when the request was refused before.
    pub user_id: String,
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
    /// The memories injected, best first, with their retrieval scores (the dashboard's
    /// "why was this injected").
    pub injected: Vec<InjectedMemory>,
    /// The text memories were searched with, cut to [`MAX_MEMORY_QUERY_BYTES`]; none when
    /// no search ran.
    pub memory_query: Option<String>,
}

/// Longest [`Record::memory_query`] kept.
pub const MAX_MEMORY_QUERY_BYTES: usize = 500;

/// One memory injected into a request.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct InjectedMemory {
    pub id: String,
    /// The fused relevance score it was retrieved with (comparable within one request).
    pub score: f64,
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
    pub model: Option<String>,
    pub key_id: Option<String>,
    pub request_id: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub limit: usize,
    /// Rows with an id below this one (the previous page's `next_cursor`).
    pub before_id: Option<i64>,
    /// Only successful rows, or only failed ones.
    pub outcome: Option<Outcome>,
}

/// A request's outcome, as a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Status < 400 and no error.
    Ok,
    /// Status ≥ 400 or ended by an error.
    Error,
}

/// How a time series is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesDim {
    None,
    User,
    Model,
    Key,
}

/// `GET /v1/usage/timeseries`: buckets of `bucket_ms` from `from_ms` (a bucket boundary)
/// to `to_ms`, optionally filtered, optionally split by one dimension.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub bucket_ms: i64,
    pub group_by: SeriesDim,
    pub user_id: Option<String>,
    pub model: Option<String>,
    /// A key's hash; `''` selects the master key's (and open mode's) rows.
    pub key_id: Option<String>,
    /// Groups charted on their own; the rest are summed into `(other)`.
    pub top: usize,
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
    /// The query itself is malformed (a range too long for its buckets).
    #[error("{0}")]
    Invalid(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// A backend of the operations store. Implementations block; they run on one dedicated
/// thread, which owns the store, so `&mut self` needs no locking.
pub trait AnalyticsStore: Send {
    /// Writes a batch of rows atomically (one transaction) and adds each row's cost to
    /// its key's spend.
    fn insert_records(&mut self, rows: &[Record]) -> Result<(), StoreError>;
    /// Totals per group.
    fn usage(&mut self, q: &UsageQuery) -> Result<Vec<UsageGroup>, StoreError>;
    /// One page of rows, newest first.
    fn requests(&mut self, q: &RequestsQuery) -> Result<Vec<StoredRecord>, StoreError>;
    /// Attaches feedback to the newest row of the request; false when there is none.
    fn set_feedback(&mut self, fb: &Feedback) -> Result<bool, StoreError>;
    /// Every virtual key, with its accumulated spend.
    fn load_keys(&mut self) -> Result<Vec<KeyRow>, StoreError>;
    fn insert_key(&mut self, key: &KeyRow) -> Result<(), StoreError>;
    /// Deletes keys by hash; returns the hashes that existed.
    fn delete_keys(&mut self, hashes: &[String]) -> Result<Vec<String>, StoreError>;
    /// A cheap round trip proving the store answers (readiness).
    fn check(&mut self) -> Result<(), StoreError>;
    /// Usage over time (the dashboard's charts), aggregated in the store.
    fn timeseries(&mut self, _q: &SeriesQuery) -> Result<Series, StoreError> {
        Err(StoreError::Unavailable(
            "this analytics store has no time series".into(),
        ))
    }
    /// Changes a key's settings (alias, user binding, models, budget, expiry, limits,
    /// metadata); its spend is left as stored.
    fn update_key(&mut self, key: &KeyRow) -> Result<(), StoreError> {
        let mut row = key.clone();
        if let Some(old) = self.load_keys()?.into_iter().find(|k| k.hash == key.hash) {
            row.spend = old.spend;
        }
        self.delete_keys(std::slice::from_ref(&key.hash))?;
        self.insert_key(&row)
    }
}
