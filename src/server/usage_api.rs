//! The analytics query API: `GET /v1/usage` (totals per user, model, key, day or client;
//! master key only), `GET /v1/usage/requests` (pages of rows, newest first) and
//! `GET /v1/usage/timeseries` (buckets over a range, from the rollups) — a virtual key
//! sees only its own user's rows (or, unbound, its own) — and `POST /v1/feedback` (the
//! master key, or a virtual key for its own requests).

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
use crate::analytics::rollup::{Range, SeriesBy, TimeseriesQuery};
use crate::analytics::{timefmt, Feedback, GroupBy, RequestsQuery, UsageQuery};
use crate::keys::KeyError;

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn admin(ctx: &RequestCtx) -> Result<(), ApiError> {
    if ctx.principal.is_admin() {
        Ok(())
    } else {
        Err(KeyError::AdminOnly.into())
    }
}

fn time_param(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    match q.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => timefmt::parse(v).map(Some).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`{name}` must be a date (2025-01-31), an RFC 3339 time or Unix seconds; got `{v}`"
            ))
        }),
    }
}

/// `to=2025-01-31` means "through the end of that day".
fn end_param(q: &HashMap<String, String>) -> Result<Option<i64>, ApiError> {
    let to = time_param(q, "to")?;
    let date_only = q.get("to").is_some_and(|v| v.trim().len() == 10);
    Ok(to.map(|t| if date_only { t + 86_400_000 } else { t }))
}

/// `GET /v1/usage?group_by=user|model|key|day|client&from=&to=`.
pub async fn usage(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    admin(&ctx)?;
    let group_by = match q.get("group_by").map(String::as_str).unwrap_or("user") {
        "user" | "user_id" => GroupBy::User,
        "model" => GroupBy::Model,
        "key" | "api_key" => GroupBy::Key,
        "day" | "date" => GroupBy::Day,
        "client" => GroupBy::Client,
        other => {
            return Err(ApiError::BadRequest(format!(
                "group_by must be one of user, model, key, day, client; got `{other}`"
            )))
        }
    };
    let query = UsageQuery {
        group_by,
        from_ms: time_param(&q, "from")?,
        to_ms: end_param(&q)?,
    };
    let echo = query.clone();
    let groups = state.analytics.call(move |s| s.usage(&query)).await?;
    let total = |f: fn(&crate::analytics::UsageGroup) -> u64| groups.iter().map(f).sum::<u64>();
    Ok(Json(json!({
        "group_by": echo.group_by,
        "from": echo.from_ms.map(timefmt::format_ms),
        "to": echo.to_ms.map(timefmt::format_ms),
        "totals": {
            "requests": total(|g| g.requests),
            "tokens_in": total(|g| g.tokens_in),
            "tokens_out": total(|g| g.tokens_out),
            "errors": total(|g| g.errors),
            "cost_usd": groups.iter().map(|g| g.cost_usd).sum::<f64>(),
        },
        "data": groups,
    })))
}

/// `GET /v1/usage/requests?user_id=&client=&model=&key=&request_id=&from=&to=&limit=&cursor=`.
pub async fn requests(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = match q.get("limit") {
        None => DEFAULT_PAGE,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("limit must be between 1 and {MAX_PAGE}"))
            })?,
    };
    let before_id = match q.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| ApiError::BadRequest("cursor is not a cursor from this API".into()))?,
        ),
    };
    let key_id = q.get("key").map(|k| {
        state
            .keys
            .lookup(k)
            .map_or_else(|| k.clone(), |vk| vk.row.hash.clone())
    });
    let (scope_user, scope_key) = scope(&ctx, &q)?;
    let query = RequestsQuery {
        user_id: scope_user,
        client: q.get("client").cloned(),
        model: q.get("model").cloned(),
        key_id: scope_key.or(key_id),
        request_id: q.get("request_id").cloned(),
        from_ms: time_param(&q, "from")?,
        to_ms: end_param(&q)?,
        limit,
        before_id,
    };
    let rows = state.analytics.call(move |s| s.requests(&query)).await?;
    let next_cursor = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(json!({"data": rows, "next_cursor": next_cursor})))
}

/// What a virtual key may read: its bound user's rows, or (unbound) its own; the master
/// key everything. A key asking for another user's rows is refused (403).
fn scope(
    ctx: &RequestCtx,
    q: &HashMap<String, String>,
) -> Result<(Option<String>, Option<String>), ApiError> {
    let asked = q.get("user_id").filter(|u| !u.is_empty());
    match ctx.principal.key() {
        None => Ok((asked.cloned(), None)),
        Some(k) => match &k.row.user_id {
            Some(u) if asked.is_none_or(|a| a == u) => Ok((Some(u.clone()), None)),
            None if asked.is_none() => Ok((None, Some(k.row.hash.clone()))),
            _ => Err(KeyError::WrongUser(
                "a virtual key reads only the usage of the user it is bound to".into(),
            )
            .into()),
        },
    }
}

/// `GET /v1/usage/timeseries?range=1h|6h|24h|7d|30d&group_by=client|model|key|user`:
/// requests, tokens, cost, errors and p50/p95 latency and TTFT per bucket, overall and
/// per group, read from the per-minute / per-hour rollups.
pub async fn timeseries(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let range = q.get("range").map_or("24h", String::as_str);
    let range = Range::parse(range).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "range must be one of 1h, 6h, 24h, 7d, 30d; got `{range}`"
        ))
    })?;
    let by = q.get("group_by").map_or("", String::as_str);
    let group_by = SeriesBy::parse(by).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "group_by must be one of client, model, key, user; got `{by}`"
        ))
    })?;
    let (user_id, scope_key) = scope(&ctx, &q)?;
    if !ctx.principal.is_admin() && group_by == SeriesBy::User {
        return Err(KeyError::AdminOnly.into());
    }
    let query = TimeseriesQuery {
        range,
        group_by,
        user_id,
        key_id: scope_key,
        now_ms: timefmt::now_ms(),
    };
    let ts = state.analytics.call(move |s| s.timeseries(&query)).await?;
    Ok(Json(serde_json::to_value(ts).unwrap_or_default()))
}

#[derive(Deserialize)]
struct FeedbackBody {
    request_id: String,
    score: Option<f64>,
    comment: Option<String>,
}

/// `POST /v1/feedback {request_id, score, comment}`.
pub async fn feedback(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: FeedbackBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid feedback body: {e}")))?;
    if b.score.is_none() && b.comment.is_none() {
        return Err(ApiError::BadRequest(
            "feedback needs a `score`, a `comment`, or both".into(),
        ));
    }
    if b.score.is_some_and(|s| !s.is_finite()) {
        return Err(ApiError::BadRequest("score must be a number".into()));
    }
    let fb = Feedback {
        request_id: b.request_id.clone(),
        score: b.score,
        comment: b.comment,
        key_id: ctx.principal.key().map(|k| k.row.hash.clone()),
    };
    if !state.analytics.call(move |s| s.set_feedback(&fb)).await? {
        return Err(ApiError::UnknownRequest(b.request_id));
    }
    Ok(Json(json!({"request_id": b.request_id, "stored": true})))
}
