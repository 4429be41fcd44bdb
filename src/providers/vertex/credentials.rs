//! Google credentials for Vertex AI, read once when the deployment is built: a service
//! account key (`"type": "service_account"`, exchanged for an access token with a JWT signed
//! RS256 by its private key) or a user's refresh token (`"type": "authorized_user"`, as
//! `gcloud auth application-default login` writes). `vertex_credentials` holds a path to
//! such a JSON file, the JSON itself, or (in YAML) the mapping.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::Secret;

/// Where Google's OAuth tokens come from when the credentials name no `token_uri`.
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The scope of every Vertex AI call.
pub(super) const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// How long a signed assertion is valid (Google accepts at most one hour).
const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// Credentials that can be exchanged for an access token.
pub(super) enum Credentials {
    ServiceAccount(ServiceAccount),
    AuthorizedUser(AuthorizedUser),
}

pub(super) struct ServiceAccount {
    client_email: String,
    key_id: Option<String>,
    key: Arc<RsaKeyPair>,
    token_uri: String,
    project_id: Option<String>,
}

pub(super) struct AuthorizedUser {
    client_id: String,
    client_secret: Secret<String>,
    refresh_token: Secret<String>,
    token_uri: String,
    quota_project_id: Option<String>,
}

/// The members of a credentials file that memproxy reads.
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: Option<String>,
    quota_project_id: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    client_email: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    token_uri: Option<String>,
}

impl Credentials {
    /// Reads `vertex_credentials`: a path to a JSON file, JSON text, or a mapping.
    /// `Err` says what is missing or wrong, without quoting any secret.
    pub(super) fn from_param(param: &Value) -> Result<Self, String> {
        let (wire, origin) = match param {
            Value::Object(_) => (
                serde_json::from_value::<Wire>(param.clone()).map_err(|e| e.to_string()),
                "`vertex_credentials`".to_string(),
            ),
            Value::String(s) if s.trim_start().starts_with('{') => (
                serde_json::from_str::<Wire>(s).map_err(|e| e.to_string()),
                "`vertex_credentials` (JSON)".to_string(),
            ),
            Value::String(path) => {
                let path = path.trim();
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("cannot read the Vertex AI credentials file `{path}`: {e}")
                })?;
                (
                    serde_json::from_str::<Wire>(&text).map_err(|e| e.to_string()),
                    format!("the credentials file `{path}`"),
                )
            }
            _ => {
                return Err(
                    "`vertex_credentials` must be a file path, JSON text or a mapping".into(),
                )
            }
        };
        let wire = wire.map_err(|e| format!("{origin} is not a Google credentials JSON: {e}"))?;
        Self::from_wire(wire).map_err(|e| format!("{origin}: {e}"))
    }

    fn from_wire(w: Wire) -> Result<Self, String> {
        let token_uri = w
            .token_uri
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
        match w.kind.as_deref() {
            Some("service_account") => {
                let client_email = w
                    .client_email
                    .filter(|e| !e.is_empty())
                    .ok_or("the service account has no `client_email`")?;
                let pem = w
                    .private_key
                    .filter(|k| !k.is_empty())
                    .ok_or("the service account has no `private_key`")?;
                Ok(Credentials::ServiceAccount(ServiceAccount {
                    client_email,
                    key_id: w.private_key_id.filter(|k| !k.is_empty()),
                    key: Arc::new(rsa_key(&pem)?),
                    token_uri,
                    project_id: w.project_id.filter(|p| !p.is_empty()),
                }))
            }
            Some("authorized_user") => {
                let field = |v: Option<String>, name: &str| {
                    v.filter(|s| !s.is_empty())
                        .ok_or(format!("the authorized_user credentials have no `{name}`"))
                };
                Ok(Credentials::AuthorizedUser(AuthorizedUser {
                    client_id: field(w.client_id, "client_id")?,
                    client_secret: Secret::new(field(w.client_secret, "client_secret")?),
                    refresh_token: Secret::new(field(w.refresh_token, "refresh_token")?),
                    token_uri,
                    quota_project_id: w.quota_project_id.filter(|p| !p.is_empty()),
                }))
            }
            Some(other) => Err(format!(
                "credentials of type `{other}` are not supported (use a service account key or authorized_user credentials)"
            )),
            None => Err("the credentials have no `type` (expected `service_account`)".into()),
        }
    }

    /// The project the credentials belong to, used when `vertex_project` is not set.
    pub(super) fn project_id(&self) -> Option<&str> {
        match self {
            Credentials::ServiceAccount(sa) => sa.project_id.as_deref(),
            Credentials::AuthorizedUser(u) => u.quota_project_id.as_deref(),
        }
    }

    /// The OAuth token endpoint.
    pub(super) fn token_uri(&self) -> &str {
        match self {
            Credentials::ServiceAccount(sa) => &sa.token_uri,
            Credentials::AuthorizedUser(u) => &u.token_uri,
        }
    }

    /// Who the credentials are, for error messages (no secret).
    pub(super) fn principal(&self) -> &str {
        match self {
            Credentials::ServiceAccount(sa) => &sa.client_email,
            Credentials::AuthorizedUser(u) => &u.client_id,
        }
    }

    /// The form body of a token request made at `now_unix` (seconds since the epoch).
    pub(super) fn token_request(&self, now_unix: u64) -> Result<String, String> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        match self {
            Credentials::ServiceAccount(sa) => {
                form.append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer");
                form.append_pair("assertion", &sa.assertion(now_unix)?);
            }
            Credentials::AuthorizedUser(u) => {
                form.append_pair("grant_type", "refresh_token");
                form.append_pair("client_id", &u.client_id);
                form.append_pair("client_secret", u.client_secret.expose());
                form.append_pair("refresh_token", u.refresh_token.expose());
            }
        }
        Ok(form.finish())
    }
}

impl ServiceAccount {
    /// The signed JWT asking `token_uri` for a cloud-platform token.
    fn assertion(&self, now_unix: u64) -> Result<String, String> {
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = kid.as_str().into();
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now_unix,
            "exp": now_unix + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "cannot sign the token request with the service account key")?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// The RSA key of a PEM `private_key` (PKCS#8, as Google issues them, or PKCS#1).
fn rsa_key(pem: &str) -> Result<RsaKeyPair, String> {
    let bad = |why: &str| format!("the service account `private_key` is not usable: {why}");
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| bad("expected a PEM `-----BEGIN PRIVATE KEY-----` block"))?;
    let key = match &der {
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => return Err(bad("not an RSA key")),
    };
    key.map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_what_is_missing() {
        let err = |v: Value| match Credentials::from_param(&v) {
            Ok(_) => panic!("accepted {v}"),
            Err(e) => e,
        };
        let e = err(json!({"type": "service_account", "private_key": "x"}));
        assert!(e.contains("client_email"), "{e}");
        let e = err(json!({"type": "service_account", "client_email": "a@b"}));
        assert!(e.contains("private_key"), "{e}");
        let e = err(
            json!({"type": "service_account", "client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}),
        );
        assert!(e.contains("not usable"), "{e}");
        let e = err(json!({"type": "external_account"}));
        assert!(e.contains("external_account"), "{e}");
        let e = err(json!({"type": "authorized_user", "client_id": "c"}));
        assert!(e.contains("client_secret"), "{e}");
        let e = err(json!("/nonexistent/creds.json"));
        assert!(
            e.contains("cannot read") && e.contains("/nonexistent/creds.json"),
            "{e}"
        );
        let e = err(json!("{not json"));
        assert!(e.contains("not a Google credentials JSON"), "{e}");
        let e = err(json!(3));
        assert!(e.contains("file path"), "{e}");
    }

    #[test]
    fn authorized_user_asks_with_its_refresh_token() {
        let c = Credentials::from_param(&json!({"type": "authorized_user", "client_id": "cid",
            "client_secret": "s&cret", "refresh_token": "rt", "quota_project_id": "qp"}))
        .unwrap();
        assert_eq!(c.project_id(), Some("qp"));
        assert_eq!(c.token_uri(), DEFAULT_TOKEN_URI);
        let form = c.token_request(0).unwrap();
        assert_eq!(
            form,
            "grant_type=refresh_token&client_id=cid&client_secret=s%26cret&refresh_token=rt"
        );
    }
}
