//! Accepting a request body: size limit (413, before reading when Content-Length says
//! so), a body that ends before its Content-Length (400), and a read deadline (408).

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderMap;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::error::ApiError;
use super::middleware::RequestCtx;
use super::AppState;

/// How long a client may take to send its body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What a model endpoint's handler starts from: the caller as the gateway middleware
/// admitted it, the request's headers, and its body.
pub struct Incoming {
    pub ctx: RequestCtx,
    pub headers: HeaderMap,
    pub bytes: Bytes,
}

impl Incoming {
    /// Takes the request apart, reading the body within `server.max_body_bytes`.
    pub async fn read(state: &AppState, req: Request) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let ctx = parts
            .extensions
            .remove::<RequestCtx>()
            .ok_or_else(|| ApiError::BadRequest("request context missing".into()))?;
        let bytes = read(&parts.headers, body, state.config.server.max_body_bytes).await?;
        Ok(Self {
            ctx,
            headers: parts.headers,
            bytes,
        })
    }
}

impl axum::extract::FromRequest<std::sync::Arc<AppState>> for Incoming {
    type Rejection = ApiError;

    async fn from_request(
        req: Request,
        state: &std::sync::Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Self::read(state, req).await
    }
}

/// [`Incoming`] for the Anthropic endpoints: refused in Anthropic's error shape.
pub struct AnthropicIncoming(pub Incoming);

impl axum::extract::FromRequest<std::sync::Arc<AppState>> for AnthropicIncoming {
    type Rejection = axum::response::Response;

    async fn from_request(
        req: Request,
        state: &std::sync::Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Incoming::read(state, req)
            .await
            .map(Self)
            .map_err(|e| e.into_response_for(crate::protocol::ir::Format::Anthropic))
    }
}

/// Reads the whole body, enforcing `limit` bytes.
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = match headers.get(axum::http::header::CONTENT_LENGTH) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("Content-Length header is not a number".into())
                })?,
        ),
        None => None,
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    let collected = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ApiError::BodyTimeout)?;
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if is_length_limit(&*e) => return Err(ApiError::TooLarge { limit }),
        Err(e) => {
            return Err(ApiError::BadRequest(match declared {
                Some(n) => format!(
                    "request body ended before the {n} bytes its Content-Length announced ({e})"
                ),
                None => format!("could not read the request body: {e}"),
            }))
        }
    };
    if let Some(n) = declared {
        if bytes.len() as u64 != n {
            return Err(ApiError::BadRequest(format!(
                "request body has {} bytes but Content-Length says {n}",
                bytes.len()
            )));
        }
    }
    Ok(bytes)
}

fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}
