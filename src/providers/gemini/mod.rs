//! Google Gemini (AI Studio): the internal request translated by
//! [`crate::protocol::gemini`] and sent to
//! `POST {api_base}/v1beta/models/{model}:generateContent`, or
//! `:streamGenerateContent?alt=sse` for streams, with the key in `x-goog-api-key`. The
//! answer comes back in Gemini's format for the server to translate.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;

use super::http::{
    accept, base_headers, read_all, sse_events, Endpoint, HttpClient, UpstreamResponse,
};
use super::openai::{extra_headers, status_error as generic_status_error, MemoryHeaders};
use super::{CallContext, ProviderEnv, ProviderError, Reply};
use crate::config::DeploymentConfig;
use crate::protocol::chat::ChatBody;
use crate::protocol::gemini;
use crate::protocol::ir::Format;

/// The API version used when `api_base` names none.
const DEFAULT_VERSION: &str = "v1beta";

pub struct Gemini {
    /// `{api_base}/{version}`, without a trailing slash.
    base: String,
    key: Option<HeaderValue>,
    extra: HeaderMap,
    http: HttpClient,
    /// Set for Supermemory routers: memory headers are sent upstream.
    memory_headers: Option<MemoryHeaders>,
}

impl Gemini {
    pub fn new(cfg: &DeploymentConfig, env: &ProviderEnv) -> Self {
        let key = cfg
            .api_key
            .as_ref()
            .and_then(|k| HeaderValue::from_str(k.expose()).ok())
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Self {
            base: versioned_base(&cfg.api_base, cfg.api_version.as_deref()),
            key,
            extra: extra_headers(cfg),
            http: env.http.clone(),
            memory_headers: cfg
                .supermemory_router
                .then(|| MemoryHeaders::new(env, &cfg.api_base)),
        }
    }

    fn url(&self, model: &str, stream: bool) -> String {
        let model = model.strip_prefix("models/").unwrap_or(model);
        if stream {
            format!("{}/models/{model}:streamGenerateContent?alt=sse", self.base)
        } else {
            format!("{}/models/{model}:generateContent", self.base)
        }
    }

    pub async fn chat(
        &self,
        cfg: &DeploymentConfig,
        body: &ChatBody<'_>,
        upstream_model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Reply, ProviderError> {
        let payload = request_body(body)?;
        let url = Endpoint::new(self.url(upstream_model, body.stream));
        let mut h = base_headers(accept(body.stream), ctx.request_id, ctx.user_id);
        for (k, v) in &self.extra {
            h.insert(k, v.clone());
        }
        if let Some(key) = &self.key {
            h.insert("x-goog-api-key", key.clone());
        }
        if let Some(mh) = &self.memory_headers {
            mh.apply(&mut h, ctx.user_id).await;
        }
        let timeout = cfg.timeout;
        let resp = self
            .http
            .post(&url, h, payload, timeout, status_error)
            .await?;
        if let Some(mh) = &self.memory_headers {
            mh.remember(ctx.user_id, resp.headers()).await;
        }
        into_reply(resp, body.stream, timeout, &url).await
    }
}

/// The internal request as a Gemini `GenerateContentRequest` (Vertex AI sends it too).
pub(super) fn request_body(body: &ChatBody<'_>) -> Result<Bytes, ProviderError> {
    gemini::chat_to_request(body).map_err(|e| ProviderError::Status {
        status: StatusCode::BAD_REQUEST,
        message: format!("cannot send this request to Gemini: {e}"),
        kind: Some("invalid_request_error".into()),
        code: Some("invalid_request".into()),
    })
}

/// A Gemini answer (JSON, or `alt=sse` events when `stream`) as a [`Reply`].
pub(super) async fn into_reply(
    resp: UpstreamResponse,
    stream: bool,
    timeout: Duration,
    url: &Endpoint,
) -> Result<Reply, ProviderError> {
    if !stream {
        return Ok(Reply::Complete {
            body: read_all(resp, timeout, &url.url).await?,
            format: Format::Gemini,
        });
    }
    Ok(Reply::Stream {
        events: sse_events(resp, timeout, &url.url),
        format: Format::Gemini,
        usage_added: false,
    })
}

/// `{api_base}/{version}`: an `api_base` that already ends in a version segment (`v1`,
/// `v1beta`, `v1alpha`, …) is used as it is; otherwise `api_version` or `v1beta` is added.
fn versioned_base(api_base: &str, api_version: Option<&str>) -> String {
    let base = api_base.trim_end_matches('/');
    let last = base.rsplit('/').next().unwrap_or("");
    let is_version = last.len() > 1
        && last.starts_with('v')
        && last[1..].starts_with(|c: char| c.is_ascii_digit())
        && last[1..].bytes().all(|b| b.is_ascii_alphanumeric());
    if is_version {
        base.to_string()
    } else {
        format!("{base}/{}", api_version.unwrap_or(DEFAULT_VERSION))
    }
}

/// An error from Google's `{"error":{"code","message","status"}}` body (its RPC status,
/// lower-cased, as the code), or from any other shape a proxy in between may send.
pub(super) fn status_error(status: StatusCode, bytes: &[u8]) -> ProviderError {
    match gemini::parse_error(bytes) {
        Some(e) => ProviderError::Status {
            status,
            message: e.message,
            kind: None,
            code: e.status.map(|s| s.to_ascii_lowercase()),
        },
        None => generic_status_error(status, bytes),
    }
}

impl super::Upstream for Gemini {
    fn chat<'a>(
        &'a self,
        cfg: &'a DeploymentConfig,
        req: &'a super::LlmRequest<'a>,
        upstream_model: &'a str,
        ctx: &'a CallContext<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<Reply, ProviderError>> {
        Box::pin(self.chat(cfg, &req.chat, upstream_model, ctx))
    }

    fn params(&self, _upstream_model: &str) -> super::Params {
        super::Params::Gemini
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_added_once() {
        let g = "https://generativelanguage.googleapis.com";
        assert_eq!(versioned_base(g, None), format!("{g}/v1beta"));
        assert_eq!(
            versioned_base(&format!("{g}/v1beta/"), None),
            format!("{g}/v1beta")
        );
        assert_eq!(versioned_base(&format!("{g}/v1"), None), format!("{g}/v1"));
        assert_eq!(versioned_base(g, Some("v1alpha")), format!("{g}/v1alpha"));
        let proxy = "https://api.supermemory.ai/v3/generativelanguage.googleapis.com";
        assert_eq!(versioned_base(proxy, None), format!("{proxy}/v1beta"));
        assert_eq!(
            versioned_base("http://127.0.0.1:9/vertex", None),
            "http://127.0.0.1:9/vertex/v1beta"
        );
    }

    #[test]
    fn google_errors_keep_message_and_status() {
        let e = status_error(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert!(e.is_retryable());
        assert!(
            matches!(e, ProviderError::Status { ref message, ref code, .. }
            if message == "Resource has been exhausted" && code.as_deref() == Some("resource_exhausted"))
        );
        let e = status_error(StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(e.to_string(), "upstream down");
    }
}
