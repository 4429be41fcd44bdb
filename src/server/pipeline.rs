//! The path every model request takes once its API handler has parsed it into the
//! internal representation: key model check and token limit, memory (session history,
//! retrieval and injection), route to a deployment (or run the memory tools' loop,
//! [`crate::tools`]), answer in the client's format, and report the finished exchange
//! (capture into memory; analytics row, metrics, spend and token settlement via
//! [`accounting`](super::accounting)). Chat, Messages and Responses handlers all end in
//! [`run`].

use std::sync::Arc;
use std::time::Instant;

use axum::http::{header, HeaderMap};
use axum::response::Response;
use tracing::Instrument;

use super::accounting::{self, RoutedGroup};
use super::error::ApiError;
use super::middleware::RequestCtx;
use super::respond::{respond, AnswerUsage, ClientSpec, Exchange};
use super::AppState;
use crate::memory::recall::{self, Capture, Recalled, Who};
use crate::providers::{CallContext, LlmRequest, Reply};
use crate::ratelimit::Dimension;
use crate::routing::Routed;
use crate::tools::{self, ToolLoop};

/// Routes `req` and answers it in the format of `client`.
pub async fn run(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    mut req: LlmRequest<'_>,
    mut client: ClientSpec,
) -> Result<Response, ApiError> {
    let mut acct = ctx.take_row(state, client.format, req.model(), req.stream());
    let key = ctx.principal.key().map(|k| &**k);
    if let Some(k) = key {
        if let Err(e) = k.check_model(req.model()) {
            return Err(acct.fail(e.into(), None));
        }
    }
    let mut token_quota = None;
    if state.limits.limits_tokens(key) {
        let estimate =
            accounting::estimate_tokens(req.chat.get("messages").map_or(0, |m| m.get().len()));
        match state
            .limits
            .charge_tokens(&ctx.identity.user_id, key, estimate)
            .await
        {
            Ok((charge, quota)) => {
                acct.charged(charge);
                token_quota = quota;
            }
            Err(denied) => return Err(acct.fail(denied.into(), None)),
        }
    }

    let scope = ctx.scope();
    let who = Who {
        scope: &scope,
        session_id: ctx.session_id.as_deref(),
        request_id: &ctx.request_id,
        arrived_ms: ctx.arrived_ms,
        // Asked only when there is memory to keep from it.
        memory_upstream: state.memory.is_some() && state.router.memory_upstream(req.model()),
    };
    let mut recalled = match &state.memory {
        Some(mem) => {
            let t = Instant::now();
            let r = recall::recall(mem, &state.config.retrieval, &who, &mut req).await;
            state.metrics.memory_retrieval(t.elapsed());
            match r {
                Ok(r) => r,
                Err(e) => return Err(acct.fail(e.into(), None)),
            }
        }
        None => Recalled::default(),
    };
    acct.memories_injected(std::mem::take(&mut recalled.injected));
    let memory_skipped = recalled.skipped;
    let call = CallContext {
        user_id: &ctx.identity.user_id,
        request_id: &ctx.request_id,
        client_authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        anthropic_beta: headers.get("anthropic-beta").and_then(|v| v.to_str().ok()),
    };
    let t0 = Instant::now();
    let key = scope.key();
    let keys = recall::search_keys(&scope, &key, state.config.retrieval.project_scope);
    let (result, tool_rounds) = answer(state, &mut req, &call, &keys, client.include_usage)
        .instrument(acct.span().clone())
        .await;
    let upstream = t0.elapsed();
    let routed = match result {
        Ok(r) => r,
        Err(e) => return Err(acct.fail(e, Some(upstream))),
    };
    acct.tool_rounds(tool_rounds);
    let price = acct.routed(&routed.deployment, routed.attempts, req.model(), upstream);
    let group = RoutedGroup(routed.deployment.clone());
    client.keep_content = recalled.original.is_some();
    let capture = state
        .memory
        .as_ref()
        .and_then(|m| Capture::new(m, recalled.original, &who, &req.chat.model));
    let mut resp = respond(
        routed.value,
        client,
        routed.deployment,
        Box::new(move |mut ex| {
            ex.tool_rounds = tool_rounds;
            acct.finish(&ex);
            done(ex, capture);
        }),
    )?;
    let overhead = ctx.started.elapsed().saturating_sub(upstream);
    let cost = resp
        .extensions()
        .get::<AnswerUsage>()
        .and_then(|u| price.map(|p| p.cost(&u.0)));
    accounting::cost_headers(resp.headers_mut(), cost, overhead);
    if memory_skipped {
        resp.headers_mut().insert(
            "x-memproxy-memory",
            axum::http::HeaderValue::from_static("skipped"),
        );
    }
    if let Some(q) = &token_quota {
        accounting::quota_headers(resp.headers_mut(), Dimension::Tokens, q);
    }
    resp.extensions_mut().insert(group);
    Ok(resp)
}

/// Routes the request, or, when the memory tools apply (SPEC §4), runs their loop, which
/// makes the model calls itself, round after round. Returns the answer and the rounds.
async fn answer(
    state: &AppState,
    req: &mut LlmRequest<'_>,
    call: &CallContext<'_>,
    scopes: &[&str],
    include_usage: bool,
) -> (Result<Routed<Reply>, ApiError>, u32) {
    match &state.memory {
        Some(mem)
            if tools::applies(&state.config.tool_execution, req)
                && !state.router.memory_upstream(req.model()) =>
        {
            let tool_loop = ToolLoop {
                settings: &state.config.tool_execution,
                router: &state.router,
                memory: mem,
                scopes,
                include_usage,
            };
            match tool_loop.run(req, call).await {
                Ok(looped) => (Ok(looped.routed), looped.rounds),
                Err(e) => (Err(e.into()), 0),
            }
        }
        _ => (state.router.chat(req, call).await.map_err(Into::into), 0),
    }
}

/// Called once per answered request, when the answer is complete or abandoned: a
/// complete exchange is captured into the scope's memory (and session).
fn done(ex: Exchange, capture: Option<Capture>) {
    tracing::debug!(
        completed = ex.completed,
        ttft_ms = ex.ttft.map(|d| d.as_secs_f64() * 1000.0),
        output_chars = ex.completion.text.len(),
        input_tokens = ex.completion.usage.input_tokens,
        output_tokens = ex.completion.usage.output_tokens,
        tool_rounds = ex.tool_rounds,
        "exchange complete"
    );
    if let (true, Some(c)) = (ex.completed, capture) {
        c.finish(&ex.completion.text);
    }
}
