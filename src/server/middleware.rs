//! The gateway layer every request passes first: request id, authentication, client
//! detection, the `x-request-id` / `x-memproxy-user-id` response headers, and the one
//! access-log line per request.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::error::{ApiError, ErrorKind};
use super::AppState;
use crate::auth::Principal;
use crate::identity::Decision;
use crate::protocol::ir::Format;

/// What the gateway layer learned about a request, for the handlers.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    pub request_id: String,
    pub principal: Principal,
    pub identity: Decision,
    /// The conversation session: `x-session-id`, else the `session-id` header some
    /// clients send (Codex CLI).
    pub session_id: Option<String>,
    pub started: Instant,
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
fn is_open(path: &str) -> bool {
    matches!(path, "/health/liveliness" | "/health/liveness")
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

/// The gateway middleware (see the module docs).
pub async fn gateway(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = client_request_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_string();

    let admitted = if is_open(&path) {
        Ok(None)
    } else {
        state
            .auth
            .authenticate(req.headers())
            .map_err(ApiError::from)
            .and_then(|principal| {
                let identity = state.config.identity.detect(req.headers(), None)?;
                Ok(Some((principal, identity)))
            })
    };
    let mut user_id = None;
    let mut resp = match admitted {
        Ok(ctx) => {
            if let Some((principal, identity)) = ctx {
                user_id = Some(identity.user_id.clone());
                let session_id = session_id(req.headers());
                req.extensions_mut().insert(RequestCtx {
                    request_id: request_id.clone(),
                    principal,
                    identity,
                    session_id,
                    started,
                });
            }
            let span = tracing::info_span!("request", request_id = %request_id);
            next.run(req).instrument(span).await
        }
        Err(e) => e.into_response_for(client_format(&path)),
    };

    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", v);
    }
    if let Some(Ok(v)) = user_id.as_deref().map(HeaderValue::from_str) {
        headers.insert("x-memproxy-user-id", v);
    }
    let status = resp.status().as_u16();
    let model = resp.extensions().get::<LoggedModel>().map(|m| m.0.as_str());
    let error = resp.extensions().get::<ErrorKind>().map(|e| e.0);
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if !is_open(&path) {
        tracing::info!(
            target: "memproxy::access",
            request_id = %request_id,
            user_id = user_id.as_deref().unwrap_or(""),
            method = %method,
            path = %path,
            model = model.unwrap_or(""),
            status,
            latency_ms,
            error = error.unwrap_or(""),
            "request"
        );
    }
    resp
}
