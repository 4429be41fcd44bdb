//! `mock-upstream`: the mock provider as a process, for the benchmark and manual tests.
//! Usage: `mock-upstream [PORT]` (default 8080). Answers every chat request with a fixed text.

use axum::serve::ListenerExt;

#[tokio::main]
async fn main() {
    let port = std::env::args().nth(1).unwrap_or_else(|| "8080".into());
    let text = std::env::var("MOCK_TEXT").unwrap_or_else(|_| {
        "This is a fixed answer from the mock upstream, used for benchmarks.".into()
    });
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
        mock_upstream::app_fixed(text),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .expect("serve");
}
