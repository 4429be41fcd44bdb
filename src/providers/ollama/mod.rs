//! Ollama's native API (`ollama/` and `ollama_chat/`): `POST {api_base}/api/chat`, the
//! internal request translated by [`request`], the answer (JSON, or NDJSON lines when
//! streamed) converted into OpenAI chat by [`response`], so the server sees an
//! OpenAI-chat provider. Errors are Ollama's `{"error":"…"}`. A key (`OLLAMA_API_KEY`, for
//! Ollama's cloud or a proxy in front) goes as `Authorization: Bearer`.

mod request;
mod response;
#[cfg(feature = "fuzzing")]
pub use response::fuzz_lines;

use axum::http::{header, HeaderMap, StatusCode};

use super::http::{base_headers, read_all, Endpoint, HttpClient};
use super::openai::{extra_headers, sensitive, status_error};
use super::{CallContext, ProviderEnv, ProviderError, Reply};
use crate::config::DeploymentConfig;
use crate::protocol::chat::ChatBody;
use crate::protocol::ir::Format;

pub struct Ollama {
    url: Endpoint,
    headers: HeaderMap,
    defaults: request::Defaults,
    http: HttpClient,
}

impl Ollama {
    pub fn new(cfg: &DeploymentConfig, env: &ProviderEnv) -> Result<Self, String> {
        let mut headers = extra_headers(cfg);
        if let Some(k) = cfg.api_key.as_ref().filter(|k| !k.expose().is_empty()) {
            let v = sensitive(&format!("Bearer {}", k.expose()))
                .ok_or("the API key contains characters not allowed in an HTTP header")?;
            headers.insert(header::AUTHORIZATION, v);
        }
        // An api_base written with the path LiteLLM users sometimes add is accepted.
        let base = cfg.api_base.trim_end_matches('/');
        let base = base.strip_suffix("/api/chat").unwrap_or(base);
        Ok(Self {
            url: Endpoint::new(format!("{base}/api/chat")),
            headers,
            defaults: request::Defaults::from_params(cfg.params.expose()),
            http: env.http.clone(),
        })
    }

    pub async fn chat(
        &self,
        cfg: &DeploymentConfig,
        body: &ChatBody<'_>,
        upstream_model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Reply, ProviderError> {
        let refused = |message: String| ProviderError::Status {
            status: StatusCode::BAD_REQUEST,
            message: format!("cannot send this request to Ollama: {message}"),
            kind: Some("invalid_request_error".into()),
            code: Some("invalid_request".into()),
        };
        let typed = body.to_request().map_err(|e| refused(e.to_string()))?;
        let wire =
            request::build(&typed, upstream_model, body.stream, &self.defaults).map_err(refused)?;
        let payload = serde_json::to_vec(&wire).map_err(|e| refused(e.to_string()))?;
        let accept = if body.stream {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        let mut h = base_headers(accept, ctx.request_id, ctx.user_id);
        for (k, v) in &self.headers {
            h.insert(k, v.clone());
        }
        let resp = self
            .http
            .post(&self.url, h, payload, cfg.timeout, status_error)
            .await?;
        if !body.stream {
            let bytes = read_all(resp, cfg.timeout, &self.url.url).await?;
            return Ok(Reply::Complete {
                body: response::completion(&bytes)?,
                format: Format::OpenAiChat,
            });
        }
        let client_wants_usage = typed
            .stream_options
            .as_ref()
            .is_some_and(|o| o.get("include_usage") == Some(&serde_json::Value::Bool(true)));
        Ok(Reply::Stream {
            events: response::events(resp, cfg.timeout, &self.url.url, upstream_model),
            format: Format::OpenAiChat,
            usage_added: !client_wants_usage,
        })
    }
}

impl super::Upstream for Ollama {
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
        super::Params::Ollama
    }
}
