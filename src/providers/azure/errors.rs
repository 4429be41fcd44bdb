//! Azure's error bodies: `{"error":{"code","message"}}` from the service (its `code` a
//! name such as `DeploymentNotFound`, or a status number as text), content-filter refusals
//! with an `innererror` naming the filtered categories, and the API gateway's plain
//! `{"statusCode","message"}` (401, 429). Anything else is read as OpenAI's shape.

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::openai::status_error as generic_status_error;
use super::super::ProviderError;

#[derive(Deserialize)]
struct Envelope {
    error: Option<Body>,
    #[serde(rename = "statusCode")]
    status_code: Option<Value>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct Body {
    code: Option<Value>,
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    innererror: Option<Inner>,
}

#[derive(Deserialize)]
struct Inner {
    code: Option<String>,
    content_filter_result: Option<Map<String, Value>>,
}

/// Builds the error of an Azure error response, keeping Azure's message.
pub(super) fn status_error(status: StatusCode, bytes: &[u8]) -> ProviderError {
    let Ok(env) = serde_json::from_slice::<Envelope>(bytes) else {
        return generic_status_error(status, bytes);
    };
    match env.error {
        Some(Body {
            code,
            message: Some(mut message),
            kind,
            innererror,
        }) => {
            let code = code.map(|c| match c {
                Value::String(s) => s,
                other => other.to_string(),
            });
            if let Some(inner) = innererror {
                let filtered = filtered_categories(inner.content_filter_result.as_ref());
                match (inner.code, filtered.is_empty()) {
                    (Some(c), false) => {
                        message = format!("{message} ({c}: {})", filtered.join(", "))
                    }
                    (Some(c), true) => message = format!("{message} ({c})"),
                    (None, false) => message = format!("{message} ({})", filtered.join(", ")),
                    (None, true) => {}
                }
            }
            let kind = kind.or_else(|| {
                (code.as_deref() == Some("content_filter")).then(|| "invalid_request_error".into())
            });
            // A status number as the code says nothing the status does not.
            let code = code.filter(|c| !c.bytes().all(|b| b.is_ascii_digit()));
            ProviderError::Status {
                status,
                message,
                kind,
                code,
            }
        }
        None if env.status_code.is_some() && env.message.is_some() => ProviderError::Status {
            status,
            message: env.message.unwrap_or_default(),
            kind: None,
            code: None,
        },
        _ => generic_status_error(status, bytes),
    }
}

/// The content-filter categories marked `filtered: true`.
fn filtered_categories(result: Option<&Map<String, Value>>) -> Vec<String> {
    result
        .map(|r| {
            r.iter()
                .filter(|(_, v)| v["filtered"] == true)
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(e: ProviderError) -> (u16, String, Option<String>, Option<String>) {
        match e {
            ProviderError::Status {
                status,
                message,
                kind,
                code,
            } => (status.as_u16(), message, kind, code),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn service_errors_keep_message_and_code() {
        let (s, m, _, c) = parts(status_error(
            StatusCode::NOT_FOUND,
            br#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#,
        ));
        assert_eq!(s, 404);
        assert_eq!(m, "The API deployment for this resource does not exist.");
        assert_eq!(c.as_deref(), Some("DeploymentNotFound"));
        let (_, m, _, c) = parts(status_error(
            StatusCode::UNAUTHORIZED,
            br#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint."}}"#,
        ));
        assert!(m.starts_with("Access denied"), "{m}");
        assert_eq!(c, None);
    }

    #[test]
    fn content_filter_names_the_categories() {
        let body = br#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":true,"detected":true},"violence":{"filtered":true,"severity":"medium"}}}}}"#;
        let (s, m, k, c) = parts(status_error(StatusCode::BAD_REQUEST, body));
        assert_eq!(s, 400);
        assert!(
            m.ends_with("(ResponsibleAIPolicyViolation: jailbreak, violence)"),
            "{m}"
        );
        assert_eq!(k.as_deref(), Some("invalid_request_error"));
        assert_eq!(c.as_deref(), Some("content_filter"));
    }

    #[test]
    fn gateway_errors_and_other_shapes() {
        let e = status_error(
            StatusCode::TOO_MANY_REQUESTS,
            br#"{"statusCode": 429, "message": "Rate limit is exceeded. Try again in 1 seconds."}"#,
        );
        assert!(e.is_retryable());
        assert_eq!(
            e.to_string(),
            "Rate limit is exceeded. Try again in 1 seconds."
        );
        let e = status_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(e.to_string(), "<html>bad gateway</html>");
        let e = status_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"message":"bad temp","type":"invalid_request_error","code":"x"}}"#,
        );
        assert_eq!(parts(e).2.as_deref(), Some("invalid_request_error"));
    }
}
