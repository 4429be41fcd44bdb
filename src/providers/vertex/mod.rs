//! Google Vertex AI: Gemini models and Anthropic's Claude models in a Google Cloud
//! project, authorised by an OAuth access token that service-account credentials are
//! exchanged for ([`token`], [`credentials`]).
//!
//! - Gemini: `POST {base}/v1/projects/{project}/locations/{location}/publishers/google/
//!   models/{model}:generateContent` (`:streamGenerateContent?alt=sse`), the Gemini wire
//!   format of [`super::gemini`].
//! - Claude (models named `claude…`): `…/publishers/anthropic/models/{model}:rawPredict`
//!   (`:streamRawPredict`), an Anthropic Messages body without `model` and with
//!   `anthropic_version: vertex-2023-10-16`, as [`super::anthropic`] builds it (the client's
//!   own body when it spoke Anthropic).
//!
//! `{base}` is `https://{location}-aiplatform.googleapis.com` (`aiplatform.googleapis.com`
//! for the `global` location), or `api_base`.

mod credentials;
mod token;

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
use serde_json::value::RawValue;

use super::http::{accept, base_headers, Endpoint, HttpClient, UpstreamResponse};
use super::openai::extra_headers;
use super::{anthropic, gemini, CallContext, LlmRequest, ProviderEnv, ProviderError, Reply};
use crate::config::DeploymentConfig;
use crate::protocol::chat::ChatBody;
use credentials::Credentials;
use token::TokenSource;

/// The location used when neither the entry nor `VERTEXAI_LOCATION` names one.
const DEFAULT_LOCATION: &str = "us-central1";

/// The `anthropic_version` Vertex AI expects in Claude request bodies.
const ANTHROPIC_VERTEX_VERSION: &str = "vertex-2023-10-16";

pub struct Vertex {
    /// `{base}/v1/projects/{project}/locations/{location}/publishers`.
    publishers: String,
    tokens: TokenSource,
    extra: HeaderMap,
    http: HttpClient,
}

/// Whether Vertex AI serves `model` through Anthropic's Messages format.
pub fn is_claude(model: &str) -> bool {
    model.starts_with("claude")
}

impl Vertex {
    /// Reads `vertex_credentials`, `vertex_project` and `vertex_location` (or their
    /// environment variables); `Err` says which is missing or unusable.
    pub fn new(cfg: &DeploymentConfig, env: &ProviderEnv) -> Result<Self, String> {
        let params = cfg.params.expose();
        let text = |key: &str| {
            params
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        let credentials =
            match params.get("vertex_credentials") {
                Some(v) if !v.is_null() && v.as_str().is_none_or(|s| !s.trim().is_empty()) => {
                    Credentials::from_param(v)?
                }
                _ => return Err(
                    "no Vertex AI credentials: set `litellm_params.vertex_credentials` (a service \
                     account JSON file, or its contents) or GOOGLE_APPLICATION_CREDENTIALS"
                        .into(),
                ),
            };
        let project = text("vertex_project")
            .or(credentials.project_id())
            .ok_or(
                "no Google Cloud project: set `litellm_params.vertex_project` or VERTEXAI_PROJECT \
                 (the credentials name none)",
            )?
            .to_string();
        let location = text("vertex_location")
            .unwrap_or(DEFAULT_LOCATION)
            .to_string();
        for (name, value) in [("vertex_project", &project), ("vertex_location", &location)] {
            if !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(format!("`{name}` `{value}` is not a valid name"));
            }
        }
        let base = if cfg.api_base.is_empty() {
            if location == "global" {
                "https://aiplatform.googleapis.com".to_string()
            } else {
                format!("https://{location}-aiplatform.googleapis.com")
            }
        } else {
            cfg.api_base.trim_end_matches('/').to_string()
        };
        // An api_base that already names the API version keeps it.
        let versioned = if base.ends_with("/v1") || base.ends_with("/v1beta1") {
            base
        } else {
            format!("{base}/v1")
        };
        Ok(Self {
            publishers: format!("{versioned}/projects/{project}/locations/{location}/publishers"),
            tokens: TokenSource::new(credentials, env.http.clone(), cfg.timeout),
            extra: extra_headers(cfg),
            http: env.http.clone(),
        })
    }

    /// The endpoint of `model` by `publisher` (`google`, `anthropic`) and `method`.
    fn endpoint(&self, publisher: &str, model: &str, method: &str) -> Endpoint {
        Endpoint::new(format!(
            "{}/{publisher}/models/{model}:{method}",
            self.publishers
        ))
    }

    pub async fn chat(
        &self,
        cfg: &DeploymentConfig,
        req: &LlmRequest<'_>,
        upstream_model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Reply, ProviderError> {
        let model = upstream_model
            .strip_prefix("models/")
            .unwrap_or(upstream_model);
        if is_claude(model) {
            self.claude(cfg, req, model, ctx).await
        } else {
            self.gemini(cfg, &req.chat, model, ctx).await
        }
    }

    async fn gemini(
        &self,
        cfg: &DeploymentConfig,
        body: &ChatBody<'_>,
        model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Reply, ProviderError> {
        let payload = gemini::request_body(body)?;
        let url = if body.stream {
            self.endpoint("google", model, "streamGenerateContent?alt=sse")
        } else {
            self.endpoint("google", model, "generateContent")
        };
        let h = self.headers(body.stream, ctx);
        let resp = self
            .post(&url, h, payload, cfg.timeout, gemini::status_error)
            .await?;
        gemini::into_reply(resp, body.stream, cfg.timeout, &url).await
    }

    async fn claude(
        &self,
        cfg: &DeploymentConfig,
        req: &LlmRequest<'_>,
        model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Reply, ProviderError> {
        let (messages, stream) = anthropic::request_body(req, model)?;
        let payload = vertex_messages_body(&messages)?;
        let method = if stream {
            "streamRawPredict"
        } else {
            "rawPredict"
        };
        let url = self.endpoint("anthropic", model, method);
        let mut h = self.headers(stream, ctx);
        if let Some(beta) = ctx
            .anthropic_beta
            .and_then(|b| HeaderValue::from_str(b).ok())
        {
            h.insert("anthropic-beta", beta);
        }
        let resp = self
            .post(&url, h, payload, cfg.timeout, claude_error)
            .await?;
        anthropic::into_reply(resp, stream, cfg.timeout, &url).await
    }

    fn headers(&self, stream: bool, ctx: &CallContext<'_>) -> HeaderMap {
        let mut h = base_headers(accept(stream), ctx.request_id, ctx.user_id);
        for (k, v) in &self.extra {
            h.insert(k, v.clone());
        }
        h
    }

    /// POSTs with the current access token. A 401 means the token was revoked or expired
    /// early: it is dropped and the request is sent once more with a fresh one.
    async fn post(
        &self,
        url: &Endpoint,
        mut h: HeaderMap,
        payload: Bytes,
        timeout: Duration,
        on_status: fn(StatusCode, &[u8]) -> ProviderError,
    ) -> Result<UpstreamResponse, ProviderError> {
        let token = self.tokens.authorization().await?;
        h.insert(header::AUTHORIZATION, token.clone());
        match self
            .http
            .post(url, h.clone(), payload.clone(), timeout, on_status)
            .await
        {
            Err(ProviderError::Status { status, .. }) if status == StatusCode::UNAUTHORIZED => {
                self.tokens.invalidate(&token);
                h.insert(header::AUTHORIZATION, self.tokens.authorization().await?);
                self.http.post(url, h, payload, timeout, on_status).await
            }
            other => other,
        }
    }
}

/// An Anthropic Messages body as Vertex AI takes it: the model is in the URL, not the body,
/// and `anthropic_version` is in the body, not a header.
fn vertex_messages_body(messages: &[u8]) -> Result<Bytes, ProviderError> {
    let mut body = ChatBody::parse_object(messages).map_err(|e| {
        ProviderError::BadResponse(format!(
            "cannot prepare the Claude request for Vertex AI: {e}"
        ))
    })?;
    body.remove("model");
    if let Ok(v) = RawValue::from_string(format!("\"{ANTHROPIC_VERTEX_VERSION}\"")) {
        body.set("anthropic_version", v);
    }
    Ok(Bytes::from(body.to_json()))
}

/// A Claude-on-Vertex error: Anthropic's shape when the model refused, Google's when
/// Vertex AI itself did (quota, permissions, unknown model).
fn claude_error(status: StatusCode, bytes: &[u8]) -> ProviderError {
    if crate::protocol::anthropic::parse_error(bytes).is_some() {
        anthropic::upstream_error(status, bytes)
    } else {
        gemini::status_error(status, bytes)
    }
}

impl super::Upstream for Vertex {
    fn chat<'a>(
        &'a self,
        cfg: &'a DeploymentConfig,
        req: &'a super::LlmRequest<'a>,
        upstream_model: &'a str,
        ctx: &'a CallContext<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<Reply, ProviderError>> {
        Box::pin(self.chat(cfg, req, upstream_model, ctx))
    }

    fn params(&self, upstream_model: &str) -> super::Params {
        if is_claude(upstream_model) {
            super::Params::Claude { native: true }
        } else {
            super::Params::Gemini
        }
    }
}

#[cfg(test)]
mod tests;
