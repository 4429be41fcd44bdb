use super::*;

fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |n| {
        pairs
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.to_string())
    }
}

fn load_str(yaml: &str) -> Result<Config, ConfigError> {
    parse(
        yaml,
        "test.yaml",
        &Overrides::default(),
        &env(&[("KEY", "sk-real")]),
    )
}

const SPEC_EXAMPLE: &str = r#"
general_settings:
  master_key: sk-1234
model_list:
  - model_name: claude-sonnet-4.5
    litellm_params:
      model: anthropic/claude-sonnet-4-5-20250929
      api_base: https://api.supermemory.ai/v3/api.anthropic.com
      api_key: os.environ/KEY
      custom_llm_provider: anthropic
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4, api_key: os.environ/KEY, rpm: 60}
router_settings: {num_retries: 2, timeout: 600, fallbacks: [{gpt-4: [claude-sonnet-4.5]}]}
"#;

#[test]
fn spec_example_loads() {
    let c = load_str(SPEC_EXAMPLE).unwrap();
    assert_eq!(c.models.len(), 2);
    let claude = &c.models[0];
    assert_eq!(claude.provider, ProviderKind::Anthropic);
    assert_eq!(claude.upstream_model, "claude-sonnet-4-5-20250929");
    assert!(claude.supermemory_router);
    assert_eq!(claude.api_key.as_ref().unwrap().expose(), "sk-real");
    let gpt = &c.models[1];
    assert_eq!(gpt.provider, ProviderKind::OpenAi);
    assert_eq!(gpt.api_base, "https://api.openai.com/v1");
    assert_eq!(gpt.weight, 60.0);
    assert_eq!(
        c.router.fallbacks["gpt-4"],
        vec!["claude-sonnet-4.5".to_string()]
    );
    assert_eq!(c.router.timeout, Duration::from_secs(600));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn unknown_keys_warn_with_their_path() {
    let c = load_str(
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/x, mock_response: hi, frobnicate: 1}\nweird_section: {a: 1}\n",
    )
    .unwrap();
    let all = c.warnings.join("\n");
    assert!(
        all.contains("model_list.0.litellm_params.frobnicate")
            || all.contains("model_list[0].litellm_params.frobnicate"),
        "{all}"
    );
    assert!(all.contains("weird_section"), "{all}");
}

#[test]
fn wrong_types_name_the_path() {
    let err = load_str(
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/x, rpm: lots}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("model_list") && err.contains("rpm"), "{err}");
}

#[test]
fn invalid_regex_names_the_path() {
    let err = load_str(
        "user_id_mappings:\n  header_patterns:\n    - {header: user-agent, pattern: '([', user_id: x}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("user_id_mappings.header_patterns[0].pattern"),
        "{err}"
    );
}

#[test]
fn invalid_configured_user_id_is_rejected() {
    let err = load_str("user_id_mappings:\n  default_user_id: 'has space'\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("user_id_mappings.default_user_id"), "{err}");
}

#[test]
fn missing_env_names_variable_and_path() {
    let err = parse(SPEC_EXAMPLE, "t", &Overrides::default(), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("KEY") && err.contains("model_list[0].litellm_params.api_key"),
        "{err}"
    );
}

#[test]
fn yaml_merge_keys_apply() {
    let c = load_str(
        "x-base: &base {model: openai/gpt-4o, api_key: os.environ/KEY}\nmodel_list:\n  - model_name: a\n    litellm_params:\n      <<: *base\n      api_base: http://localhost:9/v1\n",
    )
    .unwrap();
    assert_eq!(c.models[0].upstream_model, "gpt-4o");
    assert_eq!(c.models[0].api_base, "http://localhost:9/v1");
}

#[test]
fn precedence_overrides_beat_file_beat_defaults() {
    let yaml = "server: {host: 127.0.0.2, port: 1111}\n";
    let c = parse(yaml, "t", &Overrides::default(), &|_| None).unwrap();
    assert_eq!((c.server.host.as_str(), c.server.port), ("127.0.0.2", 1111));
    let o = Overrides {
        port: Some(2222),
        ..Default::default()
    };
    let c = parse(yaml, "t", &o, &|_| None).unwrap();
    assert_eq!((c.server.host.as_str(), c.server.port), ("127.0.0.2", 2222));
    let c = parse("", "t", &Overrides::default(), &|_| None).unwrap();
    assert_eq!(
        (c.server.host.as_str(), c.server.port),
        ("127.0.0.1", DEFAULT_PORT)
    );
}

#[test]
fn worker_threads_flag_beats_file_and_zero_is_refused() {
    let yaml = "server: {worker_threads: 3}\n";
    let c = parse(yaml, "t", &Overrides::default(), &|_| None).unwrap();
    assert_eq!(c.server.worker_threads, 3);
    let o = Overrides {
        worker_threads: Some(5),
        ..Default::default()
    };
    assert_eq!(
        parse(yaml, "t", &o, &|_| None)
            .unwrap()
            .server
            .worker_threads,
        5
    );
    let c = parse("", "t", &Overrides::default(), &|_| None).unwrap();
    assert_eq!(c.server.worker_threads, super::default_worker_threads());
    assert!(c.server.worker_threads >= 1);
    let err = parse(
        "server: {worker_threads: 0}\n",
        "t",
        &Overrides::default(),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("server.worker_threads"), "{err}");
}

#[test]
fn exposure_requires_master_key_off_loopback() {
    let o = Overrides {
        host: Some("0.0.0.0".into()),
        ..Default::default()
    };
    let c = parse("", "t", &o, &|_| None).unwrap();
    let err = c.check_exposure().unwrap_err().to_string();
    assert!(
        err.contains("master key") && err.contains("master_key"),
        "{err}"
    );
    let o = Overrides {
        host: Some("0.0.0.0".into()),
        master_key: Some("sk-x".into()),
        ..Default::default()
    };
    assert!(parse("", "t", &o, &|_| None)
        .unwrap()
        .check_exposure()
        .is_ok());
    for host in ["127.0.0.1", "localhost", "::1", "[::1]"] {
        let o = Overrides {
            host: Some(host.into()),
            ..Default::default()
        };
        assert!(
            parse("", "t", &o, &|_| None)
                .unwrap()
                .check_exposure()
                .is_ok(),
            "{host}"
        );
    }
}

#[test]
fn builtin_defaults_have_a_mock_model() {
    let c = load(None, &Overrides::default(), &|_| None).unwrap();
    assert!(c.models.iter().any(|m| m.mock_response.is_some()));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn secrets_are_masked_when_printed() {
    let c = load_str(SPEC_EXAMPLE).unwrap();
    let dump = serde_json::to_string(&c).unwrap();
    assert!(
        !dump.contains("sk-real") && !dump.contains("sk-1234"),
        "{dump}"
    );
    assert!(!format!("{c:?}").contains("sk-real"));
}

#[test]
fn unsupported_provider_warns_but_loads() {
    let c =
        load_str("model_list:\n  - model_name: b\n    litellm_params: {model: frobai/claude}\n")
            .unwrap();
    assert!(matches!(c.models[0].provider, ProviderKind::Unsupported(_)));
    assert!(c.warnings.iter().any(|w| w.contains("frobai")));
}

const MEMORY_CONFIG: &str = r#"
model_list:
  - model_name: emb
    litellm_params: {model: openai/text-embedding-3-small, mock_response: x}
context_retrieval:
  enabled: true
  query_strategy: all_user
  injection_strategy: user_suffix
  max_context_length: 1000
  max_results: 3
  enabled_for_models: [claude-sonnet-4.5]
memory:
  data_dir: /tmp/mp-data
  embedding_model: emb
  memory_ttl_seconds: 60
  max_context_messages: 8
  queue_size: 100
"#;

#[test]
fn memory_sections_are_typed() {
    let c = load_str(MEMORY_CONFIG).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let r = &c.retrieval;
    assert!(r.enabled);
    assert_eq!(r.query_strategy, QueryStrategy::AllUser);
    assert_eq!(r.injection_strategy, InjectionStrategy::UserSuffix);
    assert_eq!((r.max_results, r.max_context_length), (3, 1000));
    assert_eq!(r.enabled_for_models, vec!["claude-sonnet-4.5".to_string()]);
    let m = &c.memory;
    assert_eq!(m.data_dir, std::path::PathBuf::from("/tmp/mp-data"));
    assert_eq!(m.embedding_model.as_deref(), Some("emb"));
    assert_eq!(m.session_ttl, Duration::from_secs(60));
    assert_eq!((m.max_context_messages, m.queue_size), (8, 100));
}

#[test]
fn memory_defaults_work_offline() {
    let c = load_str("").unwrap();
    assert!(!c.retrieval.enabled);
    assert_eq!(c.retrieval.query_strategy, QueryStrategy::LastUser);
    assert_eq!(c.retrieval.injection_strategy, InjectionStrategy::System);
    assert!(c.memory.enabled && c.memory.capture);
    assert_eq!(c.memory.backend, MemoryBackend::Embedded);
    assert_eq!(
        c.memory.data_dir,
        std::path::PathBuf::from(DEFAULT_DATA_DIR)
    );
    assert_eq!(c.memory.max_context_messages, 20);
    // A present section is enabled unless it says otherwise.
    assert!(
        load_str("context_retrieval: {max_results: 2}")
            .unwrap()
            .retrieval
            .enabled
    );
}

#[test]
fn memory_env_beats_file_and_flag_beats_env() {
    let lookup = env(&[
        ("MEMORY_TTL_SECONDS", "5"),
        ("MAX_CONTEXT_MESSAGES", "2"),
        ("MEMPROXY_DATA_DIR", "/env/dir"),
    ]);
    let yaml = "memory: {ttl_seconds: 60, max_context_messages: 8, data_dir: /file/dir}";
    let c = parse(yaml, "t", &Overrides::default(), &lookup).unwrap();
    assert_eq!(c.memory.session_ttl, Duration::from_secs(5));
    assert_eq!(c.memory.max_context_messages, 2);
    assert_eq!(c.memory.data_dir, std::path::PathBuf::from("/env/dir"));
    let flag = Overrides {
        data_dir: Some("/flag/dir".into()),
        ..Default::default()
    };
    let c = parse(yaml, "t", &flag, &lookup).unwrap();
    assert_eq!(c.memory.data_dir, std::path::PathBuf::from("/flag/dir"));
    let bad = parse(
        yaml,
        "t",
        &Overrides::default(),
        &env(&[("MAX_CONTEXT_MESSAGES", "many")]),
    );
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("MAX_CONTEXT_MESSAGES"));
}

#[test]
fn memory_errors_name_the_path() {
    for (yaml, path) in [
        (
            "context_retrieval: {query_strategy: newest}",
            "context_retrieval.query_strategy",
        ),
        (
            "context_retrieval: {injection_strategy: footer}",
            "context_retrieval.injection_strategy",
        ),
        (
            "context_retrieval: {max_results: 0}",
            "context_retrieval.max_results",
        ),
        ("memory: {embedding_model: nope}", "memory.embedding_model"),
        ("memory: {backend: postgres}", "memory.backend"),
        ("memory: {ttl_seconds: -1}", "memory.ttl_seconds"),
        (
            "tool_execution: {max_iterations: 0}",
            "tool_execution.max_iterations",
        ),
        (
            "tool_execution: {timeout_per_tool: 0}",
            "tool_execution.timeout_per_tool",
        ),
        (
            "tool_execution: {timeout_per_tool: -2}",
            "tool_execution.timeout_per_tool",
        ),
    ] {
        let err = load_str(yaml).unwrap_err().to_string();
        assert!(err.contains(path), "{yaml}: {err}");
    }
    let c = load_str("memory: {frobnicate: 1}").unwrap();
    let all = c.warnings.join("\n");
    assert!(all.contains("memory.frobnicate"), "{all}");
}

#[test]
fn tool_execution_section() {
    let off = load_str("").unwrap().tool_execution;
    assert!(!off.enabled);
    assert_eq!(off.max_iterations, 10);
    assert_eq!(off.timeout_per_tool, Duration::from_secs(30));

    // The SPEC's example, with the original proxy's key that memproxy does not use.
    let c = load_str(
        "tool_execution: {enabled: true, max_iterations: 3, timeout_per_tool: 2.5, \
         enabled_for_models: ['claude-*'], supermemory_api_key: sm-x, frobnicate: 1}",
    )
    .unwrap();
    let t = &c.tool_execution;
    assert!(t.enabled);
    assert_eq!(t.max_iterations, 3);
    assert_eq!(t.timeout_per_tool, Duration::from_millis(2500));
    assert_eq!(t.enabled_for_models, vec!["claude-*".to_string()]);
    let all = c.warnings.join("\n");
    assert!(
        all.contains("tool_execution.supermemory_api_key")
            && all.contains("tool_execution.frobnicate"),
        "{all}"
    );

    // A present section is on unless it says otherwise, as `context_retrieval`.
    assert!(
        load_str("tool_execution: {}")
            .unwrap()
            .tool_execution
            .enabled
    );
    let c = load_str("tool_execution: {enabled: true}\nmemory: {enabled: false}").unwrap();
    assert!(c.warnings.join("\n").contains("memory tools are off"));
}

#[test]
fn redis_comes_from_general_settings_litellm_router_settings_or_env() {
    let c = load_str("general_settings: {redis_url: 'redis://r1:6379'}\n").unwrap();
    assert_eq!(
        c.rate_limits.redis_url.as_ref().unwrap().expose(),
        "redis://r1:6379"
    );
    assert!(c.rate_limits.fail_open);
    let c = load_str(
        "router_settings: {redis_host: cache.local, redis_port: 6380, redis_password: pw}\n",
    )
    .unwrap();
    assert_eq!(
        c.rate_limits.redis_url.as_ref().unwrap().expose(),
        "redis://:pw@cache.local:6380"
    );
    let c = parse(
        "general_settings: {redis_url: 'redis://file:6379'}\nrate_limits: {fail_open: false}\n",
        "t",
        &Overrides::default(),
        &|n| (n == "REDIS_URL").then(|| "redis://env:6379".to_string()),
    )
    .unwrap();
    assert_eq!(
        c.rate_limits.redis_url.as_ref().unwrap().expose(),
        "redis://env:6379"
    );
    assert!(!c.rate_limits.fail_open);
    assert!(load_str("general_settings: {redis_url: 'http://nope'}\n").is_err());
    let c = load_str("").unwrap();
    assert!(c.rate_limits.redis_url.is_none());
}

/// The provider families served through other wires: each prefix's wire, default base and
/// the environment variables its key and base come from when the entry sets none.
#[test]
fn provider_prefixes_have_their_default_base_and_key_variables() {
    let table: &[(&str, ProviderKind, &str, &str, &str)] = &[
        (
            "mistral",
            ProviderKind::OpenAi,
            "https://api.mistral.ai/v1",
            "MISTRAL_API_KEY",
            "MISTRAL_API_BASE",
        ),
        (
            "groq",
            ProviderKind::OpenAi,
            "https://api.groq.com/openai/v1",
            "GROQ_API_KEY",
            "GROQ_API_BASE",
        ),
        (
            "deepseek",
            ProviderKind::OpenAi,
            "https://api.deepseek.com/v1",
            "DEEPSEEK_API_KEY",
            "DEEPSEEK_API_BASE",
        ),
        (
            "openrouter",
            ProviderKind::OpenAi,
            "https://openrouter.ai/api/v1",
            "OPENROUTER_API_KEY",
            "OPENROUTER_API_BASE",
        ),
        (
            "together_ai",
            ProviderKind::OpenAi,
            "https://api.together.xyz/v1",
            "TOGETHER_API_KEY",
            "TOGETHER_AI_API_BASE",
        ),
        (
            "fireworks_ai",
            ProviderKind::OpenAi,
            "https://api.fireworks.ai/inference/v1",
            "FIREWORKS_API_KEY",
            "FIREWORKS_API_BASE",
        ),
        (
            "xai",
            ProviderKind::OpenAi,
            "https://api.x.ai/v1",
            "XAI_API_KEY",
            "XAI_API_BASE",
        ),
        (
            "perplexity",
            ProviderKind::OpenAi,
            "https://api.perplexity.ai",
            "PERPLEXITYAI_API_KEY",
            "PERPLEXITY_API_BASE",
        ),
        (
            "cerebras",
            ProviderKind::OpenAi,
            "https://api.cerebras.ai/v1",
            "CEREBRAS_API_KEY",
            "CEREBRAS_API_BASE",
        ),
        (
            "hosted_vllm",
            ProviderKind::OpenAi,
            "",
            "HOSTED_VLLM_API_KEY",
            "HOSTED_VLLM_API_BASE",
        ),
        (
            "lm_studio",
            ProviderKind::OpenAi,
            "http://localhost:1234/v1",
            "LM_STUDIO_API_KEY",
            "LM_STUDIO_API_BASE",
        ),
        (
            "ollama",
            ProviderKind::Ollama,
            "http://localhost:11434",
            "OLLAMA_API_KEY",
            "OLLAMA_API_BASE",
        ),
        (
            "ollama_chat",
            ProviderKind::Ollama,
            "http://localhost:11434",
            "OLLAMA_API_KEY",
            "OLLAMA_API_BASE",
        ),
        (
            "azure",
            ProviderKind::Azure,
            "",
            "AZURE_API_KEY",
            "AZURE_API_BASE",
        ),
        (
            "azure_ai",
            ProviderKind::Azure,
            "",
            "AZURE_AI_API_KEY",
            "AZURE_AI_API_BASE",
        ),
    ];
    let parse_with = |prefix: &str, extra: &str, vars: Vec<(String, String)>| {
        let yaml = format!(
            "model_list:\n  - model_name: m\n    litellm_params: {{model: {prefix}/some-model{extra}}}\n"
        );
        let lookup = move |n: &str| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        parse(&yaml, "t", &Overrides::default(), &lookup)
    };
    for (prefix, kind, base, key_var, base_var) in table {
        let key_only = vec![(key_var.to_string(), format!("{prefix}-env-key"))];
        let c = parse_with(prefix, "", key_only.clone());
        if base.is_empty() {
            // No default endpoint: the entry cannot be served, and the error says what to set.
            let err = c.err().unwrap().to_string();
            assert!(
                err.contains("set `litellm_params.api_base`"),
                "{prefix}: {err}"
            );
        } else {
            let c = c.unwrap();
            let m = &c.models[0];
            assert_eq!(&m.provider, kind, "{prefix}");
            assert_eq!(m.provider_name, *prefix);
            assert_eq!(m.upstream_model, "some-model", "{prefix}");
            assert_eq!(m.api_base, *base, "{prefix}");
            let key = m.api_key.as_ref().map(|k| k.expose().clone());
            assert_eq!(key.as_deref(), Some(format!("{prefix}-env-key").as_str()));
        }

        let mut with_base = key_only;
        with_base.push((base_var.to_string(), "https://env.example/v1".into()));
        let c = parse_with(prefix, "", with_base.clone()).unwrap();
        assert_eq!(c.models[0].api_base, "https://env.example/v1", "{prefix}");

        // What the entry writes wins over the environment.
        let c = parse_with(
            prefix,
            ", api_key: written, api_base: 'https://written.example/v1/'",
            with_base,
        )
        .unwrap();
        let m = &c.models[0];
        assert_eq!(m.api_base, "https://written.example/v1", "{prefix}");
        assert_eq!(m.api_key.as_ref().unwrap().expose(), "written");
        assert!(c.warnings.is_empty(), "{prefix}: {:?}", c.warnings);
    }
}

#[test]
fn provider_specific_env_quirks() {
    let load = |yaml: &str, vars: &'static [(&'static str, &'static str)]| {
        parse(yaml, "t", &Overrides::default(), &env(vars)).unwrap()
    };
    // Mistral's base always ends in /v1; the Azure-hosted Mistral settings come first.
    let c = load(
        "model_list:\n  - model_name: m\n    litellm_params: {model: mistral/x, api_base: 'https://m.example'}\n",
        &[("MISTRAL_API_KEY", "plain"), ("MISTRAL_AZURE_API_KEY", "azure-hosted")],
    );
    assert_eq!(c.models[0].api_base, "https://m.example/v1");
    assert_eq!(
        c.models[0].api_key.as_ref().unwrap().expose(),
        "azure-hosted"
    );
    // AZURE_API_VERSION and AZURE_AD_TOKEN are Azure OpenAI's, not Azure AI Foundry's.
    let yaml = "model_list:\n  - model_name: a\n    litellm_params: {model: azure/d, api_base: 'https://r.openai.azure.com'}\n  - model_name: f\n    litellm_params: {model: azure_ai/m, api_base: 'https://x.models.ai.azure.com'}\n";
    let c = load(
        yaml,
        &[
            ("AZURE_API_VERSION", "2024-06-01"),
            ("AZURE_OPENAI_AD_TOKEN", "tok"),
            ("AZURE_AI_API_KEY", "ai-key"),
        ],
    );
    assert_eq!(c.models[0].api_version.as_deref(), Some("2024-06-01"));
    assert_eq!(c.models[0].params.expose()["azure_ad_token"], "tok");
    assert_eq!(c.models[1].api_version, None);
    assert!(c.models[1].params.expose().get("azure_ad_token").is_none());
}

#[test]
fn an_unknown_prefix_warns_naming_the_provider() {
    let c = load_str("model_list:\n  - model_name: x\n    litellm_params: {model: frobai/m1, api_base: 'http://h'}\n").unwrap();
    assert_eq!(
        c.models[0].provider,
        ProviderKind::Unsupported("frobai".into())
    );
    let w = c.warnings.join("\n");
    assert!(
        w.contains("`frobai` is not supported") && w.contains("501"),
        "{w}"
    );
}

#[test]
fn supermemory_backend_takes_its_key_and_url_from_the_environment() {
    let yaml =
        "memory: {backend: supermemory, supermemory: {api_key: sm-file, timeout_seconds: 3}}";
    let lookup = env(&[
        ("SUPERMEMORY_API_KEY", "sm-env"),
        ("SUPERMEMORY_BASE_URL", "http://127.0.0.1:9/"),
    ]);
    let c = parse(yaml, "t", &Overrides::default(), &lookup).unwrap();
    assert_eq!(c.memory.backend, MemoryBackend::Supermemory);
    let sm = c.memory.supermemory.as_ref().unwrap();
    assert_eq!(sm.api_key.expose(), "sm-env");
    assert_eq!(sm.base_url, "http://127.0.0.1:9");
    assert_eq!(sm.timeout, std::time::Duration::from_secs(3));
    let dump = serde_json::to_string(&c.memory).unwrap();
    assert!(
        !dump.contains("sm-env") && !dump.contains("sm-file"),
        "{dump}"
    );

    let bad = "memory: {backend: supermemory, supermemory: {api_key: k, base_url: 'ftp://x'}}";
    assert!(parse(bad, "t", &Overrides::default(), &|_| None).is_err());
    let c = parse(
        "memory: {backend: supermemory, supermemory: {api_key: k}}",
        "t",
        &Overrides::default(),
        &|_| None,
    )
    .unwrap();
    assert_eq!(
        c.memory.supermemory.unwrap().base_url,
        "https://api.supermemory.ai"
    );
}

#[test]
fn the_memory_quota_defaults_to_a_million_and_can_be_set_or_lifted() {
    let c = load_str("model_list: []\n").unwrap();
    assert_eq!(c.memory.max_memories_per_user, 1_000_000);
    let c = load_str("model_list: []\nmemory: {max_memories_per_user: 5}\n").unwrap();
    assert_eq!(c.memory.max_memories_per_user, 5);
    let c = load_str("model_list: []\nmemory: {max_memories_per_user: 0}\n").unwrap();
    assert_eq!(c.memory.max_memories_per_user, 0);
}
