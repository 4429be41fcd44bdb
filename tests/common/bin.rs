//! The real `memproxy` binary as a child process: started on a config file and a data dir,
//! signalled, and waited for (tests that kill or restart the process, or need its files
//! closed).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_memproxy");

/// The binary, started on `config` with its data in `data`; returns it and its address.
pub fn spawn(config: &Path, data: &Path) -> (Child, String) {
    let mut cmd = Command::new(BIN);
    for var in [
        "LITELLM_CONFIG_PATH",
        "PROXY_HOST",
        "PROXY_PORT",
        "LITELLM_MASTER_KEY",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .args(["--port", "0", "--config"])
        .arg(config)
        .env("MEMPROXY_DATA_DIR", data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start memproxy");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let Ok(v) = serde_json::from_str::<Value>(&line.unwrap()) else {
            continue;
        };
        if v["message"] == "memproxy listening" {
            addr = Some(v["address"].as_str().unwrap().to_string());
            break;
        }
    }
    // Keep draining the log so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr.expect("memproxy printed its address"))
}

/// Sends `sig` (`-TERM`, `-KILL`, ...) to the child.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// Waits for the process to exit, at most `limit`.
pub async fn exits_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "memproxy did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP client for talking to the child.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
