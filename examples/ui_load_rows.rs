//! Writes usage rows into a fresh analytics store, for `scripts/ui-load-bench.sh`:
//! `cargo run --example ui_load_rows -- DATA_DIR ROWS`. Rows are spread over the last 30
//! days across 6 clients, 4 models, 40 users (each with its own key; a user sends 80 % of
//! requests from one client and uses two models most; two thirds of the requests name one
//! of two projects), with varied latencies, TTFT,
//! costs and a few errors; they go through the store's own batch write, so the rollups
//! are maintained exactly as in service.

use std::path::PathBuf;
use std::time::Instant;

use memproxy::analytics::{AnalyticsStore, Record};
use memproxy::storage::embedded::analytics::SqliteStore;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: ui_load_rows DATA_DIR ROWS"));
    let rows: usize = args.next().map_or(1_000_000, |n| n.parse().expect("ROWS"));
    let mut store = SqliteStore::open(&dir).expect("open the analytics store");
    let clients = [
        "claude-code",
        "codex",
        "openai-python",
        "openai-node",
        "curl",
        "cursor",
    ];
    let models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama3"];
    let now = memproxy::analytics::timefmt::now_ms();
    let span = 30 * 86_400_000i64;
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(7);
    let batch_size = 1000;
    let mut done = 0;
    while done < rows {
        let n = batch_size.min(rows - done);
        let batch: Vec<Record> = (0..n)
            .map(|i| {
                let k = done + i;
                let user = rng.usize(..40);
                let total_ms = 50.0 + rng.f64() * rng.f64() * 4000.0;
                Record {
                    // Oldest first, as a live proxy writes them.
                    ts_ms: now - span + (span * k as i64) / rows as i64,
                    request_id: format!("bench-{k}"),
                    user_id: format!("user-{user}"),
                    client: if rng.u8(..100) < 80 {
                        clients[user % clients.len()]
                    } else {
                        clients[rng.usize(..clients.len())]
                    }
                    .into(),
                    key_id: Some(format!("{user:064x}")),
                    endpoint: "chat".into(),
                    model: if rng.u8(..100) < 90 {
                        models[(user + rng.usize(..2)) % models.len()]
                    } else {
                        models[rng.usize(..models.len())]
                    }
                    .into(),
                    stream: true,
                    tokens_in: rng.u64(10..4000),
                    tokens_out: rng.u64(5..800),
                    cost_usd: Some(rng.f64() * 0.01),
                    total_ms,
                    ttft_ms: Some(total_ms * 0.3),
                    upstream_ms: Some(total_ms - 0.5),
                    overhead_ms: 0.5,
                    status: if rng.u8(..100) < 2 { 502 } else { 200 },
                    attempts: 1,
                    project: ["", "web", "api"][k % 3].into(),
                    ..Default::default()
                }
            })
            .collect();
        store.insert_records(&batch).expect("insert");
        done += n;
    }
    eprintln!(
        "wrote {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The store's own time per overview query (median of 5), without HTTP or the queue.
    use memproxy::analytics::rollup::{Range, SeriesBy, TimeseriesQuery};
    for (range, by) in [
        ("1h", SeriesBy::Client),
        ("6h", SeriesBy::Client),
        ("24h", SeriesBy::Client),
        ("7d", SeriesBy::Model),
        ("30d", SeriesBy::Key),
        ("30d", SeriesBy::Project),
    ] {
        let q = TimeseriesQuery {
            range: Range::parse(range).expect("range"),
            group_by: by,
            user_id: None,
            key_id: None,
            project: None,
            now_ms: now,
        };
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                let ts = store.timeseries(&q).expect("timeseries");
                assert!(ts.total.totals.requests > 0);
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        eprintln!("store: timeseries {range:>3} by {by:?}: {:.1} ms", times[2]);
    }
}
