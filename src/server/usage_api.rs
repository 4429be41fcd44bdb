//! The analytics query API: `GET /v1/usage` (totals per user, model, key or day; master
//! key only), `GET /v1/usage/timeseries` (the same figures per time bucket, aggregated in
//! the store), `GET /v1/usage/requests` (pages of rows, newest first) and
//! `GET /v1/usage/requests/{request_id}` (one request with the memories injected into it
//! and captured from it) — a virtual key sees only the requests made with it — and
//! `POST /v1/feedback` (the master key, or a virtual key for its own requests).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::memories;
use super::middleware::RequestCtx;
use super::AppState;
use crate::analytics::series::{Stats, HOUR_MS};
use crate::analytics::{
    timefmt, Feedback, GroupBy, Outcome, RequestsQuery, SeriesDim, SeriesQuery, UsageQuery,
};
use crate::keys::{parse_duration, KeyError};

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

/// `GET /v1/usage?group_by=user|model|key|day&from=&to=`.
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
        other => {
            return Err(ApiError::BadRequest(format!(
                "group_by must be one of user, model, key, day; got `{other}`"
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

/// The rows a caller may read: every row (master key), or those of its own key, whose
/// hash is returned. A key bound to a user that asks for another user's rows, or for
/// another key's, is refused rather than shown an empty page.
fn key_scope(
    state: &AppState,
    ctx: &RequestCtx,
    q: &HashMap<String, String>,
) -> Result<Option<String>, ApiError> {
    let Some(own) = ctx.principal.key() else {
        return Ok(None);
    };
    if let (Some(bound), Some(asked)) = (&own.row.user_id, q.get("user_id")) {
        if asked != bound {
            return Err(KeyError::WrongUser(format!(
                "this key is bound to user `{bound}` and cannot read the usage of `{asked}`"
            ))
            .into());
        }
    }
    if let Some(k) = q.get("key").filter(|k| !k.is_empty()) {
        let asked = state.keys.lookup(k).map(|vk| vk.row.hash.clone());
        if asked.as_deref() != Some(own.row.hash.as_str()) {
            return Err(KeyError::AdminOnly.into());
        }
    }
    Ok(Some(own.row.hash.clone()))
}

/// A `key` filter: a key, its hash, or `(master)` for the master key's rows.
fn key_filter(state: &AppState, q: &HashMap<String, String>) -> Option<String> {
    q.get("key").filter(|k| !k.is_empty()).map(|k| {
        if k == "(master)" {
            String::new()
        } else {
            state
                .keys
                .lookup(k)
                .map_or_else(|| k.clone(), |vk| vk.row.hash.clone())
        }
    })
}

fn text_param(q: &HashMap<String, String>, name: &str) -> Option<String> {
    q.get(name).filter(|v| !v.is_empty()).cloned()
}

/// `GET /v1/usage/requests?user_id=&model=&key=&request_id=&status=ok|error&from=&to=&limit=&cursor=`.
pub async fn requests(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let scope = key_scope(&state, &ctx, &q)?;
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
    let outcome = match q.get("status").map(String::as_str) {
        None | Some("") => None,
        Some("ok") => Some(Outcome::Ok),
        Some("error") => Some(Outcome::Error),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "status must be `ok` or `error`; got `{other}`"
            )))
        }
    };
    let query = RequestsQuery {
        user_id: text_param(&q, "user_id"),
        model: text_param(&q, "model"),
        key_id: scope.or_else(|| key_filter(&state, &q)),
        request_id: text_param(&q, "request_id"),
        from_ms: time_param(&q, "from")?,
        to_ms: end_param(&q)?,
        limit,
        before_id,
        outcome,
    };
    let rows = state.analytics.call(move |s| s.requests(&query)).await?;
    let next_cursor = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(json!({"data": rows, "next_cursor": next_cursor})))
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

/// Bucket sizes the charts use, by the range they show (about 24 to 170 points).
fn auto_bucket(range_ms: i64) -> i64 {
    const MIN: i64 = 60_000;
    match range_ms {
        r if r <= HOUR_MS => MIN,
        r if r <= 6 * HOUR_MS => 5 * MIN,
        r if r <= 7 * 24 * HOUR_MS => HOUR_MS,
        r if r <= 31 * 24 * HOUR_MS => 6 * HOUR_MS,
        _ => 24 * HOUR_MS,
    }
}

/// The figures of a list of buckets as one array per figure (what charts plot).
fn columns(points: &[Stats]) -> Value {
    let col = |f: &dyn Fn(&Stats) -> Value| Value::Array(points.iter().map(f).collect());
    json!({
        "requests": col(&|s| json!(s.requests)),
        "errors": col(&|s| json!(s.errors)),
        "tokens_in": col(&|s| json!(s.tokens_in)),
        "tokens_out": col(&|s| json!(s.tokens_out)),
        "cost_usd": col(&|s| json!(s.cost_usd)),
        "latency_p50_ms": col(&|s| json!(s.latency_p50_ms)),
        "latency_p95_ms": col(&|s| json!(s.latency_p95_ms)),
        "ttft_p50_ms": col(&|s| json!(s.ttft_p50_ms)),
        "ttft_p95_ms": col(&|s| json!(s.ttft_p95_ms)),
    })
}

/// `GET /v1/usage/timeseries?range=24h|from=&to=&bucket=auto|5m|1h|1d&group_by=none|user|model|key&user_id=&model=&key=&top=`:
/// requests, errors, tokens, cost, latency and TTFT percentiles per bucket, for the whole
/// selection and per group, with each group's totals. Buckets of whole hours read the
/// store's hourly rollup; shorter ones read the rows of at most 48 hours.
pub async fn timeseries(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let scope = key_scope(&state, &ctx, &q)?;
    let now = timefmt::now_ms();
    let to = end_param(&q)?.unwrap_or(now);
    let from = match (time_param(&q, "from")?, q.get("range")) {
        (Some(f), _) => f,
        (None, range) => {
            let r = range.map_or("24h", String::as_str);
            let ms = parse_duration(r).filter(|ms| *ms > 0).ok_or_else(|| {
                ApiError::BadRequest(format!("range must be like 1h, 24h, 7d or 30d; got `{r}`"))
            })?;
            to - ms
        }
    };
    let bucket_ms = match q.get("bucket").map(String::as_str) {
        None | Some("" | "auto") => auto_bucket(to - from),
        Some(b) => parse_duration(b)
            .filter(|ms| *ms >= 60_000)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                "bucket must be auto or a duration of at least a minute (5m, 1h, 1d); got `{b}`"
            ))
            })?,
    };
    let group_by = match q.get("group_by").map(String::as_str) {
        None | Some("" | "none") => SeriesDim::None,
        Some("user" | "user_id" | "client") => SeriesDim::User,
        Some("model") => SeriesDim::Model,
        Some("key" | "api_key") => SeriesDim::Key,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "group_by must be one of none, user, model, key; got `{other}`"
            )))
        }
    };
    let top = match q.get("top") {
        None => 8,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=50).contains(n))
            .ok_or_else(|| ApiError::BadRequest("top must be between 1 and 50".into()))?,
    };
    // Buckets start at multiples of their size (UTC), the last one holds `to`.
    let from_ms = from.div_euclid(bucket_ms) * bucket_ms;
    let to_ms = (to - 1).div_euclid(bucket_ms) * bucket_ms + bucket_ms;
    let query = SeriesQuery {
        from_ms,
        to_ms,
        bucket_ms,
        group_by,
        user_id: text_param(&q, "user_id"),
        model: text_param(&q, "model"),
        key_id: scope.or_else(|| key_filter(&state, &q)),
        top,
    };
    let series = state.analytics.call(move |s| s.timeseries(&query)).await?;
    let per_group: Vec<Value> = series
        .series
        .iter()
        .map(|g| {
            let mut v = columns(&g.points);
            v["group"] = json!(g.group);
            if let Some(a) = &g.key_alias {
                v["key_alias"] = json!(a);
            }
            v
        })
        .collect();
    Ok(Json(json!({
        "from": timefmt::format_ms(from_ms),
        "to": timefmt::format_ms(to_ms),
        "bucket_seconds": bucket_ms / 1000,
        "group_by": group_by,
        "source": series.source,
        "t": series.times_ms.iter().map(|t| t / 1000).collect::<Vec<_>>(),
        "all": columns(&series.all),
        "series": per_group,
        "groups": series.groups,
        "totals": series.total,
    })))
}

/// `GET /v1/usage/requests/{request_id}`: the request's newest row, the memories injected
/// into it (each with its score and rank then, and its current text unless deleted since)
/// and the memories captured from it.
pub async fn request_detail(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    axum::extract::Path(request_id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    let query = RequestsQuery {
        request_id: Some(request_id.clone()),
        key_id: ctx.principal.key().map(|k| k.row.hash.clone()),
        limit: 1,
        ..Default::default()
    };
    let row = state
        .analytics
        .call(move |s| s.requests(&query))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::UnknownRequest(request_id.clone()))?;
    let user_id = row.record.user_id.clone();
    let mut out = json!({ "request": row, "injected": [], "captured": [] });
    let memory = state
        .memory
        .as_ref()
        .filter(|_| !user_id.is_empty() && memories::authorize(&ctx, &user_id).is_ok());
    let Some(mem) = memory else {
        return Ok(Json(out));
    };
    let analyzer = crate::memory::text::Analyzer::default();
    let query_terms = row
        .record
        .memory_query
        .as_deref()
        .map(|q| analyzer.query_terms(q))
        .unwrap_or_default();
    let mut injected = Vec::new();
    for (rank, inj) in row.record.injected.iter().enumerate() {
        let current = mem.store().get(&user_id, &inj.id).await.ok();
        let matched: Vec<&String> = current
            .as_ref()
            .map(|m| analyzer.terms(&m.content))
            .map(|terms| query_terms.iter().filter(|t| terms.contains(t)).collect())
            .unwrap_or_default();
        injected.push(json!({
            "id": inj.id,
            "score": inj.score,
            "rank": rank + 1,
            "matched_terms": matched,
            "memory": current,
        }));
    }
    out["injected"] = json!(injected);
    let captured = mem
        .store()
        .captured_from(&user_id, &request_id, row.record.ts_ms)
        .await
        .unwrap_or_default();
    out["captured"] = json!(captured);
    Ok(Json(out))
}
