//! The sessions API (SPEC §4, master key): `GET /v1/sessions[?user_id=]`,
//! `GET /v1/sessions/{id}[?user_id=]`, `DELETE /v1/sessions/{id}[?user_id=]`. Session
//! ids are chosen by clients, so two users may use the same one: without `user_id` an id
//! shared by several users answers 409. With a project (`?project=`, the header, the `/p/`
//! prefix or the key's binding) a named user's calls work in that project's scope.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::error::ApiError;
use super::memories::{bound_user, scope_of, service, user_param};
use super::middleware::RequestCtx;
use super::AppState;
use crate::memory::scope;
use crate::memory::{SessionInfo, StoreError};

fn optional_user(
    ctx: &RequestCtx,
    q: &HashMap<String, String>,
) -> Result<Option<String>, ApiError> {
    let user = match q.get("user_id") {
        None => bound_user(ctx)?,
        Some(_) => Some(user_param(ctx, q)?),
    };
    user.map(|u| scope_of(ctx, u, q.get("project").map(String::as_str)).map(|s| s.key()))
        .transpose()
}

fn info_json(i: &SessionInfo) -> Value {
    let (user_id, project) = scope::parse_key(&i.user_id);
    let mut v = json!({
        "session_id": i.session_id,
        "user_id": user_id,
        "created_at": i.created_at_ms.div_euclid(1000),
        "updated_at": i.updated_at_ms.div_euclid(1000),
        "message_count": i.message_count,
    });
    if let Some(p) = project {
        v["project"] = Value::from(p);
    }
    v
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::MemoryNotFound { what: "session" },
        other => other.into(),
    }
}

/// `GET /v1/sessions[?user_id=]`: live sessions, most recently used first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let user_id = optional_user(&ctx, &q)?;
    let sessions = mem.store().list_sessions(user_id.as_deref()).await?;
    Ok(Json(json!({
        "object": "list",
        "data": sessions.iter().map(info_json).collect::<Vec<_>>(),
    })))
}

/// `GET /v1/sessions/{id}[?user_id=]`: the session and its retained messages.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let user_id = optional_user(&ctx, &q)?;
    let s = mem
        .store()
        .get_session(user_id.as_deref(), &id)
        .await
        .map_err(not_found)?;
    let mut out = info_json(&s.info);
    out["messages"] = s
        .messages
        .iter()
        .map(|m| json!({"role": m.role, "content": m.content, "created_at": m.created_at_ms.div_euclid(1000)}))
        .collect();
    Ok(Json(out))
}

/// `DELETE /v1/sessions/{id}[?user_id=]`.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let user_id = optional_user(&ctx, &q)?;
    mem.store()
        .delete_session(user_id.as_deref(), &id)
        .await
        .map_err(not_found)?;
    Ok(Json(
        json!({"session_id": id, "object": "session", "deleted": true}),
    ))
}
