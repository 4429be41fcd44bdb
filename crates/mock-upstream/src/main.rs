//! `mock-upstream`: the mock provider as a process, for the benchmark and the real-client
//! tests. Usage: `mock-upstream [PORT]` (default 8080). Answers every chat request with a
//! fixed text (`MOCK_TEXT`), after one tool call when the request offers tools.
//! `MOCK_TOOL=name` with `MOCK_TOOL_ARGS='{json}'` picks the tool to call when offered;
//! `MOCK_TEXT_ONLY=phrase` answers requests whose last message holds the phrase with the
//! text at once; `MOCK_RECORD=1` records requests for `GET /mock/requests`.

use axum::serve::ListenerExt;
use mock_upstream::FixedMode;

#[tokio::main]
async fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "8080".into());
    let text = std::env::var("MOCK_TEXT").unwrap_or_else(|_| {
        "This is a fixed answer from the mock upstream, used for benchmarks.".into()
    });
    let preferred_tool = std::env::var("MOCK_TOOL").ok().map(|name| {
        let args = std::env::var("MOCK_TOOL_ARGS").unwrap_or_else(|_| "{}".into());
        (name, args)
    });
    let text_only_phrase = std::env::var("MOCK_TEXT_ONLY")
        .ok()
        .filter(|p| !p.is_empty());
    let record = std::env::var("MOCK_RECORD").is_ok_and(|v| v == "1");
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .expect("bind");
    eprintln!(
        "mock-upstream listening on {}",
        listener.local_addr().expect("addr")
    );
    axum::serve(
        listener.tap_io(|t| {
            let _ = t.set_nodelay(true);
        }),
        mock_upstream::app_fixed(FixedMode {
            text,
            preferred_tool,
            text_only_phrase,
            record,
        }),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .expect("serve");
}
