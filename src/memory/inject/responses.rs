//! The same operations for a native Responses API body (kept raw for deployments that
//! serve `/responses`): injection into `instructions` (the `system` strategy) or into the
//! last user message of `input`, and a session's earlier turns put before `input`.
//! The query, capture and prepend rules read the internal chat view of the same request.

use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::super::store::SessionMessage;
use crate::config::InjectionStrategy;
use crate::protocol::chat::{BodyError, ChatBody};

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

/// Whether an input item is a user message.
fn is_user_message(item: &Value) -> bool {
    item["role"] == "user" && (item["type"].is_null() || item["type"] == "message")
}

fn add_text(content: &mut Value, block: &str, prefix: bool) {
    match content {
        Value::String(s) if prefix => *s = format!("{block}\n\n{s}"),
        Value::String(s) => *s = format!("{s}\n\n{block}"),
        Value::Array(parts) => {
            let part = json!({"type": "input_text", "text": block});
            if prefix {
                parts.insert(0, part);
            } else {
                parts.push(part);
            }
        }
        other => *other = Value::String(block.to_string()),
    }
}

/// Puts `block` into the body: `instructions` for the `system` strategy (and when no user
/// message is there), the last user message of `input` otherwise.
pub fn inject(
    body: &mut ChatBody<'_>,
    block: &str,
    strategy: InjectionStrategy,
) -> Result<(), BodyError> {
    if strategy != InjectionStrategy::System {
        let prefix = strategy == InjectionStrategy::UserPrefix;
        match get_value(body, "input")? {
            Some(mut input @ Value::String(_)) => {
                add_text(&mut input, block, prefix);
                return set_value(body, "input", &input);
            }
            Some(mut input @ Value::Array(_)) => {
                let list = input
                    .as_array_mut()
                    .map(Vec::as_mut_slice)
                    .unwrap_or(&mut []);
                if let Some(item) = list.iter_mut().rev().find(|i| is_user_message(i)) {
                    add_text(&mut item["content"], block, prefix);
                    return set_value(body, "input", &input);
                }
            }
            _ => {}
        }
    }
    let instructions = match get_value(body, "instructions")? {
        Some(Value::String(s)) if !s.is_empty() => format!("{block}\n\n{s}"),
        _ => block.to_string(),
    };
    set_value(body, "instructions", &Value::String(instructions))
}

/// Puts a session's earlier turns before the request's `input`.
pub fn prepend_history(
    body: &mut ChatBody<'_>,
    history: &[SessionMessage],
) -> Result<(), BodyError> {
    if history.is_empty() {
        return Ok(());
    }
    let mut items: Vec<Value> = history
        .iter()
        .map(|h| json!({"role": h.role, "content": h.content}))
        .collect();
    match get_value(body, "input")? {
        Some(Value::String(s)) => items.push(json!({"role": "user", "content": s})),
        Some(Value::Array(list)) => items.extend(list),
        _ => {}
    }
    set_value(body, "input", &Value::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> ChatBody<'static> {
        ChatBody::parse_object(json.as_bytes())
            .unwrap()
            .into_owned()
    }

    fn value(b: &ChatBody<'_>) -> Value {
        serde_json::from_slice(&b.to_json()).unwrap()
    }

    #[test]
    fn system_strategy_goes_into_instructions() {
        let mut b = body(r#"{"model":"m","instructions":"You are Codex.","input":"hi"}"#);
        inject(&mut b, "MEM", InjectionStrategy::System).unwrap();
        assert_eq!(value(&b)["instructions"], "MEM\n\nYou are Codex.");
        let mut b = body(r#"{"model":"m","input":"hi"}"#);
        inject(&mut b, "MEM", InjectionStrategy::System).unwrap();
        assert_eq!(value(&b)["instructions"], "MEM");
        assert_eq!(value(&b)["input"], "hi");
    }

    #[test]
    fn user_strategies_use_the_last_user_message() {
        let mut b = body(
            r#"{"model":"m","input":[
                {"type":"message","role":"user","content":[{"type":"input_text","text":"first"}]},
                {"type":"function_call_output","call_id":"c","output":"x"},
                {"role":"user","content":"last"}]}"#,
        );
        inject(&mut b, "MEM", InjectionStrategy::UserPrefix).unwrap();
        assert_eq!(value(&b)["input"][2]["content"], "MEM\n\nlast");
        inject(&mut b, "MEM2", InjectionStrategy::UserSuffix).unwrap();
        assert_eq!(value(&b)["input"][2]["content"], "MEM\n\nlast\n\nMEM2");

        let mut b = body(r#"{"model":"m","input":"hi"}"#);
        inject(&mut b, "MEM", InjectionStrategy::UserSuffix).unwrap();
        assert_eq!(value(&b)["input"], "hi\n\nMEM");
    }

    #[test]
    fn history_goes_before_the_input() {
        let mut b = body(r#"{"model":"m","input":"again?"}"#);
        let history = vec![
            SessionMessage {
                role: "user".into(),
                content: "hello".into(),
                created_at_ms: 0,
            },
            SessionMessage {
                role: "assistant".into(),
                content: "hi there".into(),
                created_at_ms: 0,
            },
        ];
        prepend_history(&mut b, &history).unwrap();
        assert_eq!(
            value(&b)["input"],
            json!([{"role": "user", "content": "hello"},
                   {"role": "assistant", "content": "hi there"},
                   {"role": "user", "content": "again?"}])
        );
    }
}
