//! Opening an embedded (SQLite) database: every embedded store (`memproxy.db`,
//! `analytics.db`, `responses.db`) goes through [`open`], which makes the directory,
//! puts the file in WAL mode with the store's durability and cache settings, refuses a
//! file written by a newer memproxy, and applies the store's versioned [`Migration`]s.
//!
//! The schema version is SQLite's `PRAGMA user_version`: step `i` of a store's list takes
//! a file from version `i` to `i + 1`, each in its own immediate (write-locked)
//! transaction that reads the version again first, so two connections opening a new
//! file at once migrate it once.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

/// One schema change.
pub struct Migration {
    /// What the step does (in errors).
    pub description: &'static str,
    pub apply: Step,
}

/// How a step changes the schema.
pub enum Step {
    /// SQL run as one batch.
    Sql(&'static str),
    /// Code, for a step that reads what is there (a copy, a conditional change).
    Code(fn(&Transaction<'_>) -> rusqlite::Result<()>),
}

/// A store's connection settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `PRAGMA synchronous`: `NORMAL` (a crash may lose the last commits, never the
    /// file) or `FULL` (every acknowledged commit survives a power loss).
    pub synchronous: &'static str,
    /// `PRAGMA cache_size` in KiB (SQLite's default is 2 MiB).
    pub cache_kib: Option<u32>,
    /// How long a statement waits for another connection's lock.
    pub busy_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            synchronous: "NORMAL",
            cache_kib: None,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file could not be made or opened, or refused WAL mode: a disk or permission
    /// problem, which may pass.
    #[error("cannot open {path}: {message}")]
    Unavailable { path: String, message: String },
    /// A migration failed, or the file is newer than this build.
    #[error("{path}: {message}")]
    Schema { path: String, message: String },
}

/// Opens (creating) the database at `path` and brings it to the version of `migrations`.
pub fn open(
    path: &Path,
    settings: Settings,
    migrations: &[Migration],
) -> Result<Connection, OpenError> {
    let unavailable = |message: String| OpenError::Unavailable {
        path: path.display().to_string(),
        message,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| unavailable(e.to_string()))?;
    }
    let mut conn = Connection::open(path).map_err(|e| unavailable(e.to_string()))?;
    configure(&conn, settings).map_err(|e| unavailable(e.to_string()))?;
    let mode =
        switch_to_wal(&conn, settings.busy_timeout).map_err(|e| unavailable(e.to_string()))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(unavailable(format!(
            "the file cannot use WAL mode (got {mode})"
        )));
    }
    migrate(&mut conn, migrations).map_err(|message| OpenError::Schema {
        path: path.display().to_string(),
        message,
    })?;
    Ok(conn)
}

/// `PRAGMA journal_mode = WAL`, waiting up to `patience` for other connections: the
/// switch needs the file to itself, and SQLite answers "database is locked" at once,
/// without its busy handler, when another connection opening the same new file holds a
/// lock (it would otherwise risk a deadlock), so the wait is here.
fn switch_to_wal(conn: &Connection, patience: Duration) -> rusqlite::Result<String> {
    let started = std::time::Instant::now();
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && started.elapsed() < patience =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// The per-connection settings (also for a store's extra read-only connections).
pub fn configure(conn: &Connection, settings: Settings) -> rusqlite::Result<()> {
    conn.busy_timeout(settings.busy_timeout)?;
    conn.pragma_update(None, "synchronous", settings.synchronous)?;
    if let Some(kib) = settings.cache_kib {
        conn.pragma_update(None, "cache_size", -i64::from(kib))?;
    }
    Ok(())
}

/// The schema version of an open database.
pub fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Applies the steps the file has not had; refuses a file newer than `migrations`.
fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<(), String> {
    let known = migrations.len() as i64;
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        let current = version(&tx).map_err(|e| e.to_string())?;
        if current > known {
            return Err(format!(
                "schema version {current} is newer than this build's {known} (a newer memproxy \
                 wrote it); upgrade memproxy, or point the data dir elsewhere"
            ));
        }
        let Some(step) = migrations.get(current.max(0) as usize) else {
            return Ok(());
        };
        let next = current + 1;
        match step.apply {
            Step::Sql(sql) => tx.execute_batch(sql),
            Step::Code(f) => f(&tx),
        }
        .map_err(|e| {
            format!(
                "migration to schema version {next} ({}): {e}",
                step.description
            )
        })?;
        tx.pragma_update(None, "user_version", next)
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[Migration] = &[
        Migration {
            description: "a table",
            apply: Step::Sql("CREATE TABLE t (a INTEGER)"),
        },
        Migration {
            description: "a column, if missing",
            apply: Step::Code(|tx| {
                if tx.prepare("SELECT b FROM t LIMIT 0").is_err() {
                    tx.execute_batch("ALTER TABLE t ADD COLUMN b TEXT")?;
                }
                Ok(())
            }),
        },
    ];

    #[test]
    fn migrates_once_and_refuses_newer_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("x.db");
        let conn = open(&path, Settings::default(), STEPS).unwrap();
        assert_eq!(version(&conn).unwrap(), 2);
        conn.execute("INSERT INTO t (a, b) VALUES (1, 'x')", [])
            .unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);
        // Again: nothing applied twice, the row is there.
        let conn = open(&path, Settings::default(), STEPS).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        conn.pragma_update(None, "user_version", 3).unwrap();
        drop(conn);
        let err = open(&path, Settings::default(), STEPS).unwrap_err();
        assert!(matches!(err, OpenError::Schema { .. }), "{err}");
        assert!(
            err.to_string().contains("newer than this build's 2"),
            "{err}"
        );
    }

    #[test]
    fn a_failing_step_names_itself_and_keeps_the_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let bad = [
            Migration {
                description: "a table",
                apply: Step::Sql("CREATE TABLE t (a INTEGER)"),
            },
            Migration {
                description: "broken",
                apply: Step::Sql("ALTER TABLE missing ADD COLUMN c"),
            },
        ];
        let err = open(&path, Settings::default(), &bad).unwrap_err();
        assert!(
            err.to_string().contains("schema version 2 (broken)"),
            "{err}"
        );
        let conn = Connection::open(&path).unwrap();
        assert_eq!(version(&conn).unwrap(), 1);
    }

    #[test]
    fn concurrent_opens_of_a_new_file_migrate_it_once() {
        for _ in 0..20 {
            concurrent_opens_once();
        }
    }

    fn concurrent_opens_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || open(&path, Settings::default(), STEPS).map(|_| ()))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        assert_eq!(version(&conn).unwrap(), 2);
    }
}
