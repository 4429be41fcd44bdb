//! Where Azure deployments take their requests, from `api_base`, `api_version` and the
//! deployment name.

use super::super::openai::{ModelUrl, MODEL_SLOT};

/// The `api-version` of dated Azure OpenAI requests when the entry names none: 2024-10-21,
/// the newest generally available dated version of the data-plane inference API (later
/// dated versions are previews; the v1 API needs none).
pub(super) const DEFAULT_API_VERSION: &str = "2024-10-21";

/// The first dated version that serves the Responses API at `/openai/responses`.
const FIRST_RESPONSES_VERSION: &str = "2025-03-01";

/// The `api-version` Azure AI Foundry's model inference endpoint
/// (`*.services.ai.azure.com/models`) requires when the entry names none.
pub(super) const DEFAULT_FOUNDRY_VERSION: &str = "2024-05-01-preview";

/// A deployment's three endpoints.
pub(super) struct Urls {
    pub chat: ModelUrl,
    pub embeddings: ModelUrl,
    pub responses: ModelUrl,
}

/// Whether `version` selects the v1 API (no dated version): `v1`, or `preview` / `latest`,
/// which the v1 API takes as its `api-version`.
fn is_v1(version: &str) -> bool {
    matches!(version, "v1" | "preview" | "latest")
}

/// Azure OpenAI (`azure/`). An `api_base` given with the `/openai` or `/openai/v1` path
/// already on it is accepted too (the latter selects the v1 API).
pub(super) fn openai(api_base: &str, version: Option<&str>, deployment: &str) -> Urls {
    let mut base = api_base.trim_end_matches('/');
    let mut v1_base = false;
    if let Some(b) = base.strip_suffix("/openai/v1") {
        (base, v1_base) = (b, true);
    } else if let Some(b) = base.strip_suffix("/openai") {
        base = b;
    }
    let v1_query = match version {
        Some(v @ ("preview" | "latest")) => format!("?api-version={v}"),
        _ => String::new(),
    };
    let v1 = |path: &str| ModelUrl::fixed(format!("{base}/openai/v1/{path}{v1_query}"));
    let responses = match version {
        Some(v) if !v1_base && !is_v1(v) && v >= FIRST_RESPONSES_VERSION => {
            ModelUrl::fixed(format!("{base}/openai/responses?api-version={v}"))
        }
        _ => v1("responses"),
    };
    if v1_base || version.is_some_and(is_v1) {
        return Urls {
            chat: v1("chat/completions"),
            embeddings: v1("embeddings"),
            responses,
        };
    }
    let version = version.unwrap_or(DEFAULT_API_VERSION);
    let dated = |path: &str| {
        ModelUrl::per_model(
            format!("{base}/openai/deployments/{MODEL_SLOT}/{path}?api-version={version}"),
            deployment,
        )
    };
    Urls {
        chat: dated("chat/completions"),
        embeddings: dated("embeddings"),
        responses,
    }
}

/// The host of an `http(s)://host[:port]/…` URL, lower-cased.
fn host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host.split(':').next().unwrap_or("").to_ascii_lowercase()
}

/// Whether `api_base` is one of Azure's own resource hosts, which take the key in
/// `api-key` only.
pub(super) fn is_azure_host(api_base: &str) -> bool {
    let h = host(api_base);
    [
        ".services.ai.azure.com",
        ".openai.azure.com",
        ".cognitiveservices.azure.com",
    ]
    .iter()
    .any(|s| h.ends_with(s))
}

/// Azure AI Foundry (`azure_ai/`): `{api_base}/chat/completions`, under `/models` on a
/// Foundry resource host, with `?api-version=` when one is set (required there).
pub(super) fn foundry(api_base: &str, version: Option<&str>) -> Urls {
    let mut base = api_base.trim_end_matches('/').to_string();
    let mut version = version.map(str::to_string);
    if host(&base).ends_with(".services.ai.azure.com") {
        let path_has_models = base
            .split_once("://")
            .is_some_and(|(_, r)| r.contains("/models"));
        if !path_has_models {
            base.push_str("/models");
        }
        version.get_or_insert_with(|| DEFAULT_FOUNDRY_VERSION.to_string());
    }
    let query = version.map_or(String::new(), |v| format!("?api-version={v}"));
    let url = |path: &str| ModelUrl::fixed(format!("{base}/{path}{query}"));
    Urls {
        chat: url("chat/completions"),
        embeddings: url("embeddings"),
        responses: url("responses"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(u: &Urls, model: &str) -> [String; 3] {
        [
            u.chat.get(model).url.to_string(),
            u.embeddings.get(model).url.to_string(),
            u.responses.get(model).url.to_string(),
        ]
    }

    #[test]
    fn dated_versions_name_the_deployment() {
        let r = "https://r.openai.azure.com";
        let u = openai(&format!("{r}/"), None, "gpt4o-dep");
        assert_eq!(
            urls(&u, "gpt4o-dep"),
            [
                format!("{r}/openai/deployments/gpt4o-dep/chat/completions?api-version=2024-10-21"),
                format!("{r}/openai/deployments/gpt4o-dep/embeddings?api-version=2024-10-21"),
                format!("{r}/openai/v1/responses"),
            ]
        );
        // A wildcard deployment's match gets its own path.
        assert_eq!(
            u.chat.get("other").url.as_ref(),
            format!("{r}/openai/deployments/other/chat/completions?api-version=2024-10-21")
        );
        let u = openai(&format!("{r}/openai"), Some("2025-04-01-preview"), "d");
        assert_eq!(
            urls(&u, "d")[2],
            format!("{r}/openai/responses?api-version=2025-04-01-preview")
        );
        assert!(urls(&u, "d")[0]
            .ends_with("/openai/deployments/d/chat/completions?api-version=2025-04-01-preview"));
        // A GA dated version without the Responses API: Responses go to the v1 API.
        let u = openai(r, Some("2024-06-01"), "d");
        assert_eq!(urls(&u, "d")[2], format!("{r}/openai/v1/responses"));
    }

    #[test]
    fn the_v1_api_takes_the_deployment_in_the_body() {
        let r = "https://r.openai.azure.com";
        for (base, version, query) in [
            (r.to_string(), Some("v1"), ""),
            (format!("{r}/openai/v1"), None, ""),
            (r.to_string(), Some("preview"), "?api-version=preview"),
            (r.to_string(), Some("latest"), "?api-version=latest"),
        ] {
            let u = openai(&base, version, "d");
            assert_eq!(
                urls(&u, "d"),
                [
                    format!("{r}/openai/v1/chat/completions{query}"),
                    format!("{r}/openai/v1/embeddings{query}"),
                    format!("{r}/openai/v1/responses{query}"),
                ],
                "{base} {version:?}"
            );
        }
    }

    #[test]
    fn foundry_endpoints() {
        let u = foundry("https://x.eastus2.models.ai.azure.com", None);
        assert_eq!(
            urls(&u, "m")[0],
            "https://x.eastus2.models.ai.azure.com/chat/completions"
        );
        let u = foundry("https://res.services.ai.azure.com/", None);
        assert_eq!(
            urls(&u, "m")[0],
            "https://res.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview"
        );
        let u = foundry(
            "https://res.services.ai.azure.com/models",
            Some("2024-08-01"),
        );
        assert_eq!(
            urls(&u, "m")[1],
            "https://res.services.ai.azure.com/models/embeddings?api-version=2024-08-01"
        );
        assert!(is_azure_host("https://res.services.ai.azure.com/models"));
        assert!(is_azure_host("https://R.OpenAI.Azure.com:443"));
        assert!(!is_azure_host("https://x.eastus2.models.ai.azure.com"));
        assert!(!is_azure_host("http://127.0.0.1:9/openai.azure.com"));
    }
}
