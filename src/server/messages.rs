//! Anthropic Messages API: `POST /v1/messages` (streamed or not) and
//! `POST /v1/messages/count_tokens`. The request is read into the internal representation
//! and also kept raw, so Anthropic deployments receive it natively (cache_control,
//! thinking, metadata survive); answers and errors come back in Anthropic's shapes
//! whatever the provider.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::middleware::LoggedModel;
use super::middleware::{self, AnthropicIncoming, Incoming};
use super::respond::ClientSpec;
use super::{pipeline, AppState};
use crate::protocol::anthropic;
use crate::protocol::chat::ChatBody;
use crate::protocol::ir::Format;
use crate::providers::{LlmRequest, Native};
use crate::routing::RouteError;

/// Handles an Anthropic Messages request.
pub async fn messages(
    State(state): State<Arc<AppState>>,
    AnthropicIncoming(Incoming {
        ctx,
        headers,
        bytes,
    }): AnthropicIncoming,
) -> Response {
    let chat = match anthropic::request_to_chat(&bytes) {
        Ok(c) => c,
        Err(e) => return fail(e.into()),
    };
    let native = match ChatBody::parse_object(&bytes) {
        Ok(n) => n,
        Err(e) => return fail(e.into()),
    };
    let model = chat.model.clone();
    let client = ClientSpec {
        format: Format::Anthropic,
        model: model.clone(),
        include_usage: true,
        request_id: ctx.request_id.clone(),
        started: ctx.started,
        responses: None,
        observer: None,
        keep_content: false,
        drain: state.drain.clone(),
    };
    let req = LlmRequest {
        chat,
        native: Some(Native::Anthropic(native)),
    };
    let mut resp = pipeline::run(&state, &ctx, &headers, req, client)
        .await
        .unwrap_or_else(fail);
    resp.extensions_mut().insert(LoggedModel(model));
    resp
}

/// Estimates the prompt's tokens: about 4 bytes per token over the request's system
/// prompt, messages and tool definitions. Anthropic's exact count would need a call to
/// Anthropic whatever the deployment; clients (Claude Code) use the figure to budget
/// their context, which an estimate serves.
pub async fn count_tokens(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, req_body) = req.into_parts();
    let bytes =
        match middleware::read_body(&parts.headers, req_body, state.config.server.max_body_bytes)
            .await
        {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
    let native = match ChatBody::parse_object(&bytes) {
        Ok(n) => n,
        Err(e) => return fail(e.into()),
    };
    if !state.router.knows(&native.model) {
        return fail(
            RouteError::UnknownModel {
                model: native.model.clone(),
                available: state.router.model_names().to_vec(),
            }
            .into(),
        );
    }
    let text_bytes: usize = ["system", "messages", "tools"]
        .iter()
        .filter_map(|k| native.get(k))
        .map(|raw| raw.get().len())
        .sum();
    Json(json!({ "input_tokens": text_bytes.div_ceil(4).max(1) })).into_response()
}

fn fail(e: ApiError) -> Response {
    e.into_response_for(Format::Anthropic)
}
