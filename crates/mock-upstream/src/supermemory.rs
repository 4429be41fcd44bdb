//! A mock of Supermemory's v3 API (the part memproxy uses), speaking its documented JSON:
//! `POST /v3/documents` → `{id, status}`, `POST /v3/search` → `{results: [{documentId,
//! score, chunks: [{content, score, isRelevant}], metadata, title, createdAt}], total,
//! timing}`, `GET`/`DELETE /v3/documents/{id}`, `POST /v3/documents/list` → `{memories,
//! pagination}`, `DELETE /v3/documents/bulk` → `{success, deletedCount}`. Bearer key
//! checked (`401 {"error": "Unauthorized", "details": …}`); the test can script the next
//! answers' status (`429`, `5xx`) or take the whole service down.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// The API key the mock accepts.
pub const SUPERMEMORY_KEY: &str = "sm_test_key";

#[derive(Clone)]
struct Doc {
    id: String,
    custom_id: Option<String>,
    content: String,
    tags: Vec<String>,
    metadata: Value,
    seq: u64,
}

impl Doc {
    fn created_at(&self) -> String {
        format!(
            "2026-01-01T{:02}:{:02}:{:02}.000Z",
            self.seq / 3600 % 24,
            self.seq / 60 % 60,
            self.seq % 60
        )
    }

    fn json(&self, with_content: bool) -> Value {
        let mut v = json!({
            "id": self.id,
            "customId": self.custom_id,
            "containerTags": self.tags,
            "metadata": self.metadata,
            "status": "done",
            "type": "text",
            "title": self.content.chars().take(40).collect::<String>(),
            "summary": self.content,
            "createdAt": self.created_at(),
            "updatedAt": self.created_at(),
        });
        if with_content {
            v["content"] = Value::from(self.content.clone());
        }
        v
    }
}

#[derive(Default)]
struct Inner {
    docs: Mutex<Vec<Doc>>,
    script: Mutex<VecDeque<u16>>,
    down: AtomicBool,
    seq: AtomicU64,
    requests: Mutex<Vec<(String, String)>>,
}

/// A running mock Supermemory; stops when dropped.
pub struct MockSupermemory {
    addr: SocketAddr,
    inner: Arc<Inner>,
    _stop: oneshot::Sender<()>,
}

impl MockSupermemory {
    /// Starts on a random local port.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/v3/documents", post(add))
            .route("/v3/documents/list", post(list))
            .route("/v3/documents/bulk", delete(bulk_delete))
            .route("/v3/documents/{id}", get(get_doc).delete(delete_doc))
            .route("/v3/search", post(search))
            .layer(axum::middleware::from_fn_with_state(inner.clone(), gate))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            addr,
            inner,
            _stop: stop,
        }
    }

    /// The base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next answers are these statuses with Supermemory's error body (FIFO).
    pub fn fail_next(&self, statuses: &[u16]) {
        self.inner.script.lock().unwrap().extend(statuses);
    }

    /// Every request answers 503 while down.
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }

    /// Stored documents: (id, container tags, content).
    pub fn documents(&self) -> Vec<(String, Vec<String>, String)> {
        self.inner
            .docs
            .lock()
            .unwrap()
            .iter()
            .map(|d| (d.id.clone(), d.tags.clone(), d.content.clone()))
            .collect()
    }

    /// Requests received: (method, path).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.inner.requests.lock().unwrap().clone()
    }
}

fn error(status: u16, error: &str, details: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(json!({"error": error, "details": details}))).into_response()
}

/// Records, checks the key, applies outages and scripted failures.
async fn gate(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    inner
        .requests
        .lock()
        .unwrap()
        .push((req.method().to_string(), req.uri().path().to_string()));
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {SUPERMEMORY_KEY}") {
        return error(401, "Unauthorized", "Invalid API key");
    }
    if inner.down.load(Ordering::SeqCst) {
        return error(
            503,
            "Service Unavailable",
            "The service is temporarily down",
        );
    }
    let scripted = inner.script.lock().unwrap().pop_front();
    match scripted {
        Some(429) => error(429, "Rate limit exceeded", "Too many requests, slow down"),
        Some(401) => error(401, "Unauthorized", "Invalid API key"),
        Some(s) => error(s, "Internal server error", "Something went wrong"),
        None => next.run(req).await,
    }
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// The request's tags: `containerTag`, else the deprecated `containerTags`.
fn tags(body: &Value) -> Vec<String> {
    if let Some(t) = str_field(body, "containerTag") {
        return vec![t.to_string()];
    }
    body.get("containerTags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 100
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

async fn add(State(inner): State<Arc<Inner>>, Json(body): Json<Value>) -> Response {
    let Some(content) = str_field(&body, "content").filter(|c| !c.is_empty()) else {
        return error(400, "Invalid request", "content is required");
    };
    let tags = tags(&body);
    if !tags.iter().all(|t| valid_tag(t)) {
        return error(400, "Invalid request", "invalid containerTag");
    }
    let custom_id = str_field(&body, "customId").map(str::to_string);
    let metadata = body.get("metadata").cloned().unwrap_or(json!({}));
    let mut docs = inner.docs.lock().unwrap();
    if let Some(cid) = &custom_id {
        if let Some(d) = docs
            .iter_mut()
            .find(|d| d.custom_id.as_ref() == Some(cid) && d.tags == tags)
        {
            d.content = content.to_string();
            return Json(json!({"id": d.id, "status": "queued"})).into_response();
        }
    }
    let seq = inner.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let id = format!("sm{seq:06}doc");
    docs.push(Doc {
        id: id.clone(),
        custom_id,
        content: content.to_string(),
        tags,
        metadata,
        seq,
    });
    Json(json!({"id": id, "status": "queued"})).into_response()
}

fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(str::to_string)
        .collect()
}

async fn search(State(inner): State<Arc<Inner>>, Json(body): Json<Value>) -> Response {
    let Some(q) = str_field(&body, "q") else {
        return error(400, "Invalid request", "q is required");
    };
    let limit = body.get("limit").and_then(Value::as_u64).unwrap_or(10) as usize;
    let want = tags(&body);
    let q = words(q);
    let docs = inner.docs.lock().unwrap();
    let mut scored: Vec<(f64, &Doc)> = docs
        .iter()
        .filter(|d| want.is_empty() || d.tags == want)
        .filter_map(|d| {
            let w = words(&d.content);
            let hit = q.iter().filter(|t| w.contains(t)).count();
            (hit > 0).then(|| (hit as f64 / q.len().max(1) as f64, d))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let results: Vec<Value> = scored
        .iter()
        .take(limit)
        .map(|(score, d)| {
            json!({
                "documentId": d.id,
                "title": d.content.chars().take(40).collect::<String>(),
                "type": "text",
                "score": score,
                "chunks": [{"content": d.content, "score": score, "isRelevant": true}],
                "metadata": d.metadata,
                "createdAt": d.created_at(),
                "updatedAt": d.created_at(),
            })
        })
        .collect();
    let total = results.len();
    Json(json!({"results": results, "total": total, "timing": 12})).into_response()
}

async fn get_doc(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let docs = inner.docs.lock().unwrap();
    match docs
        .iter()
        .find(|d| d.id == id || d.custom_id.as_deref() == Some(&id))
    {
        Some(d) => Json(d.json(true)).into_response(),
        None => error(404, "Document not found", &format!("no document `{id}`")),
    }
}

async fn delete_doc(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let mut docs = inner.docs.lock().unwrap();
    let before = docs.len();
    docs.retain(|d| d.id != id && d.custom_id.as_deref() != Some(&id));
    if docs.len() == before {
        return error(404, "Document not found", &format!("no document `{id}`"));
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn list(State(inner): State<Arc<Inner>>, Json(body): Json<Value>) -> Response {
    let want = tags(&body);
    let limit = body
        .get("limit")
        .and_then(Value::as_u64)
        .unwrap_or(50)
        .max(1);
    let page = body.get("page").and_then(Value::as_u64).unwrap_or(1).max(1);
    let asc = str_field(&body, "order") == Some("asc");
    let docs = inner.docs.lock().unwrap();
    let mut mine: Vec<&Doc> = docs
        .iter()
        .filter(|d| want.is_empty() || want.iter().all(|t| d.tags.contains(t)))
        .collect();
    mine.sort_by_key(|d| d.seq);
    if !asc {
        mine.reverse();
    }
    let total = mine.len() as u64;
    let memories: Vec<Value> = mine
        .iter()
        .skip(((page - 1) * limit) as usize)
        .take(limit as usize)
        .map(|d| d.json(false))
        .collect();
    Json(json!({
        "memories": memories,
        "pagination": {
            "currentPage": page,
            "limit": limit,
            "totalItems": total,
            "totalPages": total.div_ceil(limit),
        }
    }))
    .into_response()
}

async fn bulk_delete(State(inner): State<Arc<Inner>>, Json(body): Json<Value>) -> Response {
    let want = tags(&body);
    let ids: Vec<String> = body
        .get("ids")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if want.is_empty() && ids.is_empty() {
        return error(400, "Invalid request", "ids or containerTags is required");
    }
    let mut docs = inner.docs.lock().unwrap();
    let before = docs.len();
    docs.retain(|d| !(ids.contains(&d.id) || want.iter().any(|t| d.tags.contains(t))));
    let deleted = before - docs.len();
    Json(json!({"success": true, "deletedCount": deleted, "containerTags": want})).into_response()
}
