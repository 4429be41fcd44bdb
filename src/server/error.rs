//! The one place where errors become HTTP: every error a request can meet is an
//! [`ApiError`], which knows its status, and is written in OpenAI's error shape
//! `{"error":{"message","type","code","param"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;

use crate::analytics::StoreError as AnalyticsStoreError;
use crate::auth::AuthError;
use crate::identity::IdentityError;
use crate::keys::KeyError;
use crate::memory::StoreError;
use crate::protocol::chat::BodyError;
use crate::protocol::ir::Format;
use crate::providers::ProviderError;
use crate::ratelimit::{fmt_reset, Denied, Dimension};
use crate::responses_store::StoreError as ResponseStoreError;
use crate::routing::RouteError;

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    BadRequest(String),
    #[error("request body was not received in time")]
    BodyTimeout,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("invalid user id: {0}")]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method not allowed for this path")]
    MethodNotAllowed,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    RateLimited(#[from] Denied),
    #[error(transparent)]
    Analytics(#[from] AnalyticsStoreError),
    #[error("no request with id `{0}` was recorded")]
    UnknownRequest(String),
    #[error("{what} not found")]
    MemoryNotFound { what: &'static str },
    #[error(transparent)]
    Memory(StoreError),
    #[error("memory is disabled (memory.enabled: false)")]
    MemoryDisabled,
    /// A stored Responses API answer that does not exist for this user (also when it
    /// belongs to another user).
    #[error("{}esponse with id '{id}' not found.", if *.previous { "Previous r" } else { "R" })]
    ResponseNotFound { id: String, previous: bool },
    #[error(transparent)]
    ResponseStore(#[from] ResponseStoreError),
    #[error("memproxy is shutting down: the stream did not end within the shutdown grace period")]
    ShuttingDown,
}

impl From<crate::memory::scope::ScopeError> for ApiError {
    fn from(e: crate::memory::scope::ScopeError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::MemoryNotFound { what: "memory" },
            StoreError::Invalid(m) => ApiError::BadRequest(m),
            other => ApiError::Memory(other),
        }
    }
}

/// The kind of the error, low-cardinality, for logs and metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    code: Option<&'a str>,
    param: Option<&'a str>,
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Body(_) | ApiError::BadRequest(_) | ApiError::Identity(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Auth(AuthError::Csrf) => StatusCode::FORBIDDEN,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. }
            | ApiError::ResponseNotFound { .. }
            | ApiError::Route(RouteError::UnknownModel { .. }) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::ResponseStore(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Route(RouteError::Provider(p)) => provider_status(p),
            ApiError::Key(k) => match k {
                KeyError::Expired { .. } => StatusCode::UNAUTHORIZED,
                KeyError::ModelNotAllowed { .. } | KeyError::AdminOnly | KeyError::WrongUser(_) => {
                    StatusCode::FORBIDDEN
                }
                KeyError::BudgetExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
                KeyError::Invalid(_) => StatusCode::BAD_REQUEST,
                KeyError::NotFound => StatusCode::NOT_FOUND,
                KeyError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Analytics(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnknownRequest(_) => StatusCode::NOT_FOUND,
            ApiError::MemoryNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Memory(StoreError::Ambiguous(_)) => StatusCode::CONFLICT,
            ApiError::Memory(StoreError::NotFound) => StatusCode::NOT_FOUND,
            ApiError::Memory(StoreError::Invalid(_)) => StatusCode::BAD_REQUEST,
            ApiError::Memory(StoreError::Backend(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Memory(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Memory(StoreError::Quota(_)) => StatusCode::FORBIDDEN,
            ApiError::Memory(StoreError::Closed) | ApiError::MemoryDisabled => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// OpenAI's `type` and `code` for this error.
    pub fn kind_and_code(&self) -> (&str, Option<&str>) {
        match self {
            ApiError::Body(BodyError::Json(_)) => ("invalid_request_error", Some("invalid_json")),
            ApiError::Body(_) | ApiError::BadRequest(_) => {
                ("invalid_request_error", Some("invalid_request"))
            }
            ApiError::TooLarge { .. } => ("invalid_request_error", Some("request_too_large")),
            ApiError::BodyTimeout => ("invalid_request_error", Some("request_timeout")),
            ApiError::Auth(AuthError::Expired(_)) => ("authentication_error", Some("key_expired")),
            ApiError::Auth(AuthError::Csrf) => ("permission_error", Some("csrf_token")),
            ApiError::Auth(AuthError::Session) => ("authentication_error", Some("session")),
            ApiError::Auth(_) => ("authentication_error", Some("invalid_api_key")),
            ApiError::Key(k) => match k {
                KeyError::Expired { .. } => ("authentication_error", Some("key_expired")),
                KeyError::ModelNotAllowed { .. } => ("permission_error", Some("model_not_allowed")),
                KeyError::AdminOnly => ("permission_error", Some("admin_only")),
                KeyError::WrongUser(_) => ("permission_error", Some("user_not_allowed")),
                KeyError::BudgetExceeded { .. } => ("budget_exceeded", Some("budget_exceeded")),
                KeyError::Invalid(_) => ("invalid_request_error", Some("invalid_request")),
                KeyError::NotFound => ("invalid_request_error", Some("key_not_found")),
                KeyError::Store(_) => ("api_error", Some("store_unavailable")),
            },
            ApiError::RateLimited(d) => (
                match d.dimension {
                    Dimension::Requests => "requests",
                    Dimension::Tokens => "tokens",
                },
                Some("rate_limit_exceeded"),
            ),
            ApiError::Analytics(_) => ("api_error", Some("store_unavailable")),
            ApiError::UnknownRequest(_) => ("invalid_request_error", Some("not_found")),
            ApiError::Identity(_) => ("invalid_request_error", Some("invalid_user_id")),
            ApiError::NotFound { .. } => ("invalid_request_error", Some("not_found")),
            ApiError::MethodNotAllowed => ("invalid_request_error", Some("method_not_allowed")),
            ApiError::MemoryNotFound { .. } | ApiError::Memory(StoreError::NotFound) => {
                ("invalid_request_error", Some("not_found"))
            }
            ApiError::Memory(StoreError::Ambiguous(_)) => {
                ("invalid_request_error", Some("ambiguous_session"))
            }
            ApiError::Memory(StoreError::Invalid(_)) => {
                ("invalid_request_error", Some("invalid_request"))
            }
            ApiError::Memory(StoreError::Quota(_)) => {
                ("invalid_request_error", Some("memory_quota_exceeded"))
            }
            ApiError::Memory(_) => ("api_error", Some("memory_store_error")),
            ApiError::MemoryDisabled => ("api_error", Some("memory_disabled")),
            ApiError::ResponseNotFound { .. } => ("invalid_request_error", Some("not_found")),
            ApiError::ResponseStore(_) => ("api_error", Some("store_unavailable")),
            ApiError::ShuttingDown => ("api_error", Some("shutting_down")),
            ApiError::Route(RouteError::UnknownModel { .. }) => {
                ("invalid_request_error", Some("model_not_found"))
            }
            ApiError::Route(RouteError::Provider(p)) => match p {
                ProviderError::Connect { .. } => {
                    ("api_connection_error", Some("upstream_unreachable"))
                }
                ProviderError::Timeout(_) => ("timeout_error", Some("upstream_timeout")),
                ProviderError::BadResponse(_) => ("api_error", Some("bad_upstream_response")),
                ProviderError::NotSupported(_) => {
                    ("invalid_request_error", Some("provider_not_supported"))
                }
                ProviderError::Status {
                    status, kind, code, ..
                } => (
                    kind.as_deref().unwrap_or_else(|| default_kind(*status)),
                    code.as_deref(),
                ),
            },
        }
    }

    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ApiError::Body(_) | ApiError::BadRequest(_) => "bad_request",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::Auth(AuthError::Expired(_)) => "key_expired",
            ApiError::Auth(_) => "auth",
            ApiError::Key(k) => match k {
                KeyError::Expired { .. } => "key_expired",
                KeyError::ModelNotAllowed { .. } => "model_not_allowed",
                KeyError::AdminOnly => "admin_only",
                KeyError::WrongUser(_) => "user_not_allowed",
                KeyError::BudgetExceeded { .. } => "budget_exceeded",
                KeyError::Invalid(_) => "bad_request",
                KeyError::NotFound => "not_found",
                KeyError::Store(_) => "store_unavailable",
            },
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Analytics(_) => "store_unavailable",
            ApiError::UnknownRequest(_) => "not_found",
            ApiError::Identity(_) => "invalid_user_id",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::MemoryNotFound { .. } | ApiError::Memory(StoreError::NotFound) => "not_found",
            ApiError::Memory(StoreError::Ambiguous(_)) => "ambiguous_session",
            ApiError::Memory(StoreError::Invalid(_)) => "bad_request",
            ApiError::Memory(StoreError::Quota(_)) => "memory_quota",
            ApiError::Memory(_) => "memory_store",
            ApiError::MemoryDisabled => "memory_disabled",
            ApiError::ResponseNotFound { .. } => "response_not_found",
            ApiError::ResponseStore(_) => "response_store",
            ApiError::ShuttingDown => "shutdown",
            ApiError::Route(RouteError::UnknownModel { .. }) => "unknown_model",
            ApiError::Route(RouteError::Provider(p)) => match p {
                ProviderError::Connect { .. } => "upstream_connect",
                ProviderError::Timeout(_) => "upstream_timeout",
                ProviderError::BadResponse(_) => "upstream_bad_response",
                ProviderError::NotSupported(_) => "not_supported",
                ProviderError::Status { .. } => "upstream_status",
            },
        }
    }

    /// The error as wire-neutral fields, for encoders of any client format.
    pub fn info(&self) -> crate::protocol::ir::ErrorInfo {
        let (kind, code) = self.kind_and_code();
        crate::protocol::ir::ErrorInfo {
            status: self.status().as_u16(),
            message: self.to_string(),
            kind: kind.to_string(),
            code: code.map(str::to_string),
        }
    }

    /// The OpenAI-shaped JSON body for this error.
    pub fn to_json(&self) -> String {
        let (kind, code) = self.kind_and_code();
        serde_json::to_string(&Envelope {
            error: Body {
                message: self.to_string(),
                kind,
                code,
                param: match self {
                    ApiError::ResponseNotFound { previous: true, .. } => {
                        Some("previous_response_id")
                    }
                    _ => None,
                },
            },
        })
        .unwrap_or_default()
    }
}

fn provider_status(p: &ProviderError) -> StatusCode {
    match p {
        ProviderError::Connect { .. } | ProviderError::BadResponse(_) => StatusCode::BAD_GATEWAY,
        ProviderError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        ProviderError::NotSupported(_) => StatusCode::NOT_IMPLEMENTED,
        ProviderError::Status { status, .. } => *status,
    }
}

fn default_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => "authentication_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

impl From<crate::tools::LoopError> for ApiError {
    fn from(e: crate::tools::LoopError) -> Self {
        match e {
            crate::tools::LoopError::Route(r) => ApiError::Route(r),
            crate::tools::LoopError::Body(b) => ApiError::Body(b),
        }
    }
}

impl From<crate::protocol::anthropic::RequestError> for ApiError {
    fn from(e: crate::protocol::anthropic::RequestError) -> Self {
        match e {
            crate::protocol::anthropic::RequestError::Body(b) => ApiError::Body(b),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl From<crate::protocol::responses::RequestError> for ApiError {
    fn from(e: crate::protocol::responses::RequestError) -> Self {
        match e {
            crate::protocol::responses::RequestError::Body(b) => ApiError::Body(b),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl ApiError {
    /// The error as a response in the shape of the client's API: Anthropic's
    /// `{"type":"error","error":{"type","message"}}` for Messages callers, OpenAI's otherwise.
    pub fn into_response_for(self, format: Format) -> Response {
        let body = match format {
            // An upstream's own error type survives (`overloaded_error`, …); errors raised
            // here take the type Anthropic uses for their status.
            Format::Anthropic => match &self {
                ApiError::Route(RouteError::Provider(ProviderError::Status { .. })) => {
                    crate::protocol::anthropic::encode_error(&self.info())
                }
                _ => crate::protocol::anthropic::error_json(
                    self.status().as_u16(),
                    &self.to_string(),
                ),
            },
            Format::OpenAiChat | Format::Gemini | Format::Responses => Bytes::from(self.to_json()),
        };
        self.with_body(body)
    }

    fn with_body(self, body: Bytes) -> Response {
        let mut resp = (self.status(), body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if matches!(self, ApiError::Auth(_)) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::RateLimited(d) = &self {
            rate_limit_headers(resp.headers_mut(), d);
        }
        resp.extensions_mut().insert(ErrorKind(self.label()));
        resp
    }
}

/// `Retry-After` and OpenAI's `x-ratelimit-*` headers of a refused request.
fn rate_limit_headers(h: &mut axum::http::HeaderMap, d: &Denied) {
    let dim = match d.dimension {
        Dimension::Requests => "requests",
        Dimension::Tokens => "tokens",
    };
    let secs = d.retry_after_ms.div_ceil(1000).max(1);
    h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    let pairs = [
        (format!("x-ratelimit-limit-{dim}"), d.limit.to_string()),
        (format!("x-ratelimit-remaining-{dim}"), "0".to_string()),
        (format!("x-ratelimit-reset-{dim}"), fmt_reset(d.reset_ms)),
    ];
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            h.insert(n, v);
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_response_for(Format::OpenAiChat)
    }
}
