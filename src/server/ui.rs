//! The dashboard at `/ui`: static assets compiled into the binary (`ui/`), and sign-in /
//! sign-out / session endpoints under `/ui/api/`. These routes sit outside the gateway
//! layer (they add nothing to the proxy's request path); the dashboard's data comes from
//! the ordinary JSON APIs, which accept the session cookie (see [`crate::auth`]).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::analytics::timefmt;
use crate::auth::{session_token, AuthError, Principal, SESSION_COOKIE, SESSION_TTL_MS};

#[derive(rust_embed::Embed)]
#[folder = "ui/"]
struct Assets;

/// The dashboard's routes (merged outside the gateway middleware).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ui", get(|| async { asset("index.html") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route("/ui/api/login", post(login))
        .route("/ui/api/logout", post(logout))
        .route("/ui/api/session", get(session))
        .route(
            "/ui/{*file}",
            get(|axum::extract::Path(file): axum::extract::Path<String>| async move {
                asset(&file)
            }),
        )
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

fn asset(name: &str) -> Response {
    match Assets::get(name) {
        Some(file) => {
            let mut resp = Response::new(axum::body::Body::from(file.data.into_owned()));
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(name)),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(
                "content-security-policy",
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                     script-src 'self'; frame-ancestors 'none'",
                ),
            );
            h.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            resp
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// What the page needs to know about the signed-in caller.
fn whoami(p: &Principal) -> Value {
    match p {
        Principal::Master => json!({"kind": "master", "admin": true}),
        Principal::Open => json!({"kind": "open", "admin": true}),
        Principal::VirtualKey(k) => json!({
            "kind": "key",
            "admin": false,
            "user_id": k.row.user_id,
            "project": k.row.project,
            "key": k.row.hash,
            "alias": k.row.alias,
        }),
    }
}

#[derive(Deserialize)]
struct LoginBody {
    key: String,
}

/// `POST /ui/api/login {"key": "..."}` → a session cookie (HttpOnly, SameSite=Strict;
/// Secure when the page was loaded over HTTPS) and the CSRF token for mutations.
async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: LoginBody = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("send {\"key\": \"...\"}".into()))?;
    let key = b.key.trim();
    if key.is_empty() {
        return Err(AuthError::Missing.into());
    }
    let mut presented = HeaderMap::new();
    presented.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| AuthError::Invalid)?,
    );
    state
        .storage
        .find_key(&state.keys, &state.auth, &presented)
        .await;
    let now = timefmt::now_ms();
    let principal = state.auth.authenticate(&presented, &state.keys, now)?;
    if principal == Principal::Open && state.auth.required() {
        return Err(AuthError::Invalid.into());
    }
    let s = state.auth.sessions.start(&principal, now).await;
    let https = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o.starts_with("https://"))
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes() == b"https");
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        s.token,
        SESSION_TTL_MS / 1000,
        if https { "; Secure" } else { "" }
    );
    tracing::info!(target: "memproxy::access", who = %whoami(&principal)["kind"], "dashboard sign-in");
    let mut resp =
        Json(json!({"csrf_token": s.csrf, "principal": whoami(&principal)})).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| AuthError::Invalid)?,
    );
    Ok(resp)
}

/// `GET /ui/api/session`: the signed-in caller and the session's CSRF token.
async fn session(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let token = session_token(&headers).ok_or(AuthError::Session)?;
    state.auth.sessions.refresh(token).await;
    let now = timefmt::now_ms();
    let principal = state.auth.authenticate_request(
        &axum::http::Method::GET,
        &headers_with_cookie_only(token),
        &state.keys,
        now,
    )?;
    let csrf = state
        .auth
        .session_csrf(token, now)
        .ok_or(AuthError::Session)?;
    Ok(Json(
        json!({"csrf_token": csrf, "principal": whoami(&principal)}),
    ))
}

fn headers_with_cookie_only(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("{SESSION_COOKIE}={token}")) {
        h.insert(header::COOKIE, v);
    }
    h
}

/// `POST /ui/api/logout` (with the session's CSRF token): ends the session.
async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = session_token(&headers).ok_or(AuthError::Session)?;
    state.auth.sessions.refresh(token).await;
    let mut only = headers_with_cookie_only(token);
    if let Some(c) = headers.get("x-csrf-token") {
        only.insert("x-csrf-token", c.clone());
    }
    state.auth.authenticate_request(
        &axum::http::Method::POST,
        &only,
        &state.keys,
        timefmt::now_ms(),
    )?;
    state.auth.sessions.end(token).await;
    let mut resp = Json(json!({"signed_out": true})).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        ))
        .map_err(|_| AuthError::Invalid)?,
    );
    Ok(resp)
}
