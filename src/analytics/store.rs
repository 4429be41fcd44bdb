//! What is stored and asked of the operations store: usage [`Record`]s, usage queries and
//! feedback. [`AnalyticsStore`] is the interface a backend implements (embedded SQLite,
//! PostgreSQL in `storage::postgres`); its methods are blocking and only ever run on the
//! store's own thread (see `writer`), never on an async worker. Virtual keys live in the
//! same database but behind their own trait, [`crate::keys::KeyStore`].

use serde::Serialize;

pub use super::record::{injected_from_json, injected_to_json, Injected, Record};

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
