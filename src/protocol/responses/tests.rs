use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::protocol::chat::ChatBody;
use crate::protocol::ir::{
    ErrorInfo, FinishReason, SseEvent, StreamDecoder, StreamEncoder, StreamEvent, ToolCall, Usage,
};

fn to_chat(v: Value) -> (Value, Translated) {
    let bytes = v.to_string();
    let req = parse_request(bytes.as_bytes()).unwrap();
    let t = request_to_chat(&req, None).unwrap();
    let chat: Value = serde_json::from_slice(&t.chat.to_json()).unwrap();
    (chat, t)
}

#[test]
fn codex_style_request_to_chat() {
    let (chat, t) = to_chat(json!({
        "model": "claude",
        "instructions": "You are Codex.",
        "input": [
            {"type": "message", "role": "developer",
             "content": [{"type": "input_text", "text": "Sandbox: read-only."}]},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "List files"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "foreign"}],
             "encrypted_content": "gAAAA-opaque"},
            {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "I should run ls"}],
             "encrypted_content": format!("{ANTHROPIC_SIGNATURE_PREFIX}sig-1")},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "Running ls."}]},
            {"type": "function_call", "call_id": "call_1", "name": "shell",
             "arguments": "{\"command\":[\"ls\"]}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
            {"type": "item_reference", "id": "x"}
        ],
        "tools": [
            {"type": "function", "name": "shell", "description": "Run a command", "strict": false,
             "parameters": {"type": "object", "properties": {"command": {"type": "array"}}}},
            {"type": "web_search"}
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": false,
        "stream": true,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "thread-1",
        "max_output_tokens": 500,
        "text": {"format": {"type": "json_schema", "name": "out", "strict": true,
                            "schema": {"type": "object"}}}
    }));
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "system", "content": "You are Codex."},
            {"role": "system", "content": "Sandbox: read-only."},
            {"role": "user", "content": "List files"},
            {"role": "assistant", "content": "Running ls.",
             "tool_calls": [{"id": "call_1", "type": "function",
                             "function": {"name": "shell", "arguments": "{\"command\":[\"ls\"]}"}}],
             "thinking_blocks": [{"type": "thinking", "thinking": "I should run ls", "signature": "sig-1"}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"}
        ])
    );
    assert_eq!(
        chat["tools"],
        json!([{"type": "function", "function": {"name": "shell", "description": "Run a command",
               "parameters": {"type": "object", "properties": {"command": {"type": "array"}}},
               "strict": false}}])
    );
    assert_eq!(t.dropped_tools, vec!["web_search".to_string()]);
    assert_eq!(chat["tool_choice"], "auto");
    assert_eq!(chat["parallel_tool_calls"], false);
    assert_eq!(chat["reasoning_effort"], "medium");
    assert_eq!(chat["max_tokens"], 500);
    assert_eq!(chat["stream"], true);
    assert_eq!(chat["prompt_cache_key"], "thread-1");
    assert_eq!(
        chat["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}})
    );
    assert!(chat.get("store").is_none() && chat.get("include").is_none());
    // The stored conversation keeps the items as sent.
    let items: Vec<Value> = serde_json::from_str(&t.items).unwrap();
    assert_eq!(items.len(), 8);
}

#[test]
fn string_input_images_and_tool_choice() {
    let (chat, t) = to_chat(json!({"model": "m", "input": "hello"}));
    assert_eq!(
        chat["messages"],
        json!([{"role": "user", "content": "hello"}])
    );
    assert_eq!(
        serde_json::from_str::<Value>(&t.items).unwrap(),
        json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}])
    );

    let (chat, _) = to_chat(json!({"model": "m",
        "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]}],
        "tools": [{"type": "function", "name": "f"}],
        "tool_choice": {"type": "function", "name": "f"}}));
    assert_eq!(
        chat["messages"][0]["content"],
        json!([{"type": "text", "text": "what is this?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}])
    );
    assert_eq!(
        chat["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    assert_eq!(
        chat["tools"][0]["function"]["parameters"],
        json!({"type": "object", "properties": {}})
    );

    // Only built-in tools: no tools and no tool_choice reach the chat upstream.
    let (chat, t) = to_chat(json!({"model": "m", "input": "x",
        "tools": [{"type": "web_search_preview"}], "tool_choice": "required"}));
    assert!(chat.get("tools").is_none() && chat.get("tool_choice").is_none());
    assert_eq!(t.dropped_tools, vec!["web_search_preview".to_string()]);
}

#[test]
fn bad_requests_name_the_field() {
    let cases: &[(Value, &str)] = &[
        (json!({"input": "x"}), "missing required field `model`"),
        (json!({"model": "m"}), "missing required field `input`"),
        (json!({"model": "m", "input": 5}), "invalid `input`"),
        (
            json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}),
            "input[0].role",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}),
            "input[0].call_id",
        ),
        (
            json!({"model": "m", "input": [{"role": "system", "content": "only system"}]}),
            "at least one message",
        ),
    ];
    for (body, want) in cases {
        let bytes = body.to_string();
        let err = match parse_request(bytes.as_bytes()) {
            Err(e) => e.to_string(),
            Ok(req) => match request_to_chat(&req, None) {
                Err(e) => e.to_string(),
                Ok(_) => String::from("accepted"),
            },
        };
        assert!(err.contains(want), "{body}: {err}");
    }
}

#[test]
fn previous_conversation_is_prepended() {
    let earlier = r#"[{"type":"message","role":"user","content":"hi"},{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"}]"#;
    let bytes = json!({"model": "m", "previous_response_id": "resp_1",
                       "input": [{"type": "function_call_output", "call_id": "c1", "output": "42"}]})
    .to_string();
    let req = parse_request(bytes.as_bytes()).unwrap();
    assert_eq!(req.previous_response_id(), Some("resp_1"));
    let t = request_to_chat(&req, Some(earlier)).unwrap();
    let chat: Value = serde_json::from_slice(&t.chat.to_json()).unwrap();
    let roles: Vec<&str> = chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool"]);
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&t.items).unwrap().len(),
        3
    );

    let body = ChatBody::parse_object(bytes.as_bytes()).unwrap();
    let items = r#"[{"type":"reasoning","id":"rs_1","summary":[]},{"type":"message","id":"msg_1","role":"assistant","content":[{"type":"output_text","text":"x"}]}]"#;
    let native: Value =
        serde_json::from_slice(&expand_for_native(&body, items).unwrap().to_json()).unwrap();
    assert!(native.get("previous_response_id").is_none());
    assert_eq!(
        native["input"],
        json!([{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "x"}]}])
    );
}

#[test]
fn echo_uses_request_values_and_defaults() {
    let body = ChatBody::parse_object(
        br#"{"model":"m","input":"x","instructions":"be brief","temperature":0.2,"store":false}"#,
    )
    .unwrap();
    let echo: Value = serde_json::from_str(&format!("{{{}}}", echo_fields(&body))).unwrap();
    assert_eq!(echo["instructions"], "be brief");
    assert_eq!(echo["temperature"], 0.2);
    assert_eq!(echo["store"], false);
    assert_eq!(echo["tools"], json!([]));
    assert_eq!(echo["tool_choice"], "auto");
}

fn completion() -> Completion {
    Completion {
        id: "chatcmpl-1".into(),
        model: "up-model".into(),
        created: 1,
        text: "Hello".into(),
        reasoning: Some("thinking…".into()),
        reasoning_signature: Some("sig".into()),
        tool_calls: vec![ToolCall {
            id: "call_9".into(),
            name: "f".into(),
            arguments: "{\"a\":1}".into(),
        }],
        finish_reason: Some(FinishReason::ToolCalls),
        usage: Usage {
            input_tokens: 10,
            output_tokens: 7,
            cached_input_tokens: 4,
            cache_creation_input_tokens: 0,
            reasoning_tokens: 3,
        },
    }
}

#[test]
fn completion_encodes_as_a_response_and_back() {
    let meta = ResponseMeta::bare("client-model");
    let v: Value = serde_json::from_slice(&encode_response(&meta, &completion())).unwrap();
    assert_eq!(v["id"], meta.id.as_str());
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "up-model");
    let output = v["output"].as_array().unwrap();
    assert_eq!(output[0]["type"], "reasoning");
    assert_eq!(output[0]["summary"][0]["text"], "thinking…");
    assert_eq!(
        output[0]["encrypted_content"],
        format!("{ANTHROPIC_SIGNATURE_PREFIX}sig")
    );
    assert_eq!(output[1]["content"][0]["text"], "Hello");
    assert_eq!(output[2]["type"], "function_call");
    assert_eq!(output[2]["call_id"], "call_9");
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
               "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 3},
               "total_tokens": 17})
    );
    assert_eq!(v["tool_choice"], "auto");

    let back = decode_completion(&encode_response(&meta, &completion())).unwrap();
    assert_eq!(back.text, "Hello");
    assert_eq!(back.reasoning.as_deref(), Some("thinking…"));
    assert_eq!(back.tool_calls, completion().tool_calls);
    assert_eq!(back.usage, completion().usage);
    assert_eq!(back.finish_reason, Some(FinishReason::ToolCalls));

    let mut cut = completion();
    cut.tool_calls.clear();
    cut.finish_reason = Some(FinishReason::Length);
    let v: Value = serde_json::from_slice(&encode_response(&meta, &cut)).unwrap();
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(
        decode_completion(&encode_response(&meta, &cut))
            .unwrap()
            .finish_reason,
        Some(FinishReason::Length)
    );
}

fn encode_all(events: &[StreamEvent]) -> Vec<SseEvent> {
    let mut enc = EventEncoder::new(Arc::new(ResponseMeta::bare("m")));
    let mut out = Vec::new();
    for ev in events {
        enc.encode(ev, &mut out);
    }
    enc.finish(&mut out);
    out
}

#[test]
fn stream_events_in_order_with_sequence_numbers() {
    let events = vec![
        StreamEvent::Start {
            id: "x".into(),
            model: "up".into(),
        },
        StreamEvent::Reasoning("hmm".into()),
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
        StreamEvent::Usage(Usage {
            input_tokens: 5,
            output_tokens: 6,
            ..Default::default()
        }),
    ];
    let out = encode_all(&events);
    let names: Vec<&str> = out.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, ev) in out.iter().enumerate() {
        let v: Value = serde_json::from_slice(&ev.data).unwrap();
        assert_eq!(v["sequence_number"], i, "{v}");
        assert_eq!(v["type"], ev.event.as_deref().unwrap());
    }
    let done: Value = serde_json::from_slice(&out.last().unwrap().data).unwrap();
    let r = &done["response"];
    assert_eq!(r["status"], "completed");
    assert_eq!(r["model"], "up");
    assert_eq!(r["output"].as_array().unwrap().len(), 3);
    assert_eq!(r["output"][1]["content"][0]["text"], "Hello");
    assert_eq!(r["output"][2]["arguments"], "{\"a\":1}");
    assert_eq!(r["usage"]["total_tokens"], 11);

    // Decoding the encoded stream gives back what went in.
    let mut dec = EventDecoder::default();
    let mut back = Vec::new();
    let mut ended = false;
    for ev in &out {
        ended = dec.decode(ev, &mut back).unwrap();
    }
    assert!(ended);
    let text: String = back
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Hello");
    assert!(back.contains(&StreamEvent::ToolCallStart {
        index: 0,
        id: "call_1".into(),
        name: "f".into()
    }));
    assert!(back.contains(&StreamEvent::Reasoning("hmm".into())));
    assert_eq!(
        back.last(),
        Some(&StreamEvent::Finish(FinishReason::ToolCalls))
    );
}

#[test]
fn length_ends_incomplete_and_failures_fail() {
    let out = encode_all(&[
        StreamEvent::Text("cut".into()),
        StreamEvent::Finish(FinishReason::Length),
    ]);
    let last: Value = serde_json::from_slice(&out.last().unwrap().data).unwrap();
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );

    let mut enc = EventEncoder::new(Arc::new(ResponseMeta::bare("m")));
    let mut out = Vec::new();
    enc.encode(&StreamEvent::Text("partial".into()), &mut out);
    enc.fail(
        &ErrorInfo {
            status: 502,
            message: "upstream went away".into(),
            kind: "api_error".into(),
            code: None,
        },
        &mut out,
    );
    let last: Value = serde_json::from_slice(&out.last().unwrap().data).unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["message"], "upstream went away");

    let mut dec = EventDecoder::default();
    let err = dec
        .decode(&out[out.len() - 1], &mut Vec::new())
        .unwrap_err();
    assert!(err.0.contains("upstream went away"), "{err}");
}

#[test]
fn decoder_takes_arguments_and_text_from_finished_items() {
    // Servers that send whole items without deltas.
    let mut dec = EventDecoder::default();
    let mut out = Vec::new();
    for data in [
        json!({"type": "response.created", "response": {"id": "resp_1", "model": "m"}}),
        json!({"type": "response.output_item.done", "output_index": 0,
               "item": {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}}),
        json!({"type": "response.output_item.added", "output_index": 1,
               "item": {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""}}),
        json!({"type": "response.output_item.done", "output_index": 1,
               "item": {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}}),
    ] {
        dec.decode(&SseEvent::data(data.to_string()), &mut out)
            .unwrap();
    }
    assert_eq!(
        out,
        vec![
            StreamEvent::Start {
                id: "resp_1".into(),
                model: "m".into()
            },
            StreamEvent::Text("Hi".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "c".into(),
                name: "f".into()
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                arguments: "{}".into()
            },
        ]
    );
}
