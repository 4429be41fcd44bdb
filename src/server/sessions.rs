//! The sessions API (SPEC §4, master key): `GET /v1/sessions[?user_id=]`,
//! `GET /v1/sessions/{id}[?user_id=]`, `DELETE /v1/sessions/{id}[?user_id=]`. Session
//! ids are chosen by clients, so two users may use the same one: without `user_id` an id
//! shared by several users answers 409. A project's sessions are its scope's: name it
//! with `project` (or the request's own project, as in the memory API); listing a user's
//! sessions without a project lists those of all its scopes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::error::ApiError;
use super::memories::{all_scopes, bound_user, project_of, service};
use super::middleware::RequestCtx;
use super::AppState;
use crate::memory::{Scope, SessionInfo, StoreError};

/// The scope a call names: `user_id` (else the key's bound user) and the project; `None`
/// for the master key naming no user (every user's sessions).
fn optional_scope(
    ctx: &RequestCtx,
    q: &HashMap<String, String>,
) -> Result<Option<Scope>, ApiError> {
    let user = match q.get("user_id") {
        None => bound_user(ctx)?,
        Some(_) => Some(super::memories::user_param(ctx, q)?),
    };
    let Some(user) = user else {
        return Ok(None);
    };
    let project = project_of(ctx, q.get("project").map(String::as_str))?;
    Ok(Some(Scope::new(&user, project.as_deref())?))
}

fn info_json(i: &SessionInfo) -> Value {
    let mut v = json!({
        "session_id": i.session_id,
        "user_id": i.user_id,
        "created_at": i.created_at_ms.div_euclid(1000),
        "updated_at": i.updated_at_ms.div_euclid(1000),
        "message_count": i.message_count,
    });
    super::memories::label_scope(&mut v, &i.user_id);
    v
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::MemoryNotFound { what: "session" },
        other => other.into(),
    }
}

/// `GET /v1/sessions[?user_id=&project=]`: live sessions, most recently used first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let sessions = match optional_scope(&ctx, &q)? {
        None => mem.store().list_sessions(None).await?,
        Some(scope) if scope.project().is_some() => {
            mem.store().list_sessions(Some(scope.key())).await?
        }
        Some(scope) => {
            let mut all = Vec::new();
            for key in all_scopes(mem, scope.user_id()).await? {
                all.extend(mem.store().list_sessions(Some(&key)).await?);
            }
            all.sort_by_key(|s| std::cmp::Reverse(s.updated_at_ms));
            all
        }
    };
    Ok(Json(json!({
        "object": "list",
        "data": sessions.iter().map(info_json).collect::<Vec<_>>(),
    })))
}

/// `GET /v1/sessions/{id}[?user_id=&project=]`: the session and its retained messages.
pub async fn get(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let scope = optional_scope(&ctx, &q)?;
    let s = mem
        .store()
        .get_session(scope.as_ref().map(Scope::key), &id)
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

/// `DELETE /v1/sessions/{id}[?user_id=&project=]`.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mem = service(&state)?;
    let scope = optional_scope(&ctx, &q)?;
    mem.store()
        .delete_session(scope.as_ref().map(Scope::key), &id)
        .await
        .map_err(not_found)?;
    Ok(Json(
        json!({"session_id": id, "object": "session", "deleted": true}),
    ))
}
