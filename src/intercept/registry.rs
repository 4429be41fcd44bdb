//! The port registry of `memproxy intercept`: one JSON file in the user's config
//! directory mapping each project to its port, so that the same project always gets the
//! same port (an IDE's base-URL setting stays valid across restarts).
//!
//! Every change happens under an exclusive lock of the file, and a claimed port is bound
//! before the lock is released: two interceptors starting at once never get the same
//! port. An entry whose owner process is gone is stale: its project takes it over at its
//! next start; another project takes its port only when every port of the range is
//! taken otherwise.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The environment variable that names the registry file (tests, several set-ups).
pub const REGISTRY_ENV: &str = "MEMPROXY_INTERCEPT_REGISTRY";

/// The ports handed out to projects, first to last (unless set otherwise,
/// [`Registry::with_ports`]).
pub const PORT_RANGE: RangeInclusive<u16> = 18100..=18999;

/// Parses a port range `FIRST-LAST`.
pub fn parse_ports(text: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not FIRST-LAST"))?;
    let (a, b): (u16, u16) = (
        a.trim()
            .parse()
            .map_err(|_| format!("{a:?} is not a port"))?,
        b.trim()
            .parse()
            .map_err(|_| format!("{b:?} is not a port"))?,
    );
    if a == 0 || a > b {
        return Err(format!(
            "{text:?}: FIRST must be at least 1 and at most LAST"
        ));
    }
    Ok(a..=b)
}

/// Why the registry could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("port registry {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("port registry {path} is not valid JSON ({reason}); fix or delete it")]
    Corrupt { path: String, reason: String },
    #[error("project `{project}` is already intercepted on port {port} by process {pid}")]
    Running {
        project: String,
        port: u16,
        pid: u32,
    },
    #[error("port {0} is in use by another program")]
    PortBusy(u16),
    #[error("no free port left in {0}-{1}")]
    Exhausted(u16, u16),
    #[error("no home or config directory: set XDG_CONFIG_HOME or {REGISTRY_ENV}")]
    NoConfigDir,
}

/// One project's port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub port: u16,
    /// The interceptor serving it now; none when stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The central memproxy it forwards to (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

impl Entry {
    /// True when the process that claimed it still runs.
    pub fn running(&self) -> bool {
        self.pid.is_some_and(pid_alive)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    #[serde(default)]
    projects: BTreeMap<String, Entry>,
}

/// The registry file.
#[derive(Debug, Clone)]
pub struct Registry {
    path: PathBuf,
    ports: RangeInclusive<u16>,
}

/// The default registry file: `$MEMPROXY_INTERCEPT_REGISTRY`, else
/// `$XDG_CONFIG_HOME/memproxy/intercept-ports.json`, else
/// `~/.config/memproxy/intercept-ports.json`.
pub fn default_path() -> Result<PathBuf, RegistryError> {
    let var = |n: &str| std::env::var_os(n).filter(|v| !v.is_empty());
    if let Some(p) = var(REGISTRY_ENV) {
        return Ok(PathBuf::from(p));
    }
    let base = match var("XDG_CONFIG_HOME") {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(var("HOME").ok_or(RegistryError::NoConfigDir)?).join(".config"),
    };
    Ok(base.join("memproxy").join("intercept-ports.json"))
}

/// A port claimed for a project: bound, and recorded with this process as its owner.
#[derive(Debug)]
pub struct Claimed {
    pub port: u16,
    pub listener: TcpListener,
}

impl Registry {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            ports: PORT_RANGE,
        }
    }

    /// New projects get ports of `ports` instead of [`PORT_RANGE`].
    pub fn with_ports(mut self, ports: RangeInclusive<u16>) -> Self {
        self.ports = ports;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> RegistryError {
        RegistryError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Runs `f` on the contents under the file's exclusive lock and writes them back.
    fn locked<T>(
        &self,
        f: impl FnOnce(&mut Contents) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        file.lock().map_err(|e| self.io(e))?;
        let result = self.change(&mut file, f);
        let _ = file.unlock();
        result
    }

    fn change<T>(
        &self,
        file: &mut File,
        f: impl FnOnce(&mut Contents) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|e| self.io(e))?;
        let mut contents: Contents = if text.trim().is_empty() {
            Contents::default()
        } else {
            serde_json::from_str(&text).map_err(|e| RegistryError::Corrupt {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            })?
        };
        let out = f(&mut contents)?;
        let mut json = serde_json::to_vec_pretty(&contents).unwrap_or_default();
        json.push(b'\n');
        // Written in place (not renamed over): a process waiting for the lock holds this
        // very file open.
        file.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
        file.set_len(0).map_err(|e| self.io(e))?;
        file.write_all(&json).map_err(|e| self.io(e))?;
        file.sync_data().map_err(|e| self.io(e))?;
        Ok(out)
    }

    /// Every project and its port.
    pub fn list(&self) -> Result<BTreeMap<String, Entry>, RegistryError> {
        self.locked(|c| Ok(c.projects.clone()))
    }

    /// Claims `project`'s port for this process and binds it on `host`: its recorded
    /// port when it is free, else (or for a new project) `wanted`, else the first port of
    /// the range that no other project holds, else the port of a stale entry of
    /// another project (which is then dropped).
    pub fn claim(
        &self,
        project: &str,
        host: IpAddr,
        wanted: Option<u16>,
        upstream: &str,
    ) -> Result<Claimed, RegistryError> {
        let me = std::process::id();
        self.locked(|c| {
            let bind = |port: u16| TcpListener::bind(SocketAddr::new(host, port)).ok();
            let mut claimed = None;
            if let Some(e) = c.projects.get(project) {
                if let Some(pid) = e.pid.filter(|&p| p != me && pid_alive(p)) {
                    return Err(RegistryError::Running {
                        project: project.to_string(),
                        port: e.port,
                        pid,
                    });
                }
                if wanted.is_none_or(|w| w == e.port) {
                    claimed = bind(e.port).map(|l| (e.port, l));
                }
            }
            if claimed.is_none() {
                if let Some(w) = wanted {
                    let held = c.projects.iter().any(|(n, e)| n != project && e.port == w);
                    claimed = (!held).then(|| bind(w)).flatten().map(|l| (w, l));
                    if claimed.is_none() {
                        return Err(RegistryError::PortBusy(w));
                    }
                }
            }
            if claimed.is_none() {
                claimed = self
                    .ports
                    .clone()
                    .filter(|p| !c.projects.values().any(|e| e.port == *p))
                    .find_map(|p| bind(p).map(|l| (p, l)));
            }
            if claimed.is_none() {
                let stale: Vec<(String, u16)> = c
                    .projects
                    .iter()
                    .filter(|(n, e)| n.as_str() != project && !e.running())
                    .map(|(n, e)| (n.clone(), e.port))
                    .collect();
                for (name, port) in stale {
                    if let Some(l) = bind(port) {
                        c.projects.remove(&name);
                        claimed = Some((port, l));
                        break;
                    }
                }
            }
            let (port, listener) = claimed
                .ok_or_else(|| RegistryError::Exhausted(*self.ports.start(), *self.ports.end()))?;
            c.projects.insert(
                project.to_string(),
                Entry {
                    port,
                    pid: Some(me),
                    upstream: Some(upstream.to_string()),
                },
            );
            Ok(Claimed { port, listener })
        })
    }

    /// Marks `project` stopped (its port stays reserved for it), if this process owns it.
    pub fn stopped(&self, project: &str) -> Result<(), RegistryError> {
        let me = std::process::id();
        self.locked(|c| {
            if let Some(e) = c.projects.get_mut(project).filter(|e| e.pid == Some(me)) {
                e.pid = None;
            }
            Ok(())
        })
    }

    /// Forgets `project` and its port; returns the entry it had.
    pub fn release(&self, project: &str) -> Result<Option<Entry>, RegistryError> {
        self.locked(|c| Ok(c.projects.remove(project)))
    }
}

/// Whether process `pid` exists.
#[cfg(unix)]
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether process `pid` exists (unknown here: assumed gone).
#[cfg(not(unix))]
pub fn pid_alive(_pid: u32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn same_project_same_port_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::new(dir.path().join("sub/ports.json")).with_ports(18500..=18599);
        let a = r.claim("a", LOCAL, None, "http://x").unwrap();
        let b = r.claim("b", LOCAL, None, "http://x").unwrap();
        assert_ne!(a.port, b.port);
        let port = a.port;
        drop(a);
        r.stopped("a").unwrap();
        assert!(!r.list().unwrap()["a"].running());
        assert_eq!(r.claim("a", LOCAL, None, "http://x").unwrap().port, port);
        assert_eq!(r.release("a").unwrap().map(|e| e.port), Some(port));
        assert!(!r.list().unwrap().contains_key("a"));
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_ports("100-200").unwrap(), 100..=200);
        for bad in ["0-5", "9-8", "x-1", "12"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_live_owner_keeps_its_project() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ports.json");
        // PID 1 always exists.
        std::fs::write(&path, r#"{"projects": {"web": {"port": 18999, "pid": 1}}}"#).unwrap();
        let r = Registry::new(&path);
        assert!(matches!(
            r.claim("web", LOCAL, None, "u"),
            Err(RegistryError::Running { port: 18999, .. })
        ));
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(r.list(), Err(RegistryError::Corrupt { .. })));
    }
}
