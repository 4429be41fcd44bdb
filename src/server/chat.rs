//! `POST /v1/chat/completions`: accept, route, and answer as JSON or as an SSE stream
//! relayed chunk by chunk as the upstream sends it.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;

use super::error::ApiError;
use super::middleware::{LoggedModel, RequestCtx};
use super::{body, AppState};
use crate::protocol::chat::{ChatBody, ChunkView, Usage};
use crate::providers::{CallContext, ChunkStream, Reply};
use crate::routing::RouteError;

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
    let mut resp = match state.router.chat(&body, &call).await {
        Ok(routed) => match routed.reply {
            Reply::Complete { body, .. } => json_response(body),
            Reply::Stream {
                chunks,
                usage_added,
            } => {
                let stats = StreamStats {
                    request_id: ctx.request_id.clone(),
                    model: body.model.clone(),
                    started: ctx.started,
                    first_chunk: None,
                    usage: None,
                    finished: false,
                };
                sse_response(relay(chunks, usage_added, stats))
            }
        },
        Err(RouteError::UnknownModel { model, available }) => {
            ApiError::Route(RouteError::UnknownModel { model, available }).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    resp.extensions_mut()
        .insert(LoggedModel(body.model.clone()));
    resp
}

fn json_response(body: Bytes) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An SSE response around an already framed byte stream.
pub fn sse_response<S>(stream: S) -> Response
where
    S: futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static,
{
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// What a relayed stream observed; logged when the stream ends or the client leaves.
struct StreamStats {
    request_id: String,
    model: String,
    started: Instant,
    first_chunk: Option<Instant>,
    usage: Option<Usage>,
    finished: bool,
}

impl Drop for StreamStats {
    fn drop(&mut self) {
        let ttft_ms = self
            .first_chunk
            .map(|t| (t - self.started).as_secs_f64() * 1000.0);
        let usage = self.usage.unwrap_or_default();
        tracing::info!(
            target: "memproxy::stream",
            request_id = %self.request_id,
            model = %self.model,
            completed = self.finished,
            ttft_ms,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            "stream ended"
        );
    }
}

fn frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 8);
    b.put_slice(b"data: ");
    b.put_slice(payload);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// Relays provider chunks as SSE frames, each as soon as it arrives; captures usage and
/// hides the usage-only chunk when the gateway (not the client) asked for it.
fn relay(
    chunks: ChunkStream,
    usage_added: bool,
    stats: StreamStats,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    futures_util::stream::unfold(Some((chunks, stats)), move |state| async move {
        let (mut chunks, mut stats) = state?;
        loop {
            match chunks.next().await {
                Some(Ok(payload)) => {
                    if stats.first_chunk.is_none() {
                        stats.first_chunk = Some(Instant::now());
                    }
                    if let Ok(view) = serde_json::from_slice::<ChunkView>(&payload) {
                        if let Some(u) = view.usage {
                            stats.usage = Some(u);
                            if usage_added && view.choices.is_empty() {
                                continue;
                            }
                        }
                    }
                    return Some((Ok(frame(&payload)), Some((chunks, stats))));
                }
                Some(Err(e)) => {
                    tracing::warn!(request_id = %stats.request_id, error = %e, "upstream stream failed");
                    let err = ApiError::Route(RouteError::Provider(e));
                    return Some((Ok(frame(err.to_json().as_bytes())), None));
                }
                None => {
                    stats.finished = true;
                    return Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), None));
                }
            }
        }
    })
}
