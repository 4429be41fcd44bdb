//! OpenAI and every OpenAI-compatible server (vLLM, Ollama, LM Studio, a LiteLLM proxy):
//! `POST {api_base}/chat/completions`, JSON or SSE. The request is forwarded nearly
//! untouched (model name swapped, stream usage requested); the answer passes through.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde::Deserialize;

use super::{CallContext, EventStream, ProviderEnv, ProviderError, Reply};
use crate::config::DeploymentConfig;
use crate::protocol::chat::ChatBody;
use crate::protocol::ir::{Format, SseEvent};

pub struct OpenAi {
    url: String,
    auth: Option<HeaderValue>,
    extra: HeaderMap,
    http: reqwest::Client,
    /// Set for Supermemory routers and upstream mode: memory headers are sent upstream.
    memory_headers: Option<MemoryHeaders>,
    /// Upstream mode without its own key: the client's `Authorization` is passed on.
    forward_client_auth: bool,
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
            url: format!("{}/chat/completions", cfg.api_base),
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
        let mut req = self
            .client_for(ctx.user_id)
            .post(url)
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
        let resp = tokio::time::timeout(timeout, req.body(payload).send())
            .await
            .map_err(|_| ProviderError::Timeout(timeout))?
            .map_err(|e| transport_error(&self.url, e))?;

        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        if !status.is_success() {
            let bytes = read_all(resp, timeout).await.unwrap_or_default();
            return Err(status_error(status, &bytes));
        }
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
