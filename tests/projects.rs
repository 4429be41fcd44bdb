//! Project scopes (SPEC §4): one user's projects keep separate memories, named by the
//! `/p/<project>/` URL prefix, the `x-memory-project` header or a key's binding; a
//! user's project-independent memories reach every project with `project_then_user`
//! (labelled), none with `project_only`; another user sees none of them. The memory API,
//! export and forget-all take a project. All checked at the mock upstream.

mod common;

use common::*;
use serde_json::{json, Value};

const MASTER: &str = "sk-master-projects";

fn config(mock: &MockUpstream, project_scope: &str) -> String {
    format!(
        "general_settings: {{master_key: {MASTER}}}\nmodel_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/gpt-4o, api_base: '{}', api_key: k}}\nrouter_settings: {{num_retries: 0}}\ncontext_retrieval: {{enabled: true, max_results: 5, project_scope: {project_scope}}}\n",
        mock.url()
    )
}

/// A chat request of `user` at `path` (e.g. `/p/alpha/v1/chat/completions`); returns the
/// response's status and the body the upstream got (empty when it got none).
async fn chat_at(
    proxy: &Proxy,
    mock: &MockUpstream,
    path: &str,
    headers: &[(&str, &str)],
    text: &str,
) -> (u16, String, Value) {
    let before = mock.count();
    let mut req = client()
        .post(proxy.url(path))
        .bearer_auth(MASTER)
        .json(&chat_body("gpt", text));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let upstream = if mock.count() > before {
        mock.requests().last().unwrap().body.to_string()
    } else {
        String::new()
    };
    (status, upstream, body)
}

async fn say(proxy: &Proxy, mock: &MockUpstream, path: &str, user: &str, text: &str) -> String {
    mock.push(Behavior::Text("Noted.".into()));
    let (status, upstream, body) =
        chat_at(proxy, mock, path, &[("x-memory-user-id", user)], text).await;
    assert_eq!(status, 200, "{body}");
    upstream
}

#[tokio::test]
async fn projects_of_one_user_keep_their_own_memories_and_share_the_users() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "project_then_user")).await;
    let chat = "/v1/chat/completions";
    let alpha = "/p/alpha/v1/chat/completions";
    let beta = "/p/beta/v1/chat/completions";
    say(
        &proxy,
        &mock,
        alpha,
        "alice",
        "The alpha service deploys with helmfile",
    )
    .await;
    say(
        &proxy,
        &mock,
        chat,
        "alice",
        "I always want answers in British spelling",
    )
    .await;
    proxy.flush_memory().await;

    // Project alpha: its own fact, labelled, and the user's general one, labelled.
    let saw = say(
        &proxy,
        &mock,
        alpha,
        "alice",
        "how does it deploy? helmfile? spelling?",
    )
    .await;
    assert!(saw.contains("alpha service deploys with helmfile"), "{saw}");
    assert!(saw.contains("From this project (alpha):"), "{saw}");
    assert!(saw.contains("British spelling"), "{saw}");
    assert!(saw.contains("not specific to a project"), "{saw}");
    let own = saw.find("deploys with helmfile").unwrap();
    let general = saw.find("British spelling").unwrap();
    assert!(own < general, "the project's memory comes first: {saw}");

    // Project beta: not alpha's fact, but the user's general one.
    let saw = say(
        &proxy,
        &mock,
        beta,
        "alice",
        "how does it deploy? helmfile? spelling?",
    )
    .await;
    assert!(
        !saw.contains("deploys with helmfile"),
        "beta got alpha's memory: {saw}"
    );
    assert!(saw.contains("British spelling"), "{saw}");

    // No project: only the user's own memories, unlabelled.
    let saw = say(
        &proxy,
        &mock,
        chat,
        "alice",
        "how does it deploy? helmfile? spelling?",
    )
    .await;
    assert!(!saw.contains("deploys with helmfile"), "{saw}");
    assert!(
        saw.contains("British spelling") && !saw.contains("From this"),
        "{saw}"
    );

    // Another user sees neither, in the same project or without one.
    for path in [alpha, chat] {
        let saw = say(
            &proxy,
            &mock,
            path,
            "bob",
            "how does it deploy? helmfile? spelling?",
        )
        .await;
        assert!(!saw.contains("memproxy-memory"), "bob got a memory: {saw}");
    }
}

#[tokio::test]
async fn project_only_reads_nothing_of_the_user_and_the_header_names_projects_too() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "project_only")).await;
    let chat = "/v1/chat/completions";
    let u = |p: &'static str| [("x-memory-user-id", "carol"), ("x-memory-project", p)];
    mock.push(Behavior::Text("Noted.".into()));
    chat_at(
        &proxy,
        &mock,
        chat,
        &u("gamma"),
        "gamma uses postgres fifteen",
    )
    .await;
    say(
        &proxy,
        &mock,
        chat,
        "carol",
        "my editor is emacs with postgres mode",
    )
    .await;
    proxy.flush_memory().await;

    mock.push(Behavior::Text("ok".into()));
    let (s, saw, _) = chat_at(&proxy, &mock, chat, &u("gamma"), "which postgres?").await;
    assert_eq!(s, 200);
    assert!(saw.contains("gamma uses postgres fifteen"), "{saw}");
    assert!(
        !saw.contains("emacs"),
        "project_only read the user's memory: {saw}"
    );
    mock.push(Behavior::Text("ok".into()));
    let (_, saw, _) = chat_at(&proxy, &mock, chat, &u("delta"), "which postgres?").await;
    assert!(!saw.contains("memproxy-memory"), "{saw}");
}

#[tokio::test]
async fn bad_or_conflicting_projects_are_a_clear_400() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "project_then_user")).await;
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("/p/a%20b/v1/chat/completions", &[]),
        ("/p/.hidden/v1/chat/completions", &[]),
        ("/v1/chat/completions", &[("x-memory-project", "a#b")]),
        ("/p/one/v1/chat/completions", &[("x-memory-project", "two")]),
    ];
    for (path, headers) in cases {
        let (status, upstream, body) = chat_at(&proxy, &mock, path, headers, "hi").await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_project", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("project"),
            "{body}"
        );
        assert!(upstream.is_empty());
    }
    // Every route works under the prefix, errors in the client's format included.
    let resp = client()
        .get(proxy.url("/p/alpha/v1/models"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-memproxy-project"], "alpha");
    let info: Value = client()
        .get(proxy.url("/p/alpha/memory-routing/info"))
        .bearer_auth(MASTER)
        .header("x-memory-user-id", "alice")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["project"], "alpha");
    assert_eq!(info["project_rule"], "path");
    assert_eq!(info["user_id"], "alice");
    let resp = client()
        .post(proxy.url("/p/alpha/v1/messages"))
        .bearer_auth(MASTER)
        .json(&json!({"model": "nope", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error", "Anthropic error shape: {body}");
}

async fn api(
    proxy: &Proxy,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, String) {
    let c = client();
    let req = match method {
        "GET" => c.get(proxy.url(path)),
        "POST" => c.post(proxy.url(path)),
        _ => c.delete(proxy.url(path)),
    };
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let resp = req.bearer_auth(key).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn memory_api_export_and_forget_take_a_project() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "project_then_user")).await;
    let add = |project: Option<&str>, content: &str| {
        let mut b = json!({"user_id": "dave", "content": content});
        if let Some(p) = project {
            b["project"] = p.into();
        }
        b
    };
    for (p, c) in [
        (Some("alpha"), "alpha fact"),
        (Some("beta"), "beta fact"),
        (None, "general fact"),
    ] {
        let (s, body) = api(&proxy, "POST", "/v1/memories", MASTER, Some(add(p, c))).await;
        assert_eq!(s, 201, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["user_id"], "dave", "the scope key is never shown: {v}");
        assert_eq!(v.get("project").and_then(Value::as_str), p);
    }
    // The path prefix names the project as the parameter does.
    let list = |path: &'static str| api(&proxy, "GET", path, MASTER, None);
    let (_, a) = list("/v1/memories?user_id=dave&project=alpha").await;
    let (_, a2) = list("/p/alpha/v1/memories?user_id=dave").await;
    let (_, u) = list("/v1/memories?user_id=dave").await;
    assert!(
        a.contains("alpha fact") && !a.contains("beta fact") && !a.contains("general"),
        "{a}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&a).unwrap()["data"],
        serde_json::from_str::<Value>(&a2).unwrap()["data"]
    );
    assert!(
        u.contains("general fact") && !u.contains("alpha fact"),
        "{u}"
    );
    let (_, found) = list("/v1/memories/search?user_id=dave&project=beta&q=fact").await;
    assert!(
        found.contains("beta fact") && !found.contains("alpha"),
        "{found}"
    );
    let (s, body) = list("/v1/memories?user_id=dave&project=no%2Fslash").await;
    assert_eq!(s, 400, "{body}");

    // An id of another project is not found in this one.
    let id = serde_json::from_str::<Value>(&a).unwrap()["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = api(
        &proxy,
        "GET",
        &format!("/v1/memories/{id}?user_id=dave&project=beta"),
        MASTER,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = api(
        &proxy,
        "GET",
        &format!("/v1/memories/{id}?user_id=dave&project=alpha"),
        MASTER,
        None,
    )
    .await;
    assert_eq!(s, 200);

    // Export without a project: every scope, each line labelled.
    let (_, all) = list("/v1/memories/export?user_id=dave").await;
    let lines: Vec<Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{all}");
    assert_eq!(lines[0]["content"], "general fact");
    assert!(lines
        .iter()
        .any(|l| l["project"] == "beta" && l["content"] == "beta fact"));
    let (_, one) = list("/v1/memories/export?user_id=dave&project=alpha").await;
    assert_eq!(one.lines().count(), 1, "{one}");

    // Forget one project, then the whole user (its other projects included).
    let (_, body) = api(
        &proxy,
        "DELETE",
        "/v1/memories?user_id=dave&project=alpha",
        MASTER,
        None,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["deleted"],
        1,
        "{body}"
    );
    let (_, left) = list("/v1/memories/export?user_id=dave").await;
    assert_eq!(left.lines().count(), 2, "{left}");
    let (_, body) = api(&proxy, "DELETE", "/v1/memories?user_id=dave", MASTER, None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["deleted"],
        2,
        "{body}"
    );
    let (_, left) = list("/v1/memories/export?user_id=dave").await;
    assert_eq!(left, "");
}

#[tokio::test]
async fn a_key_bound_to_a_project_stays_in_it() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "project_then_user")).await;
    let (s, body) = api(
        &proxy,
        "POST",
        "/key/generate",
        MASTER,
        Some(json!({"user_id": "erin", "project": "alpha"})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let gen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(gen["project"], "alpha");
    let key = gen["key"].as_str().unwrap().to_string();
    let (s, body) = api(
        &proxy,
        "POST",
        "/key/generate",
        MASTER,
        Some(json!({"project": "a b"})),
    )
    .await;
    assert_eq!(s, 400, "{body}");

    // Its requests use project alpha whatever the URL or headers say.
    mock.push(Behavior::Text("Noted.".into()));
    let resp = client()
        .post(proxy.url("/p/beta/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-memory-project", "beta")
        .json(&chat_body("gpt", "alpha's cache is redis seven"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-memproxy-project"], "alpha");
    proxy.flush_memory().await;
    let (_, a) = api(
        &proxy,
        "GET",
        "/v1/memories?user_id=erin&project=alpha",
        MASTER,
        None,
    )
    .await;
    assert!(a.contains("redis seven"), "{a}");

    // The memory API: its project by default, never another one or the user's own.
    let (s, own) = api(&proxy, "GET", "/v1/memories?user_id=erin", &key, None).await;
    assert_eq!(s, 200);
    assert!(own.contains("redis seven"), "{own}");
    let (s, body) = api(
        &proxy,
        "GET",
        "/v1/memories?user_id=erin&project=beta",
        &key,
        None,
    )
    .await;
    assert_eq!(s, 403, "{body}");
    let (s, _) = api(
        &proxy,
        "GET",
        "/v1/memories?user_id=frank&project=alpha",
        &key,
        None,
    )
    .await;
    assert_eq!(s, 403);
    // Its forget-all forgets only its project.
    let (_, body) = api(
        &proxy,
        "POST",
        "/v1/memories",
        MASTER,
        Some(json!({"user_id": "erin", "content": "general"})),
    )
    .await;
    assert!(body.contains("general"));
    let (s, _) = api(&proxy, "DELETE", "/v1/memories?user_id=erin", &key, None).await;
    assert_eq!(s, 200);
    let (_, left) = api(
        &proxy,
        "GET",
        "/v1/memories/export?user_id=erin",
        MASTER,
        None,
    )
    .await;
    assert_eq!(left.lines().count(), 1, "{left}");
    assert!(left.contains("general"));
}

#[tokio::test]
async fn sessions_of_a_project_are_its_own() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "project_then_user")).await;
    let headers = [("x-memory-user-id", "gina"), ("x-session-id", "s1")];
    mock.push(Behavior::Text("First answer.".into()));
    chat_at(
        &proxy,
        &mock,
        "/p/alpha/v1/chat/completions",
        &headers,
        "first turn in alpha",
    )
    .await;
    proxy.flush_memory().await;
    mock.push(Behavior::Text("ok".into()));
    let (_, saw, _) = chat_at(
        &proxy,
        &mock,
        "/p/beta/v1/chat/completions",
        &headers,
        "next",
    )
    .await;
    assert!(
        !saw.contains("First answer"),
        "beta got alpha's session: {saw}"
    );
    mock.push(Behavior::Text("ok".into()));
    let (_, saw, _) = chat_at(
        &proxy,
        &mock,
        "/p/alpha/v1/chat/completions",
        &headers,
        "next",
    )
    .await;
    assert!(saw.contains("First answer"), "{saw}");
    let (_, list) = api(&proxy, "GET", "/v1/sessions?user_id=gina", MASTER, None).await;
    let v: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["data"][0]["project"], "alpha", "{v}");
    assert_eq!(v["data"][0]["user_id"], "gina", "{v}");
    let (s, _) = api(
        &proxy,
        "GET",
        "/v1/sessions/s1?user_id=gina&project=alpha",
        MASTER,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = api(&proxy, "GET", "/v1/sessions/s1?user_id=gina", MASTER, None).await;
    assert_eq!(s, 404);
}
