//! Claude Code through memproxy: its requests (system blocks with cache_control, tools
//! with JSON-schema extras, thinking, metadata.user_id, beta headers, streaming, the
//! `?beta=true` query) are accepted, detected as the `claude-code` client, and answered by
//! whatever model the config maps Claude's model names to.

mod common;

use common::*;
use serde_json::{json, Value};

const KEY: &str = "sk-master-cc";

fn config(mock: &MockUpstream, target: &str) -> String {
    let params = match target {
        "openai" => format!(
            "{{model: openai/gpt-4o, api_base: '{}', api_key: sk-o}}",
            mock.url()
        ),
        _ => format!(
            "{{model: 'anthropic/claude-*', api_base: 'http://{}', api_key: sk-a}}",
            mock.addr
        ),
    };
    format!(
        "model_list:\n  - model_name: 'claude-*'\n    litellm_params: {params}\ngeneral_settings: {{master_key: {KEY}}}\nrouter_settings: {{num_retries: 0}}\n"
    )
}

fn claude_code_body() -> Value {
    json!({
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "stream": true,
        "temperature": 1,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {"type": "text", "text": "Help with software tasks.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "List the files", "cache_control": {"type": "ephemeral"}}
        ]}],
        "tools": [{
            "name": "Bash",
            "description": "Run a shell command",
            "input_schema": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "additionalProperties": false,
                "properties": {"command": {"type": "string"}},
                "required": ["command"]
            }
        }],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "metadata": {"user_id": "user_abc_account_def_session_123"}
    })
}

async fn send(proxy: &Proxy, body: &Value) -> reqwest::Response {
    client()
        .post(proxy.url("/v1/messages?beta=true"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14",
        )
        .header("user-agent", "claude-cli/2.0.14 (external, cli)")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn event_types(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn claude_code_on_an_openai_model() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "openai")).await;
    mock.push(Behavior::Text("Here are the files.".into()));
    let resp = send(&proxy, &claude_code_body()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-memproxy-user-id"], "claude-code");
    let text = resp.text().await.unwrap();
    let types = event_types(&text);
    assert_eq!(
        types.first().map(String::as_str),
        Some("message_start"),
        "{text}"
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("message_stop"),
        "{text}"
    );
    let streamed: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, "Here are the files.", "{text}");

    let seen = &mock.requests()[0];
    assert_eq!(seen.body["model"], "gpt-4o");
    let msgs = seen.body["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["role"], "system");
    assert!(
        msgs[0].to_string().contains("You are Claude Code"),
        "{msgs:?}"
    );
    assert_eq!(seen.body["tools"][0]["function"]["name"], "Bash");
    assert!(
        seen.headers.get("x-api-key").is_none(),
        "the master key never goes upstream"
    );
}

#[tokio::test]
async fn claude_code_on_an_anthropic_model_keeps_its_fields() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "anthropic")).await;
    let mut body = claude_code_body();
    body["stream"] = json!(false);
    let resp = send(&proxy, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-memproxy-user-id"], "claude-code");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["type"], "message", "{answer}");

    let seen = &mock.requests()[0];
    assert_eq!(
        seen.body["model"], "claude-sonnet-4-5-20250929",
        "the wildcard maps the name through"
    );
    for field in ["system", "thinking", "metadata", "tools", "messages"] {
        assert_eq!(seen.body[field], body[field], "{field} passes untouched");
    }
    assert_eq!(
        seen.headers["x-api-key"], "sk-a",
        "the deployment's key, not the master key"
    );
    assert_eq!(
        seen.headers["anthropic-beta"],
        "claude-code-20250219,interleaved-thinking-2025-05-14"
    );
}

#[tokio::test]
async fn unknown_claude_model_gets_an_anthropic_error() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "openai")).await;
    let mut body = claude_code_body();
    body["model"] = json!("gpt-unknown");
    let resp = send(&proxy, &body).await;
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "not_found_error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("claude-*"),
        "{v}"
    );
}

#[tokio::test]
async fn wrong_key_and_bad_body_get_anthropic_errors() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "openai")).await;
    let resp = client()
        .post(proxy.url("/v1/messages"))
        .header("x-api-key", "wrong")
        .json(&claude_code_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");

    for (body, status) in [
        ("{not json", 400),
        (r#"{"model":"claude-x","messages":[]}"#, 400),
        (
            r#"{"model":"claude-x","messages":"hi","max_tokens":5}"#,
            400,
        ),
    ] {
        let resp = client()
            .post(proxy.url("/v1/messages"))
            .header("x-api-key", KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{body}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    }
    assert_eq!(mock.count(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn unsupported_params_are_refused_unless_dropped() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "model_list:\n  - model_name: c\n    litellm_params: {{model: anthropic/claude-test, api_base: 'http://{}', api_key: k}}\n  - model_name: d\n    litellm_params: {{model: anthropic/claude-test, api_base: 'http://{}', api_key: k, drop_params: true}}\n",
        mock.addr, mock.addr
    );
    let proxy = start(&yaml).await;
    let body = |m: &str| json!({"model": m, "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"50256": -100}, "seed": 1});
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&body("c"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("logit_bias") && msg.contains("seed") && msg.contains("drop_params"),
        "{msg}"
    );
    assert_eq!(mock.count(), 0);

    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .json(&body("d"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = &mock.requests()[0].body;
    assert!(
        seen.get("logit_bias").is_none() && seen.get("seed").is_none(),
        "{seen}"
    );
}

/// Claude Code 2.1.197's shape: a `system` message inside `messages`, `<system-reminder>`
/// blocks in the user's turn, fields and block types memproxy does not know.
fn claude_code_2_1_body() -> Value {
    let mut body = claude_code_body();
    body["messages"] = json!([
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>\nAs you answer the user's questions, you can use the following context.\n</system-reminder>"},
            {"type": "text", "text": "Where is the retry loop implemented?", "cache_control": {"type": "ephemeral"}}
        ]},
        {"role": "system", "content": "Available agent types for the Task tool: general-purpose"},
        {"role": "user", "content": [{"type": "future_block_type", "payload": {"x": 1}}]}
    ]);
    body["context_management"] =
        json!({"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]});
    body["some_future_field"] = json!({"nested": [1, 2, 3]});
    body
}

#[tokio::test]
async fn claude_code_2_1_system_messages_pass_natively_untouched() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "anthropic")).await;
    for stream in [false, true] {
        let mut body = claude_code_2_1_body();
        body["stream"] = json!(stream);
        let resp = send(&proxy, &body).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "stream={stream}: {text}");
        if stream {
            assert_eq!(
                event_types(&text).last().map(String::as_str),
                Some("message_stop")
            );
        } else {
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["type"], "message", "{v}");
        }
        let seen = mock.requests().last().unwrap().clone();
        for field in [
            "system",
            "messages",
            "context_management",
            "some_future_field",
            "tools",
        ] {
            assert_eq!(seen.body[field], body[field], "{field} passes untouched");
        }
    }
    // What is remembered is the user's question, not the client's scaffolding.
    proxy.flush_memory().await;
    let mems: Value = client()
        .get(proxy.url("/v1/memories?user_id=claude-code"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let all = mems.to_string();
    assert!(
        all.contains("Where is the retry loop implemented?"),
        "{all}"
    );
    assert!(
        !all.contains("system-reminder") && !all.contains("Available agent types"),
        "{all}"
    );
}

#[tokio::test]
async fn claude_code_2_1_system_messages_are_translated_in_place() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "openai")).await;
    mock.push(Behavior::Text("In routing.rs.".into()));
    let resp = send(&proxy, &claude_code_2_1_body()).await;
    assert_eq!(resp.status(), 200);
    let _ = resp.text().await.unwrap();
    let seen = &mock.requests()[0];
    let msgs = seen.body["messages"].as_array().unwrap();
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles[0], "system", "{msgs:?}");
    let pos = msgs
        .iter()
        .position(|m| m.to_string().contains("Available agent types"))
        .expect("the system message is kept");
    assert_eq!(msgs[pos]["role"], "system");
    assert!(pos > 1, "it stays after the user's first turn: {msgs:?}");
}
