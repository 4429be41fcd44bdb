//! The OpenAI-compatible provider family (`mistral/`, `groq/`, …): served through the
//! OpenAI wire at their `api_base` with the key from their own environment variable; and
//! an unknown provider prefix, which loads with a warning and answers 501 naming it.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn family_members_speak_openai_with_their_own_key_variable() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "model_list:\n  - model_name: mis\n    litellm_params: {{model: mistral/mistral-small-latest, api_base: '{0}'}}\n  - model_name: gq\n    litellm_params: {{model: groq/llama-3.3-70b-versatile, api_base: '{0}'}}\n  - model_name: or\n    litellm_params: {{model: openrouter/anthropic/claude-3.5-haiku, api_base: '{0}'}}\nrouter_settings: {{num_retries: 0}}\n",
        mock.url()
    );
    let proxy = start_with(
        &yaml,
        &[
            ("MISTRAL_API_KEY", "mis-key"),
            ("GROQ_API_KEY", "gq-key"),
            ("OPENROUTER_API_KEY", "or-key"),
            ("OPENAI_API_KEY", "not-this-one"),
        ],
        Default::default(),
    )
    .await;
    for (model, upstream, key) in [
        ("mis", "mistral-small-latest", "mis-key"),
        ("gq", "llama-3.3-70b-versatile", "gq-key"),
        ("or", "anthropic/claude-3.5-haiku", "or-key"),
    ] {
        for stream in [false, true] {
            let mut body = chat_body(model, "hello family");
            body["stream"] = json!(stream);
            let resp = client()
                .post(proxy.url("/v1/chat/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{model}");
            let text = if stream {
                sse_payloads(resp)
                    .await
                    .iter()
                    .filter(|e| *e != "[DONE]")
                    .filter_map(|e| {
                        let v: Value = serde_json::from_str(e).unwrap();
                        v["choices"][0]["delta"]["content"]
                            .as_str()
                            .map(str::to_string)
                    })
                    .collect::<String>()
            } else {
                let v: Value = resp.json().await.unwrap();
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            };
            assert_eq!(text, "mock reply to: hello family", "{model}");
            let up = mock.requests().last().unwrap().clone();
            assert_eq!(up.path, "/v1/chat/completions", "{model}");
            assert_eq!(up.headers["authorization"], format!("Bearer {key}"));
            assert_eq!(up.body["model"], upstream);
        }
    }
}

#[tokio::test]
async fn an_unknown_provider_answers_501_naming_it() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "model_list:\n  - model_name: frob\n    litellm_params: {{model: frobai/frob-1, api_base: '{}'}}\n  - model_name: ok\n    litellm_params: {{model: openai/gpt-4o, api_base: '{0}', api_key: k}}\n",
        mock.url()
    );
    let (cfg, _dir) = test_config(&yaml, &[]);
    assert!(
        cfg.warnings
            .iter()
            .any(|w| w.contains("provider `frobai` is not supported") && w.contains("501")),
        "{:?}",
        cfg.warnings
    );
    let proxy = start(&yaml).await;
    for (path, body) in [
        ("/v1/chat/completions", chat_body("frob", "x")),
        (
            "/v1/messages",
            json!({"model": "frob", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}),
        ),
        ("/v1/responses", json!({"model": "frob", "input": "x"})),
    ] {
        let resp = client()
            .post(proxy.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 501, "{path}");
        let v: Value = resp.json().await.unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("`frobai`") && msg.contains("frob"),
            "{path}: {msg}"
        );
    }
    assert_eq!(mock.count(), 0);
}
