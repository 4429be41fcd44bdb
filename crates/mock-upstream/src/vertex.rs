//! The mock's Google Vertex AI: an OAuth token endpoint (`POST /token`) that checks
//! service-account JWTs (RS256 signature against the keys a test trusts, claims) or an
//! authorized user's refresh token, and issues access tokens; and the Vertex model routes
//! `POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent`
//! (`:streamGenerateContent?alt=sse`) and `…/publishers/anthropic/models/{m}:rawPredict`
//! (`:streamRawPredict`), answered by the Gemini and Anthropic modules once the bearer
//! token is one the endpoint issued (401 in Google's shape otherwise). Streamed answers
//! report being dropped before their end, so tests see memproxy give up on them.
//!
//! Test keys are made at run time by the `openssl` command line tool ([`TestKey`]); no
//! private key is stored anywhere.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State as AxumState};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use futures_util::StreamExt;
use ring::signature::{RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::{MockUpstream, Shared};

/// The scope Vertex AI tokens must be asked for.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The refresh token the mock accepts from [`MockUpstream::authorized_user`] credentials.
const REFRESH_TOKEN: &str = "mock-refresh-token";

/// The token endpoint's state.
#[derive(Default)]
pub(crate) struct State {
    /// Public keys (PKCS#1 DER) whose signatures are accepted.
    trusted: Mutex<Vec<Vec<u8>>>,
    /// Access tokens issued and not revoked.
    issued: Mutex<Vec<String>>,
    /// Every token request: its grant type and, for JWTs, header and claims.
    grants: Mutex<Vec<Value>>,
    /// `expires_in` of issued tokens (3600 unless a test sets it).
    lifetime: Mutex<Option<u64>>,
    /// Signalled when a streamed answer is dropped before its end (the client went away).
    abandoned: Notify,
}

/// An RSA key pair made for a test run.
#[derive(Clone)]
pub struct TestKey {
    /// The private key, PEM (PKCS#8), as in a service account's `private_key`.
    pub private_pem: String,
    /// The public key, DER (PKCS#1 RSAPublicKey).
    public_der: Vec<u8>,
}

impl TestKey {
    /// A fresh 2048-bit key from `openssl genpkey` (panics when openssl is missing).
    pub fn generate() -> Self {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("the `openssl` command makes the test RSA keys; install openssl");
        assert!(
            out.status.success(),
            "openssl genpkey failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let private_pem = String::from_utf8(out.stdout).expect("PEM text");
        let b64: String = private_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = STANDARD.decode(b64).expect("PEM base64");
        let pair = RsaKeyPair::from_pkcs8(&der).expect("openssl wrote a PKCS#8 RSA key");
        Self {
            private_pem,
            public_der: pair.public().as_ref().to_vec(),
        }
    }

    /// One key per test process, made on first use.
    pub fn shared() -> &'static TestKey {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(TestKey::generate)
    }
}

impl MockUpstream {
    /// Makes the token endpoint accept JWTs signed by `key`.
    pub fn trust_key(&self, key: &TestKey) {
        self.shared
            .vertex
            .trusted
            .lock()
            .unwrap()
            .push(key.public_der.clone());
    }

    /// A service account key file's JSON for `key`, with this mock as its token endpoint.
    pub fn service_account(&self, key: &TestKey) -> Value {
        json!({
            "type": "service_account",
            "project_id": "mock-project",
            "private_key_id": "mock-key-1",
            "private_key": key.private_pem,
            "client_email": "memproxy-test@mock-project.iam.gserviceaccount.com",
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": format!("http://{}/token", self.addr),
        })
    }

    /// `authorized_user` credentials (a refresh token) this mock's endpoint accepts.
    pub fn authorized_user(&self) -> Value {
        json!({
            "type": "authorized_user",
            "client_id": "mock-client.apps.googleusercontent.com",
            "client_secret": "mock-secret",
            "refresh_token": REFRESH_TOKEN,
            "quota_project_id": "mock-user-project",
            "token_uri": format!("http://{}/token", self.addr),
        })
    }

    /// Sets `expires_in` of the tokens issued from now on.
    pub fn set_token_lifetime(&self, secs: u64) {
        *self.shared.vertex.lifetime.lock().unwrap() = Some(secs);
    }

    /// Revokes every access token issued so far (Vertex routes answer 401 to them).
    pub fn revoke_tokens(&self) {
        self.shared.vertex.issued.lock().unwrap().clear();
    }

    /// Waits until a streamed Vertex answer is dropped before its end: the connection
    /// it was sent on was closed (memproxy gave up on it).
    pub async fn stream_abandoned(&self) {
        self.shared.vertex.abandoned.notified().await;
    }

    /// Every request the token endpoint received, accepted or not: `grant_type` and, for a
    /// JWT, its decoded `header` and `claims`.
    pub fn token_requests(&self) -> Vec<Value> {
        self.shared.vertex.grants.lock().unwrap().clone()
    }
}

/// This format's routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/token", post(token)).route(
        "/v1/projects/{project}/locations/{location}/publishers/{publisher}/models/{target}",
        post(predict),
    )
}

/// An OAuth error, in the shape Google's token endpoint sends.
fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// Decodes `application/x-www-form-urlencoded` text.
fn form(text: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (b[i], hex) {
                (b'%', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Checks a service-account JWT as Google does; returns its header and claims, and why it
/// is refused if it is.
fn check_jwt(state: &State, jwt: &str, audience: &str) -> (Value, Value, Result<(), String>) {
    let parts: Vec<&str> = jwt.split('.').collect();
    let decode = |p: &str| -> Value {
        URL_SAFE_NO_PAD
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    if parts.len() != 3 {
        return (Value::Null, Value::Null, Err("Invalid JWT.".into()));
    }
    let (header, claims) = (decode(parts[0]), decode(parts[1]));
    let verdict = (|| {
        if header["alg"] != "RS256" {
            return Err(format!("Invalid JWT: alg {} is not RS256.", header["alg"]));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(parts[2])
            .map_err(|_| "Invalid JWT Signature.".to_string())?;
        let signed = format!("{}.{}", parts[0], parts[1]);
        let trusted = state.trusted.lock().unwrap();
        if !trusted.iter().any(|der| {
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
                .verify(signed.as_bytes(), &signature)
                .is_ok()
        }) {
            return Err("Invalid JWT Signature.".into());
        }
        if !claims["iss"].as_str().is_some_and(|s| s.contains('@')) {
            return Err("Invalid JWT: no issuer (client_email).".into());
        }
        if claims["scope"] != SCOPE {
            return Err(format!(
                "Invalid JWT: scope {} is not {SCOPE}.",
                claims["scope"]
            ));
        }
        if claims["aud"] != audience {
            return Err(format!(
                "Invalid JWT: audience {} is not {audience}.",
                claims["aud"]
            ));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as i64;
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap_or(0),
            claims["exp"].as_i64().unwrap_or(0),
        );
        if (iat - now).abs() > 300 || exp <= iat || exp - iat > 3600 {
            return Err("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.".into());
        }
        Ok(())
    })();
    (header, claims, verdict)
}

async fn token(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let state = &shared.vertex;
    let fields = form(&String::from_utf8_lossy(&bytes));
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let grant_type = get("grant_type").unwrap_or_default().to_string();
    let verdict = match grant_type.as_str() {
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            let jwt = get("assertion").unwrap_or_default();
            let (header, claims, verdict) = check_jwt(state, jwt, &format!("http://{host}/token"));
            state
                .grants
                .lock()
                .unwrap()
                .push(json!({"grant_type": grant_type, "header": header, "claims": claims}));
            verdict
        }
        "refresh_token" => {
            state
                .grants
                .lock()
                .unwrap()
                .push(json!({"grant_type": grant_type, "client_id": get("client_id")}));
            if get("refresh_token") == Some(REFRESH_TOKEN) && get("client_secret").is_some() {
                Ok(())
            } else {
                Err("Bad Request".into())
            }
        }
        other => {
            state
                .grants
                .lock()
                .unwrap()
                .push(json!({"grant_type": other}));
            return oauth_error(
                "unsupported_grant_type",
                &format!("Invalid grant_type: {other}"),
            );
        }
    };
    if let Err(description) = verdict {
        return oauth_error("invalid_grant", &description);
    }
    let mut issued = state.issued.lock().unwrap();
    let access_token = format!("ya29.mock-{}", state.grants.lock().unwrap().len());
    issued.push(access_token.clone());
    let lifetime = state.lifetime.lock().unwrap().unwrap_or(3600);
    axum::Json(
        json!({"access_token": access_token, "expires_in": lifetime, "token_type": "Bearer"}),
    )
    .into_response()
}

async fn predict(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((_project, _location, publisher, target)): Path<(String, String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let authorised = bearer.is_some_and(|t| shared.vertex.issued.lock().unwrap().contains(&t));
    if !authorised && shared.fixed.is_none() {
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        shared.record_only(uri.path(), headers, &body);
        return crate::gemini::google_error(
            401,
            json!({"error": {"code": 401, "status": "UNAUTHENTICATED",
                "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential."}}),
        );
    }
    let answer = match publisher.as_str() {
        "google" => {
            crate::gemini::answer_generate(shared.clone(), &target, &uri, headers, &bytes).await
        }
        "anthropic" => {
            let (model, streams) = match target.rsplit_once(':') {
                Some((m, "rawPredict")) => (m, false),
                Some((m, "streamRawPredict")) => (m, true),
                _ => {
                    let msg = format!("mock: no rawPredict method in `{target}`");
                    return crate::gemini::google_error(404, json!({"error": {"message": msg}}));
                }
            };
            crate::anthropic::answer_messages(
                shared.clone(),
                &uri,
                headers,
                &bytes,
                Some((model, streams)),
            )
            .await
        }
        other => crate::gemini::google_error(
            404,
            json!({"error": {"message": format!("mock: publisher `{other}` is not served")}}),
        ),
    };
    watch_stream(shared, answer)
}

/// Signals [`State::abandoned`] when dropped before `finished` is set.
struct Watch {
    shared: Arc<Shared>,
    finished: bool,
}

impl Watch {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.vertex.abandoned.notify_one();
        }
    }
}

/// An SSE answer whose body reports being dropped before its end.
fn watch_stream(shared: Arc<Shared>, answer: Response) -> Response {
    let is_sse = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !is_sse {
        return answer;
    }
    let (parts, body) = answer.into_parts();
    let watch = Watch {
        shared,
        finished: false,
    };
    let frames = futures_util::stream::unfold(
        (body.into_data_stream(), watch),
        |(mut frames, mut watch)| async move {
            match frames.next().await {
                Some(frame) => Some((frame, (frames, watch))),
                None => {
                    watch.finish();
                    None
                }
            }
        },
    );
    Response::from_parts(parts, Body::from_stream(frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(
            form("grant_type=urn%3Aietf%3Aparams&a=b+c&e="),
            vec![
                ("grant_type".to_string(), "urn:ietf:params".to_string()),
                ("a".to_string(), "b c".to_string()),
                ("e".to_string(), String::new()),
            ]
        );
    }
}
