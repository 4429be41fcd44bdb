//! The memory API (SPEC §4, master key): add, list, search, get, delete memories of a
//! user, forget a user, export as JSONL, list a user's projects. Every call names its
//! `user_id`; an id of another user's memory answers 404 like an unknown one. A call
//! works in one project's scope when it names the project (query parameter or body field
//! `project`, the `x-memory-project` header or the `/p/<project>` prefix; a key bound to a
//! project is always in it), else in the user's project-independent scope.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::middleware::{read_body, RequestCtx};
use super::AppState;
use crate::auth::Principal;
use crate::identity::validate_user_id;
use crate::keys::KeyError;
use crate::memory::scope::{self, validate_project, Scope};
use crate::memory::{MemoryService, Metadata, NewMemory};

/// Longest accepted session id.
const MAX_SESSION_ID_LEN: usize = 256;
/// Largest memory accepted, in bytes of text.
const MAX_CONTENT_BYTES: usize = 1 << 20;
/// Page size of `GET /v1/memories` when none is asked for.
const DEFAULT_PAGE: usize = 50;
/// Results of a search when none is asked for.
const DEFAULT_SEARCH_LIMIT: usize = 10;
/// Memories read per store call while exporting.
const EXPORT_PAGE: usize = 500;

/// The memory service, or 503 when memory is disabled.
pub fn service(state: &AppState) -> Result<&Arc<MemoryService>, ApiError> {
    state.memory.as_ref().ok_or(ApiError::MemoryDisabled)
}

/// May this caller manage `user_id`'s memory? The master key (or an open proxy) may
/// manage every user; a virtual key only the user it is bound to.
pub fn authorize(ctx: &RequestCtx, user_id: &str) -> Result<(), ApiError> {
    match &ctx.principal {
        Principal::Master | Principal::Open => Ok(()),
        Principal::VirtualKey(k) => match k.row.user_id.as_deref() {
            Some(bound) if bound == user_id => Ok(()),
            Some(bound) => Err(KeyError::WrongUser(format!(
                "this key is bound to user `{bound}` and cannot access the memory of `{user_id}`"
            ))
            .into()),
            None => Err(KeyError::WrongUser(
                "this key is not bound to a user; only the master key or a key bound to the \
                 user may access its memory"
                    .into(),
            )
            .into()),
        },
    }
}

/// The user a virtual key is bound to, for calls that name no user (sessions); an unbound
/// key may not make such calls.
pub fn bound_user(ctx: &RequestCtx) -> Result<Option<String>, ApiError> {
    match &ctx.principal {
        Principal::VirtualKey(k) => match &k.row.user_id {
            Some(u) => Ok(Some(u.clone())),
            None => Err(KeyError::WrongUser(
                "this key is not bound to a user; only the master key may list every user's \
                 sessions"
                    .into(),
            )
            .into()),
        },
        _ => Ok(None),
    }
}

/// The `user_id` query parameter: required and valid, taken exactly as sent (no
/// trimming: an id with a no-break space is refused here as everywhere else, never
/// read as another user's).
pub fn user_param(ctx: &RequestCtx, q: &HashMap<String, String>) -> Result<String, ApiError> {
    let user_id = q
        .get("user_id")
        .map(String::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::BadRequest("missing required query parameter `user_id`".into()))?;
    validate_user_id(user_id)?;
    authorize(ctx, user_id)?;
    Ok(user_id.to_string())
}

fn number_param(
    q: &HashMap<String, String>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("`{name}` must be a number from 1 to {max}"))
            }),
    }
}

#[derive(Deserialize)]
struct AddBody {
    user_id: Option<String>,
    content: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    project: Option<String>,
}

fn parse_add(bytes: &[u8]) -> Result<(NewMemory, Option<String>), ApiError> {
    let b: AddBody = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid memory: {e}")))?;
    let user_id = b
        .user_id
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::BadRequest("missing required field `user_id`".into()))?;
    validate_user_id(&user_id)?;
    let content = match b.content {
        Some(Value::String(s)) if s.len() > MAX_CONTENT_BYTES => {
            return Err(ApiError::BadRequest(format!(
                "`content` is longer than {MAX_CONTENT_BYTES} bytes"
            )))
        }
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::String(_)) | None => {
            return Err(ApiError::BadRequest(
                "`content` must be a non-empty string".into(),
            ))
        }
        Some(_) => return Err(ApiError::BadRequest("`content` must be a string".into())),
    };
    let metadata: Metadata = match b.metadata {
        None | Some(Value::Null) => Metadata::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`metadata` must be a JSON object".into(),
            ))
        }
    };
    if let Some(s) = &b.session_id {
        if s.is_empty() || s.len() > MAX_SESSION_ID_LEN {
            return Err(ApiError::BadRequest(format!(
                "`session_id` must be 1 to {MAX_SESSION_ID_LEN} characters"
            )));
        }
    }
    Ok((
        NewMemory {
            user_id,
            content,
            metadata,
            session_id: b.session_id,
        },
        b.project,
    ))
}

/// `POST /v1/memories` `{user_id, content, metadata?, session_id?}`: stored durably
/// before the answer.
pub async fn add(State(state): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let mem = service(&state)?.clone();
    let ctx = req
        .extensions()
        .get::<RequestCtx>()
        .cloned()
        .ok_or_else(|| ApiError::BadRequest("request context missing".into()))?;
    let (parts, req_body) = req.into_parts();
    let bytes = read_body(&parts.headers, req_body, state.config.server.max_body_bytes).await?;
    let (mut new, project) = parse_add(&bytes)?;
    authorize(&ctx, &new.user_id)?;
    new.user_id = scope_of(&ctx, new.user_id, project.as_deref())?.key();
    let created = mem.add(new).await?;
    Ok((StatusCode::CREATED, Json(shown(json!(created)))).into_response())
}

/// The scope a memory API call works in: `user_id` ([`user_param`]) and the project named
/// by `named` (a query parameter or body field), else the request's (header, prefix or
/// key binding). A key bound to a project cannot name another one.
pub fn scope_of(ctx: &RequestCtx, user_id: String, named: Option<&str>) -> Result<Scope, ApiError> {
    let project = match named {
        Some(p) => {
            validate_project(p)?;
            let bound = ctx.principal.key().and_then(|k| k.row.project.as_deref());
            if let Some(b) = bound.filter(|b| *b != p) {
                return Err(KeyError::WrongUser(format!(
                    "this key is bound to project `{b}` and cannot access project `{p}`"
                ))
                .into());
            }
            Some(p.to_string())
        }
        None => ctx.project.clone(),
    };
    Ok(Scope { user_id, project })
}

/// [`scope_of`] with `user_id` and `project` from the query.
fn scope_param(ctx: &RequestCtx, q: &HashMap<String, String>) -> Result<Scope, ApiError> {
    let user_id = user_param(ctx, q)?;
    scope_of(ctx, user_id, q.get("project").map(String::as_str))
}

/// A stored memory as the API shows it: its user id, and its project if it has one (the
/// store knows only the scope's key).
fn shown(mut v: Value) -> Value {
    let key = v.get("user_id").and_then(Value::as_str).map(str::to_string);
    if let (Some(key), Some(obj)) = (key, v.as_object_mut()) {
        let (user, project) = scope::parse_key(&key);
        if let Some(p) = project {
            obj.insert("project".into(), Value::from(p));
            obj.insert("user_id".into(), Value::from(user));
        }
    }
    v
}

fn shown_all<T: serde::Serialize>(items: &[T]) -> Vec<Value> {
    items.iter().map(|m| shown(json!(m))).collect()
}

/// `GET /v1/memories?user_id=&limit=&cursor=`: newest first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let key = scope_param(&ctx, &q)?.key();
    let limit = number_param(&q, "limit", DEFAULT_PAGE, 1000)?;
    let page = mem
        .store()
        .list(&key, limit, q.get("cursor").map(String::as_str))
        .await?;
    Ok(Json(json!({
        "object": "list",
        "data": shown_all(&page.items),
        "has_more": page.next_cursor.is_some(),
        "next_cursor": page.next_cursor,
    })))
}

/// `GET /v1/memories/search?user_id=&q=&limit=` → `{"results": [...]}`.
pub async fn search(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let key = scope_param(&ctx, &q)?.key();
    let text = q
        .get("q")
        .or_else(|| q.get("query"))
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("missing required query parameter `q`".into()))?;
    let limit = number_param(&q, "limit", DEFAULT_SEARCH_LIMIT, 100)?;
    let results = mem.try_search(&key, text, limit).await?;
    Ok(Json(json!({ "results": shown_all(&results) })))
}

/// `GET /v1/memories/{id}?user_id=`.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let key = scope_param(&ctx, &q)?.key();
    let m = mem.store().get(&key, &id).await?;
    Ok(Json(shown(json!(m))))
}

/// `DELETE /v1/memories/{id}?user_id=`.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let key = scope_param(&ctx, &q)?.key();
    mem.store().delete(&key, &id).await?;
    Ok(Json(json!({"id": id, "object": "memory", "deleted": true})))
}

/// `DELETE /v1/memories?user_id=[&project=]`: forgets everything (memories and sessions)
/// of a project, or, without a project, of the user: their own scope and every project.
pub async fn delete_user(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let scope = scope_param(&ctx, &q)?;
    if let Some(p) = &scope.project {
        let n = mem.store().delete_user(&scope.key()).await?;
        return Ok(Json(
            json!({"user_id": scope.user_id, "project": p, "deleted": n}),
        ));
    }
    let projects = mem
        .store()
        .user_ids_with_prefix(&scope::project_prefix(&scope.user_id))
        .await?;
    let mut n = mem.store().delete_user(&scope.user_id).await?;
    for key in &projects {
        n += mem.store().delete_user(key).await?;
    }
    Ok(Json(json!({"user_id": scope.user_id, "deleted": n})))
}

/// `GET /v1/memories/projects?user_id=`: the projects of a user that hold memories or
/// sessions (a key bound to a project sees that project only).
pub async fn projects(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let user_id = user_param(&ctx, &q)?;
    let bound = ctx.principal.key().and_then(|k| k.row.project.clone());
    let keys = mem
        .store()
        .user_ids_with_prefix(&scope::project_prefix(&user_id))
        .await?;
    let data: Vec<Value> = keys
        .iter()
        .filter_map(|k| scope::parse_key(k).1)
        .filter(|p| bound.as_deref().is_none_or(|b| b == *p))
        .map(|p| json!({"object": "project", "project": p}))
        .collect();
    Ok(Json(
        json!({"object": "list", "user_id": user_id, "data": data}),
    ))
}

/// `GET /v1/memories/export?user_id=`: every memory of the user, one JSON object per
/// line, newest first, streamed page by page.
pub async fn export(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mem = service(&state)?.clone();
    let user_id = scope_param(&ctx, &q)?.key();
    // The first page is read before answering, so a failing store is a proper error.
    let first = mem.store().list(&user_id, EXPORT_PAGE, None).await?;
    let stream = futures_util::stream::unfold(Some(first), move |page| {
        let (mem, user_id) = (mem.clone(), user_id.clone());
        async move {
            let page = page?;
            let mut chunk = Vec::new();
            for m in &page.items {
                if serde_json::to_writer(&mut chunk, &shown(json!(m))).is_ok() {
                    chunk.push(b'\n');
                }
            }
            let next = match page.next_cursor {
                None => None,
                Some(c) => match mem.store().list(&user_id, EXPORT_PAGE, Some(&c)).await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::error!(error = %e, "export stopped: store failed");
                        None
                    }
                },
            };
            Some((Ok::<_, Infallible>(Bytes::from(chunk)), next))
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

/// Most memories one import may carry.
const MAX_IMPORT: usize = 10_000;

#[derive(Deserialize)]
struct PatchBody {
    content: Option<String>,
    metadata: Option<Value>,
}

/// `PATCH /v1/memories/{id}?user_id=` `{content?, metadata?}`: edits a memory. The edit
/// is stored as a new memory (new id, so its search index and embedding are made
/// afresh) and the old one deleted; the answer is the new memory.
pub async fn patch(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let user_id = scope_param(&ctx, &q)?.key();
    let b: PatchBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid memory edit: {e}")))?;
    let old = mem.store().get(&user_id, &id).await?;
    let content = match b.content {
        Some(c) if c.trim().is_empty() => {
            return Err(ApiError::BadRequest(
                "`content` must be a non-empty string".into(),
            ))
        }
        Some(c) if c.len() > MAX_CONTENT_BYTES => {
            return Err(ApiError::BadRequest(format!(
                "`content` is longer than {MAX_CONTENT_BYTES} bytes"
            )))
        }
        Some(c) => c,
        None => old.content.clone(),
    };
    let metadata = match b.metadata {
        None | Some(Value::Null) => old.metadata.clone(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`metadata` must be a JSON object".into(),
            ))
        }
    };
    let mut metadata = metadata;
    metadata.insert("edited_from".into(), Value::String(id.clone()));
    let created = mem
        .add(NewMemory {
            user_id: user_id.clone(),
            content,
            metadata,
            session_id: old.session_id.clone(),
        })
        .await?;
    mem.store().delete(&user_id, &id).await?;
    Ok(Json(shown(json!(created))))
}

/// `POST /v1/memories/import?user_id=` with JSONL (one `{content, metadata?,
/// session_id?}` per line, as `/v1/memories/export` writes them): every line is checked
/// first (a bad one is a 400 naming it, and nothing is stored), then all are stored in
/// one transaction.
pub async fn import(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let mem = service(&state)?.clone();
    let ctx = req
        .extensions()
        .get::<RequestCtx>()
        .cloned()
        .ok_or_else(|| ApiError::BadRequest("request context missing".into()))?;
    let q: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let scope = scope_param(&ctx, &q)?;
    let user_id = scope.user_id.clone();
    let (parts, req_body) = req.into_parts();
    let bytes = read_body(&parts.headers, req_body, state.config.server.max_body_bytes).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::BadRequest("the import is not UTF-8 text".into()))?;
    let mut batch = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut v: Value = serde_json::from_str(line)
            .map_err(|e| ApiError::BadRequest(format!("line {}: {e}", n + 1)))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("user_id".into(), Value::String(user_id.clone()));
            o.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "user_id" | "content" | "metadata" | "session_id"
                )
            });
        }
        let (mut new, _) = parse_add(&serde_json::to_vec(&v).unwrap_or_default())
            .map_err(|e| ApiError::BadRequest(format!("line {}: {e}", n + 1)))?;
        new.user_id = scope.key();
        batch.push(new);
        if batch.len() > MAX_IMPORT {
            return Err(ApiError::BadRequest(format!(
                "an import holds at most {MAX_IMPORT} memories"
            )));
        }
    }
    let created = mem.store().add(batch).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user_id": user_id, "project": scope.project, "imported": created.len()})),
    )
        .into_response())
}
