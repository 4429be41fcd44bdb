use super::*;
use crate::protocol::ir::{StreamDecoder as _, StreamEncoder as _};

fn translate(body: Value) -> Value {
    let bytes = serde_json::to_vec(&body).unwrap();
    let chat = ChatBody::parse(&bytes).unwrap();
    serde_json::from_slice(&chat_to_request(&chat).unwrap()).unwrap()
}

#[test]
fn request_roles_system_and_merging() {
    let v = translate(json!({"model": "m", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "three"},
        {"role": "user", "content": "four"},
    ]}));
    assert_eq!(
        v["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}, {"text": "No emoji."}]})
    );
    assert_eq!(
        v["contents"],
        json!([
            {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
            {"role": "model", "parts": [{"text": "three"}]},
            {"role": "user", "parts": [{"text": "four"}]},
        ])
    );
    assert!(v.get("generationConfig").is_none());
    assert!(v.get("tools").is_none());
}

#[test]
fn request_images() {
    let v = translate(
        json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
            {"type": "image_url", "image_url": {"url": "https://x.test/a/cat.WEBP?s=1"}},
            {"type": "image_url", "image_url": {"url": "https://x.test/photo"}},
        ]}]}),
    );
    let parts = &v["contents"][0]["parts"];
    assert_eq!(
        parts[0],
        json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}})
    );
    assert_eq!(
        parts[1],
        json!({"fileData": {"mimeType": "image/webp", "fileUri": "https://x.test/a/cat.WEBP?s=1"}})
    );
    assert_eq!(parts[2]["fileData"]["mimeType"], "image/jpeg");

    let bytes = serde_json::to_vec(
        &json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
    )
    .unwrap();
    let err = chat_to_request(&ChatBody::parse(&bytes).unwrap()).unwrap_err();
    assert!(err.to_string().starts_with("messages[0]:"), "{err}");
}

#[test]
fn request_tool_round_trip() {
    let v = translate(json!({"model": "m", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_2__ts__c2ln-_w", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2__ts__c2ln-_w", "content": [{"type": "text", "text": "noon"}]},
        {"role": "user", "content": "thanks"},
    ]}));
    let c = &v["contents"];
    assert_eq!(c.as_array().unwrap().len(), 3);
    assert_eq!(c[1]["role"], "model");
    assert_eq!(
        c[1]["parts"][0],
        json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}})
    );
    assert_eq!(
        c[1]["parts"][1],
        json!({"functionCall": {"name": "get_time", "args": {}}, "thoughtSignature": "c2ln+/w="})
    );
    assert_eq!(c[2]["role"], "user");
    assert_eq!(
        c[2]["parts"],
        json!([
            {"functionResponse": {"name": "get_weather", "response": {"content": "18C"}}},
            {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
            {"text": "thanks"},
        ])
    );

    let bytes = serde_json::to_vec(&json!({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "tool", "tool_call_id": "nope", "content": "r"}]}))
    .unwrap();
    let err = chat_to_request(&ChatBody::parse(&bytes).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "messages[1]: tool result `nope` answers no earlier tool call"
    );
}

#[test]
fn request_tools_config_and_schema_cleaning() {
    let v = translate(json!({
        "model": "m", "messages": [{"role": "user", "content": "x"}],
        "tools": [
            {"type": "function", "function": {"name": "lookup", "description": "Find", "strict": true,
             "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                "additionalProperties": false,
                "properties": {
                    "q": {"type": ["string", "null"], "format": "uri", "description": "query"},
                    "where": {"$ref": "#/$defs/Place"},
                    "tags": {"type": "array", "items": {"type": "string", "additionalProperties": false}},
                    "kind": {"const": "exact"},
                    "level": {"type": "integer", "enum": [1, 2, null]},
                    "home": {"allOf": [{"$ref": "#/$defs/Place"}], "description": "Home town"},
                    "any": {"oneOf": [{"type": "integer", "format": "int64"}, {"type": "string"}]}
                },
                "required": ["q"],
                "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": false}}}}},
            {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
            {"type": "web_search"}
        ],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "temperature": 0.3, "top_p": 0.9, "max_tokens": 100, "max_completion_tokens": 200,
        "stop": "END", "n": 1, "seed": 7,
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "strict": true,
            "schema": {"type": "object", "properties": {"a": {"type": "number"}}, "additionalProperties": false}}}
    }));
    let decls = &v["tools"][0]["functionDeclarations"];
    assert_eq!(decls.as_array().unwrap().len(), 2);
    assert_eq!(
        decls[0]["parameters"],
        json!({"type": "object", "required": ["q"], "properties": {
            "q": {"type": "string", "nullable": true, "description": "query"},
            "where": {"type": "object", "properties": {"city": {"type": "string"}}},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"enum": ["exact"]},
            "level": {"type": "integer", "enum": ["1", "2"]},
            "home": {"type": "object", "properties": {"city": {"type": "string"}}, "description": "Home town"},
            "any": {"anyOf": [{"type": "integer", "format": "int64"}, {"type": "string"}]}
        }})
    );
    assert_eq!(decls[0]["description"], "Find");
    assert_eq!(decls[1], json!({"name": "ping"}));
    assert_eq!(
        v["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}})
    );
    assert_eq!(
        v["generationConfig"],
        json!({"temperature": 0.3, "topP": 0.9, "maxOutputTokens": 200, "stopSequences": ["END"],
               "candidateCount": 1, "seed": 7, "responseMimeType": "application/json",
               "responseSchema": {"type": "object", "properties": {"a": {"type": "number"}}}})
    );
    for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
        let v = translate(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                 "tool_choice": choice, "reasoning_effort": "low"}),
        );
        assert_eq!(v["toolConfig"]["functionCallingConfig"]["mode"], mode);
        assert_eq!(
            v["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 1024, "includeThoughts": true})
        );
    }
}

const ANSWER: &str = r#"{"candidates":[{"content":{"role":"model","parts":[
    {"text":"Let me think","thought":true},{"text":"Hello"},{"text":" world"},
    {"functionCall":{"name":"get","args":{"a":1}},"thoughtSignature":"ab+/cd=="}]},
    "finishReason":"STOP","index":0}],
    "usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"thoughtsTokenCount":3,
    "cachedContentTokenCount":4,"totalTokenCount":18},
    "modelVersion":"gemini-2.5-flash","responseId":"resp-1"}"#;

#[test]
fn completion_decodes() {
    let c = decode_completion(ANSWER.as_bytes()).unwrap();
    assert_eq!(c.id, "resp-1");
    assert_eq!(c.model, "gemini-2.5-flash");
    assert_eq!(c.text, "Hello world");
    assert_eq!(c.reasoning.as_deref(), Some("Let me think"));
    assert_eq!(c.tool_calls.len(), 1);
    assert_eq!(c.tool_calls[0].name, "get");
    assert_eq!(c.tool_calls[0].arguments, r#"{"a":1}"#);
    assert!(c.tool_calls[0].id.starts_with("call_"));
    assert!(c.tool_calls[0].id.ends_with("__ts__ab-_cd"));
    assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        c.usage,
        ir::Usage {
            input_tokens: 10,
            output_tokens: 8,
            cached_input_tokens: 4,
            cache_creation_input_tokens: 0,
            reasoning_tokens: 3,
        }
    );
    // And back: the signature is restored on the function call.
    let v: Value = serde_json::from_slice(&encode_completion(&c)).unwrap();
    let parts = &v["candidates"][0]["content"]["parts"];
    assert_eq!(parts[0], json!({"text": "Let me think", "thought": true}));
    assert_eq!(parts[2]["thoughtSignature"], "ab+/cd==");
    assert_eq!(parts[2]["functionCall"]["args"], json!({"a": 1}));
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 5);
    assert_eq!(v["usageMetadata"]["totalTokenCount"], 18);
    let again = decode_completion(&encode_completion(&c)).unwrap();
    assert_eq!(again.tool_calls[0].arguments, c.tool_calls[0].arguments);
    assert_eq!(again.usage, c.usage);
}

#[test]
fn finish_reasons() {
    for (wire, want) in [
        ("STOP", FinishReason::Stop),
        ("MAX_TOKENS", FinishReason::Length),
        ("SAFETY", FinishReason::ContentFilter),
        ("RECITATION", FinishReason::ContentFilter),
        ("PROHIBITED_CONTENT", FinishReason::ContentFilter),
        (
            "MALFORMED_FUNCTION_CALL",
            FinishReason::Other("MALFORMED_FUNCTION_CALL".into()),
        ),
    ] {
        let body = format!(r#"{{"candidates":[{{"finishReason":"{wire}"}}]}}"#);
        assert_eq!(
            decode_completion(body.as_bytes()).unwrap().finish_reason,
            Some(want)
        );
    }
    let blocked =
        br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":3}}"#;
    let c = decode_completion(blocked).unwrap();
    assert_eq!(c.finish_reason, Some(FinishReason::ContentFilter));
    assert_eq!(c.usage.input_tokens, 3);
    assert_eq!(finish_str(&FinishReason::Other("end_turn".into())), "OTHER");
}

#[test]
fn stream_decodes_and_completes_at_close() {
    let mut d = ChunkDecoder::default();
    let mut evs = Vec::new();
    for data in [
        r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}],"usageMetadata":{"promptTokenCount":4},"modelVersion":"g","responseId":"r"}"#,
        r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"lo"},{"functionCall":{"name":"f","args":{"x":[1]}}}]}}],"usageMetadata":{"promptTokenCount":4}}"#,
        r#"{"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6,"totalTokenCount":10}}"#,
    ] {
        assert!(!d.decode(&SseEvent::data(data), &mut evs).unwrap());
    }
    assert!(d.ends_at_close());
    assert_eq!(
        evs[0],
        StreamEvent::Start {
            id: "r".into(),
            model: "g".into()
        }
    );
    assert_eq!(evs[1], StreamEvent::Text("Hel".into()));
    assert!(matches!(evs[2], StreamEvent::Usage(u) if u.input_tokens == 4));
    assert_eq!(evs[3], StreamEvent::Text("lo".into()));
    assert!(matches!(&evs[4], StreamEvent::ToolCallStart { index: 0, name, .. } if name == "f"));
    assert_eq!(
        evs[5],
        StreamEvent::ToolCallArgs {
            index: 0,
            arguments: r#"{"x":[1]}"#.into()
        }
    );
    // The repeated, unchanged usage of the second chunk is not passed on.
    assert_eq!(evs[6], StreamEvent::Finish(FinishReason::ToolCalls));
    assert!(matches!(evs[7], StreamEvent::Usage(u) if u.output_tokens == 6));
    assert_eq!(evs.len(), 8);

    let mut d = ChunkDecoder::default();
    d.decode(
        &SseEvent::data(r#"{"candidates":[{"content":{"parts":[{"text":"cut"}]}}]}"#),
        &mut evs,
    )
    .unwrap();
    assert!(
        !d.ends_at_close(),
        "no finish reason yet: a close is a truncation"
    );
    assert!(d.decode(&SseEvent::data("{oops"), &mut evs).is_err());
}

#[test]
fn stream_encodes_as_gemini_chunks() {
    let mut e = ChunkEncoder::new("client-model");
    let mut out = Vec::new();
    for ev in [
        StreamEvent::Start {
            id: "r1".into(),
            model: String::new(),
        },
        StreamEvent::Text("Hi".into()),
        StreamEvent::ToolCallStart {
            index: 0,
            id: "t1".into(),
            name: "f".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            arguments: "{\"a\":".into(),
        },
        StreamEvent::ToolCallArgs {
            index: 0,
            arguments: "2}".into(),
        },
        StreamEvent::Finish(FinishReason::ToolCalls),
        StreamEvent::Usage(ir::Usage {
            input_tokens: 2,
            output_tokens: 3,
            ..Default::default()
        }),
    ] {
        e.encode(&ev, &mut out);
    }
    e.finish(&mut out);
    assert_eq!(out.len(), 2);
    let first: Value = serde_json::from_slice(&out[0].data).unwrap();
    assert_eq!(first["candidates"][0]["content"]["parts"][0]["text"], "Hi");
    assert_eq!(first["modelVersion"], "client-model");
    assert_eq!(first["responseId"], "r1");
    let last: Value = serde_json::from_slice(&out[1].data).unwrap();
    assert_eq!(
        last["candidates"][0]["content"]["parts"][0]["functionCall"],
        json!({"id": "t1", "name": "f", "args": {"a": 2}})
    );
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["totalTokenCount"], 5);
    // Decoding our own output gives the same answer back.
    let mut d = ChunkDecoder::default();
    let mut evs = Vec::new();
    for ev in &out {
        d.decode(ev, &mut evs).unwrap();
    }
    let mut c = ir::Collector::default();
    evs.iter().for_each(|ev| c.push(ev));
    assert_eq!(c.completion.text, "Hi");
    assert_eq!(c.completion.tool_calls[0].arguments, r#"{"a":2}"#);
    assert_eq!(c.completion.finish_reason, Some(FinishReason::ToolCalls));

    let mut out = Vec::new();
    let err = ErrorInfo {
        status: 429,
        message: "slow down".into(),
        kind: "rate_limit_error".into(),
        code: None,
    };
    e.fail(&err, &mut out);
    let v: Value = serde_json::from_slice(&out[0].data).unwrap();
    assert_eq!(
        v,
        json!({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}})
    );
}

#[test]
fn errors_parse() {
    let e = parse_error(
        br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[]}}"#,
    )
    .unwrap();
    assert_eq!(e.message, "Quota exceeded");
    assert_eq!(e.status.as_deref(), Some("RESOURCE_EXHAUSTED"));
    let e = parse_error(br#"[{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}]"#)
        .unwrap();
    assert_eq!(e.message, "bad");
    assert!(parse_error(br#"{"error":"plain"}"#).is_none());
    assert!(parse_error(b"<html>").is_none());
}

#[test]
fn call_ids_carry_signatures() {
    let id = call_id(None, Some("a+b/cQ=="));
    assert!(id.starts_with("call_"));
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
    assert_eq!(split_call_id(&id).1.as_deref(), Some("a+b/cQ=="));
    assert_eq!(call_id(Some("fc-1".into()), None), "fc-1");
    assert_eq!(split_call_id("call_x"), ("call_x", None));
    assert_eq!(call_args("{broken"), json!({"arguments": "{broken"}));
}
