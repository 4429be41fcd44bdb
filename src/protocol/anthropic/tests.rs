use serde_json::{json, Value};

use super::*;
use crate::protocol::chat::{ChatBody, ChatRequest};
use crate::protocol::ir::{SseEvent, StreamDecoder, StreamEncoder, StreamEvent};

fn to_chat(v: Value) -> ChatRequest {
    let body = request_to_chat(v.to_string().as_bytes()).unwrap();
    body.to_request().unwrap()
}

fn to_anthropic(v: Value) -> Value {
    let req: ChatRequest = serde_json::from_value(v).unwrap();
    serde_json::from_slice(&chat_to_request(&req, "claude-up")).unwrap()
}

fn json_of(req: &ChatRequest) -> Value {
    serde_json::to_value(req).unwrap()
}

#[test]
fn request_with_system_blocks_tools_and_tool_results() {
    let chat = to_chat(json!({
        "model": "claude-x",
        "max_tokens": 1000,
        "system": [
            {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Answer in English."}
        ],
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "need tool", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                 "content": [{"type": "text", "text": "clock broken"}]},
                {"type": "text", "text": "thanks"}
            ]}
        ],
        "tools": [
            {"name": "get_weather", "description": "Weather", "input_schema":
                {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"name": "get_time", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "temperature": 0.3, "top_p": 0.9, "top_k": 5,
        "stop_sequences": ["END"],
        "stream": true,
        "metadata": {"user_id": "u-42"},
        "thinking": {"type": "enabled", "budget_tokens": 2000}
    }));
    let v = json_of(&chat);
    assert_eq!(chat.model, "claude-x");
    assert_eq!(
        v["messages"],
        json!([
            {"role": "system", "content": "You are terse.\n\nAnswer in English."},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function",
                 "function": {"name": "get_time", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: clock broken"},
            {"role": "user", "content": "thanks"}
        ])
    );
    assert_eq!(
        v["tools"],
        json!([
            {"type": "function", "function": {"name": "get_weather", "description": "Weather",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
        ])
    );
    assert_eq!(v["tool_choice"], "required");
    assert_eq!(v["parallel_tool_calls"], false);
    assert_eq!(v["max_tokens"], 1000);
    assert_eq!(v["temperature"], 0.3);
    assert_eq!(v["top_p"], 0.9);
    assert_eq!(v["stop"], json!(["END"]));
    assert_eq!(v["stream"], true);
    assert_eq!(v["user"], "u-42");
    for dropped in [
        "top_k",
        "thinking",
        "metadata",
        "system",
        "reasoning_effort",
    ] {
        assert!(v.get(dropped).is_none(), "{dropped} should be dropped: {v}");
    }
}

#[test]
fn request_images_documents_and_tool_result_images() {
    let chat = to_chat(json!({
        "model": "m", "max_tokens": 10,
        "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "see image"},
                {"type": "image", "source": {"type": "url", "url": "https://x/shot.png"}}
            ]},
            {"type": "text", "text": "what is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "document", "title": "a.pdf",
             "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"}}
        ]}]
    }));
    let v = json_of(&chat);
    assert_eq!(
        v["messages"][0],
        json!({"role": "tool", "tool_call_id": "t1", "content": "see image"})
    );
    assert_eq!(
        v["messages"][1]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": "https://x/shot.png"}},
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
            {"type": "text", "text": "plain doc"}
        ])
    );
}

#[test]
fn request_tool_choice_variants() {
    let base = |choice: Value| {
        json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
               "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": choice})
    };
    let pick = |choice: Value| json_of(&to_chat(base(choice)))["tool_choice"].clone();
    assert_eq!(pick(json!({"type": "auto"})), "auto");
    assert_eq!(pick(json!({"type": "none"})), "none");
    assert_eq!(
        pick(json!({"type": "tool", "name": "f"})),
        json!({"type": "function", "function": {"name": "f"}})
    );
    // No tools: no tool_choice either (OpenAI rejects one without tools).
    let v = json_of(&to_chat(json!({"model": "m", "max_tokens": 1,
        "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "any"}})));
    assert!(v.get("tool_choice").is_none() && v.get("tools").is_none());
}

#[test]
fn system_messages_between_turns_keep_their_place() {
    // Claude Code 2.1 sends `role: system` messages inside `messages`.
    let v = json_of(&to_chat(
        json!({"model": "m", "max_tokens": 1, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "system", "content": "Available agent types: general"},
            {"role": "user", "content": "go"},
            {"role": "critic", "content": [{"type": "text", "text": "a newer role"}]}
        ]}),
    ));
    let roles: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "system", "user", "critic"]);
    assert_eq!(
        v["messages"][1]["content"],
        "Available agent types: general"
    );
}

#[test]
fn request_errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("{nope", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        (r#"{"max_tokens":1,"messages":[{"role":"user","content":"x"}]}"#, "missing required field `model`"),
        (r#"{"model":"m","max_tokens":1}"#, "missing required field `messages`"),
        (r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#, "missing required field `max_tokens`"),
        (r#"{"model":"m","max_tokens":1,"messages":[]}"#, "`messages`: must not be empty"),
        (r#"{"model":"","max_tokens":1,"messages":[{"role":"user","content":"x"}]}"#, "`model`"),
        (r#"{"model":"m","max_tokens":"1","messages":[{"role":"user","content":"x"}]}"#, "`max_tokens`"),
        (r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":5}]}"#, "`messages[0].content`: invalid type: integer `5`, expected a string or an array of content blocks"),
        (r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"text":"x"}]}]}"#, "`messages[0].content[0]`: missing field `type`"),
        (r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result"}]}]}"#, "`messages[0].content[0].tool_use_id`"),
        (r#"{"model":"m","max_tokens":1,"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t"}]}]}"#, "`messages[0].content[0].name`"),
        (r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f"}],"tool_choice":{"type":"tool"}}"#, "`tool_choice.name`"),
        (r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}]} x"#, "not valid JSON"),
    ];
    for (input, want) in cases {
        let err = request_to_chat(input.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(want), "{input}: {err}");
    }
}

#[test]
fn chat_to_request_translates_roles_tools_and_images() {
    let v = to_anthropic(json!({
        "model": "alias",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": "first"},
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AA="}},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "not json"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "two"}]},
            {"role": "user", "content": "and?"},
            {"role": "assistant", "content": "So far: "}
        ],
        "tools": [{"type": "function", "function": {"name": "f", "description": "F",
                   "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}},
                  {"type": "function", "function": {"name": "g"}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": false,
        "max_completion_tokens": 300,
        "stop": "STOP",
        "stream": true,
        "temperature": 0.1,
        "user": "alice",
        "n": 1
    }));
    assert_eq!(v["model"], "claude-up");
    assert_eq!(v["system"], "Be brief.\n\nUse tools.");
    assert_eq!(
        v["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "first"},
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AA="}},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
                {"type": "tool_use", "id": "c2", "name": "g", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "one"}]},
                {"type": "tool_result", "tool_use_id": "c2", "content": [{"type": "text", "text": "two"}]},
                {"type": "text", "text": "and?"}
            ]},
            {"role": "assistant", "content": [{"type": "text", "text": "So far:"}]}
        ])
    );
    assert_eq!(
        v["tools"],
        json!([
            {"name": "f", "description": "F",
             "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}}}},
            {"name": "g", "input_schema": {"type": "object", "properties": {}}}
        ])
    );
    assert_eq!(
        v["tool_choice"],
        json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true})
    );
    assert_eq!(v["max_tokens"], 300);
    assert_eq!(v["stop_sequences"], json!(["STOP"]));
    assert_eq!(v["stream"], true);
    assert_eq!(v["temperature"], 0.1);
    assert_eq!(v["metadata"], json!({"user_id": "alice"}));
    assert!(v.get("n").is_none() && v.get("user").is_none());
}

#[test]
fn chat_to_request_defaults_thinking_and_cache_control() {
    let v = to_anthropic(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "big prompt",
                                            "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello", "reasoning_content": "hmm",
             "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "s1"}]},
            {"role": "user", "content": "again"}
        ],
        "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": {"type": "ephemeral"}}],
        "reasoning_effort": "medium",
        "temperature": 0.5
    }));
    assert_eq!(
        v["system"],
        json!([{"type": "text", "text": "big prompt", "cache_control": {"type": "ephemeral"}}])
    );
    assert_eq!(
        v["messages"][1]["content"],
        json!([{"type": "thinking", "thinking": "hmm", "signature": "s1"},
               {"type": "text", "text": "hello"}])
    );
    assert_eq!(v["tools"][0]["cache_control"], json!({"type": "ephemeral"}));
    assert!(v.get("tool_choice").is_none());
    assert_eq!(
        v["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    assert_eq!(v["max_tokens"], DEFAULT_MAX_TOKENS);
    assert!(v.get("temperature").is_none());
    assert!(v.get("stream").is_none());

    let v = to_anthropic(json!({"model": "m", "max_tokens": 100,
        "messages": [{"role": "user", "content": "x"}], "stop": ["a", "b"]}));
    assert_eq!(v["max_tokens"], 100);
    assert_eq!(v["stop_sequences"], json!(["a", "b"]));
    assert!(v.get("system").is_none() && v.get("tools").is_none());
}

#[test]
fn anthropic_request_survives_the_round_trip_through_chat() {
    let original = json!({
        "model": "m", "max_tokens": 50, "system": "sys",
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": [1, 2]}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]}
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}]
    });
    let chat = to_chat(original);
    let back: Value = serde_json::from_slice(&chat_to_request(&chat, "m")).unwrap();
    assert_eq!(back["system"], "sys");
    assert_eq!(back["max_tokens"], 50);
    assert_eq!(
        back["messages"][1]["content"][1],
        json!({"type": "tool_use", "id": "t1", "name": "f", "input": {"x": [1, 2]}})
    );
    assert_eq!(
        back["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}]})
    );
}

#[test]
fn native_body_keeps_everything_but_the_model() {
    let src = br#"{"model":"claude-alias","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}]}],"thinking":{"type":"enabled","budget_tokens":1024},"metadata":{"user_id":"u"}}"#;
    let native = ChatBody::parse_object(src).unwrap();
    let out = native_with_model(&native, "claude-sonnet-4-5");
    let v: Value = serde_json::from_slice(&out).unwrap();
    let mut want: Value = serde_json::from_slice(src).unwrap();
    want["model"] = "claude-sonnet-4-5".into();
    assert_eq!(v, want);
}

const MESSAGE: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-up",
  "content":[{"type":"thinking","thinking":"Let me see.","signature":"sig=="},
             {"type":"text","text":"Calling "},{"type":"text","text":"now."},
             {"type":"tool_use","id":"toolu_9","name":"lookup","input":{"q":"rust","n":3}}],
  "stop_reason":"tool_use","stop_sequence":null,
  "usage":{"input_tokens":10,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":20}}"#;

#[test]
fn completion_decodes_blocks_reasons_and_usage() {
    let c = decode_completion(MESSAGE.as_bytes()).unwrap();
    assert_eq!(c.id, "msg_01");
    assert_eq!(c.model, "claude-up");
    assert_eq!(c.text, "Calling now.");
    assert_eq!(c.reasoning.as_deref(), Some("Let me see."));
    assert_eq!(c.reasoning_signature.as_deref(), Some("sig=="));
    assert_eq!(
        c.tool_calls,
        vec![ir::ToolCall {
            id: "toolu_9".into(),
            name: "lookup".into(),
            arguments: r#"{"q":"rust","n":3}"#.into()
        }]
    );
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        c.usage,
        ir::Usage {
            input_tokens: 115,
            output_tokens: 20,
            cached_input_tokens: 100,
            cache_creation_input_tokens: 5,
            reasoning_tokens: 0
        }
    );
    for (reason, want) in [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("refusal", FinishReason::ContentFilter),
        ("pause_turn", FinishReason::Other("pause_turn".into())),
    ] {
        let body = format!(
            r#"{{"content":[],"stop_reason":"{reason}","usage":{{"input_tokens":1,"output_tokens":1,"cache_read_input_tokens":null}}}}"#
        );
        assert_eq!(
            decode_completion(body.as_bytes()).unwrap().finish_reason,
            Some(want)
        );
    }
    assert!(decode_completion(b"{\"content\":5}").is_err());
}

#[test]
fn completion_encodes_the_anthropic_shape() {
    let c = decode_completion(MESSAGE.as_bytes()).unwrap();
    let v: Value = serde_json::from_slice(&encode_completion(&c)).unwrap();
    assert_eq!(
        v,
        json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-up",
               "content": [
                   {"type": "thinking", "thinking": "Let me see.", "signature": "sig=="},
                   {"type": "text", "text": "Calling now."},
                   {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"q": "rust", "n": 3}}
               ],
               "stop_reason": "tool_use", "stop_sequence": null,
               "usage": {"input_tokens": 10, "cache_creation_input_tokens": 5,
                         "cache_read_input_tokens": 100, "output_tokens": 20}})
    );
    // An answer from another provider: fresh message id, finish reasons mapped.
    let c = Completion {
        id: "chatcmpl-1".into(),
        model: "gpt".into(),
        finish_reason: Some(FinishReason::Length),
        ..Default::default()
    };
    let v: Value = serde_json::from_slice(&encode_completion(&c)).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["content"], json!([{"type": "text", "text": ""}]));
}

fn named(event: &str, data: Value) -> SseEvent {
    SseEvent::named(event, data.to_string())
}

/// A stream as Anthropic sends it: text, then a tool call in two pieces.
fn wire_stream() -> Vec<SseEvent> {
    vec![
        named(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_s", "type": "message",
            "role": "assistant", "model": "claude-up", "content": [], "stop_reason": null,
            "usage": {"input_tokens": 12, "cache_read_input_tokens": 3, "output_tokens": 1}}}),
        ),
        named(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        named("ping", json!({"type": "ping"})),
        named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "Let me check."}}),
        ),
        named(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        named(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {}}}),
        ),
        named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ),
        named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
        ),
        named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        ),
        named(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        named(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 30}}),
        ),
        named("message_stop", json!({"type": "message_stop"})),
    ]
}

#[test]
fn stream_decodes_text_tools_and_usage() {
    let mut d = EventDecoder::default();
    let mut evs = Vec::new();
    let wire = wire_stream();
    for (i, ev) in wire.iter().enumerate() {
        let done = d.decode(ev, &mut evs).unwrap();
        assert_eq!(done, i == wire.len() - 1);
    }
    let usage_start = ir::Usage {
        input_tokens: 15,
        output_tokens: 1,
        cached_input_tokens: 3,
        ..Default::default()
    };
    assert_eq!(
        evs,
        vec![
            StreamEvent::Start {
                id: "msg_s".into(),
                model: "claude-up".into()
            },
            StreamEvent::Usage(usage_start),
            StreamEvent::Text("Let me check.".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "toolu_1".into(),
                name: "get".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                arguments: "{\"city\":".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                arguments: "\"Paris\"}".into()
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(ir::Usage {
                output_tokens: 30,
                ..usage_start
            }),
        ]
    );
}

#[test]
fn stream_decodes_thinking_and_reports_errors() {
    let mut d = EventDecoder::default();
    let mut evs = Vec::new();
    for ev in [
        named(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": ""}}),
        ),
        named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        ),
        named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "signature_delta", "signature": "EqQ="}}),
        ),
        named("some_future_event", json!({"type": "some_future_event"})),
    ] {
        assert!(!d.decode(&ev, &mut evs).unwrap());
    }
    assert_eq!(
        evs,
        vec![
            StreamEvent::Reasoning("hmm".into()),
            StreamEvent::ReasoningSignature("EqQ=".into())
        ]
    );
    let err = d
        .decode(
            &named("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})),
            &mut evs,
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "overloaded_error: Overloaded");
    assert!(d
        .decode(&SseEvent::named("x", "not json"), &mut evs)
        .is_err());
}

fn names(out: &[SseEvent]) -> Vec<&str> {
    out.iter()
        .map(|e| e.event.as_deref().unwrap_or(""))
        .collect()
}

fn data(e: &SseEvent) -> Value {
    serde_json::from_slice(&e.data).unwrap()
}

#[test]
fn stream_encodes_the_exact_event_sequence() {
    let mut e = EventEncoder::new("alias");
    let mut out = Vec::new();
    let irs = [
        StreamEvent::Start {
            id: "chatcmpl-1".into(),
            model: "gpt-up".into(),
        },
        StreamEvent::Reasoning("think".into()),
        StreamEvent::ReasoningSignature("sig".into()),
        StreamEvent::Text("Hel".into()),
        StreamEvent::Text("lo".into()),
        StreamEvent::ToolCallStart {
            index: 0,
            id: "call_1".into(),
            name: "f".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            arguments: "{\"a\":".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            arguments: "1}".into(),
        },
        StreamEvent::Finish(FinishReason::ToolCalls),
        StreamEvent::Usage(ir::Usage {
            input_tokens: 9,
            output_tokens: 4,
            cached_input_tokens: 2,
            ..Default::default()
        }),
    ];
    // Each event is written as soon as it is encoded.
    e.encode(&irs[0], &mut out);
    assert_eq!(names(&out), ["message_start"]);
    for ev in &irs[1..] {
        e.encode(ev, &mut out);
    }
    e.finish(&mut out);
    assert_eq!(
        names(&out),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let start = data(&out[0]);
    assert!(start["message"]["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["message"]["model"], "gpt-up");
    assert_eq!(start["message"]["usage"]["input_tokens"], 0);
    assert_eq!(
        data(&out[1]),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}})
    );
    assert_eq!(
        data(&out[3])["delta"],
        json!({"type": "signature_delta", "signature": "sig"})
    );
    assert_eq!(
        data(&out[9]),
        json!({"type": "content_block_start", "index": 2,
               "content_block": {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}})
    );
    assert_eq!(
        data(&out[10]),
        json!({"type": "content_block_delta", "index": 2,
               "delta": {"type": "input_json_delta", "partial_json": "{\"a\":"}})
    );
    assert_eq!(
        data(&out[13]),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"input_tokens": 7, "cache_creation_input_tokens": 0,
                         "cache_read_input_tokens": 2, "output_tokens": 4}})
    );

    // What the encoder wrote decodes back to what it was given.
    let mut d = EventDecoder::default();
    let mut back = Vec::new();
    let mut done = false;
    for ev in &out {
        done = d.decode(ev, &mut back).unwrap();
    }
    assert!(done);
    let mut want = irs.to_vec();
    want.insert(1, StreamEvent::Usage(ir::Usage::default()));
    if let StreamEvent::Start { id, .. } = &mut want[0] {
        *id = start["message"]["id"].as_str().unwrap().to_string();
    }
    assert_eq!(back, want);
}

#[test]
fn stream_encoder_without_start_or_content_still_frames_a_message() {
    let mut e = EventEncoder::new("alias");
    let mut out = Vec::new();
    e.finish(&mut out);
    assert_eq!(
        names(&out),
        ["message_start", "message_delta", "message_stop"]
    );
    assert_eq!(data(&out[0])["message"]["model"], "alias");
    assert_eq!(data(&out[1])["delta"]["stop_reason"], "end_turn");
}

#[test]
fn stream_failure_is_an_error_event() {
    let mut e = EventEncoder::new("m");
    let mut out = Vec::new();
    e.encode(&StreamEvent::Text("partial".into()), &mut out);
    let info = |status: u16, kind: &str| ErrorInfo {
        status,
        message: "boom".into(),
        kind: kind.into(),
        code: None,
    };
    e.fail(&info(502, "api_connection_error"), &mut out);
    let last = out.last().unwrap();
    assert_eq!(last.event.as_deref(), Some("error"));
    assert_eq!(
        data(last),
        json!({"type": "error", "error": {"type": "api_error", "message": "boom"}})
    );
    let mut out = Vec::new();
    e.fail(&info(529, "overloaded_error"), &mut out);
    assert_eq!(data(&out[0])["error"]["type"], "overloaded_error");
    let mut out = Vec::new();
    e.fail(&info(504, "timeout_error"), &mut out);
    assert_eq!(data(&out[0])["error"]["type"], "timeout_error");
}

#[test]
fn error_bodies_by_status_and_parsed_back() {
    for (status, kind) in [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (504, "api_error"),
        (529, "overloaded_error"),
    ] {
        let body = error_json(status, "why");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": kind, "message": "why"}})
        );
        assert_eq!(
            parse_error(&body),
            Some(UpstreamError {
                kind: kind.into(),
                message: "why".into()
            })
        );
    }
    assert_eq!(status_for_error_type("overloaded_error"), 529);
    assert_eq!(status_for_error_type("rate_limit_error"), 429);
    assert_eq!(
        parse_error(br#"{"error":{"message":"openai shape"}}"#),
        None
    );
    assert_eq!(parse_error(b"<html>"), None);
}
