//! Running one memory tool call against the caller's own memory: each attempt bounded by
//! `timeout_per_tool`, a timed-out or failed attempt retried at most [`MAX_RETRIES`]
//! times, and every outcome, failures included, turned into the JSON text the model
//! reads as the call's result.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::defs::{self, Call, Tool, ToolError};
use crate::analytics::timefmt;
use crate::memory::{Memory, MemoryService, StoreError};

/// Retries of a timed-out or failed call (so three attempts at most).
pub const MAX_RETRIES: u32 = 2;
/// Characters of each memory a search returns; `memory_get` reads the rest.
const SEARCH_CHARS: usize = 2_000;
/// Characters of a memory `memory_get` returns at most.
const GET_CHARS: usize = 32_000;

/// Runs calls for one user.
pub struct Executor<'a> {
    pub memory: &'a MemoryService,
    /// The memory scopes searched, in order (the caller's, whatever the arguments say):
    /// the request's, then its user's outside any project when the config says so.
    pub scopes: &'a [&'a str],
    /// Longest wait for one attempt (`timeout_per_tool`).
    pub timeout: Duration,
}

/// What running a call produced.
pub struct Outcome {
    /// The tool result, as JSON text.
    pub content: String,
    /// `ok`, or the error's label (for logs).
    pub label: &'static str,
    /// Attempts made (0 when the arguments were unusable).
    pub attempts: u32,
    /// Time taken, retries included.
    pub duration: Duration,
}

impl Executor<'_> {
    /// Runs `tool` with the model's `arguments`. Never fails: an error is the result.
    pub async fn execute(&self, tool: Tool, arguments: &str) -> Outcome {
        let started = Instant::now();
        let (result, attempts) = match defs::parse(tool, arguments) {
            Ok(call) => self.with_retries(&call).await,
            Err(e) => (Err(e), 0),
        };
        let (value, label) = match result {
            Ok(v) => (v, "ok"),
            Err(e) => (e.to_result(tool), e.label()),
        };
        Outcome {
            content: value.to_string(),
            label,
            attempts,
            duration: started.elapsed(),
        }
    }

    async fn with_retries(&self, call: &Call) -> (Result<Value, ToolError>, u32) {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = match tokio::time::timeout(self.timeout, self.attempt(call)).await {
                Ok(r) => r,
                Err(_) => Err(ToolError::Timeout {
                    after: self.timeout,
                    attempts,
                }),
            };
            match result {
                Err(e) if e.retryable() && attempts <= MAX_RETRIES => continue,
                other => return (other, attempts),
            }
        }
    }

    async fn attempt(&self, call: &Call) -> Result<Value, ToolError> {
        match call {
            Call::Search { query, limit } => {
                let groups = self
                    .memory
                    .try_search_in(self.scopes, query, *limit)
                    .await
                    .map_err(store_error)?;
                let results: Vec<Value> = groups
                    .iter()
                    .flatten()
                    .take(*limit)
                    .map(|h| {
                        let mut v = memory_json(&h.memory, SEARCH_CHARS);
                        v["score"] = json!((h.score * 1000.0).round() / 1000.0);
                        v
                    })
                    .collect();
                Ok(json!({"query": query, "results": results}))
            }
            Call::Get { id } => match self.get(id).await {
                Ok(m) => {
                    let mut v = memory_json(&m, GET_CHARS);
                    v["metadata"] = Value::Object(m.metadata.clone());
                    if let Some(s) = &m.session_id {
                        v["session_id"] = s.clone().into();
                    }
                    Ok(v)
                }
                Err(StoreError::NotFound) => Err(ToolError::NotFound(id.clone())),
                Err(e) => Err(store_error(e)),
            },
        }
    }
}

impl Executor<'_> {
    /// The memory `id` in the first of the scopes that has it.
    async fn get(&self, id: &str) -> Result<Memory, StoreError> {
        for scope in self.scopes {
            match self.memory.store().get(scope, id).await {
                Err(StoreError::NotFound) => continue,
                found => return found,
            }
        }
        Err(StoreError::NotFound)
    }
}

fn store_error(e: StoreError) -> ToolError {
    ToolError::Store(e.to_string())
}

/// A memory as the model reads it; content beyond `max_chars` is cut and marked.
fn memory_json(m: &Memory, max_chars: usize) -> Value {
    let mut v = json!({"id": m.id, "created_at": timefmt::format_ms(m.created_at_ms)});
    match m.content.char_indices().nth(max_chars) {
        Some((cut, _)) => {
            v["content"] = format!("{}…", &m.content[..cut]).into();
            v["truncated"] = true.into();
        }
        None => v["content"] = m.content.clone().into(),
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_memories_are_cut_on_a_character() {
        let m = Memory {
            id: "m1".into(),
            user_id: "u".into(),
            content: "é".repeat(10),
            metadata: Default::default(),
            session_id: None,
            created_at_ms: 0,
            created_at: 0,
        };
        let v = memory_json(&m, 4);
        assert_eq!(v["content"], "éééé…");
        assert_eq!(v["truncated"], true);
        let v = memory_json(&m, 10);
        assert_eq!(v["content"], "é".repeat(10));
        assert!(v.get("truncated").is_none());
    }
}
