//! OpenAI and every OpenAI-compatible server (vLLM, Ollama, LM Studio, a LiteLLM proxy):
//! `POST {api_base}/chat/completions`, JSON or SSE. The request is forwarded nearly
//! untouched (model name swapped, stream usage requested); the answer passes through.
//!
//! Responses API requests go to `POST {api_base}/responses` untranslated when the
//! deployment serves it (`model_info.supported_endpoints`, default yes); otherwise, or once
//! the upstream answered 404/405 there (remembered per deployment), they are bridged to
//! chat completions.
//!
//! Where the requests go and how they are signed is a [`Wire`]: OpenAI's layout here,
//! Azure's (deployment paths, `api-version`, `api-key`) built by `super::azure`, so both
//! share one implementation of streams, usage and the Responses bridge.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;

use super::http::{accept, base_headers, read_all, sse_events, Endpoint, HttpClient};
use super::{
    deployment_key, CallContext, EventStream, ProviderEnv, ProviderError, Reply, ResponsesNative,
};
use crate::config::DeploymentConfig;
use crate::protocol::chat::ChatBody;
use crate::protocol::ir::Format;

pub struct OpenAi {
    chat_url: ModelUrl,
    embeddings_url: ModelUrl,
    /// `{api_base}/responses`.
    responses_url: ModelUrl,
    /// Credentials sent with every request (values marked sensitive).
    auth: HeaderMap,
    /// Whether Responses requests go to `responses_url` when `supported_endpoints` does
    /// not say.
    responses_by_default: bool,
    status_error: fn(StatusCode, &[u8]) -> ProviderError,
    extra: HeaderMap,
    http: HttpClient,
    /// Set for Supermemory routers and upstream mode: memory headers are sent upstream.
    memory_headers: Option<MemoryHeaders>,
    /// Upstream mode without its own key: the client's `Authorization` is passed on.
    forward_client_auth: bool,
    /// The upstream answered 404/405 at `/responses`: Responses requests are bridged.
    responses_missing: AtomicBool,
}

/// Memory headers for a Supermemory router (and upstream mode), shared by the providers
/// whose `api_base` may be one.
pub(crate) struct MemoryHeaders {
    api_key: Option<HeaderValue>,
    /// One cookie jar per user, so challenge-page sessions of a Supermemory router stick
    /// to the user they were made for (this instance's own, when no Redis is shared).
    jars: RwLock<HashMap<String, Arc<Mutex<cookie_store::CookieStore>>>>,
    /// The jars every instance shares (Redis), used instead of `jars` when configured.
    shared: Option<Arc<crate::storage::redis::CookieJars>>,
    /// The router's address, as cookies are scoped (parsed once).
    cookie_url: Option<url::Url>,
}

impl MemoryHeaders {
    pub(crate) fn new(env: &ProviderEnv, api_base: &str) -> Self {
        Self {
            api_key: env
                .supermemory_api_key
                .as_deref()
                .and_then(|k| HeaderValue::from_str(k).ok()),
            jars: RwLock::new(HashMap::new()),
            shared: env.cookie_jars.clone(),
            cookie_url: url::Url::parse(api_base).ok(),
        }
    }

    fn jar(&self, user_id: &str) -> Arc<Mutex<cookie_store::CookieStore>> {
        if let Some(j) = self.jars.read().ok().and_then(|m| m.get(user_id).cloned()) {
            return j;
        }
        match self.jars.write() {
            Ok(mut map) => map.entry(user_id.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Adds `x-sm-user-id`, `x-supermemory-api-key` when configured, and the user's
    /// cookies for the router.
    pub(crate) async fn apply(&self, h: &mut HeaderMap, user_id: &str) {
        if let Ok(v) = HeaderValue::from_str(user_id) {
            h.insert("x-sm-user-id", v);
        }
        if let Some(k) = &self.api_key {
            h.insert("x-supermemory-api-key", k.clone());
        }
        let Some(url) = &self.cookie_url else {
            return;
        };
        let request_values = |jar: &cookie_store::CookieStore| -> Vec<String> {
            jar.get_request_values(url)
                .map(|(n, v)| format!("{n}={v}"))
                .collect()
        };
        let cookies = match &self.shared {
            Some(shared) => {
                let mut jar = cookie_store::CookieStore::default();
                let raw = shared.load(user_id, url.as_str()).await;
                jar.store_response_cookies(
                    raw.into_iter()
                        .filter_map(|s| cookie_store::RawCookie::parse(s).ok()),
                    url,
                );
                request_values(&jar)
            }
            None => match self.jar(user_id).lock() {
                Ok(jar) => request_values(&jar),
                Err(_) => return,
            },
        };
        if let Ok(v) = HeaderValue::from_str(&cookies.join("; ")) {
            if !cookies.is_empty() {
                h.insert(header::COOKIE, v);
            }
        }
    }

    /// Keeps the cookies the router set for `user_id` (in the shared jars, when there
    /// are, before the answer goes on, so the user's next request finds them anywhere).
    pub(crate) async fn remember(&self, user_id: &str, answer: &HeaderMap) {
        let Some(url) = &self.cookie_url else {
            return;
        };
        let set: Vec<cookie_store::RawCookie<'static>> = answer
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|s| cookie_store::RawCookie::parse(s.to_string()).ok())
            .collect();
        if set.is_empty() {
            return;
        }
        match &self.shared {
            Some(shared) => {
                let named: Vec<(String, String)> = set
                    .iter()
                    .map(|c| (c.name().to_string(), c.to_string()))
                    .collect();
                shared.save(user_id, url.as_str(), &named).await;
            }
            None => {
                if let Ok(mut jar) = self.jar(user_id).lock() {
                    jar.store_response_cookies(set.into_iter(), url);
                }
            }
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

/// Where an OpenAI-wire deployment sends its requests, how it signs them and how its
/// error bodies read.
pub(crate) struct Wire {
    pub chat: ModelUrl,
    pub embeddings: ModelUrl,
    pub responses: ModelUrl,
    /// Credential headers for every request.
    pub auth: HeaderMap,
    /// Responses requests go natively to `responses` unless `supported_endpoints` says
    /// otherwise (else they are bridged to chat completions).
    pub responses_by_default: bool,
    pub status_error: fn(StatusCode, &[u8]) -> ProviderError,
}

impl Wire {
    /// OpenAI's layout: `{api_base}/chat/completions`, `/embeddings`, `/responses`, the key
    /// as `Authorization: Bearer`.
    fn openai(cfg: &DeploymentConfig) -> Self {
        let mut auth = HeaderMap::new();
        if let Some(v) = cfg
            .api_key
            .as_ref()
            .and_then(|k| sensitive(&format!("Bearer {}", k.expose())))
        {
            auth.insert(header::AUTHORIZATION, v);
        }
        Self {
            chat: ModelUrl::fixed(format!("{}/chat/completions", cfg.api_base)),
            embeddings: ModelUrl::fixed(format!("{}/embeddings", cfg.api_base)),
            responses: ModelUrl::fixed(format!("{}/responses", cfg.api_base)),
            auth,
            responses_by_default: true,
            status_error,
        }
    }
}

/// A header value marked sensitive (kept out of debug output), if `value` is a valid one.
pub(crate) fn sensitive(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// An upstream URL that may name the model in its path (Azure's deployments): parsed once
/// for the configured model, and again per request only for another model (a wildcard
/// deployment's match).
pub(crate) struct ModelUrl {
    endpoint: Endpoint,
    /// The URL with [`MODEL_SLOT`] where the model goes, when it names one.
    template: Option<String>,
    model: String,
}

/// Where a [`ModelUrl`] template takes the model.
pub(crate) const MODEL_SLOT: &str = "{model}";

impl ModelUrl {
    /// A URL that does not depend on the model.
    pub(crate) fn fixed(url: String) -> Self {
        Self {
            endpoint: Endpoint::new(url),
            template: None,
            model: String::new(),
        }
    }

    /// A URL with [`MODEL_SLOT`] in it, prepared for `model`.
    pub(crate) fn per_model(template: String, model: &str) -> Self {
        Self {
            endpoint: Endpoint::new(template.replace(MODEL_SLOT, model)),
            template: Some(template),
            model: model.to_string(),
        }
    }

    /// The endpoint for a request to `model`.
    pub(crate) fn get(&self, model: &str) -> Cow<'_, Endpoint> {
        match &self.template {
            Some(t) if model != self.model => {
                Cow::Owned(Endpoint::new(t.replace(MODEL_SLOT, model)))
            }
            _ => Cow::Borrowed(&self.endpoint),
        }
    }
}

impl OpenAi {
    pub fn new(cfg: &DeploymentConfig, env: &ProviderEnv) -> Self {
        Self::with_wire(cfg, env, Wire::openai(cfg))
    }

    /// A deployment that speaks OpenAI's wire format at the places `wire` names.
    pub(crate) fn with_wire(cfg: &DeploymentConfig, env: &ProviderEnv, wire: Wire) -> Self {
        let upstream_mode = cfg.upstream_mode;
        let memory_headers = (cfg.supermemory_router || upstream_mode)
            .then(|| MemoryHeaders::new(env, &cfg.api_base));
        Self {
            chat_url: wire.chat,
            embeddings_url: wire.embeddings,
            responses_url: wire.responses,
            responses_by_default: wire.responses_by_default,
            status_error: wire.status_error,
            responses_missing: AtomicBool::new(false),
            forward_client_auth: upstream_mode && wire.auth.is_empty(),
            auth: wire.auth,
            extra: extra_headers(cfg),
            http: env.http.clone(),
            memory_headers,
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
        let payload = body.to_json_with_model(upstream_model);
        let url = self.embeddings_url.get(upstream_model);
        let resp = self.post(&url, false, payload, cfg, ctx).await?;
        read_all(resp, cfg.timeout, &url.url).await
    }

    /// POSTs `payload` to `endpoint` with auth, identity and memory headers set.
    async fn post(
        &self,
        endpoint: &Endpoint,
        stream: bool,
        payload: Vec<u8>,
        cfg: &DeploymentConfig,
        ctx: &CallContext<'_>,
    ) -> Result<super::http::UpstreamResponse, ProviderError> {
        let mut h = base_headers(accept(stream), ctx.request_id, ctx.user_id);
        for (k, v) in &self.extra {
            h.insert(k, v.clone());
        }
        for (k, v) in &self.auth {
            h.insert(k, v.clone());
        }
        if self.forward_client_auth {
            if let Some(a) = ctx
                .client_authorization
                .and_then(|a| HeaderValue::from_str(a).ok())
            {
                h.insert(header::AUTHORIZATION, a);
            }
        }
        if let Some(mh) = &self.memory_headers {
            mh.apply(&mut h, ctx.user_id).await;
        }
        let resp = self
            .http
            .post(endpoint, h, payload, cfg.timeout, self.status_error)
            .await?;
        if let Some(mh) = &self.memory_headers {
            mh.remember(ctx.user_id, resp.headers()).await;
        }
        Ok(resp)
    }

    pub async fn chat(
        &self,
        cfg: &DeploymentConfig,
        body: &ChatBody<'_>,
        upstream_model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Reply, ProviderError> {
        let (payload, usage_added) = body.to_upstream(upstream_model);
        let url = self.chat_url.get(upstream_model);
        let resp = self.post(&url, body.stream, payload, cfg, ctx).await?;
        if !body.stream {
            return Ok(Reply::Complete {
                body: read_all(resp, cfg.timeout, &url.url).await?,
                format: Format::OpenAiChat,
            });
        }
        Ok(Reply::Stream {
            events: sse_events(resp, cfg.timeout, &url.url),
            format: Format::OpenAiChat,
            usage_added,
        })
    }
}

impl OpenAi {
    /// Whether Responses requests go to `/responses` as they are: the deployment's
    /// `supported_endpoints` when given (LiteLLM's rule), else the wire's default until the
    /// upstream showed it has no such endpoint.
    fn serves_responses(&self, cfg: &DeploymentConfig) -> bool {
        if self.responses_missing.load(Ordering::Relaxed) {
            return false;
        }
        match &cfg.supported_endpoints {
            Some(list) => list
                .iter()
                .any(|e| e.trim().trim_end_matches('/').ends_with("responses")),
            None => self.responses_by_default,
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
                        request_id = ctx.request_id,
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
        let url = self.responses_url.get(upstream_model);
        let resp = self.post(&url, body.stream, payload, cfg, ctx).await?;
        if !body.stream {
            return Ok(Reply::Complete {
                body: read_all(resp, cfg.timeout, &url.url).await?,
                format: Format::Responses,
            });
        }
        Ok(Reply::Stream {
            events: fail_on_failed_responses(sse_events(resp, cfg.timeout, &url.url)),
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

impl super::Upstream for OpenAi {
    fn chat<'a>(
        &'a self,
        cfg: &'a DeploymentConfig,
        req: &'a super::LlmRequest<'a>,
        upstream_model: &'a str,
        ctx: &'a CallContext<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<Reply, ProviderError>> {
        Box::pin(async move {
            match &req.native {
                Some(super::Native::Responses(native)) => {
                    self.responses(cfg, native, &req.chat, upstream_model, ctx)
                        .await
                }
                _ => self.chat(cfg, &req.chat, upstream_model, ctx).await,
            }
        })
    }

    fn embed<'a>(
        &'a self,
        cfg: &'a DeploymentConfig,
        body: &'a ChatBody<'a>,
        upstream_model: &'a str,
        ctx: &'a CallContext<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<bytes::Bytes, ProviderError>> {
        Box::pin(self.embed(cfg, body, upstream_model, ctx))
    }
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
