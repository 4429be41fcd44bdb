//! The Supermemory backend (`memory.backend: supermemory`): long-term memories live in the
//! hosted Supermemory API as documents, one container tag per memproxy scope
//! ([`container_tag`]); sessions stay in the embedded store beside it, and so does the list
//! of scopes written (Supermemory cannot list tags by prefix, and forget-all must find a
//! user's projects). Its errors are [`StoreError`]s like any store's: a 404 is
//! "not found", an outage is a backend error that the request path logs and answers
//! without memories.
//!
//! Endpoints (Supermemory's documented v3 API, `Authorization: Bearer <key>`):
//! `POST /v3/documents` (add; captures carry a `customId` from their content, so a
//! repeated exchange updates rather than duplicates), `POST /v3/search`,
//! `GET /v3/documents/{id}`, `DELETE /v3/documents/{id}`, `POST /v3/documents/list`,
//! `DELETE /v3/documents/bulk` (by container tag).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use rusqlite::{params, Connection};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::sqlite::{SqliteOptions, SqliteStore};
use super::store::{
    BoxFuture, Memory, MemoryStore, NewMemory, Page, ScoredMemory, SearchQuery, Session,
    SessionInfo, SessionMessage, StoreError, WriteOp,
};
use crate::analytics::timefmt;
use crate::config::SupermemorySettings;
use crate::memory::text::content_hash;

/// Longest wait for one Supermemory call.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest container tag Supermemory is given; longer ones become a hash.
const MAX_TAG: usize = 100;
/// Metadata key holding a memory's session id.
const SESSION_KEY: &str = "memproxy_session_id";
/// The file (in the data dir) of the scopes written.
const SCOPES_FILE: &str = "supermemory-scopes.db";

/// The container tag of a scope key: `mp_` then the key with every character other
/// than ASCII letters, digits and `-` written as `_` and two hex digits (so that two
/// keys never share a tag); a hash when that is too long.
pub fn container_tag(scope_key: &str) -> String {
    let mut tag = String::from("mp_");
    for b in scope_key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            tag.push(b as char);
        } else {
            tag.push_str(&format!("_{b:02x}"));
        }
    }
    if tag.len() <= MAX_TAG {
        tag
    } else {
        format!(
            "mp_h_{}",
            crate::keys::hex(&Sha256::digest(scope_key.as_bytes()))
        )
    }
}

/// Memories in Supermemory, sessions in the embedded store.
pub struct SupermemoryStore {
    http: reqwest::Client,
    base: String,
    key: String,
    local: SqliteStore,
    scopes: Arc<Mutex<Connection>>,
    known: Mutex<HashSet<String>>,
}

#[derive(Deserialize)]
struct Added {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    id: String,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    container_tags: Vec<String>,
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Deserialize)]
struct Listed {
    #[serde(default)]
    memories: Vec<Document>,
    #[serde(default)]
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pagination {
    current_page: u64,
    total_pages: u64,
}

#[derive(Deserialize)]
struct Found {
    #[serde(default)]
    results: Vec<Hit>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Hit {
    document_id: String,
    #[serde(default)]
    score: f64,
    #[serde(default)]
    chunks: Vec<Chunk>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Deserialize)]
struct Chunk {
    content: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BulkDeleted {
    #[serde(default)]
    deleted_count: u64,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("supermemory: {e}"))
}

/// Supermemory's error JSON (`{"error": "...", "details": "..."}`) as a [`StoreError`].
fn status_error(status: StatusCode, body: &[u8]) -> StoreError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let message = match (text("error"), text("details")) {
        (Some(e), Some(d)) => format!("{e}: {d}"),
        (Some(e), None) => e,
        (None, Some(d)) => d,
        (None, None) => String::from_utf8_lossy(body).chars().take(200).collect(),
    };
    match status {
        StatusCode::NOT_FOUND => StoreError::NotFound,
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            StoreError::Invalid(format!("supermemory refused the request: {message}"))
        }
        s => StoreError::Backend(format!("supermemory answered {}: {message}", s.as_u16())),
    }
}

/// Metadata as Supermemory takes it: flat strings, numbers and booleans; anything else
/// is stored as its JSON text.
fn flat(metadata: &Map<String, Value>) -> Map<String, Value> {
    metadata
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => (k.clone(), v.clone()),
            other => (k.clone(), Value::String(other.to_string())),
        })
        .collect()
}

fn memory_of(
    scope_key: &str,
    id: String,
    content: String,
    metadata: Option<Map<String, Value>>,
    created_at: Option<&str>,
) -> Memory {
    let mut metadata = metadata.unwrap_or_default();
    let session_id = match metadata.remove(SESSION_KEY) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let ms = created_at.and_then(timefmt::parse).unwrap_or(0);
    Memory {
        id,
        user_id: scope_key.to_string(),
        content,
        metadata,
        session_id,
        created_at_ms: ms,
        created_at: ms.div_euclid(1000),
    }
}

impl SupermemoryStore {
    /// Opens the embedded part (sessions, scopes) in `data_dir` and the API client.
    pub fn open(
        settings: &SupermemorySettings,
        data_dir: &Path,
        opts: SqliteOptions,
    ) -> Result<Self, StoreError> {
        let local = SqliteStore::open(data_dir, opts)?;
        let path = data_dir.join(SCOPES_FILE);
        let conn = Connection::open(&path).map_err(backend)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS scopes (key TEXT PRIMARY KEY);",
        )
        .map_err(backend)?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .build()
            .map_err(backend)?;
        Ok(Self {
            http,
            base: settings.base_url.clone(),
            key: settings.api_key.expose().clone(),
            local,
            scopes: Arc::new(Mutex::new(conn)),
            known: Mutex::new(HashSet::new()),
        })
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, StoreError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                backend(format!("no answer within {TIMEOUT:?}"))
            } else {
                backend(format!("unreachable: {e}"))
            }
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(backend)?;
        if !status.is_success() {
            return Err(status_error(status, &bytes));
        }
        let bytes = if bytes.is_empty() {
            &b"{}"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|e| backend(format!("unexpected answer: {e}")))
    }

    /// Records that `key` has memories (for [`MemoryStore::scope_keys`]).
    async fn remember_scope(&self, key: &str) -> Result<(), StoreError> {
        if self.known.lock().map(|k| k.contains(key)).unwrap_or(false) {
            return Ok(());
        }
        let (conn, owned) = (self.scopes.clone(), key.to_string());
        tokio::task::spawn_blocking(move || {
            let c = conn
                .lock()
                .map_err(|_| backend("scope list lock poisoned"))?;
            c.execute("INSERT OR IGNORE INTO scopes (key) VALUES (?1)", [&owned])
                .map_err(backend)
        })
        .await
        .map_err(backend)??;
        if let Ok(mut k) = self.known.lock() {
            k.insert(key.to_string());
        }
        Ok(())
    }

    async fn add_one(&self, m: NewMemory, capture: bool) -> Result<Memory, StoreError> {
        self.remember_scope(&m.user_id).await?;
        let mut metadata = flat(&m.metadata);
        if let Some(s) = &m.session_id {
            metadata.insert(SESSION_KEY.into(), s.clone().into());
        }
        let mut body = json!({
            "content": m.content,
            "containerTag": container_tag(&m.user_id),
            "metadata": metadata,
        });
        if capture {
            // The same exchange again updates the same document instead of adding one.
            let hash = content_hash(&m.content);
            body["customId"] = format!("mp-{}-{hash:x}", container_tag(&m.user_id)).into();
        }
        let added: Added = self.call(Method::POST, "/v3/documents", Some(body)).await?;
        let now = timefmt::now_ms();
        Ok(Memory {
            id: added.id,
            user_id: m.user_id,
            content: m.content,
            metadata: m.metadata,
            session_id: m.session_id,
            created_at_ms: now,
            created_at: now.div_euclid(1000),
        })
    }

    /// The document `id` if it belongs to `scope_key`'s tag; [`StoreError::NotFound`]
    /// otherwise, exactly as for an unknown id.
    async fn owned(&self, scope_key: &str, id: &str) -> Result<Document, StoreError> {
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(StoreError::NotFound);
        }
        let doc: Document = self
            .call(Method::GET, &format!("/v3/documents/{id}"), None)
            .await?;
        if doc.container_tags.contains(&container_tag(scope_key)) {
            Ok(doc)
        } else {
            Err(StoreError::NotFound)
        }
    }
}

fn text_of(doc: &Document) -> String {
    doc.content
        .clone()
        .or_else(|| doc.summary.clone())
        .or_else(|| doc.title.clone())
        .unwrap_or_default()
}

impl MemoryStore for SupermemoryStore {
    fn apply(&self, ops: Vec<WriteOp>) -> BoxFuture<'_, Result<Vec<Memory>, StoreError>> {
        Box::pin(async move {
            let mut created = Vec::new();
            let mut local = Vec::new();
            for op in ops {
                match op {
                    WriteOp::Memory(m) => created.push(self.add_one(m, false).await?),
                    WriteOp::Capture(m) => created.push(self.add_one(m, true).await?),
                    turns @ WriteOp::Turns { .. } => local.push(turns),
                    // Supermemory embeds its documents itself.
                    WriteOp::Embeddings { .. } => {}
                }
            }
            if !local.is_empty() {
                self.local.apply(local).await?;
            }
            Ok(created)
        })
    }

    fn get<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Memory, StoreError>> {
        Box::pin(async move {
            let doc = self.owned(user_id, id).await?;
            let content = text_of(&doc);
            Ok(memory_of(
                user_id,
                doc.id,
                content,
                doc.metadata,
                doc.created_at.as_deref(),
            ))
        })
    }

    fn list<'a>(
        &'a self,
        user_id: &'a str,
        limit: usize,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Page, StoreError>> {
        Box::pin(async move {
            let page = match cursor {
                None => 1,
                Some(c) => c
                    .parse::<u64>()
                    .ok()
                    .filter(|p| *p >= 1)
                    .ok_or_else(|| StoreError::Invalid("bad cursor".into()))?,
            };
            let body = json!({
                "containerTags": [container_tag(user_id)],
                "limit": limit,
                "page": page,
                "sort": "createdAt",
                "order": "desc",
            });
            let listed: Listed = self
                .call(Method::POST, "/v3/documents/list", Some(body))
                .await?;
            let next_cursor = listed
                .pagination
                .filter(|p| p.current_page < p.total_pages)
                .map(|p| (p.current_page + 1).to_string());
            let items = listed
                .memories
                .into_iter()
                .map(|d| {
                    let content = text_of(&d);
                    memory_of(user_id, d.id, content, d.metadata, d.created_at.as_deref())
                })
                .collect();
            Ok(Page { items, next_cursor })
        })
    }

    fn search<'a>(
        &'a self,
        user_id: &'a str,
        query: &'a SearchQuery,
    ) -> BoxFuture<'a, Result<Vec<ScoredMemory>, StoreError>> {
        Box::pin(async move {
            let body = json!({
                "q": query.text,
                "containerTags": [container_tag(user_id)],
                "limit": query.limit,
            });
            let found: Found = self.call(Method::POST, "/v3/search", Some(body)).await?;
            let mut seen = HashSet::new();
            Ok(found
                .results
                .into_iter()
                .filter(|h| seen.insert(h.document_id.clone()))
                .take(query.limit)
                .map(|h| {
                    let content = match (&h.content, h.chunks.is_empty()) {
                        (Some(c), _) => c.clone(),
                        (None, false) => h
                            .chunks
                            .iter()
                            .map(|c| c.content.as_str())
                            .collect::<Vec<_>>()
                            .join("\n"),
                        (None, true) => h.title.clone().unwrap_or_default(),
                    };
                    ScoredMemory {
                        memory: memory_of(
                            user_id,
                            h.document_id,
                            content,
                            h.metadata,
                            h.created_at.as_deref(),
                        ),
                        score: h.score,
                    }
                })
                .collect())
        })
    }

    fn delete<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let doc = self.owned(user_id, id).await?;
            self.call::<Value>(Method::DELETE, &format!("/v3/documents/{}", doc.id), None)
                .await?;
            Ok(())
        })
    }

    fn delete_user<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let body = json!({"containerTags": [container_tag(user_id)]});
            let gone: BulkDeleted = self
                .call(Method::DELETE, "/v3/documents/bulk", Some(body))
                .await?;
            self.local.delete_user(user_id).await?;
            Ok(gone.deleted_count)
        })
    }

    fn session_messages<'a>(
        &'a self,
        user_id: &'a str,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionMessage>, StoreError>> {
        self.local.session_messages(user_id, session_id)
    }

    fn list_sessions<'a>(
        &'a self,
        user_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, StoreError>> {
        self.local.list_sessions(user_id)
    }

    fn get_session<'a>(
        &'a self,
        user_id: Option<&'a str>,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Session, StoreError>> {
        self.local.get_session(user_id, session_id)
    }

    fn delete_session<'a>(
        &'a self,
        user_id: Option<&'a str>,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.local.delete_session(user_id, session_id)
    }

    fn scope_keys<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let mut keys = self.local.scope_keys(prefix).await?;
            let (conn, p) = (self.scopes.clone(), prefix.to_string());
            let mine = tokio::task::spawn_blocking(move || {
                let c = conn
                    .lock()
                    .map_err(|_| backend("scope list lock poisoned"))?;
                let mut stmt = c
                    .prepare("SELECT key FROM scopes WHERE substr(key, 1, length(?1)) = ?1")
                    .map_err(backend)?;
                let rows = stmt
                    .query_map(params![p], |r| r.get::<_, String>(0))
                    .and_then(|r| r.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(backend);
                rows
            })
            .await
            .map_err(backend)??;
            keys.extend(mine);
            keys.sort();
            keys.dedup();
            Ok(keys)
        })
    }

    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.local.purge_expired()
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.local.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_safe_distinct_and_bounded() {
        assert_eq!(container_tag("alice"), "mp_alice");
        assert_eq!(container_tag("alice#web-app"), "mp_alice_23web-app");
        assert_ne!(container_tag("a_b"), container_tag("a.b"));
        assert_ne!(container_tag("a#b"), container_tag("a_23b"));
        let long = container_tag(&"x".repeat(150));
        assert!(long.len() <= MAX_TAG && long.starts_with("mp_h_"));
        assert!(container_tag("team:a@b.c")
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
    }

    #[test]
    fn errors_map_to_store_errors() {
        let body = br#"{"error":"Invalid API key","details":"check it"}"#;
        match status_error(StatusCode::UNAUTHORIZED, body) {
            StoreError::Backend(m) => assert!(m.contains("401") && m.contains("Invalid API key")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            status_error(StatusCode::NOT_FOUND, b"{}"),
            StoreError::NotFound
        ));
        assert!(matches!(
            status_error(StatusCode::BAD_REQUEST, b"not json"),
            StoreError::Invalid(_)
        ));
    }
}
