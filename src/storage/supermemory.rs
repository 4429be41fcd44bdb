//! Long-term memory kept in Supermemory (`memory.backend: supermemory`), through its
//! documented v3 API: one Supermemory document per memory, tagged with the scope's
//! container tag ([`container_tag`]).
//!
//! | store call | Supermemory |
//! | --- | --- |
//! | add / capture | `POST /v3/documents` `{content, containerTag, metadata, customId?}` |
//! | search | `POST /v3/search` `{q, containerTags: [tag], limit}` |
//! | get | `GET /v3/documents/{id}` (another tag's document is not found) |
//! | list | `POST /v3/documents/list` `{containerTags, limit, page, sort, order}` |
//! | delete | `GET` (tag check), then `DELETE /v3/documents/{id}` |
//! | forget a scope | `DELETE /v3/documents/bulk` `{containerTags: [tag]}` |
//!
//! Supermemory has no conversation sessions: session turns stay in the embedded store
//! (`memproxy.db` in the data dir), as do purges. Supermemory embeds and ranks itself, so
//! vectors from `memory.embedding_model` are not sent. A capture's `customId` is a hash of
//! its scope and normalised text, so the same exchange captured twice is one document.
//!
//! Errors: `401`, `429`, `5xx`, timeouts and refused connections are
//! [`StoreError::Unavailable`] (the memory API answers 503; the chat path searches nothing
//! and the write queue retries), counted in `memproxy_supermemory_errors_total{kind}`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::analytics::timefmt;
use crate::config::SupermemorySettings;
use crate::memory::store::BoxFuture;
use crate::memory::{
    Memory, MemoryStore, Metadata, NewMemory, Page, ScoredMemory, SearchQuery, Session,
    SessionInfo, SessionMessage, StoreError, WriteOp,
};

/// Metadata key that carries a memory's session id through Supermemory.
const SESSION_KEY: &str = "memproxy_session_id";
/// Metadata key holding the scope (store key) a document belongs to, so a user's project
/// scopes can be listed although their container tags may be hashes.
const SCOPE_KEY: &str = "memproxy_scope";
/// Documents read per page when listing scopes.
const SCOPE_PAGE: u64 = 100;
/// Longest scope kept readable in a container tag.
const MAX_PLAIN_SCOPE: usize = 80;

/// The Supermemory container tag of a memory scope (a user id today; scope strings may
/// hold characters tags may not, such as `#`). Tags allow at most 100 characters of
/// `[A-Za-z0-9_-]`: a scope of those characters (at most 80) is kept as is after
/// `memproxy_u_`; any other becomes `memproxy_h_`, a readable prefix and a SHA-256 of the
/// whole scope, so two scopes never share a tag.
pub fn container_tag(scope: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if !scope.is_empty() && scope.len() <= MAX_PLAIN_SCOPE && scope.chars().all(plain) {
        return format!("memproxy_u_{scope}");
    }
    let readable: String = scope
        .chars()
        .map(|c| if plain(c) { c } else { '_' })
        .take(24)
        .collect();
    let digest = Sha256::digest(scope.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("memproxy_h_{readable}_{hex}")
}

/// The Supermemory memory store (see the module docs).
pub struct SupermemoryStore {
    http: reqwest::Client,
    base: String,
    key: String,
    /// Sessions (and their purge) live here.
    sessions: Arc<dyn MemoryStore>,
}

impl SupermemoryStore {
    /// A store talking to `settings.base_url`; `sessions` keeps the session turns.
    pub fn new(
        settings: &SupermemorySettings,
        sessions: Arc<dyn MemoryStore>,
    ) -> Result<Self, StoreError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| {
                StoreError::Backend(format!("cannot build the Supermemory client: {e}"))
            })?;
        Ok(Self {
            http,
            base: settings.base_url.clone(),
            key: settings.api_key.expose().clone(),
            sessions,
        })
    }

    /// One call; a 2xx answer's JSON (`null` when empty), else the error it maps to.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, StoreError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let kind = if e.is_timeout() { "timeout" } else { "connect" };
                return Err(unavailable(kind, format!("Supermemory unreachable: {e}")));
            }
        };
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| unavailable("connect", format!("Supermemory answer cut short: {e}")))?;
        if (200..300).contains(&status) {
            return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                let e = v.get("error").and_then(Value::as_str).unwrap_or_default();
                let d = v.get("details").and_then(Value::as_str).unwrap_or_default();
                let joined = [e, d]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>();
                (!joined.is_empty()).then(|| joined.join(": "))
            })
            .unwrap_or_else(|| text.chars().take(200).collect());
        Err(match status {
            404 => StoreError::NotFound,
            401 | 403 => unavailable(
                "auth",
                format!("Supermemory refused the API key ({status}: {detail})"),
            ),
            429 => unavailable(
                "rate_limited",
                format!("Supermemory is rate limiting ({detail})"),
            ),
            400 | 422 => {
                metrics::counter!("memproxy_supermemory_errors_total", "kind" => "invalid")
                    .increment(1);
                StoreError::Invalid(format!("Supermemory refused the request: {detail}"))
            }
            _ => unavailable(
                "server",
                format!("Supermemory answered {status} ({detail})"),
            ),
        })
    }

    async fn add_one(&self, new: NewMemory, dedupe: bool) -> Result<Memory, StoreError> {
        if new.content.trim().is_empty() {
            return Err(StoreError::Invalid("memory content is empty".into()));
        }
        let tag = container_tag(&new.user_id);
        let mut body = json!({
            "content": new.content,
            "containerTag": tag,
            "metadata": flat_metadata(&new.metadata, new.session_id.as_deref()),
        });
        body["metadata"][SCOPE_KEY] = Value::from(new.user_id.as_str());
        if dedupe {
            body["customId"] = Value::from(capture_id(&tag, &new.content));
        }
        let answer = self
            .call(reqwest::Method::POST, "/v3/documents", Some(body))
            .await?;
        let id = answer.get("id").and_then(Value::as_str).ok_or_else(|| {
            unavailable("server", "Supermemory's answer has no document id".into())
        })?;
        let now = timefmt::now_ms();
        Ok(Memory {
            id: id.to_string(),
            user_id: new.user_id,
            content: new.content,
            metadata: new.metadata,
            session_id: new.session_id,
            created_at_ms: now,
            created_at: now / 1000,
        })
    }

    /// The document `id` when it carries `user_id`'s tag.
    async fn owned(&self, user_id: &str, id: &str) -> Result<Value, StoreError> {
        if id.is_empty() || id.len() > 200 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(StoreError::NotFound);
        }
        let path = format!("/v3/documents/{}", urlencode(id));
        let doc = self.call(reqwest::Method::GET, &path, None).await?;
        if tags_of(&doc).iter().any(|t| *t == container_tag(user_id)) {
            Ok(doc)
        } else {
            Err(StoreError::NotFound)
        }
    }
}

fn unavailable(kind: &'static str, message: String) -> StoreError {
    metrics::counter!("memproxy_supermemory_errors_total", "kind" => kind).increment(1);
    tracing::warn!(kind, "{message}");
    StoreError::Unavailable(message)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The `customId` of a captured exchange: its scope's tag and normalised text, hashed.
fn capture_id(tag: &str, content: &str) -> String {
    let normal: String = content
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    let digest = Sha256::digest(format!("{tag}\n{normal}").as_bytes());
    let hex: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
    format!("memproxy_cap_{hex}")
}

/// Supermemory metadata holds strings, numbers and booleans: other values are sent as
/// their JSON text. The session id rides along under [`SESSION_KEY`].
fn flat_metadata(metadata: &Metadata, session_id: Option<&str>) -> Value {
    let mut out = Map::new();
    for (k, v) in metadata {
        let flat = match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => v.clone(),
            Value::Null => continue,
            other => Value::String(other.to_string()),
        };
        out.insert(k.clone(), flat);
    }
    if let Some(s) = session_id {
        out.insert(SESSION_KEY.into(), Value::from(s));
    }
    Value::Object(out)
}

fn tags_of(doc: &Value) -> Vec<&str> {
    let mut tags: Vec<&str> = doc
        .get("containerTags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(t) = doc.get("containerTag").and_then(Value::as_str) {
        tags.push(t);
    }
    tags
}

/// A Supermemory document as a memory of `user_id`; `content` may come from elsewhere
/// (search chunks).
fn memory_of(user_id: &str, doc: &Value, id_field: &str, content: Option<String>) -> Memory {
    let mut metadata: Metadata = doc
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    metadata.remove(SCOPE_KEY);
    let session_id = match metadata.remove(SESSION_KEY) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
    let content = content
        .or_else(|| text("content"))
        .or_else(|| text("summary"))
        .or_else(|| text("title"))
        .unwrap_or_default();
    let created_at_ms = text("createdAt")
        .and_then(|t| timefmt::parse(&t))
        .unwrap_or(0);
    Memory {
        id: text(id_field).unwrap_or_default(),
        user_id: user_id.to_string(),
        content,
        metadata,
        session_id,
        created_at_ms,
        created_at: created_at_ms / 1000,
    }
}

impl MemoryStore for SupermemoryStore {
    fn apply(&self, ops: Vec<WriteOp>) -> BoxFuture<'_, Result<Vec<Memory>, StoreError>> {
        Box::pin(async move {
            let mut created = Vec::new();
            let mut turns = Vec::new();
            for op in ops {
                match op {
                    WriteOp::Memory(m) => created.push(self.add_one(m, false).await?),
                    WriteOp::Capture(m) => created.push(self.add_one(m, true).await?),
                    t @ WriteOp::Turns { .. } => turns.push(t),
                    // Supermemory embeds on its own.
                    WriteOp::Embeddings { .. } => {}
                }
            }
            if !turns.is_empty() {
                self.sessions.apply(turns).await?;
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
            Ok(memory_of(user_id, &doc, "id", None))
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
                    .ok_or_else(|| StoreError::Invalid("invalid cursor".into()))?,
            };
            let body = json!({
                "containerTags": [container_tag(user_id)],
                "limit": limit,
                "page": page,
                "sort": "createdAt",
                "order": "desc",
            });
            let answer = self
                .call(reqwest::Method::POST, "/v3/documents/list", Some(body))
                .await?;
            let items = answer
                .get("memories")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|d| memory_of(user_id, d, "id", None))
                        .collect()
                })
                .unwrap_or_default();
            let total_pages = answer
                .pointer("/pagination/totalPages")
                .and_then(Value::as_u64)
                .unwrap_or(page);
            Ok(Page {
                items,
                next_cursor: (page < total_pages).then(|| (page + 1).to_string()),
            })
        })
    }

    fn search<'a>(
        &'a self,
        user_id: &'a str,
        query: &'a SearchQuery,
    ) -> BoxFuture<'a, Result<Vec<ScoredMemory>, StoreError>> {
        Box::pin(async move {
            if query.text.trim().is_empty() || query.limit == 0 {
                return Ok(vec![]);
            }
            let body = json!({
                "q": query.text,
                "containerTags": [container_tag(user_id)],
                "limit": query.limit,
            });
            let answer = self
                .call(reqwest::Method::POST, "/v3/search", Some(body))
                .await?;
            let mut hits = Vec::new();
            for r in answer
                .get("results")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let chunks: Vec<&str> = r
                    .get("chunks")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|c| c.get("isRelevant").and_then(Value::as_bool) != Some(false))
                    .filter_map(|c| c.get("content").and_then(Value::as_str))
                    .collect();
                let content = (!chunks.is_empty()).then(|| chunks.join("\n"));
                let memory = memory_of(user_id, r, "documentId", content);
                if memory.id.is_empty() || memory.content.trim().is_empty() {
                    continue;
                }
                let score = r.get("score").and_then(Value::as_f64).unwrap_or(0.0);
                hits.push(ScoredMemory { memory, score });
            }
            hits.truncate(query.limit);
            Ok(hits)
        })
    }

    fn delete<'a>(
        &'a self,
        user_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.owned(user_id, id).await?;
            let path = format!("/v3/documents/{}", urlencode(id));
            self.call(reqwest::Method::DELETE, &path, None).await?;
            Ok(())
        })
    }

    fn delete_user<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let body = json!({ "containerTags": [container_tag(user_id)] });
            let answer = self
                .call(reqwest::Method::DELETE, "/v3/documents/bulk", Some(body))
                .await?;
            self.sessions.delete_user(user_id).await?;
            Ok(answer
                .get("deletedCount")
                .and_then(Value::as_u64)
                .unwrap_or(0))
        })
    }

    /// Supermemory has no listing of container tags: the account's documents are read
    /// page by page and their scope stamps ([`SCOPE_KEY`]) collected, together with the
    /// scopes holding sessions. Slow for big accounts, but only forget-all and the
    /// project list call it.
    fn user_ids_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let mut found: std::collections::BTreeSet<String> = self
                .sessions
                .user_ids_with_prefix(prefix)
                .await?
                .into_iter()
                .collect();
            let mut page = 1u64;
            loop {
                let body =
                    json!({"limit": SCOPE_PAGE, "page": page, "sort": "createdAt", "order": "asc"});
                let answer = self
                    .call(reqwest::Method::POST, "/v3/documents/list", Some(body))
                    .await?;
                let docs = answer
                    .get("memories")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for doc in &docs {
                    if let Some(scope) = doc["metadata"][SCOPE_KEY].as_str() {
                        if scope.starts_with(prefix) {
                            found.insert(scope.to_string());
                        }
                    }
                }
                let pages = answer["pagination"]["totalPages"].as_u64().unwrap_or(0);
                if docs.is_empty() || page >= pages {
                    break;
                }
                page += 1;
            }
            Ok(found.into_iter().collect())
        })
    }

    fn session_messages<'a>(
        &'a self,
        user_id: &'a str,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<SessionMessage>, StoreError>> {
        self.sessions.session_messages(user_id, session_id)
    }

    fn list_sessions<'a>(
        &'a self,
        user_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<SessionInfo>, StoreError>> {
        self.sessions.list_sessions(user_id)
    }

    fn get_session<'a>(
        &'a self,
        user_id: Option<&'a str>,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Session, StoreError>> {
        self.sessions.get_session(user_id, session_id)
    }

    fn delete_session<'a>(
        &'a self,
        user_id: Option<&'a str>,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.sessions.delete_session(user_id, session_id)
    }

    fn purge_expired(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.sessions.purge_expired()
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.sessions.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_tags_are_valid_and_distinct() {
        let valid = |t: &str| {
            t.len() <= 100
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        let scopes = [
            "alice",
            "alice#proj",
            "alice_proj",
            "alice proj",
            "ünïcode",
            &"x".repeat(300),
            &"x".repeat(80),
            &"x".repeat(81),
        ];
        let tags: Vec<String> = scopes.iter().map(|s| container_tag(s)).collect();
        for t in &tags {
            assert!(valid(t), "{t}");
        }
        let mut unique = tags.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tags.len(), "{tags:?}");
        assert_eq!(container_tag("alice"), "memproxy_u_alice");
        assert!(container_tag("alice#p").starts_with("memproxy_h_alice_p_"));
    }

    #[test]
    fn captures_of_the_same_text_share_an_id() {
        let a = capture_id("t", "Hello   World");
        assert_eq!(a, capture_id("t", "hello world"));
        assert_ne!(a, capture_id("u", "hello world"));
        assert!(a.len() <= 100);
    }

    #[test]
    fn metadata_is_flattened() {
        let mut m = Metadata::new();
        m.insert("a".into(), json!(1));
        m.insert("b".into(), json!({"x": 1}));
        m.insert("c".into(), Value::Null);
        let flat = flat_metadata(&m, Some("s1"));
        assert_eq!(
            flat,
            json!({"a": 1, "b": "{\"x\":1}", "memproxy_session_id": "s1"})
        );
    }
}
