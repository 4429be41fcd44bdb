//! `model_list` entries: the LiteLLM provider prefixes memproxy knows (wire family,
//! default endpoint, the environment variables of their keys and bases) and one entry
//! validated into a [`DeploymentConfig`].

use super::*;

/// What memproxy knows of a LiteLLM provider prefix: the wire family it speaks, its
/// default endpoint, and the environment variables LiteLLM reads its key and base from.
pub(super) struct KnownProvider {
    name: &'static str,
    kind: ProviderKind,
    base: &'static str,
    key_env: &'static [&'static str],
    base_env: &'static [&'static str],
}

pub(super) const fn known(
    name: &'static str,
    kind: ProviderKind,
    base: &'static str,
    key_env: &'static [&'static str],
    base_env: &'static [&'static str],
) -> KnownProvider {
    KnownProvider {
        name,
        kind,
        base,
        key_env,
        base_env,
    }
}

/// Every provider prefix memproxy serves. The OpenAI-compatible family shares one
/// implementation; the others have their own (see `crate::providers`).
pub(super) const PROVIDERS: &[KnownProvider] = &[
    known(
        "openai",
        ProviderKind::OpenAi,
        "https://api.openai.com/v1",
        &["OPENAI_API_KEY"],
        &["OPENAI_BASE_URL", "OPENAI_API_BASE"],
    ),
    known(
        "anthropic",
        ProviderKind::Anthropic,
        "https://api.anthropic.com",
        &["ANTHROPIC_API_KEY"],
        &["ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL"],
    ),
    known(
        "gemini",
        ProviderKind::Gemini,
        "https://generativelanguage.googleapis.com",
        &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        &["GEMINI_API_BASE"],
    ),
    known(
        "azure",
        ProviderKind::Azure,
        "",
        &["AZURE_API_KEY", "AZURE_OPENAI_API_KEY"],
        &["AZURE_API_BASE", "AZURE_OPENAI_ENDPOINT"],
    ),
    known(
        "azure_ai",
        ProviderKind::Azure,
        "",
        &["AZURE_AI_API_KEY"],
        &["AZURE_AI_API_BASE"],
    ),
    known("bedrock", ProviderKind::Bedrock, "", &[], &[]),
    known("vertex_ai", ProviderKind::VertexAi, "", &[], &[]),
    known("vertex_ai_beta", ProviderKind::VertexAi, "", &[], &[]),
    known(
        "ollama",
        ProviderKind::Ollama,
        "http://localhost:11434",
        &["OLLAMA_API_KEY"],
        &["OLLAMA_API_BASE"],
    ),
    known(
        "ollama_chat",
        ProviderKind::Ollama,
        "http://localhost:11434",
        &["OLLAMA_API_KEY"],
        &["OLLAMA_API_BASE"],
    ),
    known(
        "hosted_vllm",
        ProviderKind::OpenAi,
        "",
        &["HOSTED_VLLM_API_KEY"],
        &["HOSTED_VLLM_API_BASE"],
    ),
    known(
        "vllm",
        ProviderKind::OpenAi,
        "",
        &["HOSTED_VLLM_API_KEY"],
        &["HOSTED_VLLM_API_BASE"],
    ),
    known(
        "lm_studio",
        ProviderKind::OpenAi,
        "http://localhost:1234/v1",
        &["LM_STUDIO_API_KEY"],
        &["LM_STUDIO_API_BASE"],
    ),
    known(
        "litellm_proxy",
        ProviderKind::OpenAi,
        "",
        &["LITELLM_PROXY_API_KEY"],
        &["LITELLM_PROXY_API_BASE"],
    ),
    known("openai_like", ProviderKind::OpenAi, "", &[], &[]),
    known("custom_openai", ProviderKind::OpenAi, "", &[], &[]),
    known(
        "text-completion-openai",
        ProviderKind::OpenAi,
        "https://api.openai.com/v1",
        &["OPENAI_API_KEY"],
        &[],
    ),
    // LiteLLM reads the Azure-hosted Mistral settings first.
    known(
        "mistral",
        ProviderKind::OpenAi,
        "https://api.mistral.ai/v1",
        &["MISTRAL_AZURE_API_KEY", "MISTRAL_API_KEY"],
        &["MISTRAL_AZURE_API_BASE", "MISTRAL_API_BASE"],
    ),
    known(
        "codestral",
        ProviderKind::OpenAi,
        "https://codestral.mistral.ai/v1",
        &["CODESTRAL_API_KEY"],
        &["CODESTRAL_API_BASE"],
    ),
    known(
        "groq",
        ProviderKind::OpenAi,
        "https://api.groq.com/openai/v1",
        &["GROQ_API_KEY"],
        &["GROQ_API_BASE"],
    ),
    known(
        "deepseek",
        ProviderKind::OpenAi,
        "https://api.deepseek.com/v1",
        &["DEEPSEEK_API_KEY"],
        &["DEEPSEEK_API_BASE"],
    ),
    known(
        "openrouter",
        ProviderKind::OpenAi,
        "https://openrouter.ai/api/v1",
        &["OPENROUTER_API_KEY", "OR_API_KEY"],
        &["OPENROUTER_API_BASE"],
    ),
    known(
        "together_ai",
        ProviderKind::OpenAi,
        "https://api.together.xyz/v1",
        &[
            "TOGETHER_API_KEY",
            "TOGETHER_AI_API_KEY",
            "TOGETHERAI_API_KEY",
            "TOGETHER_AI_TOKEN",
        ],
        &["TOGETHER_AI_API_BASE"],
    ),
    known(
        "fireworks_ai",
        ProviderKind::OpenAi,
        "https://api.fireworks.ai/inference/v1",
        &[
            "FIREWORKS_API_KEY",
            "FIREWORKS_AI_API_KEY",
            "FIREWORKSAI_API_KEY",
            "FIREWORKS_AI_TOKEN",
        ],
        &["FIREWORKS_API_BASE", "FIREWORKS_AI_API_BASE"],
    ),
    known(
        "xai",
        ProviderKind::OpenAi,
        "https://api.x.ai/v1",
        &["XAI_API_KEY"],
        &["XAI_API_BASE"],
    ),
    known(
        "perplexity",
        ProviderKind::OpenAi,
        "https://api.perplexity.ai",
        &["PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"],
        &["PERPLEXITY_API_BASE"],
    ),
    known(
        "cerebras",
        ProviderKind::OpenAi,
        "https://api.cerebras.ai/v1",
        &["CEREBRAS_API_KEY"],
        &["CEREBRAS_API_BASE"],
    ),
    known(
        "nvidia_nim",
        ProviderKind::OpenAi,
        "https://integrate.api.nvidia.com/v1",
        &["NVIDIA_NIM_API_KEY"],
        &["NVIDIA_NIM_API_BASE"],
    ),
    known(
        "sambanova",
        ProviderKind::OpenAi,
        "https://api.sambanova.ai/v1",
        &["SAMBANOVA_API_KEY"],
        &["SAMBANOVA_API_BASE"],
    ),
    known(
        "deepinfra",
        ProviderKind::OpenAi,
        "https://api.deepinfra.com/v1/openai",
        &["DEEPINFRA_API_KEY"],
        &["DEEPINFRA_API_BASE"],
    ),
];

pub(super) fn first_env(names: &[&str], lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    names
        .iter()
        .find_map(|n| lookup(n).filter(|v| !v.trim().is_empty()))
}

/// Standard environment variables a provider reads its settings from when the entry
/// does not set them (as LiteLLM and the providers' own SDKs do): copied into `params`.
pub(super) const PARAM_ENV: &[(&str, &str, &[&str])] = &[
    ("bedrock", "aws_access_key_id", &["AWS_ACCESS_KEY_ID"]),
    (
        "bedrock",
        "aws_secret_access_key",
        &["AWS_SECRET_ACCESS_KEY"],
    ),
    ("bedrock", "aws_session_token", &["AWS_SESSION_TOKEN"]),
    (
        "bedrock",
        "aws_region_name",
        &["AWS_REGION_NAME", "AWS_REGION", "AWS_DEFAULT_REGION"],
    ),
    (
        "bedrock",
        "aws_bedrock_runtime_endpoint",
        &["AWS_BEDROCK_RUNTIME_ENDPOINT"],
    ),
    (
        "vertex_ai",
        "vertex_project",
        &["VERTEXAI_PROJECT", "VERTEX_PROJECT", "GOOGLE_CLOUD_PROJECT"],
    ),
    (
        "vertex_ai",
        "vertex_location",
        &[
            "VERTEXAI_LOCATION",
            "VERTEX_LOCATION",
            "GOOGLE_CLOUD_REGION",
        ],
    ),
    (
        "vertex_ai",
        "vertex_credentials",
        &["VERTEXAI_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS"],
    ),
    (
        "azure",
        "azure_ad_token",
        &["AZURE_AD_TOKEN", "AZURE_OPENAI_AD_TOKEN"],
    ),
];

/// One `model_list` entry, validated; `Err` is why it cannot be served (it is skipped).
pub(super) fn deployment(
    i: usize,
    m: raw::RawModel,
    router: &RouterSettings,
    lookup: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<DeploymentConfig, String> {
    let at = format!("model_list[{i}]");
    if m.model_name.trim().is_empty() {
        return Err("`model_name` is missing or empty".into());
    }
    let Some(p) = m.litellm_params else {
        return Err("it has no `litellm_params` (LiteLLM cannot load it either)".into());
    };
    let Some(model) = p.model.filter(|m| !m.trim().is_empty()) else {
        return Err("`litellm_params.model` is missing".into());
    };
    let (prefix, name) = match model.split_once('/') {
        Some((prefix, name)) => (prefix.to_string(), name.to_string()),
        None => ("openai".to_string(), model.clone()),
    };
    let provider_name = p.custom_llm_provider.clone().unwrap_or(prefix.clone());
    // With custom_llm_provider set, the whole `model` may be the upstream name.
    let upstream_model = if p.custom_llm_provider.is_some() && prefix != provider_name {
        model.clone()
    } else {
        name
    };
    let family = PROVIDERS.iter().find(|k| k.name == provider_name).map(|k| {
        // vertex_ai_beta and the other aliases read the same settings. (azure_ai does not
        // read Azure OpenAI's: an AZURE_AD_TOKEN meant for those would displace its key.)
        let canonical = match k.name {
            "vertex_ai_beta" => "vertex_ai",
            other => other,
        };
        (k, canonical)
    });
    let provider = match family {
        Some((k, _)) => k.kind.clone(),
        None => {
            if p.mock_response.is_none() {
                warnings.push(format!(
                    "{at}.litellm_params.model: provider `{provider_name}` is not supported; \
                     requests to `{}` will fail with 501",
                    m.model_name
                ));
            }
            ProviderKind::Unsupported(provider_name.clone())
        }
    };
    let api_base = match p.api_base.filter(|b| !b.trim().is_empty()) {
        Some(b) => b.trim_end_matches('/').to_string(),
        None => family
            .and_then(|(k, _)| first_env(k.base_env, lookup).or(Some(k.base.to_string())))
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string(),
    };
    // Mistral's API lives under /v1, which LiteLLM adds when a base lacks it.
    let api_base =
        if provider_name == "mistral" && !api_base.is_empty() && !api_base.ends_with("/v1") {
            format!("{api_base}/v1")
        } else {
            api_base
        };
    let needs_base = matches!(provider, ProviderKind::OpenAi | ProviderKind::Azure);
    if api_base.is_empty() && p.mock_response.is_none() && needs_base {
        return Err(format!(
            "provider `{provider_name}` has no default endpoint; set `litellm_params.api_base`"
        ));
    }
    if !(api_base.is_empty() || api_base.starts_with("http://") || api_base.starts_with("https://"))
    {
        return Err(format!("`api_base` `{api_base}` is not an http(s) URL"));
    }
    let timeout = match p.timeout.or(p.stream_timeout) {
        Some(t) => Duration::try_from_secs_f64(t)
            .map_err(|_| "`timeout` must be a non-negative number of seconds".to_string())?,
        None => router.timeout,
    };
    let mut extra_headers = p.extra_headers.unwrap_or_default();
    if let Some(org) = p.organization {
        extra_headers.insert("OpenAI-Organization".into(), org);
    }
    for name in extra_headers.keys() {
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!(
                "`extra_headers`: `{name}` is not a valid header name"
            ));
        }
    }
    let weight = p.weight.or(p.rpm.map(|r| r as f64)).unwrap_or(1.0);
    if weight.is_nan() || weight <= 0.0 {
        return Err("`weight` must be positive".into());
    }
    let api_key = p
        .api_key
        .filter(|k| !k.is_empty())
        .or_else(|| family.and_then(|(k, _)| first_env(k.key_env, lookup)));
    let mut params = m.params;
    if let Some((_, canonical)) = family {
        for (_, key, vars) in PARAM_ENV.iter().filter(|(p, _, _)| *p == canonical) {
            if params.get(*key).is_none_or(Value::is_null) {
                if let Some(v) = first_env(vars, lookup) {
                    params.insert((*key).to_string(), Value::String(v));
                }
            }
        }
    }
    let api_version = p.api_version.or_else(|| {
        (provider_name == "azure")
            .then(|| first_env(&["AZURE_API_VERSION", "OPENAI_API_VERSION"], lookup))
            .flatten()
    });
    let info = m.model_info;
    Ok(DeploymentConfig {
        supermemory_router: api_base.contains("supermemory.ai"),
        upstream_mode: false,
        model_name: m.model_name,
        provider,
        provider_name,
        upstream_model,
        api_base,
        api_key: api_key.map(Secret::new),
        mock_response: p.mock_response,
        timeout,
        max_retries: p.max_retries,
        weight,
        rpm: p.rpm,
        tpm: p.tpm,
        api_version,
        extra_headers,
        supported_endpoints: info.as_ref().and_then(|i| i.supported_endpoints.clone()),
        input_cost_per_token: info.as_ref().and_then(|i| i.input_cost_per_token),
        output_cost_per_token: info.as_ref().and_then(|i| i.output_cost_per_token),
        cache_read_input_token_cost: info.as_ref().and_then(|i| i.cache_read_input_token_cost),
        drop_params: p.drop_params.unwrap_or(false),
        params: Secret::new(params),
    })
}
