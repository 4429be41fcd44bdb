//! Memory tools (SPEC §4, `tool_execution`): memproxy offers `memory_search` and
//! `memory_get`, runs the model's calls against the caller's own memory and calls the
//! model again, round after round; the client sees only the final answer. Checked with a
//! scripted mock upstream that answers with tool calls, for the chat, messages and
//! responses APIs, streamed or not, against OpenAI, Anthropic and Gemini deployments.

mod common;
mod tools_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use memproxy::memory::{MemoryService, SystemClock};
use memproxy::storage::embedded::memory::{SqliteOptions, SqliteStore};
use mock_upstream::ScriptedCall;
use serde_json::{json, Value};
use tools_support::*;

const TOOLS: &str = "tool_execution: {enabled: true, max_iterations: 4, timeout_per_tool: 5}";

fn config(mock: &MockUpstream, tools: &str) -> String {
    format!(
        "model_list:\n  \
         - model_name: gpt\n    litellm_params: {{model: openai/gpt-4o, api_base: '{}', api_key: k}}\n  \
         - model_name: claude\n    litellm_params: {{model: anthropic/claude-test, api_base: 'http://{addr}', api_key: k}}\n  \
         - model_name: gem\n    litellm_params: {{model: gemini/gemini-2.0-flash, api_base: 'http://{addr}', api_key: k}}\n\
         router_settings: {{num_retries: 0}}\nmemory: {{capture: false}}\n{tools}\n",
        mock.url(),
        addr = mock.addr
    )
}

/// Stores a memory for `user` through the memory API; returns its id.
async fn seed(base: &str, user: &str, content: &str) -> String {
    let r = client()
        .post(format!("{base}/v1/memories"))
        .json(&json!({"user_id": user, "content": content}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

fn call(id: &str, name: &str, arguments: Value) -> Behavior {
    Behavior::ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: arguments.to_string(),
    }
}

fn search(id: &str, query: &str) -> Behavior {
    call(id, "memory_search", json!({ "query": query }))
}

#[tokio::test]
async fn one_round_search_reaches_the_model_with_every_provider() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, TOOLS)).await;
    let base = proxy.url("");
    let id = seed(&base, "alice", "Alice's cat is called Miso").await;
    for model in ["gpt", "claude", "gem"] {
        let before = mock.count();
        mock.push(search("call_1", "cat name"));
        mock.push(Behavior::Text("Your cat is called Miso.".into()));
        let a = ask(
            &base,
            Api::Chat,
            "alice",
            &request(Api::Chat, model, "What is my cat called?", false, None),
        )
        .await;
        assert_eq!(a.text, "Your cat is called Miso.", "{model}");
        assert!(a.calls.is_empty(), "{model}: {a:?}");
        assert_eq!(a.finish, "stop", "{model}");

        let reqs = &mock.requests()[before..];
        assert_eq!(reqs.len(), 2, "{model}: one round, then the answer");
        for r in reqs {
            assert!(!streamed_upstream(r), "{model}: {}", r.body);
            let names = offered(r);
            assert!(
                names.contains(&"memory_search".into()) && names.contains(&"memory_get".into()),
                "{model}: {names:?}"
            );
        }
        assert!(tool_results(&reqs[0]).is_empty());
        let results = tool_results(&reqs[1]);
        assert_eq!(results.len(), 1, "{model}: {}", reqs[1].body);
        let hit = &results[0]["results"][0];
        assert_eq!(hit["id"], id.as_str(), "{model}: {results:?}");
        assert_eq!(hit["content"], "Alice's cat is called Miso");
        assert!(hit["created_at"].as_str().unwrap().ends_with('Z'), "{hit}");
        assert_eq!(results[0]["query"], "cat name");
    }
    // The round's assistant turn went back with its call id (OpenAI shape).
    let r = &mock.requests()[1].body;
    let turn = &r["messages"][1];
    assert_eq!(turn["role"], "assistant", "{r}");
    assert_eq!(turn["tool_calls"][0]["id"], "call_1");
    assert_eq!(r["messages"][2]["tool_call_id"], "call_1");
    // The answer's usage counts both rounds.
    mock.push(search("call_1", "cat"));
    mock.push(Behavior::Text("Miso.".into()));
    let v: Value = serde_json::from_str(
        &ask(
            &base,
            Api::Chat,
            "alice",
            &request(Api::Chat, "gpt", "cat?", false, None),
        )
        .await
        .raw,
    )
    .unwrap();
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap() >= 2,
        "{v}"
    );
}

#[tokio::test]
async fn search_then_get_by_an_alias() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, TOOLS)).await;
    let base = proxy.url("");
    let id = seed(
        &base,
        "alice",
        "Alice's flight to Lisbon leaves on May 3 at 7:40 from gate B12",
    )
    .await;
    mock.push(search("c1", "flight Lisbon"));
    mock.push(call(
        "c2",
        "supermemoryToolGetDocument",
        json!({ "document_id": id }),
    ));
    mock.push(Behavior::Text("Gate B12 at 7:40.".into()));
    let a = ask(
        &base,
        Api::Chat,
        "alice",
        &request(Api::Chat, "gpt", "When is my flight?", false, None),
    )
    .await;
    assert_eq!(a.text, "Gate B12 at 7:40.");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3);
    let results = tool_results(&reqs[2]);
    assert_eq!(
        results.len(),
        2,
        "both rounds' results are in the last call"
    );
    assert_eq!(results[0]["results"][0]["id"], id.as_str());
    assert_eq!(results[1]["id"], id.as_str());
    assert!(results[1]["content"].as_str().unwrap().contains("gate B12"));
    assert!(results[1]["metadata"].is_object(), "{}", results[1]);
}

#[tokio::test]
async fn bad_arguments_get_a_structured_error_and_the_model_can_retry() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, TOOLS)).await;
    let base = proxy.url("");
    seed(&base, "alice", "Alice plays the cello").await;
    mock.push(Behavior::ToolCall {
        id: "c1".into(),
        name: "memory_search".into(),
        arguments: "{\"query\": ".into(),
    });
    mock.push(call("c2", "memory_search", json!({"q": "instrument"})));
    mock.push(call("c3", "memory_get", json!({"id": "no-such-id"})));
    mock.push(search("c4", "cello"));
    mock.push(Behavior::Text("The cello.".into()));
    let a = ask(
        &base,
        Api::Chat,
        "alice",
        &request(Api::Chat, "gpt", "Which instrument do I play?", false, None),
    )
    .await;
    assert_eq!(a.text, "The cello.");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 5);
    let results = tool_results(&reqs[4]);
    assert!(results[0]["error"]
        .as_str()
        .unwrap()
        .contains("not a JSON object"));
    assert_eq!(results[1]["error"], "missing required argument `query`");
    assert!(
        results[1]["hint"].as_str().unwrap().contains("\"query\""),
        "{}",
        results[1]
    );
    assert_eq!(results[2]["error"], "no memory with id `no-such-id`");
    assert!(results[2]["hint"].is_string());
    assert_eq!(results[3]["results"][0]["content"], "Alice plays the cello");
}

#[tokio::test]
async fn max_iterations_then_a_forced_answer() {
    let mock = MockUpstream::start().await;
    let tools = "tool_execution: {enabled: true, max_iterations: 2}";
    let proxy = start(&config(&mock, tools)).await;
    let base = proxy.url("");
    let body = request(Api::Chat, "gpt", "Tell me everything", false, None);

    mock.push(search("c1", "everything"));
    mock.push(search("c2", "everything else"));
    mock.push(Behavior::Text("Here is all I know.".into()));
    let a = ask(&base, Api::Chat, "alice", &body).await;
    assert_eq!(a.text, "Here is all I know.");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3, "two rounds, then the forced answer");
    assert!(reqs[0].body.get("tool_choice").is_none());
    assert!(reqs[1].body.get("tool_choice").is_none());
    assert_eq!(reqs[2].body["tool_choice"], "none");
    assert_eq!(tool_results(&reqs[2]).len(), 2);

    // A model that calls the tool even then: the call is dropped, nothing more is run.
    for i in 0..3 {
        mock.push(search(&format!("k{i}"), "more"));
    }
    let a = ask(&base, Api::Chat, "alice", &body).await;
    assert_eq!(
        mock.count(),
        6,
        "exactly max_iterations rounds and one more call"
    );
    assert!(a.calls.is_empty(), "{a:?}");
    assert_eq!(a.finish, "stop");
    assert!(!a.raw.contains("memory_search"), "{}", a.raw);
}

#[tokio::test]
async fn a_slow_memory_store_times_out_and_the_model_is_told() {
    let mock = MockUpstream::start().await;
    let tools = "tool_execution: {enabled: true, timeout_per_tool: 0.05}";
    let (cfg, dir) = test_config(&config(&mock, tools), &[]);
    let store = Arc::new(SlowStore {
        inner: SqliteStore::open(
            &dir.path().join("slow"),
            SqliteOptions {
                session_ttl: std::time::Duration::ZERO,
                session_max_messages: 10,
                clock: Arc::new(SystemClock),
                max_memories_per_user: 0,
            },
        )
        .unwrap(),
        hanging: AtomicUsize::new(0),
        searches: AtomicUsize::new(0),
        failing_writes: Default::default(),
    });
    let mut state = memproxy::AppState::new(cfg).unwrap();
    let st = Arc::get_mut(&mut state).unwrap();
    st.memory = Some(Arc::new(MemoryService::with_store(
        store.clone(),
        &st.config.memory,
        None,
    )));
    let proxy = start_state(state).await;
    let base = proxy.url("");
    seed(&base, "alice", "Alice's bike is green").await;
    let body = request(Api::Chat, "gpt", "What colour is my bike?", false, None);

    // The first attempt hangs past the timeout; the retry finds the memory.
    store.hanging.store(1, Ordering::SeqCst);
    mock.push(search("c1", "bike colour"));
    mock.push(Behavior::Text("Green.".into()));
    assert_eq!(ask(&base, Api::Chat, "alice", &body).await.text, "Green.");
    assert_eq!(store.searches.load(Ordering::SeqCst), 2);
    let results = tool_results(&mock.requests()[1]);
    assert_eq!(results[0]["results"][0]["content"], "Alice's bike is green");

    // Every attempt hangs: three attempts, then the model reads a timeout error.
    store.hanging.store(usize::MAX, Ordering::SeqCst);
    mock.push(search("c1", "bike colour"));
    mock.push(Behavior::Text("I could not check.".into()));
    let a = ask(&base, Api::Chat, "alice", &body).await;
    assert_eq!(a.text, "I could not check.");
    assert_eq!(store.searches.load(Ordering::SeqCst), 5);
    let results = tool_results(&mock.requests()[3]);
    let err = results[0]["error"].as_str().unwrap();
    assert!(
        err.contains("did not answer within 0.05 s (3 attempts)"),
        "{err}"
    );
    assert!(results[0]["hint"].is_string());
}

#[tokio::test]
async fn client_tools_come_back_untouched_and_memproxys_stay_hidden() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, TOOLS)).await;
    let base = proxy.url("");
    seed(&base, "alice", "Alice lives in Paris").await;
    for api in [Api::Chat, Api::Messages, Api::Responses] {
        for stream in [false, true] {
            let before = mock.count();
            let body = request(
                api,
                "gpt",
                "Weather where I live?",
                stream,
                Some(weather_tool(api)),
            );
            // A memory round, then the client's tool.
            mock.push(search("m1", "where does the user live"));
            mock.push(call("w1", "get_weather", json!({"city": "Paris"})));
            let a = ask(&base, api, "alice", &body).await;
            let ctx = format!("{api:?} stream={stream}");
            assert_eq!(
                a.calls,
                vec![("w1".into(), "get_weather".into(), json!({"city": "Paris"}))],
                "{ctx}"
            );
            let want = match api {
                Api::Chat => "tool_calls",
                Api::Messages => "tool_use",
                Api::Responses => "completed",
            };
            assert_eq!(a.finish, want, "{ctx}");
            assert!(!a.raw.contains("memory_search"), "{ctx}: {}", a.raw);
            assert!(!a.raw.contains("\"m1\""), "{ctx}: {}", a.raw);
            let reqs = &mock.requests()[before..];
            assert_eq!(reqs.len(), 2, "{ctx}");
            let names = offered(&reqs[0]);
            assert_eq!(names[0], "get_weather", "{ctx}: {names:?}");
            assert!(names.contains(&"memory_search".into()), "{ctx}");
            assert!(tool_results(&reqs[1])[0]["results"][0]["content"]
                .as_str()
                .unwrap()
                .contains("Paris"));

            // Mixed in one answer: only the client's call comes back, nothing is run.
            let before = mock.count();
            mock.push(Behavior::ToolCalls(vec![
                ScriptedCall::new("m2", "memory_search", r#"{"query": "home"}"#),
                ScriptedCall::new("w2", "get_weather", r#"{"city": "Paris"}"#),
            ]));
            let a = ask(&base, api, "alice", &body).await;
            assert_eq!(mock.count(), before + 1, "{ctx}");
            assert_eq!(a.calls.len(), 1, "{ctx}: {a:?}");
            assert_eq!(a.calls[0].0, "w2", "{ctx}");
            assert!(!a.raw.contains("memory_search"), "{ctx}: {}", a.raw);
        }
    }
    // The client's definition reached the upstream as the client wrote it.
    let first = &mock.requests()[0].body;
    assert_eq!(first["tools"][0], weather_tool(Api::Chat)[0], "{first}");
}

#[tokio::test]
async fn a_search_never_finds_another_users_memory() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, TOOLS)).await;
    let base = proxy.url("");
    let alice_id = seed(&base, "alice", "Alice's locker code is 4812").await;
    seed(&base, "bob", "Bob likes tea").await;

    // Bob's model asks for Alice's memory by her scope and by her memory's id.
    mock.push(call(
        "c1",
        "supermemoryToolSearch",
        json!({"query": "locker code", "containerTag": "alice"}),
    ));
    mock.push(call("c2", "memory_get", json!({ "id": alice_id })));
    mock.push(Behavior::Text("I don't know your locker code.".into()));
    ask(
        &base,
        Api::Chat,
        "bob",
        &request(Api::Chat, "gpt", "What is my locker code?", false, None),
    )
    .await;
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3);
    let results = tool_results(&reqs[2]);
    assert_eq!(results[0]["results"], json!([]), "{results:?}");
    assert_eq!(
        results[1]["error"],
        format!("no memory with id `{alice_id}`")
    );
    for r in &reqs {
        // The fact's wording, not its digits: a random memory id can hold "4812".
        assert!(
            !r.body.to_string().contains("locker code is 4812"),
            "{}",
            r.body
        );
    }

    // Alice's own search finds it.
    mock.push(search("c1", "locker code"));
    mock.push(Behavior::Text("4812.".into()));
    ask(
        &base,
        Api::Chat,
        "alice",
        &request(Api::Chat, "gpt", "What is my locker code?", false, None),
    )
    .await;
    let results = tool_results(&mock.requests()[4]);
    assert_eq!(
        results[0]["results"][0]["content"],
        "Alice's locker code is 4812"
    );
}

#[tokio::test]
async fn anthropic_clients_with_anthropic_and_openai_deployments() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, TOOLS)).await;
    let base = proxy.url("");
    seed(&base, "alice", "Alice's dentist is Dr. Okafor").await;
    for model in ["claude", "gpt"] {
        for stream in [false, true] {
            let before = mock.count();
            mock.push(search("toolu_1", "dentist"));
            mock.push(call(
                "toolu_2",
                "memory_search",
                json!({"query": "dentist name", "limit": 1}),
            ));
            mock.push(Behavior::Text("Dr. Okafor.".into()));
            let body = request(Api::Messages, model, "Who is my dentist?", stream, None);
            let a = ask(&base, Api::Messages, "alice", &body).await;
            let ctx = format!("{model} stream={stream}");
            assert_eq!(a.text, "Dr. Okafor.", "{ctx}");
            assert!(a.calls.is_empty(), "{ctx}");
            assert_eq!(a.finish, "end_turn", "{ctx}");
            let reqs = &mock.requests()[before..];
            assert_eq!(reqs.len(), 3, "{ctx}");
            let want_path = if model == "claude" {
                "/v1/messages"
            } else {
                "/v1/chat/completions"
            };
            for r in reqs {
                assert_eq!(r.path, want_path, "{ctx}");
                assert!(!streamed_upstream(r), "{ctx}");
            }
            let results = tool_results(&reqs[2]);
            assert_eq!(results.len(), 2, "{ctx}: {}", reqs[2].body);
            assert_eq!(results[1]["results"].as_array().unwrap().len(), 1);
            assert_eq!(
                results[1]["results"][0]["content"],
                "Alice's dentist is Dr. Okafor"
            );
            if model == "claude" {
                // Anthropic's own shapes: the tool_use turn, then its tool_result.
                let msgs = reqs[1].body["messages"].as_array().unwrap();
                let n = msgs.len();
                assert_eq!(msgs[n - 2]["content"][0]["type"], "tool_use", "{ctx}");
                assert_eq!(msgs[n - 2]["content"][0]["id"], "toolu_1");
                assert_eq!(msgs[n - 1]["content"][0]["tool_use_id"], "toolu_1");
                assert!(reqs[0].body["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["name"] == "memory_search" && t["input_schema"].is_object()));
            }
        }
    }
}

#[tokio::test]
async fn streaming_clients_get_a_proper_stream_of_the_final_answer() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, TOOLS)).await;
    let base = proxy.url("");
    seed(&base, "alice", "Alice's favourite colour is teal").await;
    for api in [Api::Chat, Api::Messages, Api::Responses] {
        for model in ["gpt", "claude", "gem"] {
            let before = mock.count();
            mock.push(search("c1", "favourite colour"));
            mock.push(Behavior::Text("Teal, of course.".into()));
            let body = request(api, model, "What is my favourite colour?", true, None);
            let a = ask(&base, api, "alice", &body).await;
            let ctx = format!("{api:?} {model}");
            assert_eq!(a.text, "Teal, of course.", "{ctx}: {}", a.raw);
            assert!(a.calls.is_empty(), "{ctx}");
            assert!(!a.raw.contains("memory_search"), "{ctx}");
            let reqs = &mock.requests()[before..];
            assert_eq!(reqs.len(), 2, "{ctx}");
            assert!(reqs.iter().all(|r| !streamed_upstream(r)), "{ctx}");
            assert!(tool_results(&reqs[1])[0]["results"][0]["content"]
                .as_str()
                .unwrap()
                .contains("teal"));
        }
    }
    // OpenAI clients get the usage chunk when they ask for it, and only then.
    for include in [false, true] {
        mock.push(search("c1", "colour"));
        mock.push(Behavior::Text("Teal.".into()));
        let mut body = request(Api::Chat, "gpt", "Colour?", true, None);
        body["stream_options"] = json!({ "include_usage": include });
        let a = ask(&base, Api::Chat, "alice", &body).await;
        let usage_chunks = events(&a.raw)
            .iter()
            .filter(|(_, v)| v["usage"].is_object())
            .count();
        assert_eq!(usage_chunks, usize::from(include), "{}", a.raw);
        assert!(mock
            .requests()
            .last()
            .unwrap()
            .body
            .get("stream_options")
            .is_none());
    }
}

#[tokio::test]
async fn tools_only_for_the_listed_models_and_capture_sees_the_final_answer() {
    let mock = MockUpstream::start().await;
    let tools = "tool_execution: {enabled: true, enabled_for_models: [claude]}";
    let yaml = config(&mock, tools).replace("memory: {capture: false}", "");
    let proxy = start(&yaml).await;
    let base = proxy.url("");
    seed(&base, "alice", "Alice's sister is called Ines").await;

    mock.push(Behavior::Text("No tools here.".into()));
    ask(
        &base,
        Api::Chat,
        "alice",
        &request(Api::Chat, "gpt", "Hello", false, None),
    )
    .await;
    assert!(mock.requests()[0].body.get("tools").is_none());

    mock.push(search("c1", "sister"));
    mock.push(Behavior::Text("Your sister is Ines.".into()));
    ask(
        &base,
        Api::Messages,
        "alice",
        &request(
            Api::Messages,
            "claude",
            "What is my sister called?",
            false,
            None,
        ),
    )
    .await;
    assert_eq!(mock.count(), 3);
    proxy.flush_memory().await;
    let v: Value = client()
        .get(proxy.url("/v1/memories?user_id=alice&limit=50"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let all: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(
        all.contains(&"user: What is my sister called?\nassistant: Your sister is Ines."),
        "{all:?}"
    );
    assert!(
        all.iter().all(|m| !m.contains("\"results\"")),
        "tool results are never stored: {all:?}"
    );
}

#[tokio::test]
async fn the_analytics_row_counts_rounds_attempts_and_every_rounds_tokens() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, TOOLS)).await;
    let base = proxy.url("");
    seed(&base, "alice", "Alice runs on Tuesdays").await;
    let question = "When do I go running?";
    mock.push(search("c1", "running"));
    mock.push(search("c2", "running day"));
    mock.push(Behavior::Text("On Tuesdays.".into()));
    let body = request(Api::Chat, "gpt", question, false, None);
    let answer: Value =
        serde_json::from_str(&ask(&base, Api::Chat, "alice", &body).await.raw).unwrap();
    // The mock charges the last user message (the same in every round) per call.
    let per_call = (question.len() as u64).div_ceil(4);
    assert_eq!(answer["usage"]["prompt_tokens"], 3 * per_call, "{answer}");

    mock.push(Behavior::Text("Hi.".into()));
    ask(
        &base,
        Api::Chat,
        "alice",
        &request(Api::Chat, "gpt", "Hello", false, None),
    )
    .await;

    proxy.state.analytics.flush().await;
    let v: Value = client()
        .get(proxy.url("/v1/usage/requests?user_id=alice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    let looped = rows
        .iter()
        .find(|r| r["tool_rounds"] == 2)
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(looped["attempts"], 3);
    assert_eq!(looped["tokens_in"], 3 * per_call);
    assert_eq!(looped["status"], 200);
    assert!(rows.iter().any(|r| r["tool_rounds"] == 0), "{v}");
}

#[tokio::test]
async fn a_store_that_refuses_writes_fails_readiness_and_recovers() {
    let mock = MockUpstream::start().await;
    let yaml = config(&mock, "").replace("memory: {capture: false}", "");
    let (cfg, dir) = test_config(&yaml, &[]);
    let store = Arc::new(SlowStore {
        inner: SqliteStore::open(
            &dir.path().join("failing"),
            SqliteOptions {
                session_ttl: std::time::Duration::ZERO,
                session_max_messages: 10,
                clock: Arc::new(SystemClock),
                max_memories_per_user: 0,
            },
        )
        .unwrap(),
        hanging: AtomicUsize::new(0),
        searches: AtomicUsize::new(0),
        failing_writes: Default::default(),
    });
    let mut state = memproxy::AppState::new(cfg).unwrap();
    let st = Arc::get_mut(&mut state).unwrap();
    st.memory = Some(Arc::new(MemoryService::with_store(
        store.clone(),
        &st.config.memory,
        None,
    )));
    let proxy = start_state(state).await;
    let base = proxy.url("");
    let ready = || async {
        let r = client()
            .get(format!("{base}/health/readiness"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(ready().await.0, 200);

    // The disk fills up: chats are still answered, readiness says what is wrong.
    store.failing_writes.store(true, Ordering::SeqCst);
    let body = request(
        Api::Chat,
        "gpt",
        "Remember that my bike is green",
        false,
        None,
    );
    mock.push(Behavior::Text("Noted.".into()));
    assert_eq!(ask(&base, Api::Chat, "alice", &body).await.text, "Noted.");
    proxy.flush_memory().await;
    let (status, v) = ready().await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["checks"]["memory"]["ok"], false, "{v}");

    // Room again: the next write succeeds and readiness recovers with no manual step.
    store.failing_writes.store(false, Ordering::SeqCst);
    mock.push(Behavior::Text("Noted again.".into()));
    assert_eq!(
        ask(&base, Api::Chat, "alice", &body).await.text,
        "Noted again."
    );
    proxy.flush_memory().await;
    assert_eq!(ready().await.0, 200);
}

/// In a project, the tools read the project's memories and then (`project_then_user`,
/// the default) its user's outside any project, as injection does; `project_only` keeps
/// them to the project. Another project's memories stay out either way.
#[tokio::test]
async fn in_a_project_the_tools_read_the_project_then_the_user() {
    for (mode, user_level_found) in [("project_then_user", true), ("project_only", false)] {
        let mock = MockUpstream::start().await;
        let yaml = format!(
            "{}context_retrieval: {{enabled: false, project_scope: {mode}}}\n",
            config(&mock, TOOLS)
        );
        let proxy = start(&yaml).await;
        let base = proxy.url("");
        let add = |body: Value| {
            let url = format!("{base}/v1/memories");
            async move {
                let r = client().post(url).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 201);
                r.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
        };
        add(json!({"user_id": "alice", "project": "alpha", "content": "The alpha deploy key rotates monthly"})).await;
        let user_level =
            add(json!({"user_id": "alice", "content": "Alice's deploy window is Tuesday"})).await;
        add(json!({"user_id": "alice", "project": "beta", "content": "The beta deploy is frozen"}))
            .await;

        mock.push(search("c1", "deploy"));
        mock.push(call("c2", "memory_get", json!({ "id": user_level })));
        mock.push(Behavior::Text("ok".into()));
        ask(
            &format!("{base}/p/alpha"),
            Api::Chat,
            "alice",
            &request(Api::Chat, "gpt", "When do I deploy?", false, None),
        )
        .await;
        let results = tool_results(&mock.requests()[2]);
        let found = results[0]["results"].to_string();
        assert!(found.contains("alpha deploy key"), "{mode}: {found}");
        assert!(!found.contains("beta deploy"), "{mode}: {found}");
        assert_eq!(
            found.contains("Tuesday"),
            user_level_found,
            "{mode}: {found}"
        );
        assert_eq!(
            results[1]["content"] == "Alice's deploy window is Tuesday",
            user_level_found,
            "{mode}: {:?}",
            results[1]
        );
    }
}
