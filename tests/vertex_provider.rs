//! `vertex_ai/` deployments end to end against the mock's Vertex AI: service-account
//! credentials (file path, inline JSON, environment) exchanged at the mock's token
//! endpoint, the token cached, refreshed and replaced after a 401; Gemini models
//! (generateContent) and Claude models (rawPredict) on Vertex, streamed and not, text,
//! tools, images, errors, streams relayed as they come and closed when the client goes
//! away; and unusable credentials refused with a clear reason.

mod common;

use common::*;
use futures_util::StreamExt;
use mock_upstream::TestKey;
use serde_json::{json, Value};

const GEMINI_PATH: &str =
    "/v1/projects/mock-project/locations/us-central1/publishers/google/models/gemini-2.0-flash";
const CLAUDE_PATH: &str = "/v1/projects/mock-project/locations/us-central1/publishers/anthropic/models/claude-sonnet-4-5@20250929";

/// A config with `vgem` (Gemini) and `vclaude` (Claude) on Vertex AI at the mock, whose
/// `vertex_credentials` member is `creds` (YAML text).
fn config_with(mock: &MockUpstream, creds: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: vgem
    litellm_params:
      model: vertex_ai/gemini-2.0-flash
      api_base: http://{addr}
      {creds}
  - model_name: vclaude
    litellm_params:
      model: vertex_ai/claude-sonnet-4-5@20250929
      api_base: http://{addr}
      {creds}
router_settings: {{num_retries: 0}}
"#,
        addr = mock.addr
    )
}

/// The config with inline service-account JSON for a key the mock trusts.
fn config(mock: &MockUpstream) -> String {
    let key = TestKey::shared();
    mock.trust_key(key);
    config_with(
        mock,
        &format!("vertex_credentials: '{}'", mock.service_account(key)),
    )
}

async fn post(proxy: &Proxy, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(proxy.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn chat(proxy: &Proxy, body: &Value) -> reqwest::Response {
    post(proxy, "/v1/chat/completions", body).await
}

fn streamed(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

/// The JSON chunks of an OpenAI SSE answer, after checking it ended with `[DONE]`.
async fn chunks(resp: reqwest::Response) -> Vec<Value> {
    assert_eq!(resp.status(), 200);
    let events = sse_payloads(resp).await;
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// The streamed tool call: name and parsed arguments.
fn streamed_call(chunks: &[Value]) -> (String, Value) {
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    let name = calls[0]["function"]["name"].as_str().unwrap().to_string();
    let args: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    (name, serde_json::from_str(&args).unwrap())
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

fn weather_call() -> Behavior {
    Behavior::ToolCall {
        id: "toolu_1".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
    }
}

fn bearer(req: &mock_upstream::Recorded) -> String {
    req.headers["authorization"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn gemini_on_vertex_answers_with_a_bearer_token() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let resp = chat(
        &proxy,
        &json!({"model": "vgem", "max_tokens": 40, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi vertex"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "mock reply to: hi vertex"
    );
    assert!(body["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, format!("{GEMINI_PATH}:generateContent"));
    assert!(bearer(&seen[0]).starts_with("Bearer ya29.mock-"));
    assert!(seen[0].headers.get("x-goog-api-key").is_none());
    assert_eq!(
        seen[0].body["contents"],
        json!([{"role": "user", "parts": [{"text": "hi vertex"}]}])
    );
    assert_eq!(
        seen[0].body["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(mock.token_requests().len(), 1);
}

#[tokio::test]
async fn gemini_on_vertex_streams() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let mut body = streamed(chat_body("vgem", "stream it"));
    body["stream_options"] = json!({"include_usage": true});
    let chunks = chunks(chat(&proxy, &body).await).await;
    assert_eq!(streamed_text(&chunks), "mock reply to: stream it");
    assert!(
        chunks.last().unwrap()["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(
        mock.requests()[0].path,
        format!("{GEMINI_PATH}:streamGenerateContent")
    );
}

#[tokio::test]
async fn gemini_on_vertex_tool_calls_streamed_and_not() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let ask = json!({"model": "vgem", "tools": weather_tool(),
                     "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    mock.push(weather_call());
    let body: Value = chat(&proxy, &ask).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        mock.requests()[0].body["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );

    mock.push(weather_call());
    let chunks = chunks(chat(&proxy, &streamed(ask)).await).await;
    assert_eq!(
        streamed_call(&chunks),
        ("get_weather".into(), json!({"city": "Paris"}))
    );
}

#[tokio::test]
async fn claude_on_vertex_uses_raw_predict_without_model_in_the_body() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let resp = chat(
        &proxy,
        &json!({"model": "vclaude", "max_tokens": 64, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello claude"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "mock reply to: hello claude"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let seen = &mock.requests()[0];
    assert_eq!(seen.path, format!("{CLAUDE_PATH}:rawPredict"));
    assert!(bearer(seen).starts_with("Bearer ya29.mock-"));
    assert!(seen.headers.get("x-api-key").is_none());
    assert!(seen.headers.get("anthropic-version").is_none());
    assert!(seen.body.get("model").is_none(), "{}", seen.body);
    assert_eq!(seen.body["anthropic_version"], "vertex-2023-10-16");
    assert_eq!(seen.body["system"], "Be brief.");
    assert_eq!(seen.body["max_tokens"], 64);
}

#[tokio::test]
async fn claude_on_vertex_streams_text_and_tool_calls() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let chunks_text = chunks(chat(&proxy, &streamed(chat_body("vclaude", "go on"))).await).await;
    assert_eq!(streamed_text(&chunks_text), "mock reply to: go on");
    let seen = &mock.requests()[0];
    assert_eq!(seen.path, format!("{CLAUDE_PATH}:streamRawPredict"));
    assert_eq!(seen.body["stream"], true);

    mock.push(weather_call());
    let ask = json!({"model": "vclaude", "stream": true, "tools": weather_tool(),
                     "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let chunks = chunks(chat(&proxy, &ask).await).await;
    assert_eq!(
        streamed_call(&chunks),
        ("get_weather".into(), json!({"city": "Paris"}))
    );
    assert_eq!(
        mock.requests()[1].body["tools"][0]["input_schema"]["required"],
        json!(["city"])
    );
}

#[tokio::test]
async fn anthropic_clients_body_reaches_claude_on_vertex_untranslated() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let raw = json!({"model": "vclaude", "max_tokens": 64,
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"user_id": "u1"}});
    let resp = client()
        .post(proxy.url("/v1/messages"))
        .header("anthropic-beta", "context-1m-2025-08-07")
        .json(&raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "mock reply to: hi");
    let seen = &mock.requests()[0];
    let mut want = raw.clone();
    want.as_object_mut().unwrap().remove("model");
    want["anthropic_version"] = "vertex-2023-10-16".into();
    assert_eq!(seen.body, want);
    assert_eq!(seen.headers["anthropic-beta"], "context-1m-2025-08-07");

    // Streamed, the Anthropic events come back as Anthropic events.
    let resp = post(&proxy, "/v1/messages", &streamed(raw)).await;
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(text.contains("event: message_stop"), "{text}");
    assert_eq!(
        mock.requests()[1].path,
        format!("{CLAUDE_PATH}:streamRawPredict")
    );
}

#[tokio::test]
async fn images_reach_both_model_families() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let image = json!([{"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]);
    for model in ["vgem", "vclaude"] {
        let resp = chat(
            &proxy,
            &json!({"model": model, "messages": [{"role": "user", "content": image}]}),
        )
        .await;
        assert_eq!(resp.status(), 200, "{model}");
    }
    let seen = mock.requests();
    assert_eq!(
        seen[0].body["contents"][0]["parts"][1],
        json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}})
    );
    assert_eq!(
        seen[1].body["messages"][0]["content"][1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}})
    );
}

#[tokio::test]
async fn token_is_cached_across_requests() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    for i in 0..3 {
        let resp = chat(&proxy, &chat_body("vgem", &format!("q{i}"))).await;
        assert_eq!(resp.status(), 200);
    }
    let stream = chunks(chat(&proxy, &streamed(chat_body("vgem", "s"))).await).await;
    assert!(!stream.is_empty());
    assert_eq!(mock.token_requests().len(), 1);
    let tokens: Vec<String> = mock.requests().iter().map(bearer).collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
}

#[tokio::test]
async fn concurrent_first_requests_share_one_token_request() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    let bodies: Vec<Value> = (0..6)
        .map(|i| chat_body("vclaude", &format!("c{i}")))
        .collect();
    let calls = bodies.iter().map(|b| chat(&proxy, b));
    for resp in futures_util::future::join_all(calls).await {
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(mock.token_requests().len(), 1);
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_before_use() {
    let mock = MockUpstream::start().await;
    // Inside the refresh margin (5 minutes): every request finds its token due.
    mock.set_token_lifetime(60);
    let proxy = start(&config(&mock)).await;
    for i in 0..3 {
        let resp = chat(&proxy, &chat_body("vgem", &format!("q{i}"))).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(mock.token_requests().len(), 3);
    let tokens: Vec<String> = mock.requests().iter().map(bearer).collect();
    assert_eq!(tokens.len(), 3);
    assert!(
        tokens[0] != tokens[1] && tokens[1] != tokens[2],
        "{tokens:?}"
    );
}

#[tokio::test]
async fn a_revoked_token_is_replaced_and_the_request_sent_again() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    assert_eq!(
        chat(&proxy, &chat_body("vclaude", "one")).await.status(),
        200
    );
    mock.revoke_tokens();
    let resp = chat(&proxy, &chat_body("vclaude", "two")).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "mock reply to: two"
    );
    assert_eq!(mock.token_requests().len(), 2);
    let seen = mock.requests();
    assert_eq!(seen.len(), 3, "the refused attempt, then the retry");
    assert_eq!(bearer(&seen[1]), bearer(&seen[0]));
    assert_ne!(bearer(&seen[2]), bearer(&seen[1]));
}

#[tokio::test]
async fn credentials_from_a_file_path_and_from_the_environment() {
    let mock = MockUpstream::start().await;
    let key = TestKey::shared();
    mock.trust_key(key);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sa.json");
    std::fs::write(&path, mock.service_account(key).to_string()).unwrap();
    let path = path.to_string_lossy().into_owned();

    let proxy = start(&config_with(&mock, &format!("vertex_credentials: {path}"))).await;
    assert_eq!(chat(&proxy, &chat_body("vgem", "file")).await.status(), 200);

    // GOOGLE_APPLICATION_CREDENTIALS and VERTEXAI_PROJECT fill in what the entry leaves out.
    let env = [
        ("GOOGLE_APPLICATION_CREDENTIALS", path.as_str()),
        ("VERTEXAI_PROJECT", "env-project"),
    ];
    let proxy = start_with(&config_with(&mock, ""), &env, Default::default()).await;
    let resp = chat(&proxy, &streamed(chat_body("vclaude", "env"))).await;
    assert_eq!(streamed_text(&chunks(resp).await), "mock reply to: env");
    let last = mock.requests().last().unwrap().clone();
    assert!(
        last.path
            .starts_with("/v1/projects/env-project/locations/us-central1/"),
        "{}",
        last.path
    );
    assert_eq!(mock.token_requests().len(), 2);
}

#[tokio::test]
async fn authorized_user_credentials_work() {
    let mock = MockUpstream::start().await;
    let creds = format!("vertex_credentials: '{}'", mock.authorized_user());
    let proxy = start(&config_with(&mock, &creds)).await;
    assert_eq!(chat(&proxy, &chat_body("vgem", "user")).await.status(), 200);
    assert!(mock.requests()[0]
        .path
        .starts_with("/v1/projects/mock-user-project/"));
    assert_eq!(mock.token_requests()[0]["grant_type"], "refresh_token");
}

#[tokio::test]
async fn credentials_the_token_endpoint_refuses_give_a_clear_401() {
    let mock = MockUpstream::start().await;
    // A key the mock does not trust: its signature is refused.
    let stranger = TestKey::generate();
    let creds = format!("vertex_credentials: '{}'", mock.service_account(&stranger));
    let proxy = start(&config_with(&mock, &creds)).await;
    for (api, body) in [
        ("/v1/chat/completions", chat_body("vgem", "x")),
        ("/v1/chat/completions", streamed(chat_body("vclaude", "x"))),
    ] {
        let resp = post(&proxy, api, &body).await;
        assert_eq!(resp.status(), 401);
        let v: Value = resp.json().await.unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("Invalid JWT Signature")
                && message.contains("/token")
                && message.contains("memproxy-test@mock-project.iam.gserviceaccount.com"),
            "{v}"
        );
        assert!(!message.contains("PRIVATE KEY"), "{v}");
    }
    let resp = client()
        .post(proxy.url("/v1/messages"))
        .json(&json!({"model": "vclaude", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    // Nothing reached the model routes.
    assert_eq!(mock.count(), 0);
}

#[test]
fn unusable_credentials_skip_the_deployment_with_the_reason() {
    let cases = [
        ("", "no Vertex AI credentials"),
        (
            "vertex_credentials: /nonexistent/sa.json",
            "cannot read the Vertex AI credentials file `/nonexistent/sa.json`",
        ),
        (
            r#"vertex_credentials: '{"type": "service_account", "client_email": "a@b.c", "private_key": "nope"}'"#,
            "`private_key` is not usable",
        ),
        (
            r#"vertex_credentials: '{"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"}'"#,
            "no Google Cloud project",
        ),
    ];
    for (creds, want) in cases {
        let yaml = format!(
            "model_list:\n  - model_name: v\n    litellm_params:\n      model: vertex_ai/gemini-2.0-flash\n      {creds}\n"
        );
        let (cfg, _dir) = test_config(&yaml, &[]);
        let env = memproxy::providers::ProviderEnv::new(&cfg).unwrap();
        match memproxy::providers::Provider::new(&cfg.models[0], &env) {
            Err(reason) => assert!(reason.contains(want), "{creds}: {reason}"),
            Ok(_) => panic!("{creds}: accepted"),
        }
    }
}

#[tokio::test]
async fn vertex_errors_keep_their_message_in_each_shape() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    mock.push(Behavior::Status(
        429,
        json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
               "message": "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute"}}),
    ));
    let resp = chat(&proxy, &chat_body("vgem", "x")).await;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Quota exceeded"));
    assert_eq!(v["error"]["code"], "resource_exhausted");

    // Claude: Vertex's own refusal in Google's shape, the model's in Anthropic's.
    mock.push(Behavior::Status(
        429,
        json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded for claude"}}),
    ));
    let resp = chat(&proxy, &chat_body("vclaude", "x")).await;
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "Quota exceeded for claude");
    mock.push(Behavior::Status(
        529,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    let resp = post(
        &proxy,
        "/v1/messages",
        &json!({"model": "vclaude", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(resp.status(), 529);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
}

#[tokio::test]
async fn streams_are_relayed_as_they_come_and_cut_streams_end_in_an_error() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    for model in ["vgem", "vclaude"] {
        mock.push(Behavior::PausedStream {
            first: "early".into(),
            rest: "late part".into(),
        });
        let resp = chat(&proxy, &streamed(chat_body(model, "x"))).await;
        let mut stream = resp.bytes_stream();
        let mut got = String::new();
        // The mock holds back everything after "early" until released.
        while !got.contains("early") {
            let chunk = stream.next().await.expect("first chunk").unwrap();
            got.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        mock.release();
        while let Some(c) = stream.next().await {
            got.push_str(std::str::from_utf8(&c.unwrap()).unwrap());
        }
        assert!(
            got.contains("late") && got.contains("[DONE]"),
            "{model}: {got}"
        );

        mock.push(Behavior::CutStream {
            first: "partial".into(),
        });
        let resp = chat(&proxy, &streamed(chat_body(model, "x"))).await;
        mock.release();
        let events = sse_payloads(resp).await;
        assert!(events.iter().any(|e| e.contains("partial")), "{events:?}");
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert!(last["error"]["message"].is_string(), "{model}: {last}");
    }
}

#[tokio::test]
async fn a_client_that_goes_away_mid_stream_closes_the_vertex_stream() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    for model in ["vgem", "vclaude"] {
        mock.push(Behavior::PausedStream {
            first: "early".into(),
            rest: "never read".into(),
        });
        let resp = chat(&proxy, &streamed(chat_body(model, "x"))).await;
        let mut stream = resp.bytes_stream();
        let mut got = String::new();
        while !got.contains("early") {
            let chunk = stream.next().await.expect("first chunk").unwrap();
            got.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        drop(stream);
        // The mock's answer is dropped only once memproxy closes the upstream connection.
        tokio::time::timeout(std::time::Duration::from_secs(10), mock.stream_abandoned())
            .await
            .unwrap_or_else(|_| panic!("{model}: the upstream stream was kept open"));
    }
}

#[tokio::test]
async fn parameters_each_model_family_cannot_express_are_named() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock)).await;
    for (model, param, value) in [
        ("vgem", "logit_bias", json!({"50256": -100})),
        ("vclaude", "seed", json!(7)),
    ] {
        let mut body = chat_body(model, "x");
        body[param] = value;
        let resp = chat(&proxy, &body).await;
        assert_eq!(resp.status(), 400, "{model}");
        let v: Value = resp.json().await.unwrap();
        assert!(
            v["error"]["message"].as_str().unwrap().contains(param),
            "{v}"
        );
    }
    // Gemini on Vertex takes `seed` (generationConfig.seed); nothing was sent upstream above.
    let mut body = chat_body("vgem", "x");
    body["seed"] = json!(7);
    assert_eq!(chat(&proxy, &body).await.status(), 200);
    assert_eq!(mock.count(), 1);
}
