//! The path every model request takes once its API handler has parsed it into the
//! internal representation: route to a deployment, answer in the client's format, and
//! report the finished exchange (logs; memory capture and analytics hook in here).
//! Chat, Messages and Responses handlers all end in [`run`].

use std::sync::Arc;

use axum::http::{header, HeaderMap};
use axum::response::Response;

use super::error::ApiError;
use super::middleware::RequestCtx;
use super::respond::{respond, ClientSpec, Exchange};
use super::AppState;
use crate::providers::{CallContext, LlmRequest};

/// Routes `req` and answers it in the format of `client`.
pub async fn run(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    req: LlmRequest<'_>,
    client: ClientSpec,
) -> Result<Response, ApiError> {
    let call = CallContext {
        user_id: &ctx.identity.user_id,
        request_id: &ctx.request_id,
        client_authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        anthropic_beta: headers.get("anthropic-beta").and_then(|v| v.to_str().ok()),
    };
    let routed = state.router.chat(&req, &call).await?;
    respond(routed.value, client, Box::new(on_done))
}

/// Called once per answered request, when the answer is complete or abandoned.
fn on_done(ex: Exchange) {
    tracing::debug!(
        completed = ex.completed,
        ttft_ms = ex.ttft.map(|d| d.as_secs_f64() * 1000.0),
        output_chars = ex.completion.text.len(),
        input_tokens = ex.completion.usage.input_tokens,
        output_tokens = ex.completion.usage.output_tokens,
        "exchange complete"
    );
}
