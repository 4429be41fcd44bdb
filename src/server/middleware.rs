//! The gateway layer every request passes first: request id, authentication (master or
//! virtual key), client detection (a key's user binding wins over headers), the request's
//! project (the `/p/<project>` prefix is removed before routing by [`project_prefix`]),
//! for model requests the key budget and the request rate limits, the `x-request-id` /
//! `x-memproxy-user-id` / `x-memproxy-project` response headers, metrics, the analytics
//! row of model requests refused before their handler, and the one access-log line per
//! request. Then the one extractor every model endpoint starts from, [`Incoming`]: the
//! caller as admitted here and the body, read within its size limit (413, before reading
//! when Content-Length says so), whole (400 when it ends before its Content-Length) and
//! within a deadline (408).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tracing::Instrument;

use super::accounting::{self, Accounting, Arrival, Caller, RoutedGroup, RowSlot};
use super::error::{ApiError, ErrorKind};
use super::AppState;
use crate::analytics::timefmt;
use crate::auth::Principal;
use crate::identity::{self, Decision};
use crate::keys::KeyError;
use crate::memory::scope::{self, Scope};
use crate::protocol::ir::Format;
use crate::ratelimit::{Dimension, Quota};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_MEMPROXY_USER_ID: HeaderName = HeaderName::from_static("x-memproxy-user-id");
const X_MEMPROXY_PROJECT: HeaderName = HeaderName::from_static("x-memproxy-project");

/// What the gateway layer learned about a request, for the handlers.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub request_id: String,
    pub principal: Principal,
    pub identity: Decision,
    /// The client program, from its user agent (the usage row's `client`).
    pub client: Cow<'static, str>,
    /// The conversation session: `x-session-id`, else the `session-id` header some
    /// clients send (Codex CLI).
    pub session_id: Option<String>,
    pub started: Instant,
    /// Wall-clock arrival time, Unix milliseconds (the analytics row's time).
    pub arrived_ms: i64,
    /// The request's analytics row until the pipeline takes it over (model requests).
    pub row: RowSlot,
    /// The project the request works in (key binding, `/p/<project>` prefix or
    /// `x-memory-project` header), validated.
    pub project: Option<String>,
}

impl RequestCtx {
    /// Who made the request, for its usage row.
    pub fn caller(&self) -> Caller<'_> {
        Caller {
            arrived_ms: self.arrived_ms,
            user_id: &self.identity.user_id,
            key: self.principal.key(),
            project: self.project.as_deref(),
        }
    }

    /// The pipeline takes the request's row over (opening one if the request came another
    /// way, e.g. MCP), for `model` spoken in `format`.
    pub fn take_row(
        &self,
        state: &Arc<AppState>,
        format: Format,
        model: &str,
        stream: bool,
    ) -> Accounting {
        let mut acct = self.row.take().unwrap_or_else(|| {
            let arrival = Arrival {
                request_id: &self.request_id,
                endpoint: accounting::endpoint_name(format),
                client: &self.client,
                started: self.started,
            };
            Accounting::open(state, Some(self.caller()), arrival)
        });
        acct.begin(format, model, stream);
        acct
    }

    /// The memory scope of the request: its user, and its project if it names one.
    pub fn scope(&self) -> Scope {
        Scope {
            user_id: self.identity.user_id.clone(),
            project: self.project.clone(),
        }
    }
}

/// The project named by a `/p/<project>` base-URL prefix, which [`project_prefix`]
/// removed before routing.
#[derive(Debug, Clone)]
pub struct PathProject(pub String);

/// Runs before routing: a path `/p/<project>/rest` becomes `/rest` (query kept), with
/// the project recorded in the request's extensions; a bad project name is answered
/// with a 400 in the wire format of `rest`.
pub async fn project_prefix(mut req: Request, next: Next) -> Response {
    let Some((name, rest)) = scope::split_prefix(req.uri().path()) else {
        return next.run(req).await;
    };
    if let Err(e) = scope::validate_project(name) {
        return ApiError::from(e).into_response_for(client_format(rest));
    }
    let project = PathProject(name.to_string());
    let target = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = target.parse().ok();
    match axum::http::Uri::from_parts(parts) {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => {
            return ApiError::BadRequest("invalid request path".into())
                .into_response_for(client_format(rest))
        }
    }
    req.extensions_mut().insert(project);
    next.run(req).await
}

/// The request's project: a key bound to a project decides it (naming another one is
/// refused); else the `/p/<project>` prefix, else the `x-memory-project` header.
fn project(
    principal: &Principal,
    prefix: Option<&PathProject>,
    headers: &axum::http::HeaderMap,
) -> Result<Option<String>, ApiError> {
    let named = match prefix {
        Some(p) => Some(p.0.clone()),
        None => scope::header_project(headers)?,
    };
    let bound = principal.key().and_then(|k| k.row.project.as_deref());
    match (bound, named) {
        (Some(b), Some(n)) if b != n => Err(KeyError::WrongUser(format!(
            "this key is bound to project `{b}` and cannot access project `{n}`"
        ))
        .into()),
        (Some(b), _) => Ok(Some(b.to_string())),
        (None, named) => Ok(named),
    }
}

/// Set by handlers on their response so the access log names the model.
#[derive(Debug, Clone)]
pub struct LoggedModel(pub String);

/// The wire format a path's clients expect errors in.
pub fn client_format(path: &str) -> Format {
    if path.starts_with("/v1/messages") || path.starts_with("/messages") {
        Format::Anthropic
    } else {
        Format::OpenAiChat
    }
}

/// Paths answered without authentication.
fn is_open(state: &AppState, path: &str) -> bool {
    matches!(path, "/health/liveliness" | "/health/liveness")
        || (path == "/metrics" && !state.config.observability.metrics_require_auth)
}

/// The client API of a model request path (analytics `endpoint`), if it is one.
fn model_endpoint(path: &str) -> Option<&'static str> {
    Some(match path.strip_prefix("/v1").unwrap_or(path) {
        "/chat/completions" => "chat",
        "/messages" => "messages",
        "/responses" => "responses",
        "/embeddings" => "embeddings",
        _ => return None,
    })
}

/// The request's session id (see [`RequestCtx::session_id`]): printable ASCII, at most
/// 256 characters; anything else is ignored.
pub fn session_id(headers: &axum::http::HeaderMap) -> Option<String> {
    ["x-session-id", "session-id"].iter().find_map(|name| {
        let v = headers.get(*name)?.to_str().ok()?.trim();
        (!v.is_empty() && v.len() <= 256 && v.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| v.to_string())
    })
}

fn client_request_id(req: &Request) -> Option<String> {
    let v = req.headers().get("x-request-id")?.to_str().ok()?.trim();
    (!v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| v.to_string())
}

/// Authenticates and identifies a request.
fn admit(
    state: &AppState,
    req: &Request,
) -> Result<(Principal, Decision, Option<String>), ApiError> {
    let headers = req.headers();
    let principal =
        state
            .auth
            .authenticate_request(req.method(), headers, &state.keys, timefmt::now_ms())?;
    let scope = principal.key().and_then(|k| k.row.user_id.as_deref());
    let identity = state.config.identity.detect(headers, scope)?;
    let project = project(&principal, req.extensions().get::<PathProject>(), headers)?;
    Ok((principal, identity, project))
}

/// For model requests: the key's budget, then the request rate limits.
async fn limit(state: &AppState, ctx: &RequestCtx) -> Result<Option<Quota>, ApiError> {
    let key = ctx.principal.key();
    if let Some(k) = key {
        k.check_budget()?;
    }
    Ok(state
        .limits
        .check_request(&ctx.identity.user_id, key.map(|k| &**k))
        .await
        .inspect_err(|d| state.metrics.rate_limited(d.scope.label(), "requests"))?)
}

/// The gateway middleware (see the module docs).
pub async fn gateway(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = client_request_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let endpoint = model_endpoint(&path);
    let open = is_open(&state, &path);
    let client = identity::client_name(req.headers());
    // A model request's analytics row: opened below, written once (see `accounting`).
    let arrival = endpoint.map(|endpoint| Arrival {
        request_id: &request_id,
        endpoint,
        client: &client,
        started,
    });

    if !open {
        // Shared storage: a key another instance made is read on first sight.
        state
            .storage
            .find_key(&state.keys, &state.auth, req.headers())
            .await;
        // A dashboard session (no key presented) another instance made or ended.
        if crate::auth::presented_key(req.headers()).is_none() {
            if let Some(token) = crate::auth::session_token(req.headers()) {
                state.auth.sessions.refresh(token).await;
            }
        }
    }
    let admitted = if open {
        Ok(None)
    } else {
        admit(&state, &req).map(Some)
    };
    let mut ctx = None;
    let mut quota = None;
    let mut resp = match admitted {
        Ok(admitted) => {
            let mut refused = None;
            if let Some((principal, identity, project)) = admitted {
                let session_id = session_id(req.headers());
                let c = RequestCtx {
                    request_id: request_id.clone(),
                    principal,
                    identity,
                    client: client.clone(),
                    session_id,
                    started,
                    arrived_ms: timefmt::now_ms(),
                    row: RowSlot::default(),
                    project,
                };
                if let Some(arrival) = arrival {
                    c.row
                        .put(Accounting::open(&state, Some(c.caller()), arrival));
                }
                if endpoint.is_some() {
                    match limit(&state, &c).await {
                        Ok(q) => quota = q,
                        Err(e) => refused = Some(e),
                    }
                }
                req.extensions_mut().insert(c.clone());
                ctx = Some(c);
            }
            match refused {
                Some(e) => e.into_response_for(client_format(&path)),
                None => {
                    // Log lines of a request carry its `request_id` themselves; the span
                    // costs nothing unless enabled (debug), or traces are exported (the
                    // parent of the GenAI span).
                    let span = if state.genai_spans {
                        tracing::info_span!("request", request_id = %request_id)
                    } else {
                        tracing::debug_span!("request", request_id = %request_id)
                    };
                    next.run(req).instrument(span).await
                }
            }
        }
        Err(e) => e.into_response_for(client_format(&path)),
    };

    let user_id = ctx.as_ref().map(|c| c.identity.user_id.as_str());
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(X_REQUEST_ID, v);
    }
    if let Some(Ok(v)) = user_id.map(HeaderValue::from_str) {
        headers.insert(X_MEMPROXY_USER_ID, v);
    }
    let project = ctx.as_ref().and_then(|c| c.project.as_deref());
    if let Some(Ok(v)) = project.map(HeaderValue::from_str) {
        headers.insert(X_MEMPROXY_PROJECT, v);
    }
    if let Some(q) = &quota {
        if resp.status().is_success() {
            accounting::quota_headers(resp.headers_mut(), Dimension::Requests, q);
        }
    }
    let status = resp.status().as_u16();
    let model = resp.extensions().get::<LoggedModel>().map(|m| m.0.as_str());
    let error = resp.extensions().get::<ErrorKind>().map(|e| e.0);
    // A model request's row that the pipeline did not take over: refused before it.
    if let Some(arrival) = arrival {
        let row = match &ctx {
            Some(c) => c.row.take(),
            None => Some(Accounting::open(&state, None, arrival)),
        };
        if let Some(acct) = row {
            acct.refuse(status, error, model);
        }
    }
    let group = resp
        .extensions()
        .get::<RoutedGroup>()
        .map_or("", |g| g.0.config.model_name.as_str());
    let elapsed = started.elapsed();
    state.metrics.request(&route, status, group, elapsed);
    if !open {
        tracing::info!(
            target: "memproxy::access",
            request_id = %request_id,
            user_id = user_id.unwrap_or(""),
            method = %method,
            path = %path,
            model = model.unwrap_or(""),
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            error = error.unwrap_or(""),
            "request"
        );
    }
    resp
}

/// How long a client may take to send its body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What a model endpoint's handler starts from: the caller as the gateway middleware
/// admitted it, the request's headers, and its body.
pub struct Incoming {
    pub ctx: RequestCtx,
    pub headers: HeaderMap,
    pub bytes: Bytes,
}

impl Incoming {
    /// Takes the request apart, reading the body within `server.max_body_bytes`.
    pub async fn read(state: &AppState, req: Request) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let ctx = parts
            .extensions
            .remove::<RequestCtx>()
            .ok_or_else(|| ApiError::BadRequest("request context missing".into()))?;
        let bytes = read_body(&parts.headers, body, state.config.server.max_body_bytes).await?;
        Ok(Self {
            ctx,
            headers: parts.headers,
            bytes,
        })
    }
}

impl axum::extract::FromRequest<Arc<AppState>> for Incoming {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        Self::read(state, req).await
    }
}

/// [`Incoming`] for the Anthropic endpoints: refused in Anthropic's error shape.
pub struct AnthropicIncoming(pub Incoming);

impl axum::extract::FromRequest<Arc<AppState>> for AnthropicIncoming {
    type Rejection = axum::response::Response;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        Incoming::read(state, req)
            .await
            .map(Self)
            .map_err(|e| e.into_response_for(crate::protocol::ir::Format::Anthropic))
    }
}

/// Reads the whole body, enforcing `limit` bytes.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = match headers.get(axum::http::header::CONTENT_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("Content-Length header is not a number".into())
                })?,
        ),
        None => None,
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    let collected = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ApiError::BodyTimeout)?;
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if is_length_limit(&*e) => return Err(ApiError::TooLarge { limit }),
        Err(e) => {
            return Err(ApiError::BadRequest(match declared {
                Some(n) => format!(
                    "request body ended before the {n} bytes its Content-Length announced ({e})"
                ),
                None => format!("could not read the request body: {e}"),
            }))
        }
    };
    if let Some(n) = declared {
        if bytes.len() as u64 != n {
            return Err(ApiError::BadRequest(format!(
                "request body has {} bytes but Content-Length says {n}",
                bytes.len()
            )));
        }
    }
    Ok(bytes)
}

fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}
