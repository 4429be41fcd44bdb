//! The path every model request takes once its API handler has parsed it into the
//! internal representation: key model check and token limit, route to a deployment,
//! answer in the client's format, and report the finished exchange (analytics row,
//! metrics, spend, token settlement via [`accounting`](super::accounting); memory capture
//! hooks in here). Chat, Messages and Responses handlers all end in [`run`].

use std::sync::Arc;
use std::time::Instant;

use axum::http::{header, HeaderMap};
use axum::response::Response;
use tracing::Instrument;

use super::accounting::{self, Accounting, RoutedGroup};
use super::error::ApiError;
use super::middleware::RequestCtx;
use super::respond::{respond, AnswerUsage, ClientSpec};
use super::AppState;
use crate::providers::{CallContext, LlmRequest};
use crate::ratelimit::Dimension;

/// Routes `req` and answers it in the format of `client`.
pub async fn run(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    req: LlmRequest<'_>,
    client: ClientSpec,
) -> Result<Response, ApiError> {
    let mut acct = Accounting::start(state, ctx, client.format, req.model(), req.stream());
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

    let call = CallContext {
        user_id: &ctx.identity.user_id,
        request_id: &ctx.request_id,
        client_authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    };
    let t0 = Instant::now();
    let result = state
        .router
        .chat(&req, &call)
        .instrument(acct.span().clone())
        .await;
    let upstream = t0.elapsed();
    let routed = match result {
        Ok(r) => r,
        Err(e) => return Err(acct.fail(e.into(), Some(upstream))),
    };
    let price = acct.routed(&routed.deployment, routed.attempts, req.model(), upstream);
    let group = RoutedGroup(routed.deployment.clone());
    let mut resp = respond(routed.value, client, Box::new(move |ex| acct.finish(ex)))?;
    let overhead = ctx.started.elapsed().saturating_sub(upstream);
    let cost = resp
        .extensions()
        .get::<AnswerUsage>()
        .and_then(|u| price.map(|p| p.cost(&u.0)));
    accounting::cost_headers(resp.headers_mut(), cost, overhead);
    if let Some(q) = &token_quota {
        accounting::quota_headers(resp.headers_mut(), Dimension::Tokens, q);
    }
    resp.extensions_mut().insert(group);
    Ok(resp)
}
