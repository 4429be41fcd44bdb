//! The mock's Azure OpenAI: the OpenAI wire format (served by the chat, embeddings and
//! Responses routes) at Azure's paths, `/openai/deployments/{deployment}/chat/completions`
//! and `/embeddings` with a required dated `api-version`, the v1 API at `/openai/v1/…`
//! (`api-version` absent, `preview` or `latest`), and `/openai/responses`. It checks what
//! Azure checks first (an `api-key` or `Authorization: Bearer` header, the `api-version`)
//! and answers those and scripted errors in Azure's shapes; streams open with Azure's
//! `prompt_filter_results` chunk (empty `choices`, `model` and `id`), and answers carry
//! the content-filter annotations Azure adds. The request's query is recorded as the
//! header `x-mock-query`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::Shared;

/// This format's routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(deployment_chat),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(deployment_embeddings),
        )
        .route("/openai/v1/chat/completions", post(v1_chat))
        .route("/openai/v1/embeddings", post(v1_embeddings))
        .route("/openai/responses", post(dated_responses))
        .route("/openai/v1/responses", post(v1_responses))
}

/// An error in the service's shape, `{"error":{"code","message"}}`.
fn azure_error(status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

/// Which `api-version` a route takes.
#[derive(Clone, Copy)]
enum Versions {
    /// A dated one, required (`2024-10-21`, `2025-04-01-preview`).
    Dated,
    /// The v1 API: none, `preview` or `latest`.
    V1,
}

/// What Azure refuses before looking at the body (no credentials, a missing or unknown
/// `api-version`), as its answer.
fn check(uri: &Uri, headers: &HeaderMap, versions: Versions) -> Option<Response> {
    let key = headers
        .get("api-key")
        .is_some_and(|v| !v.as_bytes().is_empty());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| !t.is_empty());
    if !key && !bearer {
        return Some(azure_error(
            401,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to \
             provide a valid key for an active subscription and use a correct regional API \
             endpoint for your resource.",
        ));
    }
    let version = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|p| p.strip_prefix("api-version="))
            .map(str::to_string)
    });
    let dated = |v: &str| {
        let date = v.strip_suffix("-preview").unwrap_or(v);
        date.len() == 10
            && date.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            })
    };
    match (versions, version.as_deref()) {
        (Versions::Dated, None) => Some(azure_error(404, "404", "Resource not found")),
        (Versions::Dated, Some(v)) if dated(v) => None,
        (Versions::V1, None | Some("preview" | "latest")) => None,
        _ => Some(azure_error(400, "BadRequest", "API version not supported")),
    }
}

/// The request's headers as recorded: its query added as `x-mock-query`.
fn with_query(uri: &Uri, mut headers: HeaderMap) -> HeaderMap {
    if let Some(v) = uri.query().and_then(|q| HeaderValue::from_str(q).ok()) {
        headers.insert("x-mock-query", v);
    }
    headers
}

/// The request with `model` set to the deployment (Azure answers with the model the
/// deployment runs; the mock names the deployment).
fn with_model(bytes: &Bytes, deployment: &str) -> Bytes {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(mut m)) => {
            m.insert("model".into(), deployment.into());
            Bytes::from(Value::Object(m).to_string())
        }
        _ => bytes.clone(),
    }
}

/// Rewrites an OpenAI-route answer into what Azure sends: errors in Azure's shape (a
/// scripted body already in one of them is kept), the content-filter annotations on chat
/// answers, and the `prompt_filter_results` chunk first in chat streams.
async fn azurify(resp: Response) -> Response {
    let status = resp.status();
    let is_stream = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if is_stream {
        return resp;
    }
    finish(resp, status).await
}

/// [`azurify`] for chat completions, whose streams open with the prompt's filter results.
async fn azurify_chat(resp: Response) -> Response {
    let is_stream = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if is_stream {
        let opening = json!({"choices": [], "created": 0, "id": "", "model": "", "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": filter_results()}]});
        let head = futures_util::stream::once(async move {
            Ok::<_, axum::Error>(Bytes::from(format!("data: {opening}\n\n")))
        });
        let (parts, body) = resp.into_parts();
        return Response::from_parts(
            parts,
            Body::from_stream(head.chain(body.into_data_stream())),
        );
    }
    azurify(resp).await
}

async fn finish(resp: Response, status: StatusCode) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if status.is_success() {
        if v["object"] == "chat.completion" {
            v["prompt_filter_results"] =
                json!([{"prompt_index": 0, "content_filter_results": filter_results()}]);
            if let Some(choices) = v["choices"].as_array_mut() {
                for c in choices {
                    c["content_filter_results"] = filter_results();
                }
            }
        }
    } else if !(v.get("statusCode").is_some() || v["error"]["code"].is_string()) {
        let message = v["error"]["message"]
            .as_str()
            .or(v["error"].as_str())
            .or(v["detail"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        v = json!({"error": {"code": status.as_u16().to_string(), "message": message}});
    }
    let body = v.to_string();
    parts.headers.remove("content-length");
    Response::from_parts(parts, Body::from(body))
}

/// Every category passed, as Azure annotates an unfiltered prompt or answer.
fn filter_results() -> Value {
    let safe = json!({"filtered": false, "severity": "safe"});
    json!({"hate": safe, "self_harm": safe, "sexual": safe, "violence": safe})
}

async fn deployment_chat(
    State(shared): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Some(e) = check(&uri, &headers, Versions::Dated) {
        return e;
    }
    let headers = with_query(&uri, headers);
    let bytes = with_model(&bytes, &deployment);
    azurify_chat(crate::chat(State(shared), uri, headers, bytes).await).await
}

async fn v1_chat(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Some(e) = check(&uri, &headers, Versions::V1) {
        return e;
    }
    let headers = with_query(&uri, headers);
    azurify_chat(crate::chat(State(shared), uri, headers, bytes).await).await
}

async fn embeddings(
    shared: Arc<Shared>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
    deployment: Option<&str>,
) -> Response {
    let bytes = match deployment {
        Some(d) => with_model(&bytes, d),
        None => bytes,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return azure_error(400, "BadRequest", "mock: bad JSON");
    };
    let headers = with_query(&uri, headers);
    azurify(crate::embeddings(State(shared), uri, headers, axum::Json(body)).await).await
}

async fn deployment_embeddings(
    State(shared): State<Arc<Shared>>,
    Path(deployment): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Some(e) = check(&uri, &headers, Versions::Dated) {
        return e;
    }
    embeddings(shared, uri, headers, bytes, Some(&deployment)).await
}

async fn v1_embeddings(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Some(e) = check(&uri, &headers, Versions::V1) {
        return e;
    }
    embeddings(shared, uri, headers, bytes, None).await
}

async fn responses(
    shared: Arc<Shared>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
    versions: Versions,
) -> Response {
    if let Some(e) = check(&uri, &headers, versions) {
        return e;
    }
    if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
        // Azure refuses `status` on message and reasoning input items.
        let with_status = v["input"].as_array().and_then(|items| {
            items.iter().position(|i| {
                matches!(
                    i["type"].as_str().unwrap_or("message"),
                    "message" | "reasoning"
                ) && i.get("status").is_some()
            })
        });
        if let Some(i) = with_status {
            return azure_error(
                400,
                "invalid_request_error",
                &format!("Unknown parameter: 'input[{i}].status'."),
            );
        }
    }
    let headers = with_query(&uri, headers);
    azurify(crate::responses::create(State(shared), uri, headers, bytes).await).await
}

async fn dated_responses(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    responses(shared, uri, headers, bytes, Versions::Dated).await
}

async fn v1_responses(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    responses(shared, uri, headers, bytes, Versions::V1).await
}
