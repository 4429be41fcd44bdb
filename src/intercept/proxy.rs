//! The interceptor's forwarding proxy: every request goes to the central memproxy as it
//! came (method, path, query, headers, body streamed), with the project header added
//! (and the user id and key when given); answers come back streamed, each chunk as it
//! arrives. The central memproxy being unreachable is a 502 with a JSON error in the
//! client's wire format.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::json;

use crate::memory::scope::PROJECT_HEADER;

/// Headers that belong to one connection, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Where and as whom the interceptor forwards.
#[derive(Debug, Clone)]
pub struct Target {
    /// The central memproxy's base URL (`http://host:port`, optionally with a path).
    pub upstream: Uri,
    pub project: String,
    /// Sent as `user_header` when set.
    pub user: Option<String>,
    /// The header the central memproxy reads user ids from.
    pub user_header: HeaderName,
    /// The memproxy key sent as `Authorization: Bearer …` (replacing the client's).
    pub key: Option<String>,
}

/// Why a target is not usable.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--upstream must be an http:// or https:// URL (got {0:?})")]
    BadUpstream(String),
    #[error("--{0} is not valid as a header value")]
    BadHeader(&'static str),
}

impl Target {
    /// Checks the values that go into every request once, at start.
    pub fn check(&self) -> Result<(), TargetError> {
        let scheme = self.upstream.scheme_str();
        if !matches!(scheme, Some("http" | "https")) || self.upstream.authority().is_none() {
            return Err(TargetError::BadUpstream(self.upstream.to_string()));
        }
        if let Some(u) = &self.user {
            HeaderValue::from_str(u).map_err(|_| TargetError::BadHeader("user"))?;
        }
        if let Some(k) = &self.key {
            HeaderValue::from_str(&format!("Bearer {k}"))
                .map_err(|_| TargetError::BadHeader("key"))?;
        }
        Ok(())
    }

    /// The upstream URI of a request's path and query.
    fn uri(&self, incoming: &Uri) -> Result<Uri, axum::http::Error> {
        let base = self.upstream.path().trim_end_matches('/');
        let pq = incoming.path_and_query().map_or("/", |p| p.as_str());
        Uri::builder()
            .scheme(self.upstream.scheme_str().unwrap_or("http"))
            .authority(self.upstream.authority().map_or("", |a| a.as_str()))
            .path_and_query(format!("{base}{pq}"))
            .build()
    }
}

struct Forwarder {
    target: Target,
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

/// The interceptor app: one fallback route forwarding everything. Fails only when TLS
/// for `https` upstreams cannot be set up (no platform trust store).
pub fn app(target: Target) -> std::io::Result<Router> {
    let provider = rustls::crypto::ring::default_provider();
    let _ = provider.clone().install_default();
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_platform_verifier(provider)?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .build(https);
    Ok(Router::new()
        .fallback(forward)
        .with_state(Arc::new(Forwarder { target, client })))
}

/// The headers sent upstream: the client's, less hop-by-hop ones, plus the scope.
fn upstream_headers(t: &Target, incoming: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(incoming.len() + 3);
    for (name, value) in incoming {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            h.append(name.clone(), value.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(&t.project) {
        h.insert(PROJECT_HEADER, v);
    }
    if let Some(Ok(v)) = t.user.as_deref().map(HeaderValue::from_str) {
        h.insert(t.user_header.clone(), v);
    }
    if let Some(Ok(v)) = t
        .key
        .as_deref()
        .map(|k| HeaderValue::from_str(&format!("Bearer {k}")))
    {
        h.remove("x-api-key");
        h.remove("api-key");
        h.insert(header::AUTHORIZATION, v);
    }
    h
}

async fn forward(State(f): State<Arc<Forwarder>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let uri = match f.target.uri(&parts.uri) {
        Ok(u) => u,
        Err(e) => return bad_gateway(&path, &format!("invalid upstream URL: {e}")),
    };
    let mut out = axum::http::Request::new(body);
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    *out.headers_mut() = upstream_headers(&f.target, &parts.headers);
    match f.client.request(out).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for name in HOP_BY_HOP {
                parts.headers.remove(*name);
            }
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            let reason = std::error::Error::source(&e)
                .map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
            tracing::warn!(upstream = %f.target.upstream, error = %reason, "central memproxy unreachable");
            bad_gateway(
                &path,
                &format!(
                    "memproxy intercept cannot reach the central memproxy at {}: {reason}",
                    f.target.upstream
                ),
            )
        }
    }
}

/// A 502 in the wire format of `path`'s clients (Anthropic for `/v1/messages`, else
/// OpenAI's).
fn bad_gateway(path: &str, message: &str) -> Response {
    let body = if path.starts_with("/v1/messages") {
        json!({"type": "error", "error": {"type": "api_error", "message": message}})
    } else {
        json!({"error": {"message": message, "type": "upstream_unavailable", "param": null, "code": "upstream_unavailable"}})
    };
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(upstream: &str) -> Target {
        Target {
            upstream: upstream.parse().unwrap(),
            project: "web".into(),
            user: Some("alice".into()),
            user_header: HeaderName::from_static("x-memory-user-id"),
            key: Some("sk-k".into()),
        }
    }

    #[test]
    fn joins_paths_and_sets_scope_headers() {
        let t = target("http://central:8764/base/");
        let u = t.uri(&"/v1/chat/completions?x=1".parse().unwrap()).unwrap();
        assert_eq!(
            u.to_string(),
            "http://central:8764/base/v1/chat/completions?x=1"
        );
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("client"));
        h.insert("connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-memory-project", HeaderValue::from_static("other"));
        let out = upstream_headers(&t, &h);
        assert_eq!(out["x-memory-project"], "web");
        assert_eq!(out["x-memory-user-id"], "alice");
        assert_eq!(out["authorization"], "Bearer sk-k");
        assert!(out.get("x-api-key").is_none() && out.get("connection").is_none());
        assert!(target("ftp://x").check().is_err());
        assert!(target("http://x:1").check().is_ok());
    }
}
