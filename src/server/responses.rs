//! OpenAI Responses API: `POST /v1/responses` (streamed or not), `GET` and
//! `DELETE /v1/responses/{id}`. The request is read into the internal representation and
//! also kept raw, so OpenAI-compatible deployments that serve `/responses` receive it
//! natively; every other deployment is bridged. `previous_response_id` is resolved from
//! the user's stored responses; answers are stored when `store` is not false.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::error::ApiError;
use super::middleware::Incoming;
use super::middleware::{LoggedModel, RequestCtx};
use super::respond::{AnsweredIn, ClientSpec, Exchange, Observer};
use super::{pipeline, AppState};
use crate::protocol::chat::ChatBody;
use crate::protocol::ir::Format;
use crate::protocol::responses::{self, ResponseMeta};
use crate::providers::{deployment_key, LlmRequest, Native, ResponsesNative};
use crate::responses_store::StoredResponse;
use crate::routing::Deployment;

/// Handles a Responses API request.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Incoming {
        ctx,
        headers,
        bytes,
    }: Incoming,
) -> Response {
    let prepared = match prepare(&state, &ctx, &bytes).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let Prepared {
        req,
        client,
        dropped_tools,
    } = prepared;
    let model = client.model.clone();
    let mut resp = pipeline::run(&state, &ctx, &headers, req, client)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    let bridged = resp
        .extensions()
        .get::<AnsweredIn>()
        .is_some_and(|a| a.0 != Format::Responses);
    if bridged && !dropped_tools.is_empty() {
        let warning = format!(
            "built-in tools ignored: {} (model `{model}` does not run them)",
            dropped_tools.join(", ")
        );
        if let Ok(v) = HeaderValue::from_str(&warning) {
            resp.headers_mut().insert("x-memproxy-warning", v);
        }
    }
    resp.extensions_mut().insert(LoggedModel(model));
    resp
}

/// A parsed request, ready for the pipeline.
struct Prepared<'a> {
    req: LlmRequest<'a>,
    client: ClientSpec,
    dropped_tools: Vec<String>,
}

async fn prepare<'a>(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    bytes: &'a [u8],
) -> Result<Prepared<'a>, ApiError> {
    let parsed = responses::parse_request(bytes)?;
    let user = &ctx.identity.user_id;
    let earlier = match parsed.previous_response_id() {
        None => None,
        Some(id) => Some(state.responses.get(user, id).await?.ok_or_else(|| {
            ApiError::ResponseNotFound {
                id: id.to_string(),
                previous: true,
            }
        })?),
    };
    let conversation = match &earlier {
        Some(rec) => Some(responses::join_items(&[
            &rec.input_items,
            responses::output_of(&rec.response).unwrap_or("[]"),
        ])?),
        None => None,
    };
    let translated = responses::request_to_chat(&parsed, conversation.as_deref())?;
    let native = ChatBody::parse_object(bytes)?;
    let expanded = match &earlier {
        Some(rec) => Some((
            responses::expand_for_native(&native, &translated.items)?,
            rec.native_deployment.clone(),
        )),
        None => None,
    };
    let meta = Arc::new(ResponseMeta::new(
        parsed.model(),
        responses::echo_fields(&native),
    ));
    let observer = parsed.store().then(|| {
        store_observer(
            state.clone(),
            user.clone(),
            meta.clone(),
            translated.items.clone(),
        )
    });
    let client = ClientSpec {
        format: Format::Responses,
        model: parsed.model().to_string(),
        include_usage: true,
        request_id: ctx.request_id.clone(),
        started: ctx.started,
        responses: Some(meta),
        observer,
        keep_content: false,
        drain: state.drain.clone(),
    };
    Ok(Prepared {
        req: LlmRequest {
            chat: translated.chat,
            native: Some(Native::Responses(ResponsesNative {
                body: native,
                expanded,
            })),
        },
        client,
        dropped_tools: translated.dropped_tools,
    })
}

/// Stores the finished answer under the user's scope: under the upstream's own id when a
/// native deployment answered (it holds the response too), under memproxy's otherwise.
fn store_observer(
    state: Arc<AppState>,
    user_id: String,
    meta: Arc<ResponseMeta>,
    input_items: String,
) -> Observer {
    Box::new(move |ex: &Exchange, dep: &Deployment| {
        if !ex.completed {
            return;
        }
        let native = ex.upstream == Format::Responses;
        let meta = if native && !ex.completion.id.is_empty() {
            ResponseMeta {
                id: ex.completion.id.clone(),
                ..(*meta).clone()
            }
        } else {
            (*meta).clone()
        };
        let response = responses::encode_response(&meta, &ex.completion);
        state.responses.put(StoredResponse {
            id: meta.id.clone(),
            user_id,
            created_at: meta.created_at,
            native_deployment: native.then(|| deployment_key(&dep.config)),
            input_items,
            response: String::from_utf8_lossy(&response).into_owned(),
        });
    })
}

/// `GET /v1/responses/{id}`: a stored response of the caller's user scope.
pub async fn retrieve(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
) -> Response {
    match state.responses.get(&ctx.identity.user_id, &id).await {
        Ok(Some(rec)) => {
            let mut resp = (StatusCode::OK, rec.response).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Ok(None) => ApiError::ResponseNotFound {
            id,
            previous: false,
        }
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    Path(id): Path<String>,
) -> Response {
    match state.responses.delete(&ctx.identity.user_id, &id).await {
        Ok(true) => Json(json!({"id": id, "object": "response", "deleted": true})).into_response(),
        Ok(false) => ApiError::ResponseNotFound {
            id,
            previous: false,
        }
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
