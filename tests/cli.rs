//! The `memproxy` binary: start on defaults, check-config, precedence of flags over
//! environment over file, refusal to expose without a key, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_memproxy");

fn clean_cmd() -> Command {
    let mut c = Command::new(BIN);
    for var in [
        "LITELLM_CONFIG_PATH",
        "PROXY_HOST",
        "PROXY_PORT",
        "LITELLM_BASE_URL",
        "LITELLM_MASTER_KEY",
        "LOG_LEVEL",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    // Memory files go to a temp dir, never into the source tree.
    let data = std::env::temp_dir().join(format!("memproxy-cli-test-{}", std::process::id()));
    c.env("MEMPROXY_DATA_DIR", data);
    c
}

fn write_config(text: &str) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(f.path(), text).unwrap();
    f
}

#[test]
fn check_config_prints_resolved_config_with_secrets_masked() {
    let f = write_config(
        "general_settings: {master_key: os.environ/MP_TEST_MASTER}\nmodel_list:\n  - model_name: gpt\n    litellm_params: {model: openai/gpt-4o, api_key: os.environ/MP_TEST_KEY}\nmystery_key: 1\n",
    );
    let out = clean_cmd()
        .args(["check-config", f.path().to_str().unwrap()])
        .env("MP_TEST_MASTER", "sk-master-secret")
        .env("MP_TEST_KEY", "sk-provider-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stdout.contains("sk-master-secret") && !stdout.contains("sk-provider-secret"),
        "{stdout}"
    );
    assert!(
        stdout.contains("*****") && stdout.contains("gpt-4o"),
        "{stdout}"
    );
    assert!(stderr.contains("mystery_key"), "{stderr}");
}

#[test]
fn check_config_reports_missing_env_with_path() {
    let f = write_config("model_list:\n  - model_name: gpt\n    litellm_params: {model: openai/gpt-4o, api_key: os.environ/MP_SURELY_UNSET_VAR}\n");
    let out = clean_cmd()
        .args(["check-config", f.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MP_SURELY_UNSET_VAR"), "{stderr}");
    assert!(
        stderr.contains("model_list[0].litellm_params.api_key"),
        "{stderr}"
    );
}

/// A config LiteLLM loads but whose every deployment is skipped (no AWS region or
/// credentials) serves nothing: check-config says why per deployment and fails, and the
/// server refuses to start rather than answer 404 to everything.
#[test]
fn a_config_that_can_serve_nothing_is_refused() {
    let f = write_config(
        "model_list:\n  - model_name: claude\n    litellm_params: {model: bedrock/anthropic.claude-3-haiku}\n",
    );
    let mut check = clean_cmd();
    check.args(["check-config", f.path().to_str().unwrap()]);
    let mut serve = clean_cmd();
    serve.args([
        "serve",
        "--port",
        "0",
        "--config",
        f.path().to_str().unwrap(),
    ]);
    for cmd in [&mut check, &mut serve] {
        for var in [
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_REGION_NAME",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_BEARER_TOKEN_BEDROCK",
        ] {
            cmd.env_remove(var);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let both = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
        assert!(stderr.contains("no model can be served"), "{both}");
        assert!(both.contains("`claude`") && both.contains("AWS"), "{both}");
    }
}

fn port_of(out: &std::process::Output) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["server"]["port"].as_u64().unwrap()
}

#[test]
fn flags_beat_environment_beat_file() {
    let f = write_config("server: {port: 1111}\n");
    let path = f.path().to_str().unwrap();
    let file_only = clean_cmd().args(["check-config", path]).output().unwrap();
    assert_eq!(port_of(&file_only), 1111);
    let env = clean_cmd()
        .args(["check-config", path])
        .env("PROXY_PORT", "2222")
        .output()
        .unwrap();
    assert_eq!(port_of(&env), 2222);
    let flag = clean_cmd()
        .args(["check-config", path, "--port", "3333"])
        .env("PROXY_PORT", "2222")
        .output()
        .unwrap();
    assert_eq!(port_of(&flag), 3333);
    // The config path itself can come from LITELLM_CONFIG_PATH.
    let out = clean_cmd().args(["check-config", path]).output().unwrap();
    assert!(out.status.success());
}

#[test]
fn refuses_to_listen_on_all_interfaces_without_a_key() {
    let out = clean_cmd()
        .args(["serve", "--host", "0.0.0.0", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("master key") && stderr.contains("127.0.0.1"),
        "{stderr}"
    );
}

#[test]
fn starts_on_builtin_defaults_answers_and_stops_on_sigterm() {
    let mut child = clean_cmd()
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut addr = None;
    let mut warned = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if v["message"]
            .as_str()
            .unwrap_or("")
            .contains("NO MASTER KEY")
        {
            warned = true;
        }
        if v["message"] == "memproxy listening" {
            addr = Some(v["address"].as_str().unwrap().to_string());
            break;
        }
    }
    let addr = addr.expect("listening line");
    assert!(warned, "loud warning without a master key");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let body = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
            .post(format!("http://{addr}/v1/chat/completions"))
            .json(&serde_json::json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    assert!(body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("memproxy"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    // The access log line of the request was written.
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(
            |l| l.contains("\"path\":\"/v1/chat/completions\"") && l.contains("\"status\":200")
        ),
        "{rest:?}"
    );
}
