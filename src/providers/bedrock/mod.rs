//! AWS Bedrock through the Converse API: `POST {endpoint}/model/{modelId}/converse`
//! (JSON) and `/converse-stream` (AWS event-stream frames), every request signed with
//! SigV4 for service `bedrock`. Serves Anthropic and every other model family on Bedrock
//! with one request shape.
//!
//! Settings, from `litellm_params` or the standard AWS environment variables (copied into
//! the deployment's params by the config): `aws_region_name` (`AWS_REGION_NAME`,
//! `AWS_REGION`, `AWS_DEFAULT_REGION`), `aws_access_key_id` / `aws_secret_access_key` /
//! `aws_session_token` (`AWS_ACCESS_KEY_ID`, …), `aws_bedrock_runtime_endpoint` or
//! `api_base` for another endpoint (VPC endpoints, proxies, tests). A Bedrock API key in
//! `api_key` is sent as a bearer token instead of signing. The endpoint defaults to
//! `https://bedrock-runtime.{region}.amazonaws.com`.
//!
//! The answer is converted here into OpenAI chat format (a chat completion, or
//! `chat.completion.chunk` events ending with a usage chunk and `[DONE]`), so the server
//! treats Bedrock like any OpenAI-compatible upstream.
//!
//! Files: [`request`] (chat → Converse), [`response`] (Converse → internal events),
//! [`stream`] (ConverseStream → OpenAI chunks), [`eventstream`] (binary framing),
//! [`sign`] (SigV4).

mod eventstream;
#[cfg(feature = "fuzzing")]
pub use eventstream::fuzz_frames;
mod request;
mod response;
mod sign;
mod stream;

use std::fmt::Write as _;
use std::time::SystemTime;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyDataStream;

use super::http::{base_headers, read_all, Endpoint, HttpClient};
use super::openai::extra_headers;
use super::{CallContext, LlmRequest, ProviderEnv, ProviderError, Reply};
use crate::config::DeploymentConfig;
use crate::protocol::chat_codec;
use crate::protocol::ir::Format;
use sign::Signer;

/// The SigV4 service name of the Bedrock runtime.
const SERVICE: &str = "bedrock";
/// The media type of ConverseStream answers.
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";
/// Settings memproxy cannot act on: credentials it would have to fetch or assume.
const UNSUPPORTED_CREDENTIALS: &[&str] = &[
    "aws_profile_name",
    "aws_role_name",
    "aws_web_identity_token",
];

/// How requests are authorized.
enum Auth {
    /// SigV4 with static (possibly temporary) credentials.
    SigV4(Signer),
    /// A Bedrock API key, sent as a bearer token.
    Bearer(HeaderValue),
}

/// One `bedrock/` deployment: its endpoint and credentials, read once at start-up.
pub struct Bedrock {
    /// The endpoint without a trailing slash; `/model/…` is appended.
    base: String,
    auth: Auth,
    extra: HeaderMap,
    http: HttpClient,
}

/// A `litellm_params` string that is set and not blank.
fn param<'c>(cfg: &'c DeploymentConfig, key: &str) -> Option<&'c str> {
    cfg.params
        .expose()
        .get(key)
        .and_then(serde_json::Value::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl Bedrock {
    /// Reads the region, credentials and endpoint; `Err` names what to set.
    pub fn new(cfg: &DeploymentConfig, env: &ProviderEnv) -> Result<Self, String> {
        if let Some(key) = UNSUPPORTED_CREDENTIALS
            .iter()
            .find(|k| param(cfg, k).is_some())
        {
            return Err(format!(
                "`litellm_params.{key}` is not supported: memproxy signs with static credentials only; \
                 set `aws_access_key_id` / `aws_secret_access_key` (and `aws_session_token` for temporary ones) instead"
            ));
        }
        let region = param(cfg, "aws_region_name").ok_or(
            "no AWS region: set `litellm_params.aws_region_name`, or the environment variable \
             AWS_REGION (or AWS_DEFAULT_REGION / AWS_REGION_NAME)",
        )?;
        if !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "`aws_region_name` `{region}` is not an AWS region name"
            ));
        }
        let base = param(cfg, "aws_bedrock_runtime_endpoint")
            .map(str::to_string)
            .or_else(|| (!cfg.api_base.is_empty()).then(|| cfg.api_base.clone()))
            .unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com"));
        let base = base.trim_end_matches('/').to_string();
        let has_host = base
            .parse::<axum::http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
            .and_then(|u| u.host().map(|h| !h.is_empty()))
            .unwrap_or(false);
        if !has_host {
            return Err(format!(
                "the Bedrock endpoint `{base}` is not an http(s) URL with a host"
            ));
        }
        let key_id = param(cfg, "aws_access_key_id");
        let secret = param(cfg, "aws_secret_access_key");
        let auth = match (key_id, secret, &cfg.api_key) {
            (Some(id), Some(secret), _) => Auth::SigV4(Signer::new(
                id,
                secret,
                param(cfg, "aws_session_token"),
                region,
                SERVICE,
            )),
            (None, None, Some(key)) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| "`api_key` is not usable in an HTTP header".to_string())?;
                v.set_sensitive(true);
                Auth::Bearer(v)
            }
            (Some(_), None, _) => {
                return Err("`aws_access_key_id` is set but no secret: set `litellm_params.aws_secret_access_key` or AWS_SECRET_ACCESS_KEY".into())
            }
            (None, Some(_), _) => {
                return Err("`aws_secret_access_key` is set but no key id: set `litellm_params.aws_access_key_id` or AWS_ACCESS_KEY_ID".into())
            }
            (None, None, None) => {
                return Err("no AWS credentials: set `litellm_params.aws_access_key_id` and `aws_secret_access_key` \
                            (and `aws_session_token` for temporary credentials), or the environment variables \
                            AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN); \
                            or a Bedrock API key in `api_key`".into())
            }
        };
        Ok(Self {
            base,
            auth,
            extra: extra_headers(cfg),
            http: env.http.clone(),
        })
    }

    /// `{endpoint}/model/{modelId}/converse[-stream]`, the model id percent-encoded.
    fn url(&self, model: &str, stream: bool) -> String {
        let action = if stream {
            "converse-stream"
        } else {
            "converse"
        };
        format!("{}/model/{}/{action}", self.base, encode_label(model))
    }

    /// Sends a chat request as Converse (or ConverseStream when the client streams) and
    /// answers in OpenAI chat format.
    pub async fn chat(
        &self,
        cfg: &DeploymentConfig,
        req: &LlmRequest<'_>,
        upstream_model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Reply, ProviderError> {
        let invalid = |message: String| ProviderError::Status {
            status: StatusCode::BAD_REQUEST,
            message,
            kind: Some("invalid_request_error".into()),
            code: Some("invalid_request".into()),
        };
        let typed = req
            .chat
            .to_request()
            .map_err(|e| invalid(format!("the request cannot be translated for Bedrock: {e}")))?;
        let model = model_id(upstream_model);
        let payload = request::converse_request(&typed, model)
            .map_err(|e| invalid(format!("cannot send this request to Bedrock: {e}")))?;
        let stream = req.chat.stream;
        let url = self.url(model, stream);
        let accept = if stream {
            EVENT_STREAM
        } else {
            "application/json"
        };
        let mut h = base_headers(accept, ctx.request_id, ctx.user_id);
        for (k, v) in &self.extra {
            h.insert(k, v.clone());
        }
        match &self.auth {
            Auth::SigV4(signer) => signer
                .sign(&url, &mut h, &payload, SystemTime::now())
                .map_err(|message| ProviderError::Status {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message,
                    kind: Some("api_error".into()),
                    code: Some("signing_failed".into()),
                })?,
            Auth::Bearer(v) => {
                h.insert(header::AUTHORIZATION, v.clone());
            }
        }
        let endpoint = Endpoint::new(url);
        let timeout = cfg.timeout;
        let resp = self
            .http
            .post_with_headers(&endpoint, h, payload, timeout, status_error)
            .await?;
        let id = answer_id(resp.headers());
        if !stream {
            let body = read_all(resp, timeout, &endpoint.url).await?;
            let completion = response::decode_completion(&body, id, model)
                .map_err(ProviderError::BadResponse)?;
            return Ok(Reply::Complete {
                body: chat_codec::encode_completion(&completion),
                format: Format::OpenAiChat,
            });
        }
        let client_wants_usage = typed
            .stream_options
            .as_ref()
            .is_some_and(|o| o["include_usage"] == true);
        Ok(Reply::Stream {
            events: stream::converse_stream(
                BodyDataStream::new(resp.into_body()),
                timeout,
                endpoint.url.clone(),
                id,
                model,
            ),
            format: Format::OpenAiChat,
            usage_added: !client_wants_usage,
        })
    }
}

/// The Bedrock model id of a LiteLLM model name: LiteLLM's `converse/` and `invoke/`
/// route prefixes are dropped (both are served through Converse).
fn model_id(upstream_model: &str) -> &str {
    upstream_model
        .strip_prefix("converse/")
        .or_else(|| upstream_model.strip_prefix("invoke/"))
        .unwrap_or(upstream_model)
}

/// Percent-encodes a URL path label as the AWS SDKs do: everything but unreserved
/// characters, so `:` in model ids and `/` in ARNs become `%3A` and `%2F`.
fn encode_label(label: &str) -> String {
    let mut out = String::with_capacity(label.len() + 8);
    for b in label.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `chatcmpl-` and Bedrock's request id, or a fresh id.
fn answer_id(headers: &HeaderMap) -> String {
    match headers
        .get("x-amzn-requestid")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
    {
        Some(id) => format!("chatcmpl-{id}"),
        None => format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
    }
}

/// `ThrottlingException` (or `throttlingException`) as `throttling_exception`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The message of an AWS error body (`message`, or `Message` in some services' shape).
fn error_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("message")
        .or_else(|| v.get("Message"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
}

/// An error answer: the message from Bedrock's `{"message"}` body and the error type
/// from `x-amzn-errortype` (`ThrottlingException:http://…`) as the code.
fn status_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let kind = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.split(':').next().unwrap_or(t).trim().to_string())
        .filter(|t| !t.is_empty());
    let message = error_message(body).unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            format!("Bedrock returned HTTP {status}")
        } else {
            text.chars().take(500).collect()
        }
    });
    ProviderError::Status {
        status,
        message,
        kind: None,
        code: kind.map(|k| snake_case(&k)),
    }
}

/// A modelled exception inside a ConverseStream, with the HTTP status Bedrock gives the
/// same error outside a stream.
fn exception_error(kind: &str, payload: &[u8]) -> ProviderError {
    let status = match kind {
        "throttlingException" => StatusCode::TOO_MANY_REQUESTS,
        "validationException" => StatusCode::BAD_REQUEST,
        "accessDeniedException" => StatusCode::FORBIDDEN,
        "resourceNotFoundException" => StatusCode::NOT_FOUND,
        "modelTimeoutException" => StatusCode::REQUEST_TIMEOUT,
        "modelStreamErrorException" => StatusCode::FAILED_DEPENDENCY,
        "serviceUnavailableException" => StatusCode::SERVICE_UNAVAILABLE,
        "internalServerException" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_GATEWAY,
    };
    ProviderError::Status {
        status,
        message: error_message(payload)
            .unwrap_or_else(|| format!("Bedrock stream failed with {kind}")),
        kind: None,
        code: Some(snake_case(kind)),
    }
}

impl super::Upstream for Bedrock {
    fn chat<'a>(
        &'a self,
        cfg: &'a DeploymentConfig,
        req: &'a super::LlmRequest<'a>,
        upstream_model: &'a str,
        ctx: &'a CallContext<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<Reply, ProviderError>> {
        Box::pin(self.chat(cfg, req, upstream_model, ctx))
    }

    fn params(&self, _upstream_model: &str) -> super::Params {
        // Converse takes Claude's parameter set.
        super::Params::Claude { native: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the provider for one `bedrock/` entry with these `litellm_params` members
    /// (YAML flow text) and environment.
    fn provider(params: &str, env: &[(&str, &str)]) -> Result<Bedrock, String> {
        let yaml = format!(
            "model_list:\n  - model_name: b\n    litellm_params: {{model: 'bedrock/anthropic.claude-v2:1', {params}}}\n"
        );
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let config = crate::config::parse(&yaml, "t.yaml", &Default::default(), &lookup).unwrap();
        let penv = ProviderEnv::new(&config).unwrap();
        Bedrock::new(&config.models[0], &penv)
    }

    const KEYS: &str = "aws_access_key_id: AKID, aws_secret_access_key: s";

    #[test]
    fn endpoint_region_and_credentials_are_resolved() {
        let p = provider(&format!("{KEYS}, aws_region_name: eu-west-1"), &[]).unwrap();
        assert_eq!(
            p.url("anthropic.claude-v2:1", false),
            "https://bedrock-runtime.eu-west-1.amazonaws.com/model/anthropic.claude-v2%3A1/converse"
        );
        assert!(matches!(p.auth, Auth::SigV4(_)));
        let p = provider(
            &format!("{KEYS}, api_base: 'http://proxy:8080/aws/', aws_region_name: us-east-1"),
            &[],
        )
        .unwrap();
        assert_eq!(
            p.url("m", true),
            "http://proxy:8080/aws/model/m/converse-stream"
        );
        let p = provider(
            &format!("{KEYS}, api_base: 'http://a', aws_bedrock_runtime_endpoint: 'https://vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com'"),
            &[("AWS_REGION", "us-east-1")],
        )
        .unwrap();
        assert!(p.url("m", false).starts_with("https://vpce-1."));
        let p = provider("api_key: bedrock-api-key, aws_region_name: us-east-1", &[]).unwrap();
        assert!(matches!(&p.auth, Auth::Bearer(v) if v == "Bearer bedrock-api-key"));
    }

    #[test]
    fn unusable_settings_are_refused_with_what_to_set() {
        let e = provider(KEYS, &[]).err().unwrap();
        assert!(e.contains("AWS_REGION"), "{e}");
        let e = provider("aws_region_name: us-east-1", &[]).err().unwrap();
        assert!(
            e.contains("AWS_ACCESS_KEY_ID") && e.contains("api_key"),
            "{e}"
        );
        let e = provider("aws_region_name: us-east-1, aws_access_key_id: AKID", &[])
            .err()
            .unwrap();
        assert!(e.contains("aws_secret_access_key"), "{e}");
        let e = provider(&format!("{KEYS}, aws_region_name: 'us east'"), &[])
            .err()
            .unwrap();
        assert!(e.contains("not an AWS region"), "{e}");
        let e = provider(
            &format!("{KEYS}, aws_region_name: us-east-1, aws_role_name: 'arn:aws:iam::1:role/x'"),
            &[],
        )
        .err()
        .unwrap();
        assert!(
            e.contains("aws_role_name") && e.contains("not supported"),
            "{e}"
        );
        let e = provider(
            &format!(
                "{KEYS}, aws_region_name: us-east-1, aws_bedrock_runtime_endpoint: 'bedrock.local'"
            ),
            &[],
        )
        .err()
        .unwrap();
        assert!(e.contains("not an http(s) URL"), "{e}");
    }

    #[test]
    fn model_ids_are_encoded_as_the_sdk_does() {
        assert_eq!(
            encode_label("anthropic.claude-3-5-sonnet-20240620-v1:0"),
            "anthropic.claude-3-5-sonnet-20240620-v1%3A0"
        );
        assert_eq!(
            encode_label("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-v2"),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-v2"
        );
        assert_eq!(
            model_id("converse/meta.llama3-8b-instruct-v1:0"),
            "meta.llama3-8b-instruct-v1:0"
        );
        assert_eq!(
            model_id("invoke/amazon.nova-lite-v1:0"),
            "amazon.nova-lite-v1:0"
        );
        assert_eq!(
            model_id("us.amazon.nova-pro-v1:0"),
            "us.amazon.nova-pro-v1:0"
        );
    }

    #[test]
    fn errors_keep_the_message_and_the_error_type() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amzn-errortype",
            HeaderValue::from_static(
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            ),
        );
        let e = status_error(
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert!(e.is_retryable());
        assert!(
            matches!(&e, ProviderError::Status { message, code: Some(c), kind: None, .. }
            if message == "Too many requests, please wait before trying again." && c == "throttling_exception")
        );
        let e = status_error(
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            br#"{"Message":"User is not authorized"}"#,
        );
        assert_eq!(e.to_string(), "User is not authorized");
        let e = status_error(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"");
        assert!(e.to_string().contains("502"));
        let e = exception_error("modelStreamErrorException", br#"{"message":"model broke"}"#);
        assert!(
            matches!(&e, ProviderError::Status { status, message, code: Some(c), .. }
            if status.as_u16() == 424 && message == "model broke" && c == "model_stream_error_exception")
        );
        assert!(exception_error("throttlingException", b"{}").is_retryable());
    }

    #[test]
    fn request_ids_name_answers() {
        let mut h = HeaderMap::new();
        h.insert("x-amzn-requestid", HeaderValue::from_static("abc-123"));
        assert_eq!(answer_id(&h), "chatcmpl-abc-123");
        assert!(answer_id(&HeaderMap::new()).starts_with("chatcmpl-"));
    }
}
