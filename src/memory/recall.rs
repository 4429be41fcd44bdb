//! The memory stage of a model request (SPEC §4), the one interface the request path
//! edits memory through: [`recall`] prepends a session's earlier turns when the client
//! sent only the new one and injects the scope's relevant memories, into the internal
//! request and into a native body alike (whichever the provider sends carries them), and
//! [`Capture`] stores the finished exchange. A store that fails or hangs costs the request
//! its memories, not its answer (`x-memproxy-memory: skipped`).

use std::sync::Arc;

use super::inject;
use super::scope::Scope;
use super::store::ScoredMemory;
use super::{CaptureMeta, MemoryService};
use crate::analytics::store::Injected;
use crate::config::{ProjectScope, RetrievalSettings};
use crate::protocol::chat::{BodyError, ChatBody, ChatMessage};
use crate::providers::{LlmRequest, Native};

/// Who a request's memory belongs to, and what the stage needs to know of the request.
pub struct Who<'a> {
    /// The request's memory scope.
    pub scope: &'a Scope,
    pub session_id: Option<&'a str>,
    pub request_id: &'a str,
    /// When the request arrived (Unix ms): injected memories' ages are counted from it.
    pub arrived_ms: i64,
    /// The model is served by a memory router upstream (Supermemory), which injects
    /// memories itself.
    pub memory_upstream: bool,
}

/// What the memory stage did to a request.
#[derive(Default)]
pub struct Recalled {
    /// The client's own messages (before history and memories were added), kept for
    /// capture when capture is on.
    pub original: Option<Vec<ChatMessage>>,
    /// Memories injected into the request, in order, with their scores.
    pub injected: Vec<Injected>,
    /// The store did not answer (down, or slower than [`RETRIEVAL_GRACE`], plus the
    /// embedding timeout with an embedding model): the request goes on without memories
    /// (`x-memproxy-memory: skipped`, `memproxy_memory_retrieval_skipped_total`).
    pub skipped: bool,
}

/// How long the memory store may take to answer a request's retrieval (beyond the query
/// embedding's own timeout) before the request goes on without it: a store that hangs
/// must not hang requests.
const RETRIEVAL_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Marks a request answered without memory retrieval.
fn skipped(out: &mut Recalled, who: &Who<'_>, what: &str, error: &dyn std::fmt::Display) {
    if !out.skipped {
        metrics::counter!("memproxy_memory_retrieval_skipped_total").increment(1);
    }
    out.skipped = true;
    tracing::warn!(request_id = %who.request_id, error = %error, "{what}; answering without it");
}

/// Applies SPEC §4 to the request: earlier turns of the session are prepended when the
/// client sent only the new turn, and the user's relevant memories are injected (unless a
/// Supermemory router behind the model does that itself). Both the internal request and a
/// native Anthropic body are changed, so whichever the provider sends carries them.
pub async fn recall(
    mem: &MemoryService,
    cfg: &RetrievalSettings,
    who: &Who<'_>,
    req: &mut LlmRequest<'_>,
) -> Result<Recalled, BodyError> {
    let scope = who.scope;
    let key = scope.key();
    let session_id = who.session_id;
    let retrieve = inject::applies_to(cfg, &req.chat.model) && !who.memory_upstream;
    let capture = mem.settings().capture;
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
    let search_limit = match mem.settings().embedder {
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
                        skipped(&mut out, who, "reading session history failed", &e);
                        Vec::new()
                    }
                    Err(_) => {
                        skipped(
                            &mut out,
                            who,
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
            let keys = search_keys(scope, &key, cfg.project_scope);
            let groups = match tokio::time::timeout(
                search_limit,
                mem.try_search_in(&keys, &q, cfg.max_results),
            )
            .await
            {
                Ok(Ok(groups)) => groups,
                Ok(Err(e)) => {
                    skipped(&mut out, who, "memory search failed", &e);
                    Vec::new()
                }
                Err(_) => {
                    skipped(&mut out, who, "memory search timed out", &"timeout");
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
                out.injected = injected(&groups, &placed, scope.project.is_some(), who.arrived_ms);
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
        request_id = %who.request_id,
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
pub fn search_keys<'a>(scope: &'a Scope, key: &'a str, mode: ProjectScope) -> Vec<&'a str> {
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

/// What capturing a request's exchange needs, moved out of the request: taken by the
/// completion hook, which calls [`Capture::finish`] when the answer is complete.
pub struct Capture {
    memory: Arc<MemoryService>,
    original: Vec<ChatMessage>,
    /// The store key of the request's memory scope (its project's, if it names one).
    scope: String,
    session_id: Option<String>,
    model: String,
    request_id: String,
}

impl Capture {
    /// What a request whose memory stage kept the client's messages (`original`, capture
    /// on) captures once answered.
    pub fn new(
        memory: &Arc<MemoryService>,
        original: Option<Vec<ChatMessage>>,
        who: &Who<'_>,
        model: &str,
    ) -> Option<Self> {
        Some(Self {
            memory: memory.clone(),
            original: original?,
            scope: who.scope.key(),
            session_id: who.session_id.map(str::to_string),
            model: model.to_string(),
            request_id: who.request_id.to_string(),
        })
    }

    /// Captures a complete exchange (the client's new turn and `answer`) into the
    /// scope's memory and session.
    pub fn finish(self, answer: &str) {
        if let Some(c) = inject::capture(&self.original, answer) {
            self.memory.capture(
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
