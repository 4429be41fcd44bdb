//! Anthropic: `POST {api_base}/v1/messages` with `x-api-key` and `anthropic-version`,
//! JSON or named SSE events. A client that spoke Anthropic has its own body sent with the
//! model swapped (so cache_control, thinking, metadata survive); other requests are
//! translated from the internal chat shape. The answer is returned in Anthropic's format
//! for the server to pass through or translate.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;

use super::http::{
    accept, base_headers, read_all, sse_events, Endpoint, HttpClient, UpstreamResponse,
};
use super::openai::{extra_headers, status_error, MemoryHeaders};
use super::{CallContext, EventStream, LlmRequest, Native, ProviderEnv, ProviderError, Reply};
use crate::config::DeploymentConfig;
use crate::protocol::anthropic;
use crate::protocol::ir::{Format, SseEvent};

pub struct Anthropic {
    url: Endpoint,
    api_key: Option<HeaderValue>,
    extra: HeaderMap,
    http: HttpClient,
    /// Set for Supermemory routers: memory headers are sent upstream.
    memory_headers: Option<MemoryHeaders>,
}

/// `{api_base}/v1/messages`, without doubling a `/v1` the base already ends with.
fn messages_url(api_base: &str) -> String {
    let base = api_base.trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/messages")
    } else {
        format!("{base}/v1/messages")
    }
}

impl Anthropic {
    pub fn new(cfg: &DeploymentConfig, env: &ProviderEnv) -> Self {
        let api_key = cfg
            .api_key
            .as_ref()
            .and_then(|k| HeaderValue::from_str(k.expose()).ok())
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Self {
            url: Endpoint::new(messages_url(&cfg.api_base)),
            api_key,
            extra: extra_headers(cfg),
            http: env.http.clone(),
            memory_headers: cfg
                .supermemory_router
                .then(|| MemoryHeaders::new(env, &cfg.api_base)),
        }
    }

    pub async fn chat(
        &self,
        cfg: &DeploymentConfig,
        req: &LlmRequest<'_>,
        upstream_model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Reply, ProviderError> {
        let (payload, stream) = request_body(req, upstream_model)?;

        let mut h = base_headers(accept(stream), ctx.request_id, ctx.user_id);
        h.insert(
            "anthropic-version",
            HeaderValue::from_static(anthropic::API_VERSION),
        );
        for (k, v) in &self.extra {
            h.insert(k, v.clone());
        }
        if let Some(key) = &self.api_key {
            h.insert("x-api-key", key.clone());
        }
        if let Some(beta) = ctx
            .anthropic_beta
            .and_then(|b| HeaderValue::from_str(b).ok())
        {
            h.insert("anthropic-beta", beta);
        }
        if let Some(mh) = &self.memory_headers {
            mh.apply(&mut h, ctx.user_id).await;
        }
        let timeout = cfg.timeout;
        let resp = self
            .http
            .post(&self.url, h, payload, timeout, upstream_error)
            .await?;
        if let Some(mh) = &self.memory_headers {
            mh.remember(ctx.user_id, resp.headers()).await;
        }
        into_reply(resp, stream, timeout, &self.url).await
    }
}

/// The Messages body for `upstream_model` and whether it streams: the client's own body
/// when it spoke Anthropic, else the translation of the chat request (Vertex AI uses it).
pub(super) fn request_body(
    req: &LlmRequest<'_>,
    upstream_model: &str,
) -> Result<(Bytes, bool), ProviderError> {
    if let Some(Native::Anthropic(raw)) = &req.native {
        return Ok((
            anthropic::native_with_model(raw, upstream_model),
            raw.stream,
        ));
    }
    let typed = req.chat.to_request().map_err(|e| ProviderError::Status {
        status: StatusCode::BAD_REQUEST,
        message: format!("the request cannot be translated for Anthropic: {e}"),
        kind: Some("invalid_request_error".into()),
        code: None,
    })?;
    Ok((
        anthropic::chat_to_request(&typed, upstream_model),
        req.chat.stream,
    ))
}

/// An Anthropic answer (JSON, or named SSE events when `stream`) as a [`Reply`].
pub(super) async fn into_reply(
    resp: UpstreamResponse,
    stream: bool,
    timeout: Duration,
    url: &Endpoint,
) -> Result<Reply, ProviderError> {
    if !stream {
        return Ok(Reply::Complete {
            body: read_all(resp, timeout, &url.url).await?,
            format: Format::Anthropic,
        });
    }
    Ok(Reply::Stream {
        events: fail_on_error_events(sse_events(resp, timeout, &url.url)),
        format: Format::Anthropic,
        usage_added: false,
    })
}

/// An upstream error status as a provider error carrying Anthropic's message and type.
pub(super) fn upstream_error(status: StatusCode, bytes: &[u8]) -> ProviderError {
    match anthropic::parse_error(bytes) {
        Some(e) => ProviderError::Status {
            status,
            message: e.message,
            kind: Some(e.kind),
            code: None,
        },
        None => status_error(status, bytes),
    }
}

/// Anthropic reports failures after the stream began (overloaded, …) as an `error`
/// event; it becomes a stream error so the client gets it in its own format.
fn fail_on_error_events(events: EventStream) -> EventStream {
    Box::pin(events.map(|item| match item {
        Ok(ev) if ev.event.as_deref() == Some("error") => Err(stream_error(&ev)),
        other => other,
    }))
}

fn stream_error(ev: &SseEvent) -> ProviderError {
    let e = anthropic::parse_error(&ev.data).unwrap_or(anthropic::UpstreamError {
        kind: "api_error".into(),
        message: String::from_utf8_lossy(&ev.data)
            .chars()
            .take(500)
            .collect(),
    });
    ProviderError::Status {
        status: StatusCode::from_u16(anthropic::status_for_error_type(&e.kind))
            .unwrap_or(StatusCode::BAD_GATEWAY),
        message: e.message,
        kind: Some(e.kind),
        code: None,
    }
}

impl super::Upstream for Anthropic {
    fn chat<'a>(
        &'a self,
        cfg: &'a DeploymentConfig,
        req: &'a super::LlmRequest<'a>,
        upstream_model: &'a str,
        ctx: &'a CallContext<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<Reply, ProviderError>> {
        Box::pin(self.chat(cfg, req, upstream_model, ctx))
    }

    fn params(&self, _upstream_model: &str) -> super::Params {
        super::Params::Claude { native: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_does_not_double_v1() {
        assert_eq!(
            messages_url("https://api.anthropic.com"),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            messages_url("http://127.0.0.1:9/v1/"),
            "http://127.0.0.1:9/v1/messages"
        );
        assert_eq!(
            messages_url("https://api.supermemory.ai/v3/api.anthropic.com"),
            "https://api.supermemory.ai/v3/api.anthropic.com/v1/messages"
        );
    }

    #[test]
    fn errors_keep_anthropic_message_and_type() {
        let e = upstream_error(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
        );
        assert!(
            matches!(&e, ProviderError::Status { message, kind: Some(k), .. }
            if message == "slow down" && k == "rate_limit_error")
        );
        assert!(e.is_retryable());
        let e = upstream_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(e.to_string(), "<html>bad gateway</html>");
    }

    #[tokio::test]
    async fn error_events_end_the_stream_as_errors() {
        let events: EventStream = Box::pin(futures_util::stream::iter([
            Ok(SseEvent::named("ping", r#"{"type":"ping"}"#)),
            Ok(SseEvent::named(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            )),
        ]));
        let got: Vec<_> = fail_on_error_events(events).collect().await;
        assert!(got[0].is_ok());
        match &got[1] {
            Err(ProviderError::Status {
                status,
                message,
                kind,
                ..
            }) => {
                assert_eq!(status.as_u16(), 529);
                assert_eq!(message, "Overloaded");
                assert_eq!(kind.as_deref(), Some("overloaded_error"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn anthropic_clients_body_goes_upstream_with_only_the_model_swapped() {
        let mock = mock_upstream::MockUpstream::start().await;
        let yaml = format!(
            "model_list:\n  - model_name: claude\n    litellm_params: {{model: anthropic/claude-up, api_base: '{}', api_key: k}}\n",
            mock.url()
        );
        let config = crate::config::parse(&yaml, "t.yaml", &Default::default(), &|_| None).unwrap();
        let env = ProviderEnv::new(&config).unwrap();
        let cfg = &config.models[0];
        let provider = Anthropic::new(cfg, &env);
        let raw = br#"{"model":"claude","max_tokens":64,"system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"}],"thinking":{"type":"enabled","budget_tokens":1024},"metadata":{"user_id":"u1"},"context_management":{"edits":[]}}"#;
        let req = LlmRequest {
            chat: crate::protocol::anthropic::request_to_chat(raw).unwrap(),
            native: Some(Native::Anthropic(
                crate::protocol::chat::ChatBody::parse_object(raw).unwrap(),
            )),
        };
        let ctx = CallContext {
            user_id: "alice",
            request_id: "r1",
            client_authorization: None,
            anthropic_beta: Some("context-management-2025-06-27"),
        };
        let reply = provider.chat(cfg, &req, "claude-up", &ctx).await.unwrap();
        let Reply::Complete { body, format } = reply else {
            panic!("expected a complete answer");
        };
        assert_eq!(format, Format::Anthropic);
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["content"][0]["text"], "mock reply to: hi");
        let mut want: serde_json::Value = serde_json::from_slice(raw).unwrap();
        want["model"] = "claude-up".into();
        let seen = &mock.requests()[0];
        assert_eq!(seen.body, want);
        assert_eq!(
            seen.headers["anthropic-beta"],
            "context-management-2025-06-27"
        );
    }
}
