//! `POST /v1/chat/completions`: parse the OpenAI chat request, then the common
//! [`pipeline`](super::pipeline).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::middleware::Incoming;
use super::middleware::LoggedModel;
use super::respond::ClientSpec;
use super::{pipeline, AppState};
use crate::protocol::chat::ChatBody;
use crate::protocol::ir::Format;
use crate::providers::LlmRequest;

/// Handles a chat completions request.
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    Incoming {
        ctx,
        headers,
        bytes,
    }: Incoming,
) -> Response {
    let body = match ChatBody::parse(&bytes) {
        Ok(b) => b,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let client = ClientSpec {
        format: Format::OpenAiChat,
        model: body.model.clone(),
        include_usage: body
            .get("stream_options")
            .is_some_and(|o| o.get().contains("\"include_usage\"") && o.get().contains("true")),
        request_id: ctx.request_id.clone(),
        started: ctx.started,
        responses: None,
        observer: None,
        keep_content: false,
        drain: state.drain.clone(),
    };
    let model = body.model.clone();
    let mut resp = pipeline::run(&state, &ctx, &headers, LlmRequest::chat(body), client)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    resp.extensions_mut().insert(LoggedModel(model));
    resp
}
