//! LLM providers behind one trait, [`Upstream`]. Each provider lives in its own module
//! with its wire types private to it; [`Provider`] holds one as a trait object. Every provider takes the internal
//! request ([`ChatBody`], OpenAI chat shape; or the client's native body when the provider
//! speaks the client's API) and answers with a [`Reply`] in its own wire format.

mod anthropic;
mod azure;
mod bedrock;
mod gemini;
pub mod http;
mod mock;
mod ollama;
mod openai;
mod vertex;

#[cfg(feature = "fuzzing")]
pub use bedrock::fuzz_frames;
#[cfg(feature = "fuzzing")]
pub use ollama::fuzz_lines;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::Stream;

use crate::config::{Config, DeploymentConfig, ProviderKind};
use crate::protocol::chat::ChatBody;
use crate::protocol::ir::{Format, SseEvent};

/// A provider's stream of wire events, in its own format, each as it arrives; it ends
/// where the upstream closed (OpenAI's `[DONE]` is consumed by the provider).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<SseEvent, ProviderError>> + Send>>;

/// A provider's answer, in the provider's own wire format (`format`): the server passes
/// it through when the client speaks the same format and translates it otherwise.
pub enum Reply {
    /// A complete answer body.
    Complete { body: Bytes, format: Format },
    /// A stream; `usage_added` says usage reporting was requested by the gateway (not the
    /// client), so a usage-only OpenAI chunk is not meant for the client.
    Stream {
        events: EventStream,
        format: Format,
        usage_added: bool,
    },
}

/// Why a provider call failed. Each variant knows whether a retry may help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot reach upstream {upstream}: {message}")]
    Connect { upstream: String, message: String },
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The upstream answered with an error status; its message is passed on.
    #[error("{message}")]
    Status {
        status: StatusCode,
        message: String,
        kind: Option<String>,
        code: Option<String>,
    },
    #[error("upstream sent a malformed response: {0}")]
    BadResponse(String),
    #[error("{0}")]
    NotSupported(String),
}

impl ProviderError {
    /// 429, 5xx, connection failures and timeouts may succeed on another attempt.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::Connect { .. } | ProviderError::Timeout(_) => true,
            ProviderError::Status { status, .. } => {
                *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
            ProviderError::BadResponse(_) | ProviderError::NotSupported(_) => false,
        }
    }

    /// Errors after which another model group (a fallback) may succeed.
    pub fn allows_fallback(&self) -> bool {
        self.is_retryable()
            || matches!(self, ProviderError::Status { status, .. }
                if *status == StatusCode::UNAUTHORIZED || *status == StatusCode::FORBIDDEN)
    }
}

/// A model request as the router and providers see it.
pub struct LlmRequest<'a> {
    /// The request in the internal representation (OpenAI chat shape).
    pub chat: ChatBody<'a>,
    /// The client's own body when it spoke another API, for providers that speak that
    /// API natively (so provider-specific fields survive untranslated).
    pub native: Option<Native<'a>>,
}

/// A client body in a wire format other than OpenAI chat, kept raw.
pub enum Native<'a> {
    /// An Anthropic Messages request (raw members; `model` and `messages` validated).
    Anthropic(ChatBody<'a>),
    /// An OpenAI Responses request, for deployments that serve `/responses` themselves.
    Responses(ResponsesNative<'a>),
}

/// A Responses request as a native upstream receives it.
pub struct ResponsesNative<'a> {
    /// The client's body as sent (raw members).
    pub body: ChatBody<'a>,
    /// When the request continues a stored response: the body with that conversation
    /// expanded into `input` (for upstreams that do not hold it), and the
    /// [`deployment_key`] of the native deployment that made the stored response, which
    /// gets `previous_response_id` as sent.
    pub expanded: Option<(ChatBody<'static>, Option<String>)>,
}

/// Names a deployment's upstream account (its `api_base` and a hash of its key), so a
/// stored response can be continued natively on the upstream that holds it.
pub fn deployment_key(cfg: &DeploymentConfig) -> String {
    // FNV-1a: stable across builds, and the key itself is never stored.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in cfg.api_key.as_ref().map_or("", |k| k.expose()).bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    format!("{}#{h:016x}", cfg.api_base)
}

impl<'a> LlmRequest<'a> {
    /// A request that arrived in OpenAI chat format.
    pub fn chat(chat: ChatBody<'a>) -> Self {
        Self { chat, native: None }
    }

    /// The model the client asked for.
    pub fn model(&self) -> &str {
        &self.chat.model
    }

    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        self.chat.stream
    }
}

/// Who a call is made for; providers use it for per-user headers and sessions.
pub struct CallContext<'a> {
    pub user_id: &'a str,
    pub request_id: &'a str,
    /// The client's credentials, forwarded in upstream mode when no upstream key is set.
    pub client_authorization: Option<&'a str>,
    /// The client's `anthropic-beta` header, forwarded to Anthropic upstreams: betas gate
    /// request fields (Claude Code's `context_management`, …) the client's body may carry.
    pub anthropic_beta: Option<&'a str>,
}

/// Process-wide values providers need (shared HTTP settings, Supermemory key).
pub struct ProviderEnv {
    pub http: http::HttpClient,
    pub supermemory_api_key: Option<String>,
    /// Supermemory router cookie jars shared through Redis (with `redis_url`).
    pub cookie_jars: Option<Arc<crate::storage::redis::CookieJars>>,
}

impl ProviderEnv {
    /// Builds the shared upstream HTTP client (rustls with the ring provider).
    pub fn new(config: &Config) -> Result<Self, http::HttpInitError> {
        Ok(Self {
            http: http::HttpClient::new()?,
            supermemory_api_key: config
                .supermemory_api_key
                .as_ref()
                .map(|k| k.expose().clone()),
            cookie_jars: config.rate_limits.redis_url.as_ref().and_then(|url| {
                crate::storage::redis::CookieJars::new(
                    url.expose(),
                    &config.rate_limits.redis_prefix,
                )
                .map(Arc::new)
                .map_err(|e| tracing::warn!(error = %e, "cookie jars stay per instance"))
                .ok()
            }),
        })
    }
}

/// What every provider does, each in its own module: answer a chat request for one
/// deployment, compute embeddings if it can, and say which OpenAI parameters its format
/// cannot express.
pub trait Upstream: Send + Sync {
    /// Sends `req`; `upstream_model` is the provider's name for the model.
    fn chat<'a>(
        &'a self,
        cfg: &'a DeploymentConfig,
        req: &'a LlmRequest<'a>,
        upstream_model: &'a str,
        ctx: &'a CallContext<'a>,
    ) -> BoxFuture<'a, Result<Reply, ProviderError>>;

    /// Computes embeddings (OpenAI `/embeddings` request and answer shapes).
    fn embed<'a>(
        &'a self,
        cfg: &'a DeploymentConfig,
        _body: &'a ChatBody<'a>,
        _upstream_model: &'a str,
        _ctx: &'a CallContext<'a>,
    ) -> BoxFuture<'a, Result<Bytes, ProviderError>> {
        Box::pin(std::future::ready(Err(ProviderError::Status {
            status: StatusCode::BAD_REQUEST,
            message: format!("model `{}` does not serve embeddings", cfg.model_name),
            kind: Some("invalid_request_error".into()),
            code: Some("embeddings_not_supported".into()),
        })))
    }

    /// Which OpenAI parameters its wire format can express for `upstream_model`.
    fn params(&self, _upstream_model: &str) -> Params {
        Params::Any
    }

    /// False for a provider this build does not support (its requests answer 501).
    fn served(&self) -> bool {
        true
    }
}

/// Which OpenAI chat parameters a provider's wire format can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Params {
    /// All of them (OpenAI-compatible upstreams get every field as sent).
    Any,
    /// Claude's parameter set; `native`: a client speaking Anthropic is passed through.
    Claude { native: bool },
    /// Gemini's `generateContent`.
    Gemini,
    /// Ollama's `/api/chat`.
    Ollama,
}

/// A provider this build does not support: every request answers 501.
struct Unsupported(String);

impl Upstream for Unsupported {
    fn chat<'a>(
        &'a self,
        cfg: &'a DeploymentConfig,
        _req: &'a LlmRequest<'a>,
        _upstream_model: &'a str,
        _ctx: &'a CallContext<'a>,
    ) -> BoxFuture<'a, Result<Reply, ProviderError>> {
        Box::pin(std::future::ready(Err(ProviderError::NotSupported(
            format!(
                "provider `{}` (model `{}`) is not supported by this build of memproxy",
                self.0, cfg.model_name
            ),
        ))))
    }

    fn served(&self) -> bool {
        false
    }
}

/// The provider of one deployment.
pub struct Provider(Box<dyn Upstream>);

impl Provider {
    /// Builds the provider for a deployment; `Err` says why the deployment cannot be
    /// served (missing credentials, region, …): it is then skipped with that warning.
    pub fn new(cfg: &DeploymentConfig, env: &ProviderEnv) -> Result<Self, String> {
        if let Some(text) = &cfg.mock_response {
            return Ok(Self(Box::new(mock::Mock::new(text.clone()))));
        }
        let p: Box<dyn Upstream> = match &cfg.provider {
            ProviderKind::OpenAi => Box::new(openai::OpenAi::new(cfg, env)),
            ProviderKind::Anthropic => Box::new(anthropic::Anthropic::new(cfg, env)),
            ProviderKind::Gemini => Box::new(gemini::Gemini::new(cfg, env)),
            ProviderKind::Bedrock => Box::new(bedrock::Bedrock::new(cfg, env)?),
            ProviderKind::VertexAi => Box::new(vertex::Vertex::new(cfg, env)?),
            ProviderKind::Azure => Box::new(azure::Azure::new(cfg, env)?),
            ProviderKind::Ollama => Box::new(ollama::Ollama::new(cfg, env)?),
            ProviderKind::Unsupported(name) => Box::new(Unsupported(name.clone())),
        };
        Ok(Self(p))
    }

    /// The provider of a deployment this build cannot serve (named `name`).
    pub fn unsupported(name: String) -> Self {
        Self(Box::new(Unsupported(name)))
    }

    /// False when requests to it answer 501.
    pub fn served(&self) -> bool {
        self.0.served()
    }

    /// Sends a chat request; `upstream_model` is the provider's name for the model.
    pub async fn chat(
        &self,
        cfg: &DeploymentConfig,
        req: &LlmRequest<'_>,
        upstream_model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Reply, ProviderError> {
        check_params(self.0.params(upstream_model), cfg, req)?;
        self.0.chat(cfg, req, upstream_model, ctx).await
    }

    /// Computes embeddings (OpenAI `/embeddings` request and answer shapes).
    pub async fn embed(
        &self,
        cfg: &DeploymentConfig,
        body: &ChatBody<'_>,
        upstream_model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Bytes, ProviderError> {
        self.0.embed(cfg, body, upstream_model, ctx).await
    }
}

/// OpenAI parameters in `req` that the provider's format (`params`) cannot express: an
/// error naming them (LiteLLM's behaviour), or nothing when `drop_params` lets the
/// translation drop them. OpenAI-compatible upstreams get every field as sent, and a client
/// speaking Anthropic to a deployment that speaks it is passed through natively.
fn check_params(
    params: Params,
    cfg: &DeploymentConfig,
    req: &LlmRequest<'_>,
) -> Result<(), ProviderError> {
    let unsupported: &[&str] = match params {
        Params::Any => return Ok(()),
        Params::Claude { native: true } if matches!(req.native, Some(Native::Anthropic(_))) => {
            return Ok(())
        }
        // Bedrock's Converse takes Claude's parameter set too.
        Params::Claude { .. } => &[
            "frequency_penalty",
            "presence_penalty",
            "logit_bias",
            "logprobs",
            "top_logprobs",
            "seed",
            "response_format",
            "audio",
            "modalities",
            "prediction",
            "web_search_options",
        ],
        Params::Gemini => &[
            "logit_bias",
            "top_logprobs",
            "audio",
            "modalities",
            "prediction",
            "web_search_options",
        ],
        Params::Ollama => &[
            "logit_bias",
            "logprobs",
            "top_logprobs",
            "audio",
            "modalities",
            "prediction",
            "web_search_options",
        ],
    };
    let mut found: Vec<&str> = unsupported
        .iter()
        .copied()
        .filter(|k| req.chat.get(k).is_some_and(|v| v.get() != "null"))
        .collect();
    if matches!(params, Params::Claude { .. } | Params::Ollama)
        && req
            .chat
            .get("n")
            .is_some_and(|v| !matches!(v.get(), "1" | "null"))
    {
        found.push("n");
    }
    if found.is_empty() {
        return Ok(());
    }
    if cfg.drop_params {
        tracing::debug!(model = %cfg.model_name, params = ?found, "dropping parameters the provider does not support");
        return Ok(());
    }
    Err(ProviderError::Status {
        status: StatusCode::BAD_REQUEST,
        message: format!(
            "model `{}` ({} provider) does not support the parameter(s) {}; remove them, or set `litellm_settings.drop_params: true` to drop them",
            cfg.model_name,
            cfg.provider_name,
            found.join(", ")
        ),
        kind: Some("invalid_request_error".into()),
        code: Some("unsupported_params".into()),
    })
}
