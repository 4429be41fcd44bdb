//! Isolation, attacked: generated look-alikes of a victim's user id (case, whitespace and
//! invisible characters, unicode look-alikes, separators, SQL and FTS syntax, very long
//! ids) and adversarial queries, through the memory API (search, list, export), chat
//! (header identity, memory injection) and a virtual key bound to another user asking for
//! the victim by query, header and body. Not one read may cross to the victim's memory.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use reqwest::header::HeaderValue;
use serde_json::{json, Value};

const MASTER: &str = "sk-master";
const VICTIM: &str = "alice";
const SECRET: &str = "zebra-quartz-7781";

fn config(mock: &MockUpstream) -> String {
    format!(
        "general_settings: {{master_key: {MASTER}}}\nmodel_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/gpt-4o, api_base: '{}', api_key: k}}\nrouter_settings: {{num_retries: 0}}\ncontext_retrieval: {{enabled: true, query_strategy: last_user, injection_strategy: system, max_results: 5}}\n",
        mock.url()
    )
}

/// Ids that are not the victim's but look like it.
fn look_alike() -> impl Strategy<Value = String> {
    let affixes = prop_oneof![
        Just(" "),
        Just("\u{a0}"),
        Just("\u{3000}"),
        Just("\u{2028}"),
        Just("\u{200b}"),
        Just("\t"),
        Just("\0"),
        Just("%"),
        Just("*"),
        Just("#p"),
        Just("/"),
        Just("/.."),
        Just(":"),
        Just("@"),
        Just("."),
        Just("-"),
        Just("_"),
        Just("' OR '1'='1"),
        Just("\" OR 1=1 --"),
        Just("; DROP TABLE memories; --"),
        Just(" OR bob"),
        Just("\u{301}"),
    ];
    prop_oneof![
        // Case.
        Just("Alice".to_string()),
        Just("ALICE".to_string()),
        Just("alicE".to_string()),
        // Unicode look-alikes (Cyrillic a, dotless i, full-width letters).
        Just("\u{430}lice".to_string()),
        Just("al\u{131}ce".to_string()),
        Just("\u{ff41}lice".to_string()),
        // Affixes before or after.
        (affixes.clone(), any::<bool>()).prop_map(|(a, before)| if before {
            format!("{a}{VICTIM}")
        } else {
            format!("{VICTIM}{a}")
        }),
        // Very long ids that start with the victim's.
        (1usize..400).prop_map(|n| format!("{VICTIM}{}", "a".repeat(n))),
        // Anything at all.
        "\\PC{0,40}",
    ]
    .prop_filter("not the victim", |id| id != VICTIM)
}

/// Queries meant to break out of a search.
fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("vault password".to_string()),
        Just("zebra quartz 7781".to_string()),
        Just("*".to_string()),
        Just("\"".to_string()),
        Just("zebra OR quartz".to_string()),
        Just("NEAR(zebra quartz)".to_string()),
        Just("' OR 1=1 --".to_string()),
        Just("user_id:alice".to_string()),
        Just("%".to_string()),
        "\\PC{0,60}",
    ]
}

struct World {
    proxy: Proxy,
    mock: MockUpstream,
    /// A key bound to another user.
    mallory: String,
}

fn leaked(text: &str) -> bool {
    text.contains(SECRET)
}

async fn get_text(w: &World, key: &str, path: &str, query: &[(&str, &str)]) -> String {
    let url = reqwest::Url::parse_with_params(&w.proxy.url(path), query).unwrap();
    let resp = client().get(url).bearer_auth(key).send().await.unwrap();
    resp.text().await.unwrap()
}

/// A chat request as `key`, naming `user` by header and in the body; returns what the
/// upstream received (if the request reached it) and the answer.
async fn chat(w: &World, key: &str, user: &str, text: &str) -> Result<(String, String), String> {
    let before = w.mock.count();
    let mut req = client()
        .post(w.proxy.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(
            &json!({"model": "gpt", "user": user, "messages": [{"role": "user", "content": text}]}),
        );
    if let Ok(v) = HeaderValue::from_bytes(user.as_bytes()) {
        req = req.header("x-memory-user-id", v);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let answer = resp.text().await.unwrap();
    if status >= 500 {
        return Err(format!("{status}: {answer}"));
    }
    let upstream = if w.mock.count() > before {
        w.mock.requests().last().unwrap().body.to_string()
    } else {
        String::new()
    };
    Ok((upstream, answer))
}

async fn attack(w: &World, id: &str, q: &str) -> Result<(), TestCaseError> {
    // As the master key, naming a look-alike id.
    for (path, params) in [
        ("/v1/memories/search", vec![("user_id", id), ("query", q)]),
        ("/v1/memories", vec![("user_id", id)]),
        ("/v1/memories/export", vec![("user_id", id)]),
    ] {
        let text = get_text(w, MASTER, path, &params).await;
        prop_assert!(!leaked(&text), "{path} as {id:?} / {q:?}: {text}");
    }
    // HTTP drops spaces and tabs around a header value: "alice\t" in a header is "alice"
    // on the wire, whom the master key may read.
    if id.trim_matches([' ', '\t']) != VICTIM {
        let (upstream, answer) = chat(w, MASTER, id, q).await.map_err(TestCaseError::fail)?;
        prop_assert!(
            !leaked(&upstream),
            "chat as {id:?}: upstream got {upstream}"
        );
        prop_assert!(!leaked(&answer), "chat as {id:?}: {answer}");
    }

    // As a key bound to mallory, naming the victim or a look-alike anywhere.
    for who in [VICTIM, id] {
        for (path, params) in [
            ("/v1/memories/search", vec![("user_id", who), ("query", q)]),
            ("/v1/memories", vec![("user_id", who)]),
            ("/v1/memories/export", vec![("user_id", who)]),
            ("/v1/usage/requests", vec![("user_id", who)]),
            ("/v1/sessions", vec![("user_id", who)]),
        ] {
            let text = get_text(w, &w.mallory, path, &params).await;
            prop_assert!(!leaked(&text), "{path} by mallory as {who:?}: {text}");
        }
        let (upstream, answer) = chat(w, &w.mallory, who, q)
            .await
            .map_err(TestCaseError::fail)?;
        prop_assert!(!leaked(&upstream), "mallory's chat as {who:?}: {upstream}");
        prop_assert!(!leaked(&answer), "mallory's chat as {who:?}: {answer}");
    }
    Ok(())
}

#[test]
fn no_look_alike_id_or_query_reads_another_users_memory() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let world = rt.block_on(async {
        let mock = MockUpstream::start().await;
        let proxy = start(&config(&mock)).await;
        let resp = client()
            .post(proxy.url("/v1/memories"))
            .bearer_auth(MASTER)
            .json(&json!({"user_id": VICTIM, "content": format!("Alice's vault password is {SECRET}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let key: Value = client()
            .post(proxy.url("/key/generate"))
            .bearer_auth(MASTER)
            .json(&json!({"user_id": "mallory"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mallory = key["key"].as_str().unwrap().to_string();
        World {
            proxy,
            mock,
            mallory,
        }
    });
    // The attack could see a leak: the victim's own search finds the secret.
    let own = rt.block_on(get_text(
        &world,
        MASTER,
        "/v1/memories/search",
        &[("user_id", VICTIM), ("query", "vault password")],
    ));
    assert!(leaked(&own), "{own}");
    let own_chat = rt.block_on(chat(&world, MASTER, VICTIM, "what is my vault password?"));
    assert!(
        leaked(&own_chat.unwrap().0),
        "the victim's own chat gets the memory"
    );

    let cases = std::env::var("MEMPROXY_ISOLATION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    // A fixed seed keeps CI reproducible; MEMPROXY_ISOLATION_SEED explores others.
    let seed = std::env::var("MEMPROXY_ISOLATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6d65_6d70);
    let mut runner = TestRunner::new(PropConfig {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        failure_persistence: None,
        ..PropConfig::default()
    });
    runner
        .run(&(look_alike(), query()), |(id, q)| {
            rt.block_on(attack(&world, &id, &q))
        })
        .unwrap();
}
