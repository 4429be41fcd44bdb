//! The port registry: which local port each project's interceptor uses, in a JSON file in
//! the user's config directory (`$XDG_CONFIG_HOME/memproxy/intercept-ports.json`, else
//! `~/.config/memproxy/…`). A project keeps its port across restarts (so the base URL
//! pasted into an IDE stays valid) until it is released. Every change happens under an
//! exclusive `flock` of a lock file beside it, held while a port is chosen and bound, so
//! concurrent starts never pick the same port. An entry whose process is gone is stale:
//! the next start of that project reclaims it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The registry file's name.
pub const FILE: &str = "intercept-ports.json";
/// The first port handed out.
pub const FIRST_PORT: u16 = 8780;

/// One project's entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub port: u16,
    /// The running interceptor's process id; absent when none runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The memproxy it forwards to.
    #[serde(default)]
    pub upstream: String,
    /// The directory the project id came from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

impl Entry {
    /// Whether the recorded process still runs.
    pub fn running(&self) -> bool {
        self.pid.is_some_and(pid_alive)
    }
}

/// Why the registry could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("port registry {path}: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("port registry {path} is not valid JSON: {err}")]
    Corrupt {
        path: String,
        err: serde_json::Error,
    },
    #[error("no free port for a new project")]
    NoPort,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> RegistryError + '_ {
    move |err| RegistryError::Io {
        path: path.display().to_string(),
        err,
    }
}

/// The user's config directory for memproxy.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("memproxy"))
}

/// Whether process `pid` exists.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The registry in a directory.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    first_port: u16,
}

/// The registry's content while its lock is held; dropped = unlocked.
pub struct Locked {
    _lock: File,
    path: PathBuf,
    first_port: u16,
    pub entries: BTreeMap<String, Entry>,
}

impl Registry {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_first_port(dir, FIRST_PORT)
    }

    /// A registry whose new ports start at `first_port` (tests keep apart this way).
    pub fn with_first_port(dir: impl Into<PathBuf>, first_port: u16) -> Self {
        Self {
            dir: dir.into(),
            first_port,
        }
    }

    /// The registry file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Takes the exclusive lock (waiting for another process's) and reads the entries.
    pub fn lock(&self) -> Result<Locked, RegistryError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let lock_path = self.dir.join(format!("{FILE}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // SAFETY: flock on a file descriptor this function owns for the lock's lifetime.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io(&lock_path)(std::io::Error::last_os_error()));
        }
        let path = self.path();
        let entries = match std::fs::read(&path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => BTreeMap::new(),
            Ok(b) => serde_json::from_slice(&b).map_err(|err| RegistryError::Corrupt {
                path: path.display().to_string(),
                err,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(&path)(e)),
        };
        Ok(Locked {
            _lock: lock,
            path,
            first_port: self.first_port,
            entries,
        })
    }

    /// The entries (read under the lock).
    pub fn list(&self) -> Result<BTreeMap<String, Entry>, RegistryError> {
        Ok(self.lock()?.entries)
    }

    /// Forgets a project's port; returns its entry.
    pub fn release(&self, project: &str) -> Result<Option<Entry>, RegistryError> {
        let mut l = self.lock()?;
        let gone = l.entries.remove(project);
        l.save()?;
        Ok(gone)
    }

    /// Marks a project's interceptor as stopped (its port stays the project's).
    pub fn stopped(&self, project: &str, pid: u32) -> Result<(), RegistryError> {
        let mut l = self.lock()?;
        if let Some(e) = l.entries.get_mut(project) {
            if e.pid == Some(pid) {
                e.pid = None;
                l.save()?;
            }
        }
        Ok(())
    }
}

impl Locked {
    /// A port for a new project: the lowest from the first port that no project holds and
    /// that `bind` takes (its listener is returned, so nothing can take the port between
    /// the check and the use).
    pub fn new_port<T>(
        &self,
        mut bind: impl FnMut(u16) -> Option<T>,
    ) -> Result<(u16, T), RegistryError> {
        let taken: Vec<u16> = self.entries.values().map(|e| e.port).collect();
        (self.first_port..=u16::MAX)
            .filter(|p| !taken.contains(p))
            .find_map(|p| bind(p).map(|l| (p, l)))
            .ok_or(RegistryError::NoPort)
    }

    /// Writes the entries (atomically: a temporary file renamed over the old one).
    pub fn save(&self) -> Result<(), RegistryError> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&self.entries).unwrap_or_default();
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&text).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_kept_per_project_and_new_ones_skip_taken_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(tmp.path());
        let mut l = reg.lock().unwrap();
        let (a, ()) = l.new_port(|_| Some(())).unwrap();
        assert_eq!(a, FIRST_PORT);
        l.entries.insert(
            "a".into(),
            Entry {
                port: a,
                pid: None,
                upstream: "u".into(),
                dir: None,
            },
        );
        // A port in use by something else is skipped.
        let (b, ()) = l.new_port(|p| (p != FIRST_PORT + 1).then_some(())).unwrap();
        assert_eq!(b, FIRST_PORT + 2);
        l.save().unwrap();
        drop(l);
        assert_eq!(reg.list().unwrap()["a"].port, a);
        assert!(reg.release("a").unwrap().is_some());
        assert!(reg.list().unwrap().is_empty());
    }

    #[test]
    fn liveness_of_processes() {
        assert!(pid_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }
}
