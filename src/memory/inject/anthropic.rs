//! The same operations for a native Anthropic Messages body (kept raw when it is passed
//! through to an Anthropic upstream): a neutral view of its messages for the query,
//! capture and prepend rules, and injection into `system` or the last user message.
//!
//! Blocks are only added, never rewritten, so `cache_control` breakpoints keep working;
//! with the `system` strategy an array `system` gets the memory block appended as its
//! last block, which keeps the cached prefix (tools and the client's system blocks) intact.

use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::super::store::SessionMessage;
use crate::config::InjectionStrategy;
use crate::protocol::chat::{BodyError, ChatBody, ChatMessage, Content};

fn get_value(body: &ChatBody<'_>, key: &str) -> Result<Option<Value>, BodyError> {
    body.get(key)
        .map(|raw| serde_json::from_str(raw.get()).map_err(|e| BodyError::Json(e.to_string())))
        .transpose()
}

fn set_value(body: &mut ChatBody<'_>, key: &str, v: &Value) -> Result<(), BodyError> {
    let raw = RawValue::from_string(v.to_string()).map_err(|e| BodyError::Json(e.to_string()))?;
    body.set(key, raw);
    Ok(())
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn is_tool_result_only(content: &Value) -> bool {
    matches!(content, Value::Array(b) if !b.is_empty() && b.iter().all(|x| x["type"] == "tool_result"))
}

/// The messages as chat messages holding only their text; a user message made only of
/// `tool_result` blocks becomes a `tool` message (a tool round, not a new turn). Feed it
/// to [`super::query_text`], [`super::capture`] and [`super::needs_history`].
pub fn view(body: &ChatBody<'_>) -> Result<Vec<ChatMessage>, BodyError> {
    let messages = get_value(body, "messages")?.unwrap_or(Value::Null);
    let Value::Array(list) = messages else {
        return Err(BodyError::Missing("messages"));
    };
    Ok(list
        .iter()
        .map(|m| {
            let content = &m["content"];
            let role = match m["role"].as_str().unwrap_or("user") {
                "user" if is_tool_result_only(content) => "tool",
                r => r,
            };
            ChatMessage {
                role: role.to_string(),
                content: Some(Content::Text(text_of(content))),
                ..Default::default()
            }
        })
        .collect())
}

fn prepend_text(content: &mut Value, block: &str) {
    match content {
        Value::String(s) => *s = format!("{block}\n\n{s}"),
        Value::Array(blocks) => blocks.insert(0, json!({"type": "text", "text": block})),
        other => *other = Value::String(block.to_string()),
    }
}

fn append_text(content: &mut Value, block: &str) {
    match content {
        Value::String(s) => *s = format!("{s}\n\n{block}"),
        Value::Array(blocks) => blocks.push(json!({"type": "text", "text": block})),
        other => *other = Value::String(block.to_string()),
    }
}

/// Puts `block` into the body (see the module docs for `system` with block arrays);
/// `user_prefix` / `user_suffix` use the last user message that is not a tool result.
pub fn inject(
    body: &mut ChatBody<'_>,
    block: &str,
    strategy: InjectionStrategy,
) -> Result<(), BodyError> {
    if strategy != InjectionStrategy::System {
        let mut messages = get_value(body, "messages")?.unwrap_or(Value::Null);
        if let Value::Array(list) = &mut messages {
            let target = list
                .iter()
                .rposition(|m| m["role"] == "user" && !is_tool_result_only(&m["content"]));
            if let Some(i) = target {
                let content = &mut list[i]["content"];
                if strategy == InjectionStrategy::UserPrefix {
                    prepend_text(content, block);
                } else {
                    append_text(content, block);
                }
                return set_value(body, "messages", &messages);
            }
        }
    }
    let system = match get_value(body, "system")? {
        None | Some(Value::Null) => Value::String(block.to_string()),
        Some(Value::String(s)) if s.is_empty() => Value::String(block.to_string()),
        Some(Value::String(s)) => Value::String(format!("{block}\n\n{s}")),
        Some(Value::Array(mut blocks)) => {
            blocks.push(json!({"type": "text", "text": block}));
            Value::Array(blocks)
        }
        Some(other) => other,
    };
    set_value(body, "system", &system)
}

/// Inserts a session's earlier turns before the messages (Anthropic keeps the system
/// prompt outside `messages`).
pub fn prepend_history(
    body: &mut ChatBody<'_>,
    history: &[SessionMessage],
) -> Result<(), BodyError> {
    if history.is_empty() {
        return Ok(());
    }
    let mut messages = get_value(body, "messages")?.unwrap_or(Value::Null);
    if let Value::Array(list) = &mut messages {
        let turns = history
            .iter()
            .map(|h| json!({"role": h.role, "content": h.content}));
        list.splice(0..0, turns);
        set_value(body, "messages", &messages)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueryStrategy;
    use crate::memory::inject::{capture, needs_history, query_text, strip_injected, CLOSE, OPEN};

    fn body(json: &str) -> ChatBody<'static> {
        ChatBody::parse_object(json.as_bytes())
            .unwrap()
            .into_owned()
    }

    fn value(b: &ChatBody<'_>) -> Value {
        serde_json::from_slice(&b.to_json()).unwrap()
    }

    const CLAUDE_CODE: &str = r#"{"model":"claude","system":[{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}],
        "messages":[{"role":"user","content":[{"type":"text","text":"fix the bug"}]},
                    {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"Read","input":{}}]},
                    {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"file"}]}],
        "max_tokens":100}"#;

    #[test]
    fn view_marks_tool_rounds() {
        let v = view(&body(CLAUDE_CODE)).unwrap();
        let roles: Vec<&str> = v.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant", "tool"]);
        assert_eq!(
            query_text(QueryStrategy::LastUser, &v).as_deref(),
            Some("fix the bug")
        );
        assert_eq!(capture(&v, "done"), None, "a tool round is not captured");
        assert!(!needs_history(&v));
    }

    #[test]
    fn system_injection_appends_a_block_and_keeps_cache_control() {
        let mut b = body(CLAUDE_CODE);
        inject(&mut b, "MEM", InjectionStrategy::System).unwrap();
        let v = value(&b);
        assert_eq!(v["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(v["system"][1], json!({"type": "text", "text": "MEM"}));
        assert_eq!(v["max_tokens"], 100);

        let mut b = body(
            r#"{"model":"m","system":"be brief","messages":[{"role":"user","content":"hi"}]}"#,
        );
        inject(&mut b, "MEM", InjectionStrategy::System).unwrap();
        assert_eq!(value(&b)["system"], "MEM\n\nbe brief");
        let mut b = body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        inject(&mut b, "MEM", InjectionStrategy::System).unwrap();
        assert_eq!(value(&b)["system"], "MEM");
    }

    #[test]
    fn user_injection_skips_tool_results_and_strips_cleanly() {
        let block = format!("{OPEN}\nx\n{CLOSE}");
        let mut b = body(CLAUDE_CODE);
        inject(&mut b, &block, InjectionStrategy::UserSuffix).unwrap();
        let v = value(&b);
        assert_eq!(v["messages"][0]["content"][1]["text"], block.as_str());
        assert_eq!(v["messages"][2]["content"][0]["type"], "tool_result");

        let mut b = body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        inject(&mut b, &block, InjectionStrategy::UserPrefix).unwrap();
        let text = value(&b)["messages"][0]["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(strip_injected(&text), "hi");
    }

    #[test]
    fn history_goes_first() {
        let mut b = body(r#"{"model":"m","messages":[{"role":"user","content":"new"}]}"#);
        let v = view(&b).unwrap();
        assert!(needs_history(&v));
        let h = [
            SessionMessage {
                role: "user".into(),
                content: "q".into(),
                created_at_ms: 0,
            },
            SessionMessage {
                role: "assistant".into(),
                content: "a".into(),
                created_at_ms: 0,
            },
        ];
        prepend_history(&mut b, &h).unwrap();
        let m = value(&b)["messages"].clone();
        assert_eq!(m[0], json!({"role": "user", "content": "q"}));
        assert_eq!(m[2]["content"], "new");
    }
}
