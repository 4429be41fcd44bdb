//! Operational endpoints: health checks, Prometheus `/metrics`, the model list, and the
//! routing decision for the caller's headers (`/memory-routing/info`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::middleware::RequestCtx;
use super::AppState;
use crate::auth::Principal;
use crate::identity::MatchedRule;

/// `GET /health/liveliness`: the process answers.
pub async fn liveliness() -> Json<&'static str> {
    Json("I'm alive!")
}

/// `GET /health`: overall status.
pub async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "models": state.router.model_names().len(),
        "upstream_mode": state.config.server.upstream.is_some(),
        "uptime_seconds": state.started.elapsed().as_secs(),
    }))
}

/// How long readiness waits for the analytics store to answer.
const STORE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /health/readiness`: ready when models are routable and stores answer.
pub async fn readiness(State(state): State<Arc<AppState>>) -> Response {
    let models_ok =
        !state.router.model_names().is_empty() || state.config.server.upstream.is_some();
    let store = tokio::time::timeout(STORE_CHECK_TIMEOUT, state.analytics.call(|s| s.check()))
        .await
        .unwrap_or_else(|_| {
            Err(crate::analytics::StoreError::Unavailable(
                "no answer within 2 s".into(),
            ))
        });
    let stats = state.analytics.stats();
    // A store that answers reads but refuses writes (disk full, read-only) is not ready.
    let store_ok = store.is_ok() && stats.store_ok;
    let memory = match &state.memory {
        None => json!({"ok": true, "enabled": false}),
        Some(m) => match m.store().health().await {
            Ok(()) if m.writes_ok() => {
                json!({"ok": true, "enabled": true, "dropped_writes": m.dropped_writes()})
            }
            Ok(()) => json!({"ok": false, "enabled": true, "error": "the last memory write failed",
                             "dropped_writes": m.dropped_writes()}),
            Err(e) => json!({"ok": false, "enabled": true, "error": e.to_string()}),
        },
    };
    // Redis down is not "not ready" when limits fall back to this instance's buckets.
    let redis = state.limits.shared_store_healthy().map(|healthy| {
        json!({"ok": healthy || state.config.rate_limits.fail_open, "reachable": healthy,
               "fail_open": state.config.rate_limits.fail_open})
    });
    let redis_ok = redis.as_ref().is_none_or(|r| r["ok"] == true);
    let storage = match state.storage.check().await {
        None => json!({"backend": state.storage.kind(), "ok": true}),
        Some(Ok(())) => json!({"backend": state.storage.kind(), "ok": true}),
        Some(Err(e)) => json!({"backend": state.storage.kind(), "ok": false, "error": e}),
    };
    let ready = models_ok && store_ok && memory["ok"] == true && redis_ok && storage["ok"] == true;
    let status = if ready { "ready" } else { "not_ready" };
    let body = json!({
        "status": status,
        "checks": {
            "models": {"ok": models_ok, "count": state.router.model_names().len()},
            "upstream_mode": state.config.server.upstream.is_some(),
            "analytics_store": {
                "ok": store_ok,
                "error": store.err().map(|e| e.to_string()).or_else(|| {
                    (!stats.store_ok).then(|| "the last analytics write failed".to_string())
                }),
                "queue_depth": stats.queue_depth,
                "rows_dropped": stats.dropped_queue_full + stats.dropped_store_error,
            },
            "memory": memory,
            "redis": redis,
            "storage": storage,
        }
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text exposition (master key only when
/// `observability.require_auth_for_metrics_endpoint` is set).
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    ctx: Option<Extension<RequestCtx>>,
) -> Response {
    if ctx.is_some_and(|c| !c.principal.is_admin()) {
        return super::error::ApiError::from(crate::keys::KeyError::AdminOnly).into_response();
    }
    let text = state.metrics.render(state.analytics.stats());
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// `GET /v1/models`: the configured model names in OpenAI's list shape (for a virtual key,
/// the ones it may use).
pub async fn models(
    State(state): State<Arc<AppState>>,
    ctx: Option<Extension<RequestCtx>>,
) -> Json<serde_json::Value> {
    let key = ctx.as_ref().and_then(|c| c.principal.key());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let data: Vec<_> = state
        .router
        .model_names()
        .iter()
        .filter(|m| key.is_none_or(|k| k.check_model(m).is_ok()))
        .map(|m| json!({"id": m, "object": "model", "created": created, "owned_by": "memproxy"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// `GET /memory-routing/info[?model=]`: how this request's headers are classified.
pub async fn routing_info(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<serde_json::Value> {
    let identity = &state.config.identity;
    let rule = match &ctx.identity.rule {
        MatchedRule::KeyBinding => json!({"type": "key_binding"}),
        MatchedRule::CustomHeader => {
            json!({"type": "custom_header", "header": identity.custom_header.as_str()})
        }
        MatchedRule::HeaderPattern { index } => {
            let p = &identity.patterns[*index];
            json!({"type": "header_pattern", "index": index, "header": p.header.as_str(),
                   "pattern": p.regex.as_str()})
        }
        MatchedRule::Default => json!({"type": "default"}),
    };
    let model = q.get("model").map(|m| {
        let deployments = state.router.deployments(m);
        let supermemory = deployments.iter().any(|d| d.config.supermemory_router);
        json!({
            "name": m,
            "configured": state.router.knows(m),
            "memory_enabled": state.memory.is_some() && !supermemory
                && crate::memory::inject::applies_to(&state.config.retrieval, m),
            "memory_mode": if supermemory { "supermemory_router" } else { "none" },
            "deployments": deployments.iter().map(|d| json!({
                "provider": d.config.provider, "api_base": d.config.api_base,
                "upstream_model": d.config.upstream_model,
            })).collect::<Vec<_>>(),
        })
    });
    Json(json!({
        "user_id": ctx.identity.user_id,
        "authenticated_as": match &ctx.principal {
            Principal::Master => "master_key",
            Principal::Open => "none (no master key set)",
            Principal::VirtualKey(_) => "virtual_key",
        },
        "key_alias": ctx.principal.key().and_then(|k| k.row.alias.clone()),
        "matched_rule": rule,
        "session_id": ctx.session_id,
        "request_id": ctx.request_id,
        "model": model,
        "custom_header": identity.custom_header.as_str(),
        "default_user_id": identity.default_user_id,
    }))
}
