//! The memory API (SPEC §4, master key): add, list, search, get, delete memories of a
//! user or one of its projects, forget a user (or one project), export as JSONL. Every
//! call names its `user_id`; the project is the `project` parameter, else the request's
//! own (`/p/<project>/` prefix, `x-memory-project` header, the key's binding). An id of
//! another scope's memory answers 404 like an unknown one.

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
use super::middleware::RequestCtx;
use super::{body, AppState};
use crate::auth::Principal;
use crate::identity::validate_user_id;
use crate::keys::KeyError;
use crate::memory::{Memory, MemoryService, Metadata, NewMemory, Scope};

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

/// The project a call addresses: `asked` (the `project` parameter or field), else the
/// request's own. A key bound to a project reaches only that project.
pub fn project_of(ctx: &RequestCtx, asked: Option<&str>) -> Result<Option<String>, ApiError> {
    let asked = asked.filter(|p| !p.is_empty());
    let bound = ctx.principal.key().and_then(|k| k.row.project.as_deref());
    match (asked, bound) {
        (Some(p), Some(b)) if p != b => Err(KeyError::WrongUser(format!(
            "this key is bound to project `{b}` and cannot access the memory of project `{p}`"
        ))
        .into()),
        (Some(p), _) => Ok(Some(p.to_string())),
        (None, _) => Ok(ctx.scope.project().map(str::to_string)),
    }
}

/// The scope of a call: `user_id` ([`user_param`]) and its project ([`project_of`]).
pub fn scope_param(ctx: &RequestCtx, q: &HashMap<String, String>) -> Result<Scope, ApiError> {
    let user_id = user_param(ctx, q)?;
    let project = project_of(ctx, q.get("project").map(String::as_str))?;
    Ok(Scope::new(&user_id, project.as_deref())?)
}

/// A memory as the API shows it: its scope as `user_id` and `project`.
pub fn memory_json(m: &Memory) -> Value {
    let mut v = json!(m);
    label_scope(&mut v, &m.user_id);
    v
}

/// Replaces `v.user_id` (a store key) by the user id and adds `project` when there is one.
pub fn label_scope(v: &mut Value, key: &str) {
    if let (Ok(scope), Some(obj)) = (Scope::parse(key), v.as_object_mut()) {
        obj.insert("user_id".into(), scope.user_id().into());
        if let Some(p) = scope.project() {
            obj.insert("project".into(), p.into());
        }
    }
}

/// Every scope of a user: its own, then its projects' (sorted).
pub async fn all_scopes(mem: &MemoryService, user_id: &str) -> Result<Vec<String>, ApiError> {
    let mut keys = vec![user_id.to_string()];
    keys.extend(
        mem.store()
            .scope_keys(&Scope::projects_prefix(user_id))
            .await?,
    );
    Ok(keys)
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
    #[serde(default)]
    project: Option<String>,
    content: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    session_id: Option<String>,
}

fn parse_add(ctx: &RequestCtx, bytes: &[u8]) -> Result<NewMemory, ApiError> {
    let b: AddBody = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid memory: {e}")))?;
    let user_id = b
        .user_id
        .filter(|u| !u.is_empty())
        .ok_or_else(|| ApiError::BadRequest("missing required field `user_id`".into()))?;
    validate_user_id(&user_id)?;
    authorize(ctx, &user_id)?;
    let project = project_of(ctx, b.project.as_deref())?;
    let scope = Scope::new(&user_id, project.as_deref())?;
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
    Ok(NewMemory {
        user_id: scope.key().to_string(),
        content,
        metadata,
        session_id: b.session_id,
    })
}

/// `POST /v1/memories` `{user_id, project?, content, metadata?, session_id?}`: stored
/// durably before the answer.
pub async fn add(State(state): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let mem = service(&state)?.clone();
    let ctx = req
        .extensions()
        .get::<RequestCtx>()
        .cloned()
        .ok_or_else(|| ApiError::BadRequest("request context missing".into()))?;
    let (parts, req_body) = req.into_parts();
    let bytes = body::read(&parts.headers, req_body, state.config.server.max_body_bytes).await?;
    let new = parse_add(&ctx, &bytes)?;
    let created = mem.add(new).await?;
    Ok((StatusCode::CREATED, Json(memory_json(&created))).into_response())
}

/// `GET /v1/memories?user_id=&project=&limit=&cursor=`: newest first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let scope = scope_param(&ctx, &q)?;
    let limit = number_param(&q, "limit", DEFAULT_PAGE, 1000)?;
    let page = mem
        .store()
        .list(scope.key(), limit, q.get("cursor").map(String::as_str))
        .await?;
    Ok(Json(json!({
        "object": "list",
        "data": page.items.iter().map(memory_json).collect::<Vec<_>>(),
        "has_more": page.next_cursor.is_some(),
        "next_cursor": page.next_cursor,
    })))
}

/// `GET /v1/memories/search?user_id=&project=&q=&limit=` → `{"results": [...]}` (one
/// scope's memories; retrieval's project-then-user order is the request path's).
pub async fn search(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let scope = scope_param(&ctx, &q)?;
    let text = q
        .get("q")
        .or_else(|| q.get("query"))
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("missing required query parameter `q`".into()))?;
    let limit = number_param(&q, "limit", DEFAULT_SEARCH_LIMIT, 100)?;
    let results: Vec<Value> = mem
        .try_search(scope.key(), text, limit)
        .await?
        .iter()
        .map(|h| {
            let mut v = json!(h);
            label_scope(&mut v, &h.memory.user_id);
            v
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

/// `GET /v1/memories/{id}?user_id=&project=`.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let scope = scope_param(&ctx, &q)?;
    let m = mem.store().get(scope.key(), &id).await?;
    Ok(Json(memory_json(&m)))
}

/// `DELETE /v1/memories/{id}?user_id=&project=`.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let scope = scope_param(&ctx, &q)?;
    mem.store().delete(scope.key(), &id).await?;
    Ok(Json(json!({"id": id, "object": "memory", "deleted": true})))
}

/// `DELETE /v1/memories?user_id=[&project=]`: forgets everything of a user, all its
/// projects included (memories and sessions); with a project, only that project's.
pub async fn delete_user(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let scope = scope_param(&ctx, &q)?;
    let keys = match scope.project() {
        Some(_) => vec![scope.key().to_string()],
        None => all_scopes(mem, scope.user_id()).await?,
    };
    let mut n = 0;
    for key in &keys {
        n += mem.store().delete_user(key).await?;
    }
    let mut out = json!({"user_id": scope.user_id(), "deleted": n});
    if let Some(p) = scope.project() {
        out["project"] = p.into();
    }
    Ok(Json(out))
}

/// `GET /v1/memories/export?user_id=[&project=]`: every memory of the user (of all its
/// scopes: its own, then each project's; with a project, of that project only), one JSON
/// object per line, newest first within a scope, streamed page by page.
pub async fn export(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mem = service(&state)?.clone();
    let scope = scope_param(&ctx, &q)?;
    let mut keys = match scope.project() {
        Some(_) => vec![scope.key().to_string()],
        None => all_scopes(&mem, scope.user_id()).await?,
    };
    keys.reverse();
    // The first page is read before answering, so a failing store is a proper error.
    let Some(first_key) = keys.pop() else {
        return Err(ApiError::BadRequest("no scope to export".into()));
    };
    let first = mem.store().list(&first_key, EXPORT_PAGE, None).await?;
    let start = Some((first_key, first, keys));
    let stream = futures_util::stream::unfold(start, move |state| {
        let mem = mem.clone();
        async move {
            let (key, page, mut rest) = state?;
            let mut chunk = Vec::new();
            for m in &page.items {
                if serde_json::to_writer(&mut chunk, &memory_json(m)).is_ok() {
                    chunk.push(b'\n');
                }
            }
            let next = match page.next_cursor {
                Some(c) => Some((key, Some(c))),
                None => rest.pop().map(|k| (k, None)),
            };
            let next = match next {
                None => None,
                Some((key, cursor)) => {
                    match mem.store().list(&key, EXPORT_PAGE, cursor.as_deref()).await {
                        Ok(p) => Some((key, p, rest)),
                        Err(e) => {
                            tracing::error!(error = %e, "export stopped: store failed");
                            None
                        }
                    }
                }
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
