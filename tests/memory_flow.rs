//! Memory in the request path (SPEC §4): exchanges are captured per user, retrieved and
//! injected into later requests of the same user only, by every injection strategy, for
//! the chat and messages APIs, streamed or not; sessions prepend earlier turns without
//! duplicating a client's own history. All checked at the mock upstream.

mod common;

use common::*;
use serde_json::{json, Value};

fn config(mock: &MockUpstream, retrieval: &str) -> String {
    format!(
        "model_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/gpt-4o, api_base: '{}', api_key: k}}\n  - model_name: claude\n    litellm_params: {{model: anthropic/claude-test, api_base: 'http://{}', api_key: k}}\nrouter_settings: {{num_retries: 0}}\n{retrieval}\n",
        mock.url(),
        mock.addr
    )
}

const RETRIEVAL: &str = "context_retrieval: {enabled: true, query_strategy: last_user, injection_strategy: system, max_results: 5, max_context_length: 4000}";

async fn chat(proxy: &Proxy, user: &str, messages: Value, stream: bool) -> String {
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .header("x-memory-user-id", user)
        .json(&json!({"model": "gpt", "messages": messages, "stream": stream}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

fn said(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// The whole request body the upstream got last, as text.
fn last_upstream(mock: &MockUpstream) -> String {
    mock.requests().last().unwrap().body.to_string()
}

#[tokio::test]
async fn one_clients_memory_never_reaches_another() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, RETRIEVAL)).await;
    mock.push(Behavior::Text("Noted: tabs.".into()));
    chat(
        &proxy,
        "client-a",
        said("I prefer tabs over spaces for indentation"),
        false,
    )
    .await;
    proxy.flush_memory().await;

    chat(
        &proxy,
        "client-b",
        said("Which indentation do I prefer, tabs or spaces?"),
        false,
    )
    .await;
    let b_saw = last_upstream(&mock);
    assert!(
        !b_saw.contains("I prefer tabs"),
        "B got A's memory: {b_saw}"
    );
    assert!(
        !b_saw.contains("memproxy-memory"),
        "B got a memory block: {b_saw}"
    );

    chat(
        &proxy,
        "client-a",
        said("Which indentation do I prefer, tabs or spaces?"),
        false,
    )
    .await;
    let a_saw = &mock.requests().last().unwrap().body.clone();
    let system = &a_saw["messages"][0];
    assert_eq!(system["role"], "system", "{a_saw}");
    assert!(
        system["content"]
            .as_str()
            .unwrap()
            .contains("I prefer tabs over spaces"),
        "{a_saw}"
    );
}

#[tokio::test]
async fn streamed_answers_are_captured_and_injected_blocks_never_stored() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, RETRIEVAL)).await;
    mock.push(Behavior::Text("Your cat is called Miso.".into()));
    chat(
        &proxy,
        "u1",
        said("Remember that my cat is called Miso"),
        true,
    )
    .await;
    proxy.flush_memory().await;
    // A second exchange that gets the first injected: what it stores must not contain
    // the injected block.
    chat(&proxy, "u1", said("What is my cat called?"), true).await;
    assert!(last_upstream(&mock).contains("Miso"));
    proxy.flush_memory().await;

    let resp = client()
        .get(proxy.url("/v1/memories?user_id=u1&limit=50"))
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    let all = v["data"].to_string();
    assert!(
        all.contains("Your cat is called Miso."),
        "streamed answer captured: {all}"
    );
    assert!(all.contains("What is my cat called?"), "{all}");
    assert!(
        !all.contains("memproxy-memory"),
        "injected block stored back: {all}"
    );
}

#[tokio::test]
async fn each_injection_strategy_puts_memories_where_it_says() {
    for (strategy, check) in [
        ("system", "system"),
        ("user_prefix", "prefix"),
        ("user_suffix", "suffix"),
    ] {
        let mock = MockUpstream::start().await;
        let retrieval =
            format!("context_retrieval: {{enabled: true, injection_strategy: {strategy}}}");
        let proxy = start(&config(&mock, &retrieval)).await;
        let add = client()
            .post(proxy.url("/v1/memories"))
            .json(&json!({"user_id": "u", "content": "The deploy password rotates every Friday"}))
            .send()
            .await
            .unwrap();
        assert_eq!(add.status(), 201);
        chat(&proxy, "u", json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "When does the deploy password rotate?"}]), false).await;
        let body = &mock.requests().last().unwrap().body.clone();
        let msgs = body["messages"].as_array().unwrap();
        let system = msgs[0]["content"].as_str().unwrap();
        let user = msgs.last().unwrap()["content"].as_str().unwrap();
        match check {
            "system" => {
                assert!(
                    system.contains("rotates every Friday") && system.contains("Be brief."),
                    "{body}"
                );
                assert_eq!(user, "When does the deploy password rotate?");
            }
            "prefix" => {
                assert!(
                    user.starts_with("<memproxy-memory")
                        || user.find("rotates every Friday") < user.find("When does"),
                    "{body}"
                );
                assert_eq!(system, "Be brief.");
            }
            _ => {
                assert!(
                    user.find("rotates every Friday") > user.find("When does"),
                    "{body}"
                );
                assert_eq!(system, "Be brief.");
            }
        }
    }
}

#[tokio::test]
async fn enabled_for_models_limits_injection() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(
        &mock,
        "context_retrieval: {enabled: true, enabled_for_models: [claude]}",
    ))
    .await;
    client()
        .post(proxy.url("/v1/memories"))
        .json(&json!({"user_id": "u", "content": "Project codename is Bluebird"}))
        .send()
        .await
        .unwrap();
    chat(&proxy, "u", said("What is the project codename?"), false).await;
    assert!(
        !last_upstream(&mock).contains("Bluebird"),
        "gpt is not enabled"
    );
}

#[tokio::test]
async fn messages_api_to_anthropic_gets_memory_in_its_native_body() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, RETRIEVAL)).await;
    client()
        .post(proxy.url("/v1/memories"))
        .json(&json!({"user_id": "cc", "content": "The staging database is on port 6543"}))
        .send()
        .await
        .unwrap();
    let body = json!({
        "model": "claude", "max_tokens": 100,
        "system": [{"type": "text", "text": "You are a CLI.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "Which port is the staging database on?"}]
    });
    let resp = client()
        .post(proxy.url("/v1/messages"))
        .header("x-memory-user-id", "cc")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = &mock.requests().last().unwrap().body.clone();
    let system = seen["system"].to_string();
    assert!(system.contains("port 6543"), "{seen}");
    assert_eq!(
        seen["system"][0]["cache_control"],
        json!({"type": "ephemeral"}),
        "client's cached block kept first: {seen}"
    );
    proxy.flush_memory().await;
    let v: Value = client()
        .get(proxy.url("/v1/memories/search?user_id=cc&q=staging%20port"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v.to_string()
            .contains("Which port is the staging database on?"),
        "captured: {v}"
    );
}

#[tokio::test]
async fn sessions_prepend_without_duplicating_full_histories() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "")).await;
    let send = |messages: Value| {
        let url = proxy.url("/v1/chat/completions");
        async move {
            let resp = client()
                .post(url)
                .header("x-memory-user-id", "s-user")
                .header("x-session-id", "sess-1")
                .json(&json!({"model": "gpt", "messages": messages}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        }
    };
    mock.push(Behavior::Text("Hello Ada.".into()));
    send(said("My name is Ada")).await;
    proxy.flush_memory().await;

    // Only the new turn: the earlier turns are prepended.
    mock.push(Behavior::Text("You are Ada.".into()));
    send(said("What is my name?")).await;
    let msgs = mock.requests().last().unwrap().body["messages"].clone();
    let texts: Vec<&str> = msgs
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["My name is Ada", "Hello Ada.", "What is my name?"],
        "{msgs}"
    );
    proxy.flush_memory().await;

    // A client sending its whole history is not duplicated.
    let full = json!([
        {"role": "user", "content": "My name is Ada"},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "And my surname?"}
    ]);
    send(full.clone()).await;
    assert_eq!(mock.requests().last().unwrap().body["messages"], full);

    // Another user with the same session id sees nothing of it.
    let resp = client()
        .post(proxy.url("/v1/chat/completions"))
        .header("x-memory-user-id", "other")
        .header("x-session-id", "sess-1")
        .json(&json!({"model": "gpt", "messages": said("What is my name?")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!last_upstream(&mock).contains("Ada"));
}

#[tokio::test]
async fn embedding_model_embeds_queries_through_its_deployment() {
    let mock = MockUpstream::start().await;
    let yaml = format!(
        "{}  - model_name: embed\n    litellm_params: {{model: openai/text-embedding-3-small, api_base: '{}', api_key: k}}\nmemory: {{embedding_model: embed}}\n",
        config(&mock, RETRIEVAL).split("router_settings").next().unwrap(),
        mock.url()
    );
    let proxy = start(&yaml).await;
    client()
        .post(proxy.url("/v1/memories"))
        .json(&json!({"user_id": "e", "content": "Lunch is at noon on Thursdays"}))
        .send()
        .await
        .unwrap();
    let v: Value = client()
        .get(proxy.url("/v1/memories/search?user_id=e&q=when%20is%20lunch"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v.to_string().contains("Lunch is at noon"), "{v}");
    let embedded: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/embeddings"))
        .collect();
    assert!(
        embedded
            .iter()
            .any(|r| r.body.to_string().contains("when is lunch")),
        "the query was embedded by the configured model: {embedded:?}"
    );
    assert!(embedded
        .iter()
        .all(|r| r.body["model"] == "text-embedding-3-small"));
}
