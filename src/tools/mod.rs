//! Memory tools (SPEC §4, `tool_execution`): memproxy offers the model `memory_search`
//! and `memory_get`, runs the calls the model makes against the caller's own memory, and
//! calls the model again with the results, round after round, until it answers, calls a
//! tool of the client's, or `max_iterations` rounds are spent (then one last call, with
//! `tool_choice: none`, must answer in text). The client sees only that last answer:
//! memproxy's rounds and its tool calls are hidden, the client's own tool calls come back
//! untouched for the client to run.
//!
//! The loop works on the internal representation: the client's native body is dropped
//! (every provider translates from the chat shape), and every round is asked for
//! unstreamed; a streaming client gets the last answer as a stream in its own format.
//!
//! # Layout
//! - [`defs`]: the tools' definitions and names, and reading a call's arguments.
//! - [`exec`]: running one call (timeout, retries) into the result the model reads.
//! - [`answer`]: the answer handed back to the pipeline.

pub mod answer;
pub mod defs;
pub mod exec;

use std::collections::HashSet;

use futures_util::future::join_all;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::config::ToolSettings;
use crate::memory::{inject, MemoryService};
use crate::protocol;
use crate::protocol::chat::{
    BodyError, ChatBody, ChatMessage, Content, FunctionCall, WireToolCall,
};
use crate::protocol::ir::{Completion, ToolCall, Usage};
use crate::providers::{CallContext, LlmRequest, ProviderError, Reply};
use crate::routing::{ModelRouter, RouteError, Routed};
use defs::Tool;
use exec::Executor;

/// Why the loop could not answer. Tool failures are not among these: they go back to
/// the model as results.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// A model call failed (after the router's retries and fallbacks).
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The request's messages or tools could not be read or rewritten.
    #[error(transparent)]
    Body(#[from] BodyError),
}

/// Whether the memory tools run for `req`: `tool_execution` is on for its model, and the
/// client did not forbid tool calls (`tool_choice: none`).
pub fn applies(settings: &ToolSettings, req: &LlmRequest<'_>) -> bool {
    settings.enabled
        && inject::model_listed(&settings.enabled_for_models, req.model())
        && req.chat.get("tool_choice").map(RawValue::get) != Some(r#""none""#)
}

/// The loop for one request.
pub struct ToolLoop<'a> {
    /// `tool_execution`: rounds at most, the timeout of each call.
    pub settings: &'a ToolSettings,
    /// Makes each round's model call (with its retries and fallbacks).
    pub router: &'a ModelRouter,
    /// The memory the calls search.
    pub memory: &'a MemoryService,
    /// The store keys the calls read, in order: the request's memory scope
    /// ([`crate::memory::scope::Scope::key`]), then, for a project with
    /// `project_then_user`, its user's memories outside any project; never beyond.
    pub scopes: &'a [&'a str],
    /// The client asked for the final usage chunk of a stream (OpenAI chat clients).
    pub include_usage: bool,
}

/// The loop's answer and what it took.
pub struct Looped {
    /// The answer, as a reply of the deployment that made the last round.
    pub routed: Routed<Reply>,
    /// Rounds of memory tool calls memproxy ran (0: the model answered at once).
    pub rounds: u32,
}

impl ToolLoop<'_> {
    /// Answers `req` (see the module docs). The request's native body is dropped and its
    /// stream flag cleared; [`ToolLoop::scopes`] are the memory scopes.
    pub async fn run(
        &self,
        req: &mut LlmRequest<'_>,
        call: &CallContext<'_>,
    ) -> Result<Looped, LoopError> {
        let stream = req.chat.stream;
        req.native = None;
        unstream(&mut req.chat)?;
        let client_tools = add_definitions(&mut req.chat)?;
        // A memory tool's name, unless the client defined a tool of that name itself.
        let ours = |name: &str| Tool::named(name).filter(|_| !client_tools.contains(name));
        let mut messages = inject::messages_of(&req.chat)?;
        let mut usage = Usage::default();
        let mut attempts = 0;
        let mut rounds = 0;
        loop {
            let last = rounds == self.settings.max_iterations;
            if last {
                set(&mut req.chat, "tool_choice", r#""none""#)?;
            }
            let routed = self.router.chat(req, call).await?;
            attempts += routed.attempts;
            let (body, format) = match routed.value {
                Reply::Complete { body, format } => (body, format),
                // Not asked for; passed on as it is.
                streamed @ Reply::Stream { .. } => {
                    let routed = Routed {
                        value: streamed,
                        attempts,
                        ..routed
                    };
                    return Ok(Looped { routed, rounds });
                }
            };
            let mut answer = protocol::decode_completion(format, &body)
                .map_err(|e| RouteError::Provider(ProviderError::BadResponse(e.0)))?;
            answer::add_usage(&mut usage, &answer.usage);
            let mine: Vec<(Tool, ToolCall)> = answer
                .tool_calls
                .iter()
                .filter_map(|tc| ours(&tc.name).map(|t| (t, tc.clone())))
                .collect();
            let theirs = answer.tool_calls.len() - mine.len();
            if mine.is_empty() || theirs > 0 || last {
                let value = if rounds == 0 && mine.is_empty() && !stream {
                    // The model answered at once: its answer as the upstream sent it.
                    Reply::Complete { body, format }
                } else {
                    if !mine.is_empty() {
                        tracing::debug!(
                            request_id = %call.request_id,
                            dropped = mine.len(),
                            client_calls = theirs,
                            "memory tool calls not run: the answer goes to the client"
                        );
                    }
                    answer::strip_calls(&mut answer, |tc| ours(&tc.name).is_some());
                    answer.usage = usage;
                    answer::reply(&answer, format, stream, self.include_usage)
                };
                let routed = Routed {
                    value,
                    attempts,
                    ..routed
                };
                return Ok(Looped { routed, rounds });
            }
            rounds += 1;
            let turns = self.run_calls(&answer, mine, rounds, call).await;
            messages.extend(turns);
            inject::set_messages(&mut req.chat, &messages)?;
        }
    }

    /// Runs one round's memory tool calls concurrently; returns the turns that go back to
    /// the model: the assistant turn that made the calls and one `tool` message each.
    async fn run_calls(
        &self,
        answer: &Completion,
        mut calls: Vec<(Tool, ToolCall)>,
        round: u32,
        call: &CallContext<'_>,
    ) -> Vec<ChatMessage> {
        for (i, (_, tc)) in calls.iter_mut().enumerate() {
            if tc.id.is_empty() {
                tc.id = format!("memproxy_{round}_{i}");
            }
        }
        let executor = Executor {
            memory: self.memory,
            scopes: self.scopes,
            timeout: self.settings.timeout_per_tool,
        };
        let outcomes = join_all(
            calls
                .iter()
                .map(|(tool, tc)| executor.execute(*tool, &tc.arguments)),
        )
        .await;
        let mut turns = Vec::with_capacity(calls.len() + 1);
        turns.push(assistant_turn(answer, calls.iter().map(|(_, tc)| tc)));
        for ((_, tc), out) in calls.iter().zip(outcomes) {
            tracing::debug!(
                request_id = %call.request_id,
                round,
                tool = %tc.name,
                duration_ms = out.duration.as_secs_f64() * 1000.0,
                attempts = out.attempts,
                outcome = out.label,
                "memory tool call"
            );
            turns.push(ChatMessage {
                role: "tool".into(),
                tool_call_id: Some(tc.id.clone()),
                content: Some(Content::Text(out.content)),
                ..Default::default()
            });
        }
        turns
    }
}

/// Rounds are asked for whole: `stream` off, and `stream_options` (only valid with a
/// stream) removed.
fn unstream(body: &mut ChatBody<'_>) -> Result<(), BodyError> {
    if body.stream {
        set(body, "stream", "false")?;
        body.stream = false;
        body.remove("stream_options");
    }
    Ok(())
}

/// Adds the memory tools to the request's `tools`; returns the names of the client's
/// own tools (a client tool named like a memory tool stays the client's).
fn add_definitions(body: &mut ChatBody<'_>) -> Result<HashSet<String>, BodyError> {
    let mut tools: Vec<Value> = match body.get("tools").map(RawValue::get) {
        None | Some("null") => Vec::new(),
        Some(raw) => serde_json::from_str(raw).map_err(|_| BodyError::WrongType {
            field: "tools",
            expected: "must be an array of tools",
        })?,
    };
    let client: HashSet<String> = tools
        .iter()
        .filter_map(|t| t["function"]["name"].as_str().or(t["name"].as_str()))
        .map(str::to_string)
        .collect();
    let taken: Vec<String> = client.iter().cloned().collect();
    tools.extend(defs::definitions(&taken));
    set(body, "tools", &Value::Array(tools).to_string())?;
    Ok(client)
}

/// The assistant turn that made memproxy's calls (the client's calls are never in it:
/// a round with those ends the loop). Anthropic thinking, when signed, goes back with
/// it, as Anthropic requires for a tool-use turn.
fn assistant_turn<'c>(
    answer: &Completion,
    calls: impl Iterator<Item = &'c ToolCall>,
) -> ChatMessage {
    let thinking_blocks = answer.reasoning_signature.as_ref().map(|sig| {
        vec![json!({"type": "thinking",
                    "thinking": answer.reasoning.as_deref().unwrap_or_default(),
                    "signature": sig})]
    });
    ChatMessage {
        role: "assistant".into(),
        content: (!answer.text.is_empty()).then(|| Content::Text(answer.text.clone())),
        tool_calls: Some(
            calls
                .map(|tc| WireToolCall {
                    id: tc.id.clone(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: tc.name.clone(),
                        arguments: if tc.arguments.trim().is_empty() {
                            "{}".into()
                        } else {
                            tc.arguments.clone()
                        },
                    },
                })
                .collect(),
        ),
        thinking_blocks,
        ..Default::default()
    }
}

fn set(body: &mut ChatBody<'_>, key: &str, json: &str) -> Result<(), BodyError> {
    let raw =
        RawValue::from_string(json.to_string()).map_err(|e| BodyError::Json(e.to_string()))?;
    body.set(key, raw);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> ChatBody<'static> {
        ChatBody::parse(json.as_bytes()).unwrap().into_owned()
    }

    #[test]
    fn tools_are_added_beside_the_clients() {
        let mut b = body(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],
                "tools":[{"type":"function","function":{"name":"get_weather","parameters":{}}},
                         {"type":"function","function":{"name":"memory_get","parameters":{}}}]}"#,
        );
        let client = add_definitions(&mut b).unwrap();
        assert_eq!(client.len(), 2);
        let tools: Vec<Value> = serde_json::from_str(b.get("tools").unwrap().get()).unwrap();
        let names: Vec<&str> = tools
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        // The client's memory_get stays the client's: not defined twice.
        assert_eq!(names, ["get_weather", "memory_get", "memory_search"]);

        let mut b = body(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        assert!(add_definitions(&mut b).unwrap().is_empty());
        let tools: Vec<Value> = serde_json::from_str(b.get("tools").unwrap().get()).unwrap();
        assert_eq!(tools.len(), 2);
    }

    #[test]
    fn rounds_are_not_streamed() {
        let mut b = body(
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
        );
        unstream(&mut b).unwrap();
        assert!(!b.stream);
        assert_eq!(b.get("stream").unwrap().get(), "false");
        assert!(b.get("stream_options").is_none());
    }

    #[test]
    fn forbidding_tools_turns_the_loop_off() {
        let settings = ToolSettings {
            enabled: true,
            max_iterations: 3,
            timeout_per_tool: std::time::Duration::from_secs(1),
            enabled_for_models: vec!["claude-*".into()],
        };
        let req = |json: &str| LlmRequest::chat(body(json));
        let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
        assert!(applies(
            &settings,
            &req(&format!(r#"{{"model":"claude-x",{msgs}}}"#))
        ));
        assert!(!applies(
            &settings,
            &req(&format!(r#"{{"model":"gpt-x",{msgs}}}"#))
        ));
        assert!(!applies(
            &settings,
            &req(&format!(
                r#"{{"model":"claude-x","tool_choice":"none",{msgs}}}"#
            ))
        ));
    }

    #[test]
    fn signed_thinking_goes_back_with_the_calls() {
        let answer = Completion {
            reasoning: Some("look it up".into()),
            reasoning_signature: Some("sig".into()),
            ..Default::default()
        };
        let calls = [ToolCall {
            id: "c1".into(),
            name: "memory_search".into(),
            arguments: String::new(),
        }];
        let m = assistant_turn(&answer, calls.iter());
        assert!(m.content.is_none());
        let tc = &m.tool_calls.as_ref().unwrap()[0];
        assert_eq!(tc.function.arguments, "{}");
        assert_eq!(m.thinking_blocks.unwrap()[0]["signature"], "sig");
    }
}
