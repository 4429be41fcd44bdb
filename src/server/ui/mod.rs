//! The dashboard at `/ui`: its static files (compiled into the binary from `ui/public/` with
//! rust-embed, served with an ETag and a strict Content-Security-Policy) and its sign-in
//! routes (`POST /ui/login`, `POST /ui/logout`, `GET /ui/session`). Everything the pages
//! show comes from the ordinary JSON APIs, which accept the session cookie ([`session`]);
//! nothing here is on the model path.

pub mod session;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::analytics::timefmt;
use crate::auth::{AuthError, Principal};
use session::{clear_cookie, cookie_value, same_origin, set_cookie, SessionError};

/// The dashboard's files (`ui/public/` at the crate root; `ui/README.md` lists the vendored
/// libraries among them).
#[derive(rust_embed::Embed)]
#[folder = "ui/public/"]
struct Assets;

/// Scripts, styles and data only from this server; no framing, no referrer.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; \
    base-uri 'none'; frame-ancestors 'none'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

fn secure_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// One embedded file; `304` when the browser's copy is current.
fn asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let etag = format!(
        "\"{}\"",
        crate::keys::hex(&file.metadata.sha256_hash()[..12])
    );
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(Bytes::from(file.data.into_owned())))
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure_headers(h);
    resp
}

/// `GET /ui` → `/ui/`.
pub async fn redirect() -> Response {
    let mut resp = StatusCode::PERMANENT_REDIRECT.into_response();
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
    resp
}

/// `GET /ui/`: the page (its views are chosen by the URL's `#fragment`).
pub async fn index(headers: HeaderMap) -> Response {
    asset("index.html", &headers)
}

/// `GET /ui/assets/{*path}`.
pub async fn assets(Path(path): Path<String>, headers: HeaderMap) -> Response {
    asset(&format!("assets/{path}"), &headers)
}

/// What the pages need to know about who signed in.
fn principal_json(p: &Principal) -> Value {
    match p {
        Principal::Master => json!({"kind": "master", "admin": true}),
        Principal::Open => json!({"kind": "open", "admin": true}),
        Principal::VirtualKey(k) => json!({
            "kind": "virtual_key",
            "admin": false,
            "user_id": k.row.user_id,
            "key_alias": k.row.alias,
            "key_name": k.row.preview,
            "token": k.row.hash,
        }),
    }
}

fn session_json(s: &session::UiSession) -> Value {
    json!({
        "principal": principal_json(&s.principal),
        "csrf_token": s.csrf,
        "expires_at": timefmt::format_ms(s.expires_ms),
    })
}

#[derive(Deserialize)]
struct LoginBody {
    #[serde(default)]
    key: String,
}

fn no_store(resp: &mut Response) {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `POST /ui/login {"key": "sk-…"}`: the master key or a virtual key; sets the session
/// cookie. Without a master key configured, an empty key signs in to the open proxy.
pub async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(SessionError::Origin.into());
    }
    let b: LoginBody = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("send {\"key\": \"sk-…\"}".into()))?;
    let key = b.key.trim();
    let mut creds = HeaderMap::new();
    if !key.is_empty() {
        let v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| AuthError::Invalid)?;
        creds.insert(header::AUTHORIZATION, v);
    }
    let now = timefmt::now_ms();
    let principal = state.auth.authenticate(&creds, &state.keys, now)?;
    if !key.is_empty() && principal == Principal::Open {
        return Err(AuthError::Invalid.into());
    }
    let (id, session) = state.ui.create(&principal, now);
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let mut resp = Json(session_json(&session)).into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(&id, secure)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    no_store(&mut resp);
    Ok(resp)
}

/// `GET /ui/session`: who is signed in, and the CSRF token for changes; 401 otherwise.
pub async fn current(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = cookie_value(&headers)
        .and_then(|id| state.ui.get(id, &state.keys, timefmt::now_ms()))
        .ok_or(SessionError::Expired)?;
    let mut resp = Json(session_json(&session)).into_response();
    no_store(&mut resp);
    Ok(resp)
}

/// `POST /ui/logout` (with the CSRF token): ends the session.
pub async fn logout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(id) = cookie_value(&headers) {
        if let Some(r) = state.ui.authenticate(
            &axum::http::Method::POST,
            &headers,
            &state.keys,
            timefmt::now_ms(),
        ) {
            match r {
                Ok(_) | Err(SessionError::Expired) => state.ui.remove(id),
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut resp = Json(json!({"signed_out": true})).into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_scripts_are_embedded() {
        for f in [
            "index.html",
            "assets/app.js",
            "assets/app.css",
            "assets/vendor/uPlot.iife.min.js",
            "assets/views/overview.js",
        ] {
            assert!(Assets::get(f).is_some(), "{f} is not embedded");
        }
        let r = asset("index.html", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        let etag = r.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(asset("index.html", &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            asset("nope.js", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
