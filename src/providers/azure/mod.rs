//! Azure OpenAI (`azure/`) and Azure AI Foundry (`azure_ai/`): OpenAI's wire format at
//! Azure's addresses, sent through [`super::openai::OpenAi`] so streams, usage and the
//! Responses bridge stay one implementation. This folder decides only where requests go
//! ([`urls`]), how they are signed, and how Azure's error bodies read ([`errors`]).
//!
//! - `azure/`: `{api_base}/openai/deployments/{deployment}/chat/completions?api-version=…`
//!   (and `/embeddings`), the deployment being the upstream model name; with
//!   `api_version: v1` (or `preview`, `latest`) the v1 API at `{api_base}/openai/v1/…`
//!   with the deployment in the body's `model`. Responses requests go natively to
//!   `/openai/v1/responses`, or `/openai/responses?api-version=…` for a dated version
//!   that has it.
//! - `azure_ai/`: `{api_base}/chat/completions` (`{api_base}/models/…` on
//!   `*.services.ai.azure.com`), `?api-version=` when one is set; Responses are bridged
//!   to chat completions unless `supported_endpoints` lists them.
//!
//! Credentials: the key in `api-key`, or a Microsoft Entra token (`azure_ad_token`,
//! `AZURE_AD_TOKEN`) as `Authorization: Bearer`.

mod errors;
mod urls;

use axum::http::{header, HeaderMap};
use serde_json::Value;

use super::openai::{sensitive, OpenAi, Wire};
use super::{CallContext, LlmRequest, Native, ProviderEnv, ProviderError, Reply, ResponsesNative};
use crate::config::DeploymentConfig;
use crate::protocol::chat::ChatBody;

pub struct Azure {
    inner: OpenAi,
}

/// How a deployment proves who it is.
#[derive(Debug, PartialEq)]
enum Credential<'a> {
    Key(&'a str),
    EntraToken(&'a str),
}

/// The credential to send: a key the entry writes, else an Entra token (the entry's
/// `azure_ad_token` or `AZURE_AD_TOKEN`), else a key from the environment. (`params` holds
/// the token whether written or from the environment, so a token set anywhere wins over
/// `AZURE_API_KEY`: whoever set one meant to sign in with Entra.)
fn credential(cfg: &DeploymentConfig) -> Option<Credential<'_>> {
    let params = cfg.params.expose();
    let token = params
        .get("azure_ad_token")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.strip_prefix("Bearer ").unwrap_or(t));
    let key = cfg
        .api_key
        .as_ref()
        .map(|k| k.expose().as_str())
        .filter(|k| !k.is_empty());
    let key_written = params.get("api_key").is_some_and(|v| !v.is_null());
    match (key, token) {
        (Some(k), _) if key_written => Some(Credential::Key(k)),
        (_, Some(t)) => Some(Credential::EntraToken(t)),
        (Some(k), None) => Some(Credential::Key(k)),
        (None, None) => None,
    }
}

/// The credential headers. `azure_ai/` endpoints other than Azure's own hosts (serverless
/// deployments, proxies) document `Authorization: Bearer <key>`, so they get the key both
/// ways.
fn auth_headers(cred: &Credential<'_>, bearer_too: bool) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    let bad = || "the credential contains characters not allowed in an HTTP header".to_string();
    match cred {
        Credential::Key(k) => {
            h.insert("api-key", sensitive(k).ok_or_else(bad)?);
            if bearer_too {
                h.insert(
                    header::AUTHORIZATION,
                    sensitive(&format!("Bearer {k}")).ok_or_else(bad)?,
                );
            }
        }
        Credential::EntraToken(t) => {
            h.insert(
                header::AUTHORIZATION,
                sensitive(&format!("Bearer {t}")).ok_or_else(bad)?,
            );
        }
    }
    Ok(h)
}

impl Azure {
    pub fn new(cfg: &DeploymentConfig, env: &ProviderEnv) -> Result<Self, String> {
        let Some(cred) = credential(cfg) else {
            let (key_var, what) = if cfg.provider_name == "azure_ai" {
                ("AZURE_AI_API_KEY", "Azure AI")
            } else {
                ("AZURE_API_KEY", "Azure OpenAI")
            };
            return Err(format!(
                "no {what} credentials: set `api_key` (or {key_var}) or `azure_ad_token` (or \
                 AZURE_AD_TOKEN); Entra client-secret and managed-identity sign-in are not supported"
            ));
        };
        let version = cfg.api_version.as_deref().filter(|v| !v.trim().is_empty());
        let wire = if cfg.provider_name == "azure_ai" {
            let u = urls::foundry(&cfg.api_base, version);
            Wire {
                auth: auth_headers(&cred, !urls::is_azure_host(&cfg.api_base))?,
                chat: u.chat,
                embeddings: u.embeddings,
                responses: u.responses,
                responses_by_default: false,
                status_error: errors::status_error,
            }
        } else {
            let u = urls::openai(&cfg.api_base, version, &cfg.upstream_model);
            Wire {
                auth: auth_headers(&cred, false)?,
                chat: u.chat,
                embeddings: u.embeddings,
                responses: u.responses,
                responses_by_default: true,
                status_error: errors::status_error,
            }
        };
        Ok(Self {
            inner: OpenAi::with_wire(cfg, env, wire),
        })
    }

    pub async fn chat(
        &self,
        cfg: &DeploymentConfig,
        req: &LlmRequest<'_>,
        upstream_model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<Reply, ProviderError> {
        match &req.native {
            Some(Native::Responses(native)) => {
                let cleaned = without_item_status(native);
                let native = cleaned.as_ref().unwrap_or(native);
                self.inner
                    .responses(cfg, native, &req.chat, upstream_model, ctx)
                    .await
            }
            _ => self.inner.chat(cfg, &req.chat, upstream_model, ctx).await,
        }
    }

    pub async fn embed(
        &self,
        cfg: &DeploymentConfig,
        body: &ChatBody<'_>,
        upstream_model: &str,
        ctx: &CallContext<'_>,
    ) -> Result<bytes::Bytes, ProviderError> {
        self.inner.embed(cfg, body, upstream_model, ctx).await
    }
}

/// Azure's Responses API refuses a `status` member on `message` and `reasoning` input
/// items, which clients replaying earlier output (and memproxy's own expansion of a stored
/// conversation) send: a copy of the request without them, or `None` when none has one.
fn without_item_status(native: &ResponsesNative<'_>) -> Option<ResponsesNative<'static>> {
    let body = strip_status(&native.body);
    let expanded = native
        .expanded
        .as_ref()
        .and_then(|(b, holder)| strip_status(b).map(|b| (b, holder.clone())));
    if body.is_none() && expanded.is_none() {
        return None;
    }
    Some(ResponsesNative {
        body: body.unwrap_or_else(|| native.body.clone().into_owned()),
        expanded: expanded.or_else(|| {
            native
                .expanded
                .as_ref()
                .map(|(b, h)| (b.clone().into_owned(), h.clone()))
        }),
    })
}

fn strip_status(body: &ChatBody<'_>) -> Option<ChatBody<'static>> {
    let raw = body.get("input")?;
    if !raw.get().contains("\"status\"") {
        return None;
    }
    let Ok(Value::Array(mut items)) = serde_json::from_str::<Value>(raw.get()) else {
        return None;
    };
    let mut changed = false;
    for item in &mut items {
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        if matches!(kind, "message" | "reasoning") {
            if let Some(obj) = item.as_object_mut() {
                changed |= obj.remove("status").is_some();
            }
        }
    }
    if !changed {
        return None;
    }
    let raw = serde_json::value::to_raw_value(&items).ok()?;
    let mut copy = body.clone().into_owned();
    copy.set("input", raw);
    Some(copy)
}

impl super::Upstream for Azure {
    fn chat<'a>(
        &'a self,
        cfg: &'a DeploymentConfig,
        req: &'a super::LlmRequest<'a>,
        upstream_model: &'a str,
        ctx: &'a CallContext<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<Reply, ProviderError>> {
        Box::pin(self.chat(cfg, req, upstream_model, ctx))
    }

    fn embed<'a>(
        &'a self,
        cfg: &'a DeploymentConfig,
        body: &'a ChatBody<'a>,
        upstream_model: &'a str,
        ctx: &'a CallContext<'a>,
    ) -> futures_util::future::BoxFuture<'a, Result<bytes::Bytes, ProviderError>> {
        Box::pin(self.embed(cfg, body, upstream_model, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Overrides};

    fn deployment(yaml_params: &str, env: &[(&str, &str)]) -> DeploymentConfig {
        let yaml = format!("model_list:\n  - model_name: m\n    litellm_params: {yaml_params}\n");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut c = config::parse(&yaml, "t", &Overrides::default(), &lookup).unwrap();
        c.models.remove(0)
    }

    #[test]
    fn the_entry_chooses_key_or_entra_token() {
        let base = "api_base: https://r.openai.azure.com";
        let d = deployment(&format!("{{model: azure/d, {base}, api_key: k1}}"), &[]);
        assert_eq!(credential(&d), Some(Credential::Key("k1")));
        let d = deployment(
            &format!("{{model: azure/d, {base}, azure_ad_token: t1}}"),
            &[("AZURE_API_KEY", "env-key")],
        );
        assert_eq!(credential(&d), Some(Credential::EntraToken("t1")));
        let d = deployment(
            &format!("{{model: azure/d, {base}}}"),
            &[("AZURE_API_KEY", "env-key"), ("AZURE_AD_TOKEN", "env-t")],
        );
        assert_eq!(credential(&d), Some(Credential::EntraToken("env-t")));
        let d = deployment(
            &format!("{{model: azure/d, {base}, api_key: k2}}"),
            &[("AZURE_AD_TOKEN", "env-t")],
        );
        assert_eq!(credential(&d), Some(Credential::Key("k2")));
        let d = deployment(
            &format!("{{model: azure/d, {base}}}"),
            &[("AZURE_API_KEY", "env-key")],
        );
        assert_eq!(credential(&d), Some(Credential::Key("env-key")));
        let d = deployment(
            &format!("{{model: azure/d, {base}}}"),
            &[("AZURE_AD_TOKEN", "Bearer env-t")],
        );
        assert_eq!(credential(&d), Some(Credential::EntraToken("env-t")));
        let d = deployment(&format!("{{model: azure/d, {base}}}"), &[]);
        assert_eq!(credential(&d), None);

        let h = auth_headers(&Credential::Key("k"), false).unwrap();
        assert_eq!(h["api-key"], "k");
        assert!(h.get("authorization").is_none());
        assert!(h["api-key"].is_sensitive());
        let h = auth_headers(&Credential::Key("k"), true).unwrap();
        assert_eq!(h["authorization"], "Bearer k");
        let h = auth_headers(&Credential::EntraToken("t"), false).unwrap();
        assert_eq!(h["authorization"], "Bearer t");
        assert!(h.get("api-key").is_none());
    }

    #[test]
    fn missing_credentials_name_what_to_set() {
        let env = ProviderEnv {
            http: crate::providers::http::HttpClient::new().unwrap(),
            supermemory_api_key: None,
            cookie_jars: None,
        };
        let d = deployment(
            "{model: azure/d, api_base: https://r.openai.azure.com}",
            &[],
        );
        let err = Azure::new(&d, &env).err().unwrap();
        assert!(
            err.contains("AZURE_API_KEY") && err.contains("azure_ad_token"),
            "{err}"
        );
        let d = deployment(
            "{model: azure_ai/m, api_base: https://x.models.ai.azure.com}",
            &[],
        );
        let err = Azure::new(&d, &env).err().unwrap();
        assert!(err.contains("AZURE_AI_API_KEY"), "{err}");
    }

    #[test]
    fn item_status_is_removed_for_azure() {
        let src = br#"{"model":"m","input":[{"role":"user","content":"q"},{"type":"message","role":"assistant","status":"completed","content":[{"type":"output_text","text":"a"}]},{"type":"reasoning","status":null,"summary":[]},{"type":"function_call","call_id":"c","name":"f","arguments":"{}","status":"completed"}]}"#;
        let body = ChatBody::parse_object(src).unwrap();
        let out = strip_status(&body).unwrap();
        let v: Value = serde_json::from_slice(&out.to_json()).unwrap();
        assert!(v["input"][1].get("status").is_none());
        assert!(v["input"][2].get("status").is_none());
        assert_eq!(v["input"][3]["status"], "completed");
        let plain = ChatBody::parse_object(br#"{"model":"m","input":"hi"}"#).unwrap();
        assert!(strip_status(&plain).is_none());
    }
}
