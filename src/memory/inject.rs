//! Pure functions the request path calls around the model call (SPEC §4): which text to
//! search with (`query_strategy`), how found memories go into the request
//! (`injection_strategy`, `max_results`, `max_context_length`), the session prepend
//! rule, and what of a finished exchange is stored (capture).
//!
//! Injected text is always wrapped in [`OPEN`] … [`CLOSE`]; [`strip_injected`] removes
//! such blocks, and capture applies it, so memproxy never stores its own injections.
//! Memory text is sanitised so that it cannot close the block early.

pub mod anthropic;
pub mod responses;

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::store::{ScoredMemory, SessionMessage};
use crate::config::{InjectionStrategy, QueryStrategy, RetrievalSettings};
use crate::protocol::chat::{BodyError, ChatBody, ChatMessage, Content, Part};

/// Opens an injected memory block.
pub const OPEN: &str = "<memproxy-memory>";
/// Closes an injected memory block.
pub const CLOSE: &str = "</memproxy-memory>";

/// The first line inside a block, telling the model what it is reading.
const HEADER: &str =
    "Relevant memories from earlier conversations with this user (most relevant first; they may be outdated):";

/// Longest query text sent to search; longer texts keep their end (the newest words).
pub const MAX_QUERY_CHARS: usize = 2000;

/// Longest text stored per side of a captured exchange.
pub const MAX_CAPTURE_CHARS: usize = 20_000;

/// True when retrieval is on and configured for `model` (`enabled_for_models` absent or
/// empty means every model; entries may use `*` wildcards).
pub fn applies_to(cfg: &RetrievalSettings, model: &str) -> bool {
    cfg.enabled && model_listed(&cfg.enabled_for_models, model)
}

/// True when `model` is one of `patterns` (`*` wildcards allowed), or `patterns` is
/// empty (every model): the rule of every `enabled_for_models` list.
pub fn model_listed(patterns: &[String], model: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| crate::glob::matches(p, model))
}

/// Blocks that clients add to the user's turn as their own scaffolding (Claude Code's
/// reminders, Codex's environment description): not the user's words, so neither
/// searched with nor stored.
const SCAFFOLDING: &[(&str, &str)] = &[
    ("<system-reminder>", "</system-reminder>"),
    ("<environment_context>", "</environment_context>"),
    ("<user_instructions>", "</user_instructions>"),
];

/// `text` without the client scaffolding blocks of [`SCAFFOLDING`].
pub fn strip_scaffolding(text: &str) -> Cow<'_, str> {
    if !SCAFFOLDING.iter().any(|(open, _)| text.contains(open)) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for (open, close) in SCAFFOLDING {
        while let Some(start) = out.find(open) {
            let end = out[start..]
                .find(close)
                .map_or(out.len(), |e| start + e + close.len());
            out.replace_range(start..end, "");
        }
    }
    Cow::Owned(out.trim().to_string())
}

/// The plain text of a message (text parts joined), injected blocks and client
/// scaffolding removed.
pub fn message_text(m: &ChatMessage) -> String {
    let text = m.content.as_ref().map(Content::text).unwrap_or_default();
    strip_scaffolding(&strip_injected(&text)).into_owned()
}

/// The search text for a request, from `(role, text)` pairs in order — usable for any
/// client format. `last_assistant` without an assistant message falls back to the last
/// user message. `None` when there is nothing to search with.
pub fn query_text_from<'a>(
    strategy: QueryStrategy,
    messages: impl IntoIterator<Item = (&'a str, String)>,
) -> Option<String> {
    let all: Vec<(&str, String)> = messages.into_iter().collect();
    let last = |role: &str| {
        all.iter()
            .rev()
            .find(|(r, t)| *r == role && !strip_scaffolding(t).trim().is_empty())
            .map(|x| x.1.clone())
    };
    let text = match strategy {
        QueryStrategy::LastUser => last("user"),
        QueryStrategy::FirstUser => all
            .iter()
            .find(|(r, t)| *r == "user" && !t.trim().is_empty())
            .map(|x| x.1.clone()),
        QueryStrategy::AllUser => {
            let joined: Vec<&str> = all
                .iter()
                .filter(|(r, _)| *r == "user")
                .map(|(_, t)| t.trim())
                .filter(|t| !t.is_empty())
                .collect();
            (!joined.is_empty()).then(|| joined.join("\n"))
        }
        QueryStrategy::LastAssistant => last("assistant").or_else(|| last("user")),
    }?;
    let text = strip_injected(&text);
    let text = strip_scaffolding(&text);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let n = text.chars().count();
    Some(if n > MAX_QUERY_CHARS {
        text.chars().skip(n - MAX_QUERY_CHARS).collect()
    } else {
        text.to_string()
    })
}

/// [`query_text_from`] for chat messages.
pub fn query_text(strategy: QueryStrategy, messages: &[ChatMessage]) -> Option<String> {
    query_text_from(
        strategy,
        messages.iter().map(|m| (m.role.as_str(), message_text(m))),
    )
}

fn sanitize(text: &str) -> String {
    text.replace(OPEN, "<memproxy-memory_>")
        .replace(CLOSE, "</memproxy-memory_>")
}

/// The marked block for the best memories: at most `max_results` of them and at most
/// `max_chars` characters of memory text (the last one cut if needed). `None` when
/// there is nothing to inject.
pub fn render(hits: &[ScoredMemory], max_results: usize, max_chars: usize) -> Option<String> {
    render_groups(&[(None, hits)], max_results, max_chars, &mut Vec::new())
}

/// A memory placed in a rendered block: its group, its index in the group, and whether
/// its text was cut to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub group: usize,
    pub index: usize,
    pub truncated: bool,
}

/// [`render`] for memories of several scopes, in order (a project's, then its user's):
/// each group that contributes memories is introduced by its label, and `max_results`
/// and `max_chars` hold for the block as a whole. Each memory placed is pushed to
/// `placed`, in order.
pub fn render_groups(
    groups: &[(Option<&str>, &[ScoredMemory])],
    max_results: usize,
    max_chars: usize,
    placed: &mut Vec<Placed>,
) -> Option<String> {
    let mut body = String::new();
    let mut used = 0usize;
    let mut taken = 0usize;
    'groups: for (group, (label, hits)) in groups.iter().enumerate() {
        let mut labelled = false;
        for (index, hit) in hits.iter().enumerate() {
            if taken == max_results {
                break 'groups;
            }
            let text = sanitize(hit.memory.content.trim());
            if text.is_empty() {
                continue;
            }
            let item = format!("- {}", text.replace('\n', "\n  "));
            let len = item.chars().count();
            let room = max_chars.saturating_sub(used);
            if let (Some(l), false, true) = (label, labelled, len <= room || room > 20) {
                body.push_str(l);
                body.push('\n');
                labelled = true;
            }
            if len <= room {
                body.push_str(&item);
                body.push('\n');
                used += len;
                taken += 1;
                placed.push(Placed {
                    group,
                    index,
                    truncated: false,
                });
            } else {
                if room > 20 {
                    body.extend(item.chars().take(room - 1));
                    body.push_str("…\n");
                    placed.push(Placed {
                        group,
                        index,
                        truncated: true,
                    });
                }
                break 'groups;
            }
        }
    }
    (!body.is_empty()).then(|| format!("{OPEN}\n{HEADER}\n{body}{CLOSE}"))
}

/// Removes every injected block (and the blank line that joined it to the text).
pub fn strip_injected(text: &str) -> Cow<'_, str> {
    if !text.contains(OPEN) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        match rest[start..].find(CLOSE) {
            Some(end) => rest = &rest[start + end + CLOSE.len()..],
            None => {
                rest = "";
            }
        }
        // Drop the separator that the injection added on either side.
        rest = rest.strip_prefix("\n\n").unwrap_or(rest);
        if rest.is_empty() {
            while out.ends_with('\n') {
                out.pop();
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn text_message(role: &str, text: String) -> ChatMessage {
    ChatMessage {
        role: role.to_string(),
        content: Some(Content::Text(text)),
        ..Default::default()
    }
}

fn text_part(text: String) -> Part {
    Part {
        kind: "text".into(),
        text: Some(text),
        ..Default::default()
    }
}

fn prepend(content: &mut Option<Content>, block: &str) {
    *content = Some(match content.take() {
        None => Content::Text(block.to_string()),
        Some(Content::Text(t)) if t.is_empty() => Content::Text(block.to_string()),
        Some(Content::Text(t)) => Content::Text(format!("{block}\n\n{t}")),
        Some(Content::Parts(mut p)) => {
            p.insert(0, text_part(block.to_string()));
            Content::Parts(p)
        }
    });
}

fn append(content: &mut Option<Content>, block: &str) {
    *content = Some(match content.take() {
        None => Content::Text(block.to_string()),
        Some(Content::Text(t)) if t.is_empty() => Content::Text(block.to_string()),
        Some(Content::Text(t)) => Content::Text(format!("{t}\n\n{block}")),
        Some(Content::Parts(mut p)) => {
            p.push(text_part(block.to_string()));
            Content::Parts(p)
        }
    });
}

/// Puts `block` into the messages: `system` prepends it to the leading system (or
/// developer) message or creates one; `user_prefix` / `user_suffix` add it before / after
/// the last user message's text (falling back to `system` without a user message).
pub fn inject(messages: &mut Vec<ChatMessage>, block: &str, strategy: InjectionStrategy) {
    let last_user = messages.iter().rposition(|m| m.role == "user");
    match (strategy, last_user) {
        (InjectionStrategy::UserPrefix, Some(i)) => prepend(&mut messages[i].content, block),
        (InjectionStrategy::UserSuffix, Some(i)) => append(&mut messages[i].content, block),
        _ => match messages.first_mut() {
            Some(m) if m.role == "system" || m.role == "developer" => {
                prepend(&mut m.content, block)
            }
            _ => messages.insert(0, text_message("system", block.to_string())),
        },
    }
}

/// True when the request holds only the new turn (no assistant or tool message): then a
/// session's earlier turns are prepended. A client that sends its own history is left
/// alone, so nothing is duplicated.
pub fn needs_history(messages: &[ChatMessage]) -> bool {
    !messages
        .iter()
        .any(|m| matches!(m.role.as_str(), "assistant" | "tool" | "function"))
}

/// Inserts a session's earlier turns after the leading system/developer messages.
pub fn prepend_history(messages: &mut Vec<ChatMessage>, history: &[SessionMessage]) {
    if history.is_empty() {
        return;
    }
    let at = messages
        .iter()
        .position(|m| m.role != "system" && m.role != "developer")
        .unwrap_or(messages.len());
    let turns = history
        .iter()
        .map(|h| text_message(&h.role, h.content.clone()));
    messages.splice(at..at, turns);
}

/// What of an exchange is stored: the new user text and the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub user: String,
    pub assistant: String,
}

impl Captured {
    /// The long-term memory text of the exchange.
    pub fn memory_text(&self) -> String {
        format!("user: {}\nassistant: {}", self.user, self.assistant)
    }
}

fn cap(text: &str) -> String {
    if text.chars().count() <= MAX_CAPTURE_CHARS {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(MAX_CAPTURE_CHARS).collect();
        s.push('…');
        s
    }
}

/// The exchange to store: the user messages after the last assistant/tool message (the
/// new turn), injected blocks and client scaffolding stripped, and the answer. System
/// and developer messages are the client's, not the user's: they neither end a turn nor
/// are stored. `None` when the request does not end in user text (a tool round) or
/// either side is empty.
pub fn capture(messages: &[ChatMessage], answer: &str) -> Option<Captured> {
    let is_turn_end = |m: &ChatMessage| !matches!(m.role.as_str(), "user" | "system" | "developer");
    let start = messages.iter().rposition(is_turn_end).map_or(0, |i| i + 1);
    if messages[start..].iter().all(|m| m.role != "user") {
        return None;
    }
    let user: Vec<String> = messages[start..]
        .iter()
        .filter(|m| m.role == "user")
        .map(message_text)
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    let answer = strip_injected(answer);
    let answer = answer.trim();
    if user.is_empty() || answer.is_empty() {
        return None;
    }
    Some(Captured {
        user: cap(&user.join("\n\n")),
        assistant: cap(answer),
    })
}

/// The messages of an internal request, typed.
pub fn messages_of(body: &ChatBody<'_>) -> Result<Vec<ChatMessage>, BodyError> {
    let raw = body.get("messages").ok_or(BodyError::Missing("messages"))?;
    serde_json::from_str(raw.get()).map_err(|e| BodyError::Json(e.to_string()))
}

/// Replaces the messages of an internal request; other members stay byte for byte.
pub fn set_messages(body: &mut ChatBody<'_>, messages: &[ChatMessage]) -> Result<(), BodyError> {
    let json = serde_json::to_string(messages).map_err(|e| BodyError::Json(e.to_string()))?;
    let raw = RawValue::from_string(json).map_err(|e| BodyError::Json(e.to_string()))?;
    body.set("messages", raw);
    Ok(())
}

#[cfg(test)]
mod tests;
