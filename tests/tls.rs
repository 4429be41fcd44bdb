//! HTTPS on the listener: a test CA and a certificate made by openssl at run time (no
//! key is committed), a chat answered over TLS (HTTP/1.1 and HTTP/2), a client that never
//! finishes its handshake does not hold up others, and a bad certificate file is a clear
//! start error.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn openssl(args: &[&str], dir: &Path) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is needed to make the test certificates");
    assert!(status.success(), "openssl {args:?}");
}

/// A test CA, and a certificate for 127.0.0.1 it signed with its key, in `dir`:
/// `(ca.pem, cert.pem, key.pem)`.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "1",
        "-subj",
        "/CN=memproxy-test-ca",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca, dir);
    let mut csr = vec!["req", "-new", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "key.pem", "-out", "leaf.csr"]);
    openssl(&csr, dir);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ],
        dir,
    );
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

#[tokio::test]
async fn chat_over_https_with_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let tls = memproxy::server::tls::load(&cert, &key).expect("certificate loads");
    let data = tempfile::tempdir().unwrap();
    let overrides = memproxy::config::Overrides {
        data_dir: Some(data.path().to_string_lossy().into_owned()),
        ..Default::default()
    };
    let cfg = memproxy::config::parse(
        "model_list:\n  - model_name: mock\n    litellm_params: {model: openai/mock, mock_response: hi}\n",
        "test.yaml",
        &overrides,
        &|_| None,
    ).unwrap();
    let state = memproxy::AppState::new(cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(memproxy::serve_tls(listener, tls, state, async {
        let _ = stopped.await;
    }));

    // A client that opens a connection and says nothing does not block the next one.
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();

    let _ = client();
    let root = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    for http2 in [false, true] {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([root.clone()])
            .https_only(true);
        // ALPN offers both; each client takes one.
        if !http2 {
            b = b.http1_only();
        }
        let https = b.build().unwrap();
        let resp = https
            .post(format!("https://{addr}/v1/chat/completions"))
            .json(&chat_body("mock", "hello over TLS"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let want = if http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(resp.version(), want);
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["choices"][0]["message"]["content"].is_string(),
            "{body}"
        );
    }
    // Plain HTTP on the TLS port gets no answer.
    assert!(client()
        .get(format!("http://{addr}/health/liveliness"))
        .send()
        .await
        .is_err());
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[test]
fn unreadable_or_wrong_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, key) = certificates(dir.path());
    let missing = dir.path().join("missing.pem");
    let e = memproxy::server::tls::load(&missing, &key).unwrap_err();
    assert!(e.to_string().starts_with("--tls-cert"), "{e}");
    // The certificate given as the key.
    let e = memproxy::server::tls::load(&cert, &cert).unwrap_err();
    assert!(e.to_string().starts_with("--tls-key"), "{e}");
}
