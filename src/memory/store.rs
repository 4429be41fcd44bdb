//! The storage interface every memory backend implements ([`MemoryStore`]) and the
//! records it deals in. The embedded SQLite backend is [`super::sqlite`]; PostgreSQL and
//! Supermemory backends implement the same trait.
//!
//! Every method is scoped by `user_id`: a backend never returns, changes or counts
//! another user's data, and an id that belongs to another user is [`StoreError::NotFound`]
//! exactly as an id that does not exist.

use std::future::Future;
use std::pin::Pin;

use serde::Serialize;
use serde_json::{Map, Value};

/// A boxed future, so that `Arc<dyn MemoryStore>` works.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// JSON metadata attached to a memory; any object, returned unchanged.
pub type Metadata = Map<String, Value>;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No such record for this user (also: the record belongs to another user).
    #[error("not found")]
    NotFound,
    /// The caller asked for something malformed (bad cursor, empty content).
    #[error("{0}")]
    Invalid(String),
    /// The session id is used by several users; the caller must name one.
    #[error("session id `{0}` is used by several users; pass user_id")]
    Ambiguous(String),
    /// The backend failed (I/O, corrupt database, remote API down).
    #[error("memory store failed: {0}")]
    Backend(String),
    /// A remote store (Supermemory) is unreachable, slow, rate limiting or refusing us.
    #[error("memory store unavailable: {0}")]
    Unavailable(String),
    /// The user already has as many memories as `memory.max_memories_per_user` allows.
    #[error("{0}")]
    Quota(String),
    /// The store has been shut down.
    #[error("memory store is shut down")]
    Closed,
}

/// A memory to be stored.
#[derive(Debug, Clone)]
pub struct NewMemory {
    pub user_id: String,
    pub content: String,
    pub metadata: Metadata,
    /// The conversation it came from; memories of one session are neighbours in ranking.
    pub session_id: Option<String>,
}

/// A stored memory.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Memory {
    pub id: String,
    pub user_id: String,
    pub content: String,
    pub metadata: Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Unix time in milliseconds.
    #[serde(skip)]
    pub created_at_ms: i64,
    /// Unix time in seconds (the API's `created_at`).
    pub created_at: i64,
}

/// A search result: the memory and its fused relevance score (higher is better; only
/// comparable within one result list).
#[derive(Debug, Clone, Serialize)]
pub struct ScoredMemory {
    #[serde(flatten)]
    pub memory: Memory,
    pub score: f64,
}

/// A query vector and the embedding model that produced it; only memories embedded by
/// the same model are compared with it.
#[derive(Debug, Clone)]
pub struct QueryEmbedding {
    pub model: String,
    pub vector: Vec<f32>,
    /// Least cosine for a memory that only the dense ranking found (no query term in it)
    /// to be returned: the embedder's [`super::retrieve::Embedder::alone_floor`].
    pub alone_floor: f32,
}

/// A search request.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub text: String,
    pub limit: usize,
    /// Present when an embedding model is configured: adds semantic ranking.
    pub embedding: Option<QueryEmbedding>,
}

impl SearchQuery {
    /// The least cosine of a memory found by meaning alone ([`QueryEmbedding::alone_floor`]).
    pub fn alone_floor(&self) -> f32 {
        self.embedding
            .as_ref()
            .map_or(super::retrieve::MIN_COSINE, |e| e.alone_floor)
    }
}

/// One page of a user's memories, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub items: Vec<Memory>,
    /// Pass back as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One message of a session's conversation memory.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionMessage {
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// Unix time in milliseconds.
    pub created_at_ms: i64,
}

/// A session's summary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionInfo {
    pub session_id: String,
    pub user_id: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub message_count: u64,
}

/// A session with its retained messages, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    #[serde(flatten)]
    pub info: SessionInfo,
    pub messages: Vec<SessionMessage>,
}

/// One write; a batch of them is applied in one transaction.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Store a long-term memory.
    Memory(NewMemory),
    /// Store a captured exchange, unless the user already has a memory of the same
    /// normalised content (a client that sends the same request again, and gets the same
    /// answer, adds nothing to what its memory knows; its session still gets the turns).
    Capture(NewMemory),
    /// Append messages to a session (creating it, or restarting it when expired).
    Turns {
        user_id: String,
        session_id: String,
        messages: Vec<(String, String)>,
    },
    /// Attach embeddings to memories of `user_id` (ids that no longer exist are skipped).
    Embeddings {
        user_id: String,
        model: String,
        vectors: Vec<(String, Vec<f32>)>,
    },
}

/// The storage interface of long-term memory and sessions (see the module docs).
///
/// Session retention (TTL, messages kept) is a property of the store, set when it is
/// built, so that every reader applies the same rule.
pub trait MemoryStore: Send + Sync {
    /// Applies writes in one transaction; returns the memories created, in order.
    fn apply(&self, ops: Vec<WriteOp>) -> BoxFuture<'_, Result<Vec<Memory>, StoreError>>;

    /// Stores memories (one transaction) and returns them with ids.
    fn add(&self, batch: Vec<NewMemory>) -> BoxFuture<'_, Result<Vec<Memory>, StoreError>> {
        self.apply(batch.into_iter().map(WriteOp::Memory).collect())
    }

    /// One memory of `user_id`.
    fn get<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Memory, StoreError>>;

    /// `user_id`'s memories, newest first; `cursor` comes from the previous page.
    fn list<'a>(
        &'a self,
        user_id: &'a str,
        limit: usize,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Page, StoreError>>;

    /// The best memories of `user_id` for a query, best first, deduplicated.
    fn search<'a>(
        &'a self,
        user_id: &'a str,
        query: &'a SearchQuery,
    ) -> BoxFuture<'a, Result<Vec<ScoredMemory>, StoreError>>;

    /// Deletes one memory of `user_id`.
    fn delete<'a>(&'a self, user_id: &'a str, id: &'a str)
        -> BoxFuture<'a, Result<(), StoreError>>;

    /// Deletes every memory and session of `user_id`; returns how many memories went.
    fn delete_user<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// The last messages of a live session (at most the store's retention), oldest first;
    /// empty when the session does not exist or expired.
    fn session_messages<'a>(
        &'a self,
        user_id: &'a str,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionMessage>, StoreError>>;

    /// Live sessions, of one user or of all, most recently used first.
    fn list_sessions<'a>(
        &'a self,
        user_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, StoreError>>;

    /// One live session with its messages. Without `user_id`, the id must belong to
    /// exactly one user ([`StoreError::Ambiguous`] otherwise).
    fn get_session<'a>(
        &'a self,
        user_id: Option<&'a str>,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Session, StoreError>>;

    /// Deletes a session (same `user_id` rule as [`MemoryStore::get_session`]).
    fn delete_session<'a>(
        &'a self,
        user_id: Option<&'a str>,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The user ids (store keys) that begin with `prefix` and hold memories or sessions,
    /// sorted: a user's project scopes ([`super::scope`]). A backend that cannot list
    /// them says so rather than answering an empty list (forget-all relies on it).
    fn user_ids_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        let _ = prefix;
        Box::pin(async {
            Err(StoreError::Backend(
                "this memory backend cannot list a user's projects".into(),
            ))
        })
    }

    /// Memories of every user without a vector of `model` (none, or another model's), in
    /// the store's order after `cursor` (the previous page's `next_cursor`), at most
    /// `limit`: what the background re-embedding walks after the model changes or vectors
    /// are turned on. A store that keeps no vectors has none.
    fn unembedded<'a>(
        &'a self,
        _model: &'a str,
        _cursor: Option<&'a str>,
        _limit: usize,
    ) -> BoxFuture<'a, Result<Page, StoreError>> {
        Box::pin(async {
            Ok(Page {
                items: vec![],
                next_cursor: None,
            })
        })
    }

    /// How many memories [`Self::unembedded`] walks for `model`.
    fn count_unembedded<'a>(&'a self, _model: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async { Ok(0) })
    }

    /// Removes expired sessions; returns how many.
    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Whether the store answers (for readiness checks).
    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
