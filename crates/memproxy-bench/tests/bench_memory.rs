//! `memproxy-bench bench-memory` at a tiny size: it writes, searches, prints its table and keeps
//! (then reuses) its data dir.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_memproxy-bench");

#[test]
fn bench_memory_runs_at_a_tiny_size_and_reuses_kept_data() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new(BIN)
            .args([
                "bench-memory",
                "--sizes",
                "400",
                "--users",
                "20",
                "--searches",
                "40",
            ])
            .arg("--keep")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    let rows: Vec<&str> = first
        .lines()
        .filter(|l| l.trim_start().starts_with("400 "))
        .collect();
    assert_eq!(rows.len(), 2, "{first}");
    assert!(
        rows[0].contains(" one ") && rows[1].contains(" spread "),
        "{first}"
    );
    assert!(!rows[0].contains("reused"), "{first}");
    assert!(dir
        .path()
        .join("400-one-membench-user/memproxy.db")
        .exists());
    assert!(dir
        .path()
        .join("400-spread-20-membench-user/memproxy.db")
        .exists());
    let again = run();
    assert_eq!(again.matches("reused").count(), 2, "{again}");
}
