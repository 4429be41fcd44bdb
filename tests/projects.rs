//! One memory per project (issue 21): a request names its project by the
//! `x-memory-project` header, the `/p/<project>` base-URL prefix, `memproxy intercept`
//! or its key's binding. Captured facts stay in their project; the user's
//! project-independent memories reach every project with `project_then_user` and none
//! with `project_only`; another user sees neither; bad names are a 400 that changes
//! nothing; a key bound to a project cannot reach another one. Checked at the mock
//! upstream, through the real server and through real interceptors.

mod common;

use std::net::SocketAddr;

use axum::http::HeaderName;
use common::*;
use memproxy::intercept::Target;
use serde_json::{json, Value};
use tokio::sync::oneshot;

const MASTER: &str = "sk-master";

fn config(mock: &MockUpstream, project_scope: &str) -> String {
    format!(
        "general_settings: {{master_key: {MASTER}}}\nmodel_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/gpt-4o, api_base: '{}', api_key: k}}\n  - model_name: claude\n    litellm_params: {{model: anthropic/claude-test, api_base: 'http://{}', api_key: k}}\nrouter_settings: {{num_retries: 0}}\ncontext_retrieval: {{enabled: true, query_strategy: last_user, max_results: 5, project_scope: {project_scope}}}\n",
        mock.url(),
        mock.addr
    )
}

/// A running interceptor for `project` as `user`, forwarding to `proxy`.
struct Interceptor {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn intercept(proxy: &Proxy, project: &str, user: &str) -> Interceptor {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target = Target {
        upstream: proxy.url("").parse().unwrap(),
        project: project.into(),
        user: Some(user.into()),
        user_header: HeaderName::from_static("x-memory-user-id"),
        key: Some(MASTER.into()),
    };
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(memproxy::intercept::serve(listener, target, async {
        let _ = rx.await;
    }));
    Interceptor { addr, _stop: tx }
}

/// A chat request to `base` (a proxy or interceptor URL, with any `/p/` prefix) as
/// `user`; returns the status.
async fn chat_at(base: &str, user: &str, text: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(MASTER)
        .header("x-memory-user-id", user)
        .json(&chat_body("gpt", text));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.text().await;
    status
}

/// What the upstream got last, as text.
fn last_upstream(mock: &MockUpstream) -> String {
    mock.requests().last().unwrap().body.to_string()
}

async fn add_memory(proxy: &Proxy, body: Value) -> Value {
    let resp = client()
        .post(proxy.url("/v1/memories"))
        .bearer_auth(MASTER)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

async fn api_get(proxy: &Proxy, path: &str, key: &str) -> (u16, Value) {
    let resp = client()
        .get(proxy.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

const ASK: &str = "Which cluster does the deploy use, and how are commit messages written?";

#[tokio::test]
async fn project_memory_through_interceptors_and_prefixes() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "project_then_user")).await;
    let alpha = intercept(&proxy, "alpha", "alice").await;
    let alpha_url = format!("http://{}", alpha.addr);
    let beta_url = proxy.url("/p/beta");

    // Captured in alpha through its interceptor; a user-level fact through the API.
    mock.push(Behavior::Text("Noted.".into()));
    let fact = "The alpha deploy uses the mercury cluster";
    assert_eq!(chat_at(&alpha_url, "alice", fact, &[]).await, 200);
    add_memory(
        &proxy,
        json!({"user_id": "alice", "content": "Commit messages are written in the imperative mood"}),
    )
    .await;
    // Captured in beta through the prefix.
    mock.push(Behavior::Text("Noted.".into()));
    let beta_fact = "The beta deploy uses the venus cluster";
    assert_eq!(chat_at(&beta_url, "alice", beta_fact, &[]).await, 200);
    proxy.flush_memory().await;

    // Alpha: its own fact, labelled, and the user's; not beta's.
    assert_eq!(chat_at(&alpha_url, "alice", ASK, &[]).await, 200);
    let saw = last_upstream(&mock);
    assert!(
        saw.contains("mercury") && saw.contains("imperative"),
        "{saw}"
    );
    assert!(!saw.contains("venus"), "alpha got beta's memory: {saw}");
    assert!(saw.contains("From this project (alpha):"), "{saw}");
    assert!(
        saw.contains("From this user's memories outside any project:"),
        "{saw}"
    );
    let project_at = saw.find("mercury").unwrap();
    assert!(
        project_at < saw.find("imperative").unwrap(),
        "project first"
    );

    // Beta (prefix): its own and the user's, not alpha's.
    assert_eq!(chat_at(&beta_url, "alice", ASK, &[]).await, 200);
    let saw = last_upstream(&mock);
    assert!(saw.contains("venus") && saw.contains("imperative"), "{saw}");
    assert!(!saw.contains("mercury"), "beta got alpha's memory: {saw}");

    // Beta by header, on the plain URL: the same scope as the prefix.
    let plain = proxy.url("");
    assert_eq!(
        chat_at(&plain, "alice", ASK, &[("x-memory-project", "beta")]).await,
        200
    );
    let saw = last_upstream(&mock);
    assert!(saw.contains("venus") && !saw.contains("mercury"), "{saw}");

    // Another user, in the same project names: nothing of alice's.
    let bob_alpha = intercept(&proxy, "alpha", "bob").await;
    for base in [format!("http://{}", bob_alpha.addr), proxy.url("/p/beta")] {
        assert_eq!(chat_at(&base, "bob", ASK, &[]).await, 200);
        let saw = last_upstream(&mock);
        assert!(!saw.contains("memproxy-memory"), "bob got a memory: {saw}");
    }

    // No project: the user's own memories only.
    assert_eq!(chat_at(&plain, "alice", ASK, &[]).await, 200);
    let saw = last_upstream(&mock);
    assert!(saw.contains("imperative"), "{saw}");
    assert!(!saw.contains("mercury") && !saw.contains("venus"), "{saw}");

    // The memory API sees the same scopes.
    let (_, list) = api_get(&proxy, "/v1/memories?user_id=alice&project=alpha", MASTER).await;
    let items = list["data"].as_array().unwrap();
    assert!(items
        .iter()
        .all(|m| m["project"] == "alpha" && m["user_id"] == "alice"));
    let text = list["data"].to_string();
    assert!(
        text.contains("mercury") && !text.contains("venus"),
        "{list}"
    );
    let (_, list) = api_get(&proxy, "/p/beta/v1/memories?user_id=alice", MASTER).await;
    let text = list["data"].to_string();
    assert!(
        text.contains("venus") && !text.contains("mercury"),
        "{list}"
    );
    let (_, list) = api_get(&proxy, "/v1/memories?user_id=alice", MASTER).await;
    let text = list["data"].to_string();
    assert!(
        text.contains("imperative") && !text.contains("venus"),
        "{list}"
    );
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m.get("project").is_none()));
    let (_, projects) = api_get(&proxy, "/v1/memories/projects?user_id=alice", MASTER).await;
    let names: Vec<&str> = projects["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["project"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);

    // Forgetting a project takes that project only; forgetting the user takes all.
    let del = |q: &'static str| {
        client()
            .delete(proxy.url(&format!("/v1/memories?{q}")))
            .bearer_auth(MASTER)
            .send()
    };
    assert_eq!(
        del("user_id=alice&project=alpha").await.unwrap().status(),
        200
    );
    let (_, list) = api_get(&proxy, "/v1/memories?user_id=alice&project=alpha", MASTER).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let (_, list) = api_get(&proxy, "/v1/memories?user_id=alice&project=beta", MASTER).await;
    assert!(!list["data"].as_array().unwrap().is_empty());
    assert_eq!(del("user_id=alice").await.unwrap().status(), 200);
    for q in ["", "&project=beta"] {
        let (_, list) = api_get(&proxy, &format!("/v1/memories?user_id=alice{q}"), MASTER).await;
        assert_eq!(list["data"].as_array().unwrap().len(), 0, "{q}: {list}");
    }
}

#[tokio::test]
async fn project_only_leaves_the_users_memories_out() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "project_only")).await;
    add_memory(
        &proxy,
        json!({"user_id": "alice", "content": "Commit messages are written in the imperative mood"}),
    )
    .await;
    let added = add_memory(
        &proxy,
        json!({"user_id": "alice", "project": "alpha", "content": "The alpha deploy uses the mercury cluster"}),
    )
    .await;
    assert_eq!(added["project"], "alpha");
    proxy.flush_memory().await;
    assert_eq!(
        chat_at(&proxy.url("/p/alpha"), "alice", ASK, &[]).await,
        200
    );
    let saw = last_upstream(&mock);
    assert!(saw.contains("mercury"), "{saw}");
    assert!(!saw.contains("imperative"), "project_only: {saw}");
    assert!(!saw.contains("outside any project"), "{saw}");

    // Sessions are kept in the project's scope too.
    let sid = [("x-session-id", "s-1")];
    assert_eq!(
        chat_at(&proxy.url("/p/alpha"), "alice", "hello", &sid).await,
        200
    );
    proxy.flush_memory().await;
    let (_, list) = api_get(&proxy, "/v1/sessions?user_id=alice&project=alpha", MASTER).await;
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    assert_eq!(data[0]["project"], "alpha");
    assert_eq!(data[0]["user_id"], "alice");
    let (_, list) = api_get(&proxy, "/v1/sessions?user_id=alice", MASTER).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
}

#[tokio::test]
async fn bad_project_names_are_a_400_that_changes_nothing() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "project_then_user")).await;
    let plain = proxy.url("");
    for bad in ["a b", "a#b", &"x".repeat(65), ".."] {
        let resp = client()
            .post(proxy.url("/v1/chat/completions"))
            .bearer_auth(MASTER)
            .header("x-memory-project", bad)
            .json(&chat_body("gpt", "remember this"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad:?}");
        let v: Value = resp.json().await.unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("invalid project name"),
            "{v}"
        );
    }
    // The prefix, in the Anthropic wire format for /v1/messages.
    let resp = client()
        .post(proxy.url("/p/bad%20name/v1/messages"))
        .bearer_auth(MASTER)
        .json(&json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    // The memory API.
    let (status, _) = api_get(&proxy, "/v1/memories?user_id=alice&project=a%2Fb", MASTER).await;
    assert_eq!(status, 400);
    let resp = client()
        .post(proxy.url("/v1/memories"))
        .bearer_auth(MASTER)
        .json(&json!({"user_id": "alice", "project": "no spaces", "content": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(mock.count(), 0, "nothing reached the upstream");
    let (_, list) = api_get(&proxy, "/v1/memories?user_id=alice", MASTER).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // A prefix with nothing after it is an unknown path, not a crash.
    let resp = client()
        .get(format!("{plain}/p/alpha"))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn a_key_bound_to_a_project_stays_in_it() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "project_then_user")).await;
    let resp = client()
        .post(proxy.url("/key/generate"))
        .bearer_auth(MASTER)
        .json(&json!({"user_id": "carol", "project": "alpha"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let gen: Value = resp.json().await.unwrap();
    assert_eq!(gen["project"], "alpha", "{gen}");
    let key = gen["key"].as_str().unwrap().to_string();
    let bad = client()
        .post(proxy.url("/key/generate"))
        .bearer_auth(MASTER)
        .json(&json!({"user_id": "carol", "project": "a/b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let chat_with = |url: String, header: Option<&'static str>, text: &'static str| {
        let mut req = client()
            .post(url)
            .bearer_auth(&key)
            .json(&chat_body("gpt", text));
        if let Some(h) = header {
            req = req.header("x-memory-project", h);
        }
        req.send()
    };
    // Naming another project, by header or prefix: refused.
    let r = chat_with(proxy.url("/v1/chat/completions"), Some("beta"), "hi")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = chat_with(proxy.url("/p/beta/v1/chat/completions"), None, "hi")
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(mock.count(), 0);
    // Naming none, or its own: the key's project.
    mock.push(Behavior::Text("Noted.".into()));
    let r = chat_with(
        proxy.url("/v1/chat/completions"),
        None,
        "The alpha deploy uses the mercury cluster",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    proxy.flush_memory().await;
    let (_, list) = api_get(&proxy, "/v1/memories?user_id=carol&project=alpha", MASTER).await;
    assert!(list["data"].to_string().contains("mercury"), "{list}");
    let (_, list) = api_get(&proxy, "/v1/memories?user_id=carol", MASTER).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
    // The memory API with the key: its project only.
    let (status, list) = api_get(&proxy, "/v1/memories?user_id=carol", &key).await;
    assert_eq!(status, 200);
    assert!(list["data"].to_string().contains("mercury"), "{list}");
    let (status, _) = api_get(&proxy, "/v1/memories?user_id=carol&project=beta", &key).await;
    assert_eq!(status, 403);
    let r = chat_with(proxy.url("/p/alpha/v1/chat/completions"), None, ASK)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(last_upstream(&mock).contains("mercury"));
}

/// A request's usage row keeps its project and the memories injected into it;
/// `GET /v1/usage/requests/{id}` says why each was injected and what it says now (deleted
/// once deleted); usage groups and filters by project; a key bound to a project reads
/// only that project's usage.
#[tokio::test]
async fn usage_rows_say_which_memories_were_injected_and_why() {
    let mock = MockUpstream::start().await;
    let proxy = start(&config(&mock, "project_then_user")).await;
    let in_project = add_memory(
        &proxy,
        json!({"user_id": "alice", "project": "alpha", "content": "The alpha deploy uses the mercury cluster"}),
    )
    .await;
    let user_level = add_memory(
        &proxy,
        json!({"user_id": "alice", "content": "Commit messages are written in the imperative mood"}),
    )
    .await;
    mock.push(Behavior::Text("ok".into()));
    let resp = client()
        .post(proxy.url("/p/alpha/v1/chat/completions"))
        .bearer_auth(MASTER)
        .header("x-memory-user-id", "alice")
        .header("x-request-id", "why-1")
        .json(&chat_body("gpt", ASK))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.text().await;
    assert_eq!(
        chat_at(&proxy.url(""), "alice", "hello there", &[]).await,
        200
    );
    proxy.state.analytics.flush().await;

    let (status, detail) = api_get(&proxy, "/v1/usage/requests/why-1", MASTER).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["project"], "alpha");
    assert_eq!(detail["memories_injected"], 2, "{detail}");
    let injected = detail["injected"].as_array().unwrap();
    assert_eq!(injected[0]["id"], in_project["id"]);
    assert_eq!(injected[0]["position"], 1);
    assert_eq!(injected[0]["scope"], "project");
    assert_eq!(injected[0]["deleted"], false);
    assert!(injected[0]["content"].as_str().unwrap().contains("mercury"));
    let why = injected[0]["why"].as_str().unwrap();
    assert!(why.contains("project alpha"), "{why}");
    assert_eq!(injected[1]["id"], user_level["id"]);
    assert_eq!(injected[1]["scope"], "user");
    assert!(injected[1]["share"].as_f64().unwrap() <= 1.0);
    assert!(injected[1]["why"]
        .as_str()
        .unwrap()
        .contains("outside any project"));

    // Deleted since: the row still names it, the detail says it is gone.
    let id = in_project["id"].as_str().unwrap();
    let resp = client()
        .delete(proxy.url(&format!("/v1/memories/{id}?user_id=alice&project=alpha")))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let (_, detail) = api_get(&proxy, "/v1/usage/requests/why-1", MASTER).await;
    assert_eq!(detail["injected"][0]["deleted"], true, "{detail}");
    assert!(detail["injected"][0]["content"].is_null());
    let (status, _) = api_get(&proxy, "/v1/usage/requests/no-such-request", MASTER).await;
    assert_eq!(status, 404);

    // By project: totals and filters.
    let (_, usage) = api_get(&proxy, "/v1/usage?group_by=project", MASTER).await;
    let groups: Vec<(String, u64)> = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["group"].as_str().unwrap().into(),
                g["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(groups, [("".to_string(), 1), ("alpha".to_string(), 1)]);
    let (_, rows) = api_get(&proxy, "/v1/usage/requests?project=alpha", MASTER).await;
    assert_eq!(rows["data"].as_array().unwrap().len(), 1);
    for (status, n) in [("ok", 2), ("error", 0), ("200", 2)] {
        let (_, rows) = api_get(
            &proxy,
            &format!("/v1/usage/requests?status={status}"),
            MASTER,
        )
        .await;
        assert_eq!(
            rows["data"].as_array().unwrap().len(),
            n,
            "{status}: {rows}"
        );
    }
    let (code, _) = api_get(&proxy, "/v1/usage/requests?status=bad", MASTER).await;
    assert_eq!(code, 400);
    let (_, series) = api_get(
        &proxy,
        "/v1/usage/timeseries?range=1h&group_by=project",
        MASTER,
    )
    .await;
    let names: Vec<&str> = series["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"alpha"), "{series}");

    // A key bound to alice's project beta sees none of alpha's usage.
    let gen: Value = client()
        .post(proxy.url("/key/generate"))
        .bearer_auth(MASTER)
        .json(&json!({"user_id": "alice", "project": "beta"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = gen["key"].as_str().unwrap();
    let (status, rows) = api_get(&proxy, "/v1/usage/requests", key).await;
    assert_eq!(status, 200);
    assert_eq!(rows["data"].as_array().unwrap().len(), 0, "{rows}");
    let (status, _) = api_get(&proxy, "/v1/usage/requests/why-1", key).await;
    assert_eq!(status, 404);
    let (status, _) = api_get(&proxy, "/v1/usage/requests?project=alpha", key).await;
    assert_eq!(status, 403);
    let (status, _) = api_get(&proxy, "/v1/usage/timeseries?range=1h&project=alpha", key).await;
    assert_eq!(status, 403);

    // Rebound to alpha: alpha's rows, at once; a bad project name changes nothing.
    let update = |body: Value| {
        client()
            .post(proxy.url("/key/update"))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
    };
    let bad = update(json!({"key": key, "project": "a/b"})).await.unwrap();
    assert_eq!(bad.status(), 400);
    let ok = update(json!({"key": key, "project": "alpha"}))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let (status, rows) = api_get(&proxy, "/v1/usage/requests", key).await;
    assert_eq!(status, 200);
    assert_eq!(rows["data"].as_array().unwrap().len(), 1, "{rows}");
    let (status, detail) = api_get(&proxy, "/v1/usage/requests/why-1", key).await;
    assert_eq!(status, 200);
    assert_eq!(detail["injected"].as_array().unwrap().len(), 2);
}
