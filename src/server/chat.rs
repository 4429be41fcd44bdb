//! `POST /v1/chat/completions`: accept, route, answer (see [`super::respond`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::middleware::{LoggedModel, RequestCtx};
use super::respond::{respond, ClientSpec};
use super::{body, AppState};
use crate::protocol::chat::ChatBody;
use crate::protocol::ir::Format;
use crate::providers::{CallContext, LlmRequest};

/// Handles a chat completions request.
pub async fn chat_completions(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, req_body) = req.into_parts();
    let Some(ctx) = parts.extensions.get::<RequestCtx>() else {
        return ApiError::BadRequest("request context missing".into()).into_response();
    };
    let bytes = match body::read(&parts.headers, req_body, state.config.server.max_body_bytes).await
    {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let body = match ChatBody::parse(&bytes) {
        Ok(b) => b,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let call = CallContext {
        user_id: &ctx.identity.user_id,
        request_id: &ctx.request_id,
        client_authorization: parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    };
    let client = ClientSpec {
        format: Format::OpenAiChat,
        model: body.model.clone(),
        include_usage: body
            .get("stream_options")
            .is_some_and(|o| o.get().contains("\"include_usage\"") && o.get().contains("true")),
        request_id: ctx.request_id.clone(),
        started: ctx.started,
    };
    let model = body.model.clone();
    let req = LlmRequest::chat(body);
    let mut resp = match state.router.chat(&req, &call).await {
        Ok(routed) => respond(
            routed.value,
            client,
            Box::new(|ex| {
                tracing::debug!(
                    completed = ex.completed,
                    ttft_ms = ex.ttft.map(|d| d.as_secs_f64() * 1000.0),
                    output_chars = ex.completion.text.len(),
                    input_tokens = ex.completion.usage.input_tokens,
                    output_tokens = ex.completion.usage.output_tokens,
                    "exchange complete"
                );
            }),
        )
        .unwrap_or_else(IntoResponse::into_response),
        Err(e) => ApiError::from(e).into_response(),
    };
    resp.extensions_mut().insert(LoggedModel(model));
    resp
}
