//! OpenAI and every OpenAI-compatible server (vLLM, Ollama, LM Studio, a LiteLLM proxy):
//! `POST {api_base}/chat/completions`, JSON or SSE. The request is forwarded nearly
//! untouched (model name swapped, stream usage requested); the answer passes through.
//!
//! Responses API requests go to `POST {api_base}/responses` untranslated when the
//! deployment serves it (`model_info.supported_endpoints`, default yes); otherwise, or once
//! the upstream answered 404/405 there (remembered per deployment), they are bridged to
//! chat completions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde::Deserialize;

use super::{
    deployment_key, CallContext, EventStream, ProviderEnv, ProviderError, Reply, ResponsesNative,
};
use crate::config::DeploymentConfig;
use crate::protocol::chat::ChatBody;
use crate::protocol::ir::{Format, SseEvent};

pub struct OpenAi {
    url: String,
    parsed_url: Option<reqwest::Url>,
    auth: Option<HeaderValue>,
    extra: HeaderMap,
    http: reqwest::Client,
    /// Set for Supermemory routers and upstream mode: memory headers are sent upstream.
    memory_headers: Option<MemoryHeaders>,
    /// Upstream mode without its own key: the client's `Authorization` is passed on.
    forward_client_auth: bool,
    /// `{api_base}/responses`.
    responses_url: String,
    /// The upstream answered 404/405 at `/responses`: Responses requests are bridged.
    responses_missing: AtomicBool,
}

/// Memory headers for a Supermemory router (and upstream mode), shared by the providers
/// whose `api_base` may be one.
pub(crate) struct MemoryHeaders {
    api_key: Option<HeaderValue>,
    /// One client (cookie jar and connections) per user, so challenge-page sessions of a
    /// Supermemory router stick to the user they were made for.
    per_user: RwLock<HashMap<String, reqwest::Client>>,
}

impl MemoryHeaders {
    pub(crate) fn new(env: &ProviderEnv) -> Self {
        Self {
            api_key: env
                .supermemory_api_key
                .as_deref()
                .and_then(|k| HeaderValue::from_str(k).ok()),
            per_user: RwLock::new(HashMap::new()),
        }
    }

    /// The HTTP client for `user_id` (made on first use; `shared` if that fails).
    pub(crate) fn client_for(&self, user_id: &str, shared: &reqwest::Client) -> reqwest::Client {
        if let Some(c) = self
            .per_user
            .read()
            .ok()
            .and_then(|m| m.get(user_id).cloned())
        {
            return c;
        }
        let Ok(client) = super::http_client(true) else {
            return shared.clone();
        };
        match self.per_user.write() {
            Ok(mut map) => map.entry(user_id.to_string()).or_insert(client).clone(),
            Err(_) => client,
        }
    }

    /// Adds `x-sm-user-id` and, when configured, `x-supermemory-api-key`.
    pub(crate) fn apply(
        &self,
        req: reqwest::RequestBuilder,
        user_id: &str,
    ) -> reqwest::RequestBuilder {
        let req = req.header("x-sm-user-id", user_id);
        match &self.api_key {
            Some(k) => req.header("x-supermemory-api-key", k),
            None => req,
        }
    }
}

/// The deployment's `extra_headers` (names were validated with the config).
pub(crate) fn extra_headers(cfg: &DeploymentConfig) -> HeaderMap {
    let mut extra = HeaderMap::new();
    for (k, v) in &cfg.extra_headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            extra.insert(k, v);
        }
    }
    extra
}

impl OpenAi {
    pub fn new(cfg: &DeploymentConfig, env: &ProviderEnv) -> Self {
        let auth = cfg
            .api_key
            .as_ref()
            .and_then(|k| HeaderValue::from_str(&format!("Bearer {}", k.expose())).ok())
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        let upstream_mode = cfg.model_name == crate::routing::UPSTREAM_MODE_MODEL;
        let memory_headers =
            (cfg.supermemory_router || upstream_mode).then(|| MemoryHeaders::new(env));
        Self {
            parsed_url: reqwest::Url::parse(&format!("{}/chat/completions", cfg.api_base)).ok(),
            url: format!("{}/chat/completions", cfg.api_base),
            responses_url: format!("{}/responses", cfg.api_base),
            responses_missing: AtomicBool::new(false),
            forward_client_auth: upstream_mode && auth.is_none(),
            auth,
            extra: extra_headers(cfg),
            http: env.http.clone(),
            memory_headers,
        }
    }

    fn client_for(&self, user_id: &str) -> reqwest::Client {
        match &self.memory_headers {
            Some(mh) => mh.client_for(user_id, &self.http),
            None => self.http.clone(),
        }
    }

    /// `POST {api_base}/embeddings`, the answer passed through.
    pub async fn embed(
        &self,
        cfg: &DeploymentConfig,
        body: &ChatBody<'_>,
        upstream_model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Bytes, ProviderError> {
        let url = self.url.replace("/chat/completions", "/embeddings");
        let req = self
            .request(&url, ctx)
            .header("accept", "application/json")
            .body(body.to_json_with_model(upstream_model));
        let resp = tokio::time::timeout(cfg.timeout, req.send())
            .await
            .map_err(|_| ProviderError::Timeout(cfg.timeout))?
            .map_err(|e| transport_error(&url, e))?;
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let bytes = read_all(resp, cfg.timeout).await?;
        if !status.is_success() {
            return Err(status_error(status, &bytes));
        }
        Ok(bytes)
    }

    /// A POST to `url` with auth, identity and memory headers set.
    fn request(&self, url: &str, ctx: &CallContext<'_>) -> reqwest::RequestBuilder {
        let client = self.client_for(ctx.user_id);
        // The chat URL is parsed once, not per request.
        let builder = match &self.parsed_url {
            Some(parsed) if url == self.url => client.post(parsed.clone()),
            _ => client.post(url),
        };
        let mut req = builder
            .header("content-type", "application/json")
            .header("x-request-id", ctx.request_id)
            .header("x-memproxy-user-id", ctx.user_id);
        for (k, v) in &self.extra {
            req = req.header(k, v);
        }
        if let Some(auth) = &self.auth {
            req = req.header("authorization", auth);
        } else if self.forward_client_auth {
            if let Some(a) = ctx.client_authorization {
                req = req.header("authorization", a);
            }
        }
        if let Some(mh) = &self.memory_headers {
            req = mh.apply(req, ctx.user_id);
        }
        req
    }

    pub async fn chat(
        &self,
        cfg: &DeploymentConfig,
        body: &ChatBody<'_>,
        upstream_model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Reply, ProviderError> {
        let (payload, usage_added) = body.to_upstream(upstream_model);
        let accept = if body.stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let req = self.request(&self.url, ctx).header("accept", accept);
        let timeout = cfg.timeout;
        let resp = send(req, payload, &self.url, timeout, status_error).await?;
        if !body.stream {
            let body = read_all(resp, timeout).await?;
            return Ok(Reply::Complete {
                body,
                format: Format::OpenAiChat,
            });
        }
        Ok(Reply::Stream {
            events: sse_events(resp, timeout),
            format: Format::OpenAiChat,
            usage_added,
        })
    }
}

impl OpenAi {
    /// Whether Responses requests go to `/responses` as they are: the deployment's
    /// `supported_endpoints` when given (LiteLLM's rule), else yes until the upstream
    /// showed it has no such endpoint.
    fn serves_responses(&self, cfg: &DeploymentConfig) -> bool {
        if self.responses_missing.load(Ordering::Relaxed) {
            return false;
        }
        match &cfg.supported_endpoints {
            Some(list) => list
                .iter()
                .any(|e| e.trim().trim_end_matches('/').ends_with("responses")),
            None => true,
        }
    }

    /// A Responses request: natively at `/responses`, or bridged through `chat` (the
    /// same request in the internal chat shape).
    pub async fn responses(
        &self,
        cfg: &DeploymentConfig,
        native: &ResponsesNative<'_>,
        chat: &ChatBody<'_>,
        upstream_model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Reply, ProviderError> {
        if !self.serves_responses(cfg) {
            return self.chat(cfg, chat, upstream_model, ctx).await;
        }
        let body = match &native.expanded {
            Some((expanded, holder)) if holder.as_deref() != Some(&deployment_key(cfg)) => expanded,
            _ => &native.body,
        };
        match self.native_responses(cfg, body, upstream_model, ctx).await {
            Err(ProviderError::Status {
                status,
                message,
                code,
                ..
            }) if endpoint_missing(status, &message, code.as_deref()) => {
                let bridged = self.chat(cfg, chat, upstream_model, ctx).await;
                let chat_missing = matches!(&bridged, Err(ProviderError::Status { status, .. })
                    if *status == StatusCode::NOT_FOUND || *status == StatusCode::METHOD_NOT_ALLOWED);
                if !chat_missing && !self.responses_missing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        model = %cfg.model_name,
                        api_base = %cfg.api_base,
                        status = status.as_u16(),
                        "upstream has no /responses endpoint; Responses requests to this deployment are bridged to chat completions from now on"
                    );
                }
                bridged
            }
            other => other,
        }
    }

    async fn native_responses(
        &self,
        cfg: &DeploymentConfig,
        body: &ChatBody<'_>,
        upstream_model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Reply, ProviderError> {
        let payload = body.to_json_with_model(upstream_model);
        let accept = if body.stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let req = self
            .request(&self.responses_url, ctx)
            .header("accept", accept);
        let timeout = cfg.timeout;
        let resp = send(req, payload, &self.responses_url, timeout, status_error).await?;
        if !body.stream {
            return Ok(Reply::Complete {
                body: read_all(resp, timeout).await?,
                format: Format::Responses,
            });
        }
        Ok(Reply::Stream {
            events: fail_on_failed_responses(sse_events(resp, timeout)),
            format: Format::Responses,
            usage_added: false,
        })
    }
}

/// Whether a 404/405 from `/responses` means the server has no such endpoint (llama.cpp,
/// older vLLM, Ollama) rather than an unknown model or response id.
fn endpoint_missing(status: StatusCode, message: &str, code: Option<&str>) -> bool {
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return true;
    }
    if status != StatusCode::NOT_FOUND {
        return false;
    }
    let m = message.to_ascii_lowercase();
    !(matches!(code, Some("model_not_found")) || m.contains("model") || m.contains("response"))
}

/// A native Responses stream whose `response.failed` or `error` event ends it as a stream
/// error, so the client gets the failure in its own format.
fn fail_on_failed_responses(events: EventStream) -> EventStream {
    Box::pin(events.map(|ev| {
        let ev = ev?;
        if matches!(ev.event.as_deref(), Some("response.failed" | "error")) {
            if let Some(message) = crate::protocol::responses::failure_message(&ev.data) {
                return Err(ProviderError::Status {
                    status: StatusCode::BAD_GATEWAY,
                    message,
                    kind: Some("api_error".into()),
                    code: None,
                });
            }
        }
        Ok(ev)
    }))
}

/// Sends `req` with `payload` within `timeout`. An error status is read and turned into a
/// [`ProviderError`] by `on_status`, the provider's parser of its error bodies.
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
    payload: impl Into<reqwest::Body>,
    url: &str,
    timeout: Duration,
    on_status: fn(StatusCode, &[u8]) -> ProviderError,
) -> Result<reqwest::Response, ProviderError> {
    let resp = tokio::time::timeout(timeout, req.body(payload).send())
        .await
        .map_err(|_| ProviderError::Timeout(timeout))?
        .map_err(|e| transport_error(url, e))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if !status.is_success() {
        let bytes = read_all(resp, timeout).await.unwrap_or_default();
        return Err(on_status(status, &bytes));
    }
    Ok(resp)
}

pub(crate) fn transport_error(url: &str, e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Timeout(Duration::ZERO);
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    ProviderError::Connect {
        upstream: url.to_string(),
        message,
    }
}

pub(crate) async fn read_all(
    resp: reqwest::Response,
    timeout: Duration,
) -> Result<Bytes, ProviderError> {
    let url = resp.url().to_string();
    tokio::time::timeout(timeout, resp.bytes())
        .await
        .map_err(|_| ProviderError::Timeout(timeout))?
        .map_err(|e| transport_error(&url, e))
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: Option<ErrorBody>,
    detail: Option<serde_json::Value>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody {
    Text(String),
    Object {
        message: Option<String>,
        #[serde(rename = "type")]
        kind: Option<String>,
        code: Option<serde_json::Value>,
    },
}

/// Builds an error from an upstream error response, keeping the provider's message.
pub(crate) fn status_error(status: StatusCode, bytes: &[u8]) -> ProviderError {
    let (mut message, mut kind, mut code) = (None, None, None);
    if let Ok(env) = serde_json::from_slice::<ErrorEnvelope>(bytes) {
        match env.error {
            Some(ErrorBody::Text(t)) => message = Some(t),
            Some(ErrorBody::Object {
                message: m,
                kind: k,
                code: c,
            }) => {
                message = m;
                kind = k;
                code = c.map(|c| match c {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                });
            }
            None => {}
        }
        message = message.or(env.message).or(env
            .detail
            .map(|d| d.as_str().map(str::to_string).unwrap_or(d.to_string())));
    }
    let message = message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim();
        if text.is_empty() {
            format!("upstream returned HTTP {status}")
        } else {
            text.chars().take(500).collect()
        }
    });
    ProviderError::Status {
        status,
        message,
        kind,
        code,
    }
}

/// Turns an SSE response into wire events, each as soon as it arrives; an upstream that
/// stays silent longer than `idle` ends the stream with a timeout.
pub(crate) fn sse_events(resp: reqwest::Response, idle: Duration) -> EventStream {
    let url = resp.url().to_string();
    let events = resp.bytes_stream().eventsource();
    let state = Some((events, url));
    Box::pin(futures_util::stream::unfold(
        state,
        move |state| async move {
            let (mut events, url) = state?;
            match tokio::time::timeout(idle, events.next()).await {
                Err(_) => Some((Err(ProviderError::Timeout(idle)), None)),
                Ok(None) => None,
                Ok(Some(Ok(ev))) => {
                    let event = (!ev.event.is_empty() && ev.event != "message").then_some(ev.event);
                    let wire = SseEvent {
                        event,
                        data: Bytes::from(ev.data),
                    };
                    Some((Ok(wire), Some((events, url))))
                }
                Ok(Some(Err(e))) => Some((
                    Err(ProviderError::Connect {
                        upstream: url,
                        message: format!("stream interrupted: {e}"),
                    }),
                    None,
                )),
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shapes() {
        let e = status_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"message":"bad temp","type":"invalid_request_error","code":"x"}}"#,
        );
        assert!(matches!(e, ProviderError::Status { ref message, .. } if message == "bad temp"));
        let e = status_error(StatusCode::NOT_FOUND, br#"{"detail":"Not Found"}"#);
        assert_eq!(e.to_string(), "Not Found");
        let e = status_error(StatusCode::BAD_GATEWAY, b"");
        assert!(e.to_string().contains("502"));
        assert!(e.is_retryable());
    }
}
