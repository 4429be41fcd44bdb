//! LiteLLM's key management routes: `POST /key/generate`, `GET /key/info`,
//! `POST /key/delete`, `GET /key/list`. Only the master key manages keys; a virtual key
//! may read its own `/key/info`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::middleware::RequestCtx;
use super::AppState;
use crate::keys::{GenerateRequest, KeyError, UpdateRequest};

fn admin(ctx: &RequestCtx) -> Result<(), ApiError> {
    if ctx.principal.is_admin() {
        Ok(())
    } else {
        Err(KeyError::AdminOnly.into())
    }
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| KeyError::Invalid(format!("invalid body: {e}")).into())
}

/// `POST /key/generate`.
pub async fn generate(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    admin(&ctx)?;
    let req: GenerateRequest = json_body(&body)?;
    let generated = state.keys.generate(&*state.key_store, req).await?;
    Ok(Json(serde_json::to_value(generated).unwrap_or_default()))
}

/// `GET /key/info?key=` (a key or its hash; a virtual key without `key` gets its own).
pub async fn info(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let own = ctx.principal.key();
    let key = match (q.get("key"), own) {
        (Some(k), _) => state.keys.lookup(k).ok_or(KeyError::NotFound)?,
        (None, Some(own)) => own.clone(),
        (None, None) => return Err(KeyError::Invalid("pass the key as `?key=`".into()).into()),
    };
    if !ctx.principal.is_admin() && own.is_none_or(|o| o.row.hash != key.row.hash) {
        return Err(KeyError::AdminOnly.into());
    }
    Ok(Json(json!({"key": key.row.hash, "info": key.info()})))
}

#[derive(Deserialize)]
struct DeleteBody {
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    key_aliases: Vec<String>,
}

/// `POST /key/delete {keys: [...], key_aliases: [...]}`.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    admin(&ctx)?;
    let b: DeleteBody = json_body(&body)?;
    let mut targets = b.keys;
    if !b.key_aliases.is_empty() {
        targets.extend(
            state
                .keys
                .list(None)
                .into_iter()
                .filter(|k| {
                    k.row
                        .alias
                        .as_ref()
                        .is_some_and(|a| b.key_aliases.contains(a))
                })
                .map(|k| k.row.hash.clone()),
        );
    }
    let deleted = state.keys.delete(&*state.key_store, &targets).await?;
    state.storage.keys_changed(&deleted).await;
    Ok(Json(json!({"deleted_keys": deleted})))
}

#[derive(Deserialize)]
struct UpdateBody {
    key: String,
    #[serde(flatten)]
    change: UpdateRequest,
}

/// `POST /key/update {key, user_id?, key_alias?, max_budget?, rpm_limit?, tpm_limit?,
/// models?}`: changes a key's binding and limits; other instances drop their cached copy.
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    admin(&ctx)?;
    let b: UpdateBody = json_body(&body)?;
    let key = state
        .keys
        .update(&*state.key_store, &b.key, b.change)
        .await?;
    state
        .storage
        .keys_changed(std::slice::from_ref(&key.row.hash))
        .await;
    Ok(Json(json!({"key": key.row.hash, "info": key.info()})))
}

/// `GET /key/list[?user_id=&return_full_object=true]`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    admin(&ctx)?;
    let keys = state.keys.list(q.get("user_id").map(String::as_str));
    let full = q.get("return_full_object").is_some_and(|v| v == "true");
    let items: Vec<Value> = keys
        .iter()
        .map(|k| {
            if full {
                k.info()
            } else {
                Value::String(k.row.hash.clone())
            }
        })
        .collect();
    Ok(Json(json!({
        "keys": items,
        "total_count": items.len(),
        "current_page": 1,
        "total_pages": 1,
    })))
}
