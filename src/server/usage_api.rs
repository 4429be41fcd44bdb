//! The analytics query API: `GET /v1/usage` (totals per user, model, key, day, client or
//! project; master key only), `GET /v1/usage/requests` (pages of rows, newest first),
//! `GET /v1/usage/requests/{request_id}` (one request, with the memories injected into it
//! and why) and `GET /v1/usage/timeseries` (buckets over a range, from the rollups) — a
//! virtual key sees only its own user's rows (or, unbound, its own), and a key bound to a
//! project only that project's — and `POST /v1/feedback` (the master key, or a virtual
//! key for its own requests).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::middleware::RequestCtx;
use super::AppState;
use crate::analytics::rollup::{Range, SeriesBy, TimeseriesQuery};
use crate::analytics::store::StatusFilter;
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
        "project" => GroupBy::Project,
        other => {
            return Err(ApiError::BadRequest(format!(
                "group_by must be one of user, model, key, day, client, project; got `{other}`"
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

/// `GET /v1/usage/requests?user_id=&client=&model=&key=&project=&status=&request_id=&from=&to=&limit=&cursor=`
/// (`project=` with an empty value: rows with no project; `status=error|ok|CODE`).
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
    let status = match q.get("status").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(StatusFilter::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "status must be `error`, `ok` or a status code; got `{s}`"
            ))
        })?),
    };
    let seen = scope(&ctx, &q)?;
    let query = RequestsQuery {
        user_id: seen.user_id,
        status,
        client: q.get("client").cloned(),
        model: q.get("model").cloned(),
        key_id: seen.key_id.or(key_id),
        request_id: q.get("request_id").cloned(),
        project: seen.project,
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

/// The rows a caller may read, as filters.
struct Seen {
    user_id: Option<String>,
    key_id: Option<String>,
    project: Option<String>,
}

/// What a virtual key may read: its bound user's rows, or (unbound) its own, and only its
/// project's when it is bound to one; the master key everything. A key asking for another
/// user's or project's rows is refused (403). `project=` narrows to one project (an empty
/// value: rows with none).
fn scope(ctx: &RequestCtx, q: &HashMap<String, String>) -> Result<Seen, ApiError> {
    let asked = q.get("user_id").filter(|u| !u.is_empty());
    let asked_project = q.get("project").cloned();
    let Some(k) = ctx.principal.key() else {
        return Ok(Seen {
            user_id: asked.cloned(),
            key_id: None,
            project: asked_project,
        });
    };
    let project = match (&k.row.project, asked_project) {
        (Some(bound), Some(a)) if &a != bound => {
            return Err(KeyError::WrongUser(
                "a virtual key bound to a project reads only that project's usage".into(),
            )
            .into())
        }
        (Some(bound), _) => Some(bound.clone()),
        (None, a) => a,
    };
    match &k.row.user_id {
        Some(u) if asked.is_none_or(|a| a == u) => Ok(Seen {
            user_id: Some(u.clone()),
            key_id: None,
            project,
        }),
        None if asked.is_none() => Ok(Seen {
            user_id: None,
            key_id: Some(k.row.hash.clone()),
            project,
        }),
        _ => Err(KeyError::WrongUser(
            "a virtual key reads only the usage of the user it is bound to".into(),
        )
        .into()),
    }
}

/// `GET /v1/usage/requests/{request_id}`: the request's row (the newest, if the id was
/// sent twice) and, for each memory injected into it, why it was (position, scope
/// group, score and share of the best, age) and what it says now (its current text, or
/// that it has been edited or deleted since).
pub async fn request_detail(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Path(request_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let seen = scope(&ctx, &q)?;
    let query = RequestsQuery {
        user_id: seen.user_id,
        key_id: seen.key_id,
        project: seen.project,
        request_id: Some(request_id.clone()),
        limit: 1,
        ..Default::default()
    };
    let Some(row) = state
        .analytics
        .call(move |s| s.requests(&query))
        .await?
        .into_iter()
        .next()
    else {
        return Err(ApiError::UnknownRequest(request_id));
    };
    let scope_key = crate::memory::scope::Scope {
        user_id: row.record.user_id.clone(),
        project: (!row.record.project.is_empty()).then(|| row.record.project.clone()),
    };
    let mut injected = Vec::with_capacity(row.record.injected.len());
    for m in &row.record.injected {
        let key = if m.scope == "project" {
            scope_key.key()
        } else {
            scope_key.user_id.clone()
        };
        let now = match &state.memory {
            Some(mem) => match mem.store().get(&key, &m.id).await {
                Ok(found) => Some(found.content),
                Err(crate::memory::store::StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let mut v = serde_json::to_value(m).unwrap_or_default();
        v["why"] = why(m, row.record.injected.len(), scope_key.project.as_deref()).into();
        v["deleted"] = now.is_none().into();
        v["content"] = now.into();
        injected.push(v);
    }
    let mut out = serde_json::to_value(&row).unwrap_or_default();
    out["injected"] = injected.into();
    Ok(Json(out))
}

/// One sentence saying why a memory was injected.
fn why(m: &crate::analytics::store::Injected, of: usize, project: Option<&str>) -> String {
    let from = match (m.scope.as_str(), project) {
        ("project", Some(p)) => format!("the memories of project {p}"),
        (_, Some(_)) => "the user's memories outside any project".to_string(),
        _ => "the user's memories".to_string(),
    };
    let rank = if m.share >= 0.999 {
        format!("the best match (score {:.3})", m.score)
    } else {
        format!(
            "score {:.3}, {:.0}% of the best match",
            m.score,
            m.share * 100.0
        )
    };
    let age = match m.age_s {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    };
    let cut = if m.truncated {
        "; its text was cut to fit the block's max_context_length"
    } else {
        ""
    };
    format!(
        "Placed {} of {of}: retrieval ranked it from {from} as {rank} for the request's \
         query; it was written {age} before the request{cut}.",
        m.position
    )
}

/// `GET /v1/usage/timeseries?range=1h|6h|24h|7d|30d&group_by=client|model|key|user|project&project=`:
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
            "group_by must be one of client, model, key, user, project; got `{by}`"
        ))
    })?;
    let seen = scope(&ctx, &q)?;
    if !ctx.principal.is_admin() && group_by == SeriesBy::User {
        return Err(KeyError::AdminOnly.into());
    }
    let query = TimeseriesQuery {
        range,
        group_by,
        user_id: seen.user_id,
        key_id: seen.key_id,
        project: seen.project,
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
