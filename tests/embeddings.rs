//! `POST /v1/embeddings`: routed to OpenAI-compatible deployments, offline for mocks.

mod common;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn embeddings_pass_through_and_work_offline() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "model_list:\n  - model_name: embed\n    litellm_params: {{model: openai/text-embedding-3-small, api_base: '{}', api_key: sk-e}}\n  - model_name: offline\n    litellm_params: {{model: openai/x, mock_response: unused}}\n  - model_name: claude\n    litellm_params: {{model: anthropic/claude-x, api_key: k}}\n",
        mock.url()
    );
    let proxy = start(&yaml).await;
    let c = client();
    let v: Value = c
        .post(proxy.url("/v1/embeddings"))
        .json(&json!({"model": "embed", "input": ["hello", "hi"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    let seen = &mock.requests()[0];
    assert_eq!(seen.path, "/v1/embeddings");
    assert_eq!(seen.body["model"], "text-embedding-3-small");
    assert_eq!(seen.headers["authorization"], "Bearer sk-e");

    let v: Value = c
        .post(proxy.url("/v1/embeddings"))
        .json(&json!({"model": "offline", "input": "tabs over spaces"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 64);

    let resp = c
        .post(proxy.url("/v1/embeddings"))
        .json(&json!({"model": "embed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = c
        .post(proxy.url("/v1/embeddings"))
        .json(&json!({"model": "claude", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "embeddings_not_supported");
}
