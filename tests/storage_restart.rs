//! PostgreSQL restarted under load (the fault is injected by the test): every chat request
//! is answered, and every usage row and captured memory is in the database afterwards.
//!
//! It restarts the server every PostgreSQL test uses, so it is `#[ignore]`d and run on its
//! own by `scripts/pg-restart-test.sh`, which passes the restart command in
//! `MEMPROXY_PG_RESTART` (e.g. `pg_ctlcluster --skip-systemctl-redirect 15 main restart`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg::TestDb;
use common::*;

const MASTER: &str = "sk-master-restart";

/// Concurrent clients, and how long they send.
const CLIENTS: usize = 8;
const LOAD_FOR: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "restarts PostgreSQL: run by scripts/pg-restart-test.sh"]
async fn postgres_restart_under_load_loses_nothing() {
    let restart = std::env::var("MEMPROXY_PG_RESTART")
        .expect("MEMPROXY_PG_RESTART: the command that restarts PostgreSQL");
    let db = TestDb::create().await;
    let mock = MockUpstream::start().await;
    let yaml = format!(
        r#"
general_settings: {{master_key: {MASTER}}}
model_list:
  - model_name: gpt
    litellm_params: {{model: openai/gpt-4o, api_base: "{}", api_key: k}}
router_settings: {{num_retries: 0}}
context_retrieval: {{enabled: true, max_results: 3}}
"#,
        mock.url()
    );
    let proxy = Arc::new(
        start_with(
            &yaml,
            &[("DATABASE_URL", db.url.as_str())],
            Default::default(),
        )
        .await,
    );
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let skipped = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (proxy, sent, failed, skipped) =
            (proxy.clone(), sent.clone(), failed.clone(), skipped.clone());
        clients.push(tokio::spawn(async move {
            let http = client();
            let mut i = 0;
            while started.elapsed() < LOAD_FOR {
                let resp = http
                    .post(proxy.url("/v1/chat/completions"))
                    .bearer_auth(MASTER)
                    .header("x-request-id", format!("restart-{c}-{i}"))
                    .header("x-memory-user-id", format!("restart-user-{c}"))
                    .json(&chat_body(
                        "gpt",
                        &format!("client {c} remembers fact number {i}"),
                    ))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                sent.fetch_add(1, Ordering::SeqCst);
                match resp {
                    Ok(r) if r.status() == 200 => {
                        if r.headers().get("x-memproxy-memory").is_some() {
                            skipped.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(r) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        eprintln!("request failed: {}", r.status());
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        eprintln!("request failed: {e}");
                    }
                }
                i += 1;
            }
            i
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&restart)
            .output()
    })
    .await
    .unwrap()
    .expect("run the restart command");
    assert!(
        out.status.success(),
        "restart failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut per_client = Vec::new();
    for c in clients {
        per_client.push(c.await.unwrap());
    }
    let total: usize = per_client.iter().sum();
    eprintln!(
        "{total} requests, {} failed, {} answered without memory retrieval",
        failed.load(Ordering::SeqCst),
        skipped.load(Ordering::SeqCst)
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during the restart"
    );
    assert!(
        skipped.load(Ordering::SeqCst) > 0,
        "the restart was not noticed"
    );

    // Everything queued is written once PostgreSQL is back.
    let t = Instant::now();
    proxy.state.analytics.flush().await;
    proxy.flush_memory().await;
    let mem = proxy.state.memory.as_ref().unwrap();
    eprintln!("flushed in {:?}", t.elapsed());
    assert_eq!(
        mem.dropped_writes(),
        0,
        "the memory writer's queue was full: it did not keep up with the captures"
    );
    assert!(
        mem.writes_ok(),
        "memory writes still fail after the restart"
    );
    let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows: i64 = c
        .query_one(
            "SELECT count(DISTINCT request_id) FROM memproxy_requests WHERE request_id LIKE 'restart-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows as usize, total, "usage rows lost");
    for (client, n) in per_client.iter().enumerate() {
        let memories: i64 = c
            .query_one(
                "SELECT count(*) FROM memproxy_memories m JOIN memproxy_memory_users u USING (uid)
                 WHERE u.user_id = $1",
                &[&format!("restart-user-{client}")],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            memories as usize, *n,
            "captured memories of client {client} lost"
        );
    }
}
