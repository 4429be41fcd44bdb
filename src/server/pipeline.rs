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
use crate::analytics::store::Injected;
use crate::config::ProjectScope;
use crate::memory::inject;
use crate::memory::scope::Scope;
use crate::memory::store::ScoredMemory;
use crate::memory::{CaptureMeta, MemoryService};
use crate::protocol::chat::{BodyError, ChatBody, ChatMessage};
use crate::providers::{CallContext, LlmRequest, Native, Reply};
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
    let mut acct = accounting::take_over(state, ctx, client.format, req.model(), req.stream());
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

    let session_id = ctx.session_id.clone();
    let mut recalled = match &state.memory {
        Some(mem) => {
            let t = Instant::now();
            let r = recall(state, mem, ctx, session_id.as_deref(), &mut req).await;
            state.metrics.memory_retrieval(t.elapsed());
            match r {
                Ok(r) => r,
                Err(e) => return Err(acct.fail(e, None)),
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
    let scope = ctx.scope();
    let key = scope.key();
    let keys = search_keys(&scope, &key, state.config.retrieval.project_scope);
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
    let done = Done {
        memory: state.memory.clone(),
        captured_from: recalled.original,
        scope: ctx.scope().key(),
        session_id,
        model: req.chat.model.clone(),
        request_id: ctx.request_id.clone(),
    };
    let mut resp = respond(
        routed.value,
        client,
        routed.deployment,
        Box::new(move |mut ex| {
            ex.tool_rounds = tool_rounds;
            acct.finish(&ex);
            done.finish(ex);
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

/// What the memory stage did to a request.
#[derive(Default)]
struct Recalled {
    /// The client's own messages (before history and memories were added), kept for
    /// capture when capture is on.
    original: Option<Vec<ChatMessage>>,
    /// Memories injected into the request, in order, with their scores.
    injected: Vec<Injected>,
    /// The store did not answer (down, or slower than [`RETRIEVAL_GRACE`], plus the
    /// embedding timeout with an embedding model): the request goes on without memories
    /// (`x-memproxy-memory: skipped`, `memproxy_memory_retrieval_skipped_total`).
    skipped: bool,
}

/// How long the memory store may take to answer a request's retrieval (beyond the query
/// embedding's own timeout) before the request goes on without it: a store that hangs
/// must not hang requests.
const RETRIEVAL_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Marks a request answered without memory retrieval.
fn skipped(out: &mut Recalled, ctx: &RequestCtx, what: &str, error: &dyn std::fmt::Display) {
    if !out.skipped {
        metrics::counter!("memproxy_memory_retrieval_skipped_total").increment(1);
    }
    out.skipped = true;
    tracing::warn!(request_id = %ctx.request_id, error = %error, "{what}; answering without it");
}

/// Applies SPEC §4 to the request: earlier turns of the session are prepended when the
/// client sent only the new turn, and the user's relevant memories are injected (unless a
/// Supermemory router behind the model does that itself). Both the internal request and a
/// native Anthropic body are changed, so whichever the provider sends carries them.
async fn recall(
    state: &AppState,
    mem: &MemoryService,
    ctx: &RequestCtx,
    session_id: Option<&str>,
    req: &mut LlmRequest<'_>,
) -> Result<Recalled, ApiError> {
    let cfg = &state.config.retrieval;
    let scope = ctx.scope();
    let key = scope.key();
    let retrieve =
        inject::applies_to(cfg, &req.chat.model) && !state.router.memory_upstream(&req.chat.model);
    let capture = state.config.memory.capture;
    if !retrieve && !capture && session_id.is_none() {
        return Ok(Recalled::default());
    }
    let mut messages = inject::messages_of(&req.chat)?;
    let mut out = Recalled {
        original: capture.then(|| messages.clone()),
        injected: Vec::new(),
        skipped: false,
    };
    // Reading the store takes milliseconds; a query embedding may take up to its timeout.
    let history_limit = RETRIEVAL_GRACE;
    let search_limit = match state.config.memory.embedder {
        crate::config::EmbedderKind::External => mem.settings().embed_timeout + RETRIEVAL_GRACE,
        _ => RETRIEVAL_GRACE,
    };
    let mut history = Vec::new();
    if let Some(sid) = session_id {
        if inject::needs_history(&messages) {
            // The store's own calls, so a failure's warning names the request.
            history =
                match tokio::time::timeout(history_limit, mem.store().session_messages(&key, sid))
                    .await
                {
                    Ok(Ok(h)) => h,
                    Ok(Err(e)) => {
                        skipped(&mut out, ctx, "reading session history failed", &e);
                        Vec::new()
                    }
                    Err(_) => {
                        skipped(
                            &mut out,
                            ctx,
                            "reading session history timed out",
                            &"timeout",
                        );
                        Vec::new()
                    }
                };
            inject::prepend_history(&mut messages, &history);
        }
    }
    let mut block = None;
    if retrieve {
        if let Some(q) = inject::query_text(cfg.query_strategy, &messages) {
            let keys = search_keys(&scope, &key, cfg.project_scope);
            let groups = match tokio::time::timeout(
                search_limit,
                mem.try_search_in(&keys, &q, cfg.max_results),
            )
            .await
            {
                Ok(Ok(groups)) => groups,
                Ok(Err(e)) => {
                    skipped(&mut out, ctx, "memory search failed", &e);
                    Vec::new()
                }
                Err(_) => {
                    skipped(&mut out, ctx, "memory search timed out", &"timeout");
                    Vec::new()
                }
            };
            let labels = labels(scope.project.as_deref());
            let labelled: Vec<_> = groups
                .iter()
                .zip(labels.iter())
                .map(|(hits, label)| (label.as_deref(), hits.as_slice()))
                .collect();
            let mut placed = Vec::new();
            block = inject::render_groups(
                &labelled,
                cfg.max_results,
                cfg.max_context_length,
                &mut placed,
            );
            if let Some(b) = &block {
                inject::inject(&mut messages, b, cfg.injection_strategy);
                out.injected = injected(&groups, &placed, scope.project.is_some(), ctx.arrived_ms);
            }
        }
    }
    if history.is_empty() && block.is_none() {
        return Ok(out);
    }
    inject::set_messages(&mut req.chat, &messages)?;
    match &mut req.native {
        Some(Native::Anthropic(native)) => {
            if !history.is_empty() {
                inject::anthropic::prepend_history(native, &history)?;
            }
            if let Some(b) = &block {
                inject::anthropic::inject(native, b, cfg.injection_strategy)?;
            }
        }
        Some(Native::Responses(native)) => {
            let apply = |body: &mut ChatBody<'_>| -> Result<(), BodyError> {
                inject::responses::prepend_history(body, &history)?;
                match &block {
                    Some(b) => inject::responses::inject(body, b, cfg.injection_strategy),
                    None => Ok(()),
                }
            };
            apply(&mut native.body)?;
            if let Some((expanded, _)) = &mut native.expanded {
                apply(expanded)?;
            }
        }
        None => {}
    }
    tracing::debug!(
        request_id = %ctx.request_id,
        history = history.len(),
        memories = out.injected.len(),
        "memory applied"
    );
    Ok(out)
}

/// The analytics record of the memories placed in a request's block: position, scope
/// group, score and its share of the best score, age.
fn injected(
    groups: &[Vec<ScoredMemory>],
    placed: &[inject::Placed],
    with_project: bool,
    now_ms: i64,
) -> Vec<Injected> {
    let best = placed
        .iter()
        .map(|p| groups[p.group][p.index].score)
        .fold(f64::MIN, f64::max);
    placed
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let hit = &groups[p.group][p.index];
            Injected {
                id: hit.memory.id.clone(),
                position: i as u32 + 1,
                scope: if with_project && p.group == 0 {
                    "project"
                } else {
                    "user"
                }
                .to_string(),
                score: hit.score,
                share: if best > 0.0 { hit.score / best } else { 1.0 },
                age_s: (now_ms - hit.memory.created_at_ms).max(0) / 1000,
                truncated: p.truncated,
            }
        })
        .collect()
}

/// The store keys a request's memory is read from, in order: its scope's (`key`), then,
/// for a project with `project_then_user`, its user's memories outside any project.
fn search_keys<'a>(scope: &'a Scope, key: &'a str, mode: ProjectScope) -> Vec<&'a str> {
    let mut keys = vec![key];
    if scope.project.is_some() && mode == ProjectScope::ProjectThenUser {
        keys.push(scope.user_key());
    }
    keys
}

/// The labels of the injected groups of a request with a project: its memories, then
/// its user's project-independent ones. Without a project, the one group is unlabelled.
fn labels(project: Option<&str>) -> [Option<String>; 2] {
    match project {
        Some(p) => [
            Some(format!("From this project ({p}):")),
            Some("From this user's memories outside any project:".to_string()),
        ],
        None => [None, None],
    }
}

/// What the completion hook needs, moved out of the request.
struct Done {
    memory: Option<Arc<MemoryService>>,
    captured_from: Option<Vec<ChatMessage>>,
    /// The store key of the request's memory scope (its project's, if it names one).
    scope: String,
    session_id: Option<String>,
    model: String,
    request_id: String,
}

impl Done {
    /// Called once per answered request, when the answer is complete or abandoned:
    /// a complete exchange is captured into the user's memory (and session).
    fn finish(self, ex: Exchange) {
        tracing::debug!(
            completed = ex.completed,
            ttft_ms = ex.ttft.map(|d| d.as_secs_f64() * 1000.0),
            output_chars = ex.completion.text.len(),
            input_tokens = ex.completion.usage.input_tokens,
            output_tokens = ex.completion.usage.output_tokens,
            tool_rounds = ex.tool_rounds,
            "exchange complete"
        );
        if !ex.completed {
            return;
        }
        let (Some(mem), Some(original)) = (&self.memory, &self.captured_from) else {
            return;
        };
        if let Some(c) = inject::capture(original, &ex.completion.text) {
            mem.capture(
                CaptureMeta {
                    user_id: &self.scope,
                    session_id: self.session_id.as_deref(),
                    model: &self.model,
                    request_id: &self.request_id,
                },
                c,
            );
        }
    }
}
