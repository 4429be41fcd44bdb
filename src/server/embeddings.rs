//! `POST /v1/embeddings`: OpenAI-compatible embeddings, routed like chat.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::middleware::Incoming;
use super::middleware::LoggedModel;
use super::AppState;
use crate::protocol::chat::ChatBody;
use crate::providers::CallContext;

/// Handles an embeddings request.
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    Incoming {
        ctx,
        headers,
        bytes,
    }: Incoming,
) -> Response {
    let body = match ChatBody::parse_object(&bytes) {
        Ok(b) => b,
        Err(e) => return ApiError::from(e).into_response(),
    };
    if body.get("input").is_none() {
        return ApiError::BadRequest("missing required field `input`".into()).into_response();
    }
    if let Some(k) = ctx.principal.key() {
        if let Err(e) = k.check_model(&body.model) {
            return ApiError::from(e).into_response();
        }
    }
    let call = CallContext {
        user_id: &ctx.identity.user_id,
        request_id: &ctx.request_id,
        client_authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        anthropic_beta: None,
    };
    let result = state.router.embed(&body, &call).await;
    let mut resp = match result {
        Ok(routed) => {
            let mut r = (StatusCode::OK, routed.value).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    resp.extensions_mut()
        .insert(LoggedModel(body.model.clone()));
    resp
}
