//! The embedded stores on a real disk that fills up or turns read-only under the running
//! binary. A small tmpfs is filled to the last byte, then freed; an ext4 image on a loop
//! device is switched to read-only by the kernel's own error path (`errors=remount-ro`,
//! triggered through sysfs), exactly as a failing disk does in production.
//!
//! Outcome asserted: chats keep being answered; a memory write that cannot be stored fails
//! with a clear error; `/health/readiness` says not ready and `/metrics` shows the failing
//! store; once space is back everything queued meanwhile is written with no manual step;
//! after a read-only disk is repaired, a restart finds every acknowledged write and clean
//! databases.
//!
//! Mounting needs root (the test machines and CI run as root); without it these tests fail
//! with a message saying so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mock_upstream::MockUpstream;
use serde_json::{json, Value};

#[path = "common/bin.rs"]
mod bin;
use bin::{exits_within, http, signal, spawn};

/// A file system mounted for one test, unmounted (and its image removed) when dropped.
struct Mount {
    dir: tempfile::TempDir,
    image: Option<PathBuf>,
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

fn must(cmd: &str, args: &[&str]) {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed (these tests mount file systems and need root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Mount {
    /// A tmpfs of `size` (`16m`).
    fn tmpfs(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let opts = format!("size={size}");
        must(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &opts,
                "memproxy-test",
                path(dir.path()),
            ],
        );
        Self { dir, image: None }
    }

    /// An ext4 image of `mb` MiB on a loop device; errors turn it read-only.
    fn ext4(mb: u64) -> Self {
        let image = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        let image = image.keep().unwrap();
        std::fs::File::options()
            .write(true)
            .open(&image)
            .unwrap()
            .set_len(mb << 20)
            .unwrap();
        must("mkfs.ext4", &["-q", "-F", path(&image)]);
        let dir = tempfile::tempdir().unwrap();
        let m = Self {
            dir,
            image: Some(image),
        };
        m.mount_image();
        m
    }

    fn mount_image(&self) {
        let image = self.image.as_deref().unwrap();
        must(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                path(image),
                path(self.dir.path()),
            ],
        );
    }

    /// The kernel's own read-only switch after a file-system error (as a failing disk).
    fn fail_read_only(&self) {
        let out = run("findmnt", &["-n", "-o", "SOURCE", path(self.dir.path())]);
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let name = Path::new(&dev).file_name().unwrap().to_string_lossy();
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "1")
            .expect("trigger an ext4 error");
        assert!(
            std::fs::write(self.dir.path().join("probe"), "x").is_err(),
            "the file system is read-only now"
        );
    }

    /// Unmounts, repairs (`e2fsck -fy`) and mounts the image again, read-write.
    fn repair(&self) {
        must("umount", &[path(self.dir.path())]);
        let out = run("e2fsck", &["-fy", path(self.image.as_deref().unwrap())]);
        // 0: clean, 1: errors corrected.
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "e2fsck: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        self.mount_image();
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let dir = path(self.dir.path()).to_string();
        if !run("umount", &[&dir]).status.success() {
            run("umount", &["-l", &dir]);
        }
        if let Some(image) = &self.image {
            let _ = std::fs::remove_file(image);
        }
    }
}

/// The child process, killed if the test ends early (a failed assertion).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes zeros into `dir` until the file system refuses another byte.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    for chunk in [1 << 20, 4096, 1] {
        let buf = vec![0u8; chunk];
        while f.write_all(&buf).and_then(|_| f.sync_all()).is_ok() {}
    }
    filler
}

/// Ten questions whose captured exchanges are ten distinct memories.
const TOPICS: [&str; 10] = [
    "apples", "bicycles", "castles", "dolphins", "engines", "forests", "glaciers", "harbours",
    "islands", "jungles",
];

fn config(mock: &MockUpstream) -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        f.path(),
        format!(
            "server:\n  shutdown_grace_seconds: 5\nmodel_list:\n  - model_name: gpt\n    litellm_params: {{model: openai/gpt-4o, api_base: '{}', api_key: sk-test}}\n",
            mock.url()
        ),
    )
    .unwrap();
    f
}

struct Client {
    http: reqwest::Client,
    addr: String,
}

impl Client {
    fn new(addr: &str) -> Self {
        Self {
            http: http(),
            addr: addr.to_string(),
        }
    }

    async fn chat(&self, user: &str, text: &str) {
        let resp = self
            .http
            .post(format!("http://{}/v1/chat/completions", self.addr))
            .header("x-memory-user-id", user)
            .json(&json!({"model": "gpt", "messages": [{"role": "user", "content": text}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "chat `{text}` answered");
        let v: Value = resp.json().await.unwrap();
        assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    }

    /// Adds a memory; the response's status and body.
    async fn add(&self, user: &str, content: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("http://{}/v1/memories", self.addr))
            .json(&json!({"user_id": user, "content": content}))
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// Adds `n` memories of `user`, each acknowledged; their ids.
    async fn add_acked(&self, user: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let (status, v) = self
                .add(user, &format!("acknowledged fact {i} of {user}"))
                .await;
            assert_eq!(status, 201, "{v}");
            ids.push(v["id"].as_str().expect("id").to_string());
        }
        ids
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Polls `path` until its status is `want`, at most `limit`.
    async fn until_status(&self, path: &str, want: u16, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (status, body) = self.get(path).await;
            if status == want {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} still {status} after {limit:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn memory_count(&self, user: &str) -> usize {
        let (status, body) = self
            .get(&format!("/v1/memories?user_id={user}&limit=100"))
            .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"].as_array().unwrap().len()
    }

    async fn assert_present(&self, user: &str, ids: &[String]) {
        for id in ids {
            let (status, body) = self.get(&format!("/v1/memories/{id}?user_id={user}")).await;
            assert_eq!(status, 200, "acknowledged memory {id} lost: {body}");
        }
    }
}

fn chat_rows(data: &Path) -> i64 {
    let db = rusqlite::Connection::open_with_flags(
        data.join("analytics.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row(
        "SELECT count(*) FROM requests WHERE endpoint LIKE '%chat%'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

fn integrity(db: &Path) -> String {
    let db = rusqlite::Connection::open(db).unwrap();
    db.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// Polls `f` until it is true, at most `limit`.
async fn until(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_chats_answered_and_everything_queued_is_written_once_space_returns() {
    let mock = MockUpstream::start().await;
    let cfg = config(&mock);
    let mnt = Mount::tmpfs("24m");
    let data = mnt.path().join("data");
    let (child, addr) = spawn(cfg.path(), &data);
    let mut child = Killed(child);
    let c = Client::new(&addr);

    let acked = c.add_acked("alice", 20).await;
    for i in 0..5 {
        c.chat("alice", &format!("before the disk fills, question {i}"))
            .await;
    }
    until(
        Duration::from_secs(30),
        "rows of the first chats",
        async || chat_rows(&data) == 5,
    )
    .await;

    let filler = fill(mnt.path());
    for topic in TOPICS {
        c.chat("bob", &format!("with the disk full, tell me about {topic}"))
            .await;
    }
    let (status, body) = c.add("alice", "a fact with nowhere to go").await;
    assert!(
        status >= 500,
        "a memory that cannot be stored is refused: {status} {body}"
    );
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("full"), "the error says why: {body}");

    let ready = c
        .until_status("/health/readiness", 503, Duration::from_secs(30))
        .await;
    assert!(ready.contains("not_ready"), "{ready}");
    let (_, metrics) = c.get("/metrics").await;
    let failing = metrics.lines().any(|l| {
        (l.starts_with("memproxy_memory_write_failures_total") && !l.ends_with(" 0"))
            || l.starts_with("memproxy_analytics_store_up 0")
    });
    assert!(failing, "/metrics shows the failing store:\n{metrics}");

    // Space returns: what waited is written, with no manual step.
    std::fs::remove_file(filler).unwrap();
    c.until_status("/health/readiness", 200, Duration::from_secs(60))
        .await;
    until(
        Duration::from_secs(60),
        "bob's captured memories",
        async || c.memory_count("bob").await == 10,
    )
    .await;
    until(
        Duration::from_secs(60),
        "every chat's usage row",
        async || chat_rows(&data) == 15,
    )
    .await;
    c.assert_present("alice", &acked).await;
    let (status, body) = c.add("alice", "a fact after the disk was freed").await;
    assert_eq!(status, 201, "{body}");

    signal(&child.0, "-TERM");
    assert!(exits_within(&mut child.0, Duration::from_secs(30))
        .await
        .success());
    assert_eq!(integrity(&data.join("memproxy.db")), "ok");
    assert_eq!(integrity(&data.join("analytics.db")), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_turning_read_only_keeps_chats_answered_and_loses_nothing_acknowledged() {
    let mock = MockUpstream::start().await;
    let cfg = config(&mock);
    let mnt = Mount::ext4(64);
    let data = mnt.path().join("data");
    let (child, addr) = spawn(cfg.path(), &data);
    let mut child = Killed(child);
    let c = Client::new(&addr);

    let acked = c.add_acked("carol", 20).await;
    for i in 0..5 {
        c.chat("carol", &format!("before the disk fails, question {i}"))
            .await;
    }
    until(
        Duration::from_secs(30),
        "rows of the first chats",
        async || chat_rows(&data) == 5,
    )
    .await;

    mnt.fail_read_only();
    for topic in TOPICS {
        c.chat(
            "dave",
            &format!("on a read-only disk, tell me about {topic}"),
        )
        .await;
    }
    let (status, body) = c.add("carol", "a fact with nowhere to go").await;
    assert!(
        status >= 500,
        "a memory that cannot be stored is refused: {status} {body}"
    );
    let msg = body["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("disk"), "the error says why: {body}");
    c.until_status("/health/readiness", 503, Duration::from_secs(30))
        .await;

    // The process still stops in bounded time although nothing can be written.
    signal(&child.0, "-TERM");
    exits_within(&mut child.0, Duration::from_secs(60)).await;

    // The operator repairs the disk; memproxy needs nothing more than a start.
    mnt.repair();
    let (child, addr) = spawn(cfg.path(), &data);
    let mut child = Killed(child);
    let c = Client::new(&addr);
    c.until_status("/health/readiness", 200, Duration::from_secs(30))
        .await;
    c.assert_present("carol", &acked).await;
    // Usage rows are not acknowledged to anyone and are written without an fsync per
    // commit (synchronous=NORMAL): what the failing disk never got is gone, and the file
    // is still whole (checked below). Acknowledged memories are fsynced (FULL).
    chat_rows(&data);
    let (status, body) = c.add("carol", "a fact after the repair").await;
    assert_eq!(status, 201, "{body}");
    signal(&child.0, "-TERM");
    assert!(exits_within(&mut child.0, Duration::from_secs(30))
        .await
        .success());
    assert_eq!(integrity(&data.join("memproxy.db")), "ok");
    assert_eq!(integrity(&data.join("analytics.db")), "ok");
}
