//! Unit tests of the Vertex AI provider: settings, endpoints, request bodies, errors,
//! and the token exchange against the mock's token endpoint.

use serde_json::{json, Value};

use super::*;
use crate::config::Config;

/// A config with one `vertex_ai/{model}` deployment with these `litellm_params` members
/// (YAML flow mapping text) and environment.
fn config(model: &str, params: &str, env: &[(&str, &str)]) -> Config {
    let yaml = format!(
        "model_list:\n  - model_name: v\n    litellm_params: {{model: vertex_ai/{model}{params}}}\n"
    );
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    crate::config::parse(&yaml, "t.yaml", &Default::default(), &|n| {
        env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
    })
    .unwrap()
}

fn build(config: &Config) -> Result<Vertex, String> {
    let env = ProviderEnv::new(config).unwrap();
    Vertex::new(&config.models[0], &env)
}

/// Service account JSON (inline, as YAML single-quoted text) for the shared test key.
fn inline_creds(project: Option<&str>) -> String {
    let mut sa = json!({
        "type": "service_account",
        "private_key_id": "k1",
        "private_key": mock_upstream::TestKey::shared().private_pem,
        "client_email": "sa@p.iam.gserviceaccount.com",
        "token_uri": "http://127.0.0.1:9/token",
    });
    if let Some(p) = project {
        sa["project_id"] = p.into();
    }
    format!(", vertex_credentials: '{sa}'")
}

#[test]
fn missing_credentials_or_project_are_named() {
    let e = build(&config("gemini-2.0-flash", ", vertex_project: p", &[]))
        .err()
        .unwrap();
    assert!(
        e.contains("vertex_credentials") && e.contains("GOOGLE_APPLICATION_CREDENTIALS"),
        "{e}"
    );
    let e = build(&config("gemini-2.0-flash", &inline_creds(None), &[]))
        .err()
        .unwrap();
    assert!(
        e.contains("vertex_project") && e.contains("VERTEXAI_PROJECT"),
        "{e}"
    );
    let e = build(&config(
        "gemini-2.0-flash",
        ", vertex_project: p, vertex_credentials: /nonexistent/sa.json",
        &[],
    ))
    .err()
    .unwrap();
    assert!(e.contains("/nonexistent/sa.json"), "{e}");
    let e = build(&config(
        "gemini-2.0-flash",
        &format!("{}, vertex_project: 'a/b'", inline_creds(None)),
        &[],
    ))
    .err()
    .unwrap();
    assert!(e.contains("vertex_project"), "{e}");
}

#[test]
fn endpoints_follow_project_location_and_api_base() {
    let v = build(&config(
        "gemini-2.0-flash",
        &inline_creds(Some("from-creds")),
        &[],
    ))
    .unwrap();
    assert_eq!(
        &*v.endpoint("google", "gemini-2.0-flash", "generateContent").url,
        "https://us-central1-aiplatform.googleapis.com/v1/projects/from-creds/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"
    );
    // The environment fills what the entry leaves out; the entry wins over it.
    let env = [
        ("VERTEXAI_PROJECT", "env-proj"),
        ("VERTEXAI_LOCATION", "europe-west4"),
    ];
    let v = build(&config(
        "claude-sonnet-4@20250514",
        &inline_creds(Some("c")),
        &env,
    ))
    .unwrap();
    assert_eq!(
        &*v.endpoint("anthropic", "claude-sonnet-4@20250514", "rawPredict").url,
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/env-proj/locations/europe-west4/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
    );
    let params = format!("{}, vertex_location: global", inline_creds(Some("c")));
    let v = build(&config("gemini-2.5-pro", &params, &env)).unwrap();
    assert!(v
        .publishers
        .starts_with("https://aiplatform.googleapis.com/v1/projects/env-proj/locations/global/"));
    let params = format!(
        "{}, vertex_project: own, api_base: 'http://127.0.0.1:9/v1/'",
        inline_creds(Some("c"))
    );
    let v = build(&config("gemini-2.5-pro", &params, &env)).unwrap();
    assert_eq!(
        v.publishers,
        "http://127.0.0.1:9/v1/projects/own/locations/europe-west4/publishers"
    );
}

#[test]
fn credentials_as_a_yaml_mapping() {
    let pem = mock_upstream::TestKey::shared()
        .private_pem
        .replace('\n', "\\n");
    let yaml = format!(
        "model_list:\n  - model_name: v\n    litellm_params:\n      model: vertex_ai/gemini-2.0-flash\n      vertex_credentials:\n        type: service_account\n        project_id: mapped\n        client_email: sa@mapped.iam.gserviceaccount.com\n        private_key: \"{pem}\"\n"
    );
    let config = crate::config::parse(&yaml, "t.yaml", &Default::default(), &|_| None).unwrap();
    let v = build(&config).unwrap();
    assert!(
        v.publishers.contains("/projects/mapped/"),
        "{}",
        v.publishers
    );
}

#[test]
fn claude_body_names_no_model_and_carries_the_vertex_version() {
    let body = vertex_messages_body(
        br#"{"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"stream":true}"#,
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        json!({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "stream": true,
               "anthropic_version": "vertex-2023-10-16"})
    );
}

#[test]
fn claude_errors_in_either_shape_keep_their_message() {
    let e = claude_error(
        StatusCode::TOO_MANY_REQUESTS,
        br#"{"error":{"code":429,"message":"Quota exceeded for aiplatform.googleapis.com","status":"RESOURCE_EXHAUSTED"}}"#,
    );
    assert!(
        matches!(&e, ProviderError::Status { message, code, .. }
            if message.starts_with("Quota exceeded") && code.as_deref() == Some("resource_exhausted")),
        "{e:?}"
    );
    let e = claude_error(
        StatusCode::BAD_REQUEST,
        br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#,
    );
    assert!(
        matches!(&e, ProviderError::Status { message, kind: Some(k), .. }
            if message == "max_tokens: Field required" && k == "invalid_request_error"),
        "{e:?}"
    );
}

#[tokio::test]
async fn service_account_jwt_is_accepted_by_the_token_endpoint_and_cached() {
    let mock = mock_upstream::MockUpstream::start().await;
    let key = mock_upstream::TestKey::shared();
    mock.trust_key(key);
    let sa = mock.service_account(key);
    let config = config(
        "gemini-2.0-flash",
        &format!(", vertex_credentials: '{sa}'"),
        &[],
    );
    let v = build(&config).unwrap();
    let first = v.tokens.authorization().await.unwrap();
    assert!(first.to_str().unwrap().starts_with("Bearer ya29.mock-"));
    assert!(first.is_sensitive());
    assert_eq!(v.tokens.authorization().await.unwrap(), first);
    let grants = mock.token_requests();
    assert_eq!(grants.len(), 1, "{grants:?}");
    let g = &grants[0];
    assert_eq!(g["header"]["alg"], "RS256");
    assert_eq!(g["header"]["kid"], "mock-key-1");
    assert_eq!(
        g["claims"]["iss"],
        "memproxy-test@mock-project.iam.gserviceaccount.com"
    );
    assert_eq!(
        g["claims"]["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );
    assert_eq!(g["claims"]["aud"], sa["token_uri"]);
    assert_eq!(
        g["claims"]["exp"].as_u64().unwrap() - g["claims"]["iat"].as_u64().unwrap(),
        3600
    );
}

#[tokio::test]
async fn authorized_user_credentials_get_a_token() {
    let mock = mock_upstream::MockUpstream::start().await;
    let creds = mock.authorized_user();
    let config = config(
        "gemini-2.0-flash",
        &format!(", vertex_credentials: '{creds}'"),
        &[],
    );
    let v = build(&config).unwrap();
    assert!(v.publishers.contains("/projects/mock-user-project/"));
    v.tokens.authorization().await.unwrap();
    assert_eq!(mock.token_requests()[0]["grant_type"], "refresh_token");
}
