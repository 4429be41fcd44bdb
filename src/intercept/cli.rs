//! The `memproxy intercept` command: claim the project's port, print the URLs to paste,
//! forward until Ctrl-C / SIGTERM; and `intercept list` / `intercept release NAME`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use axum::http::{HeaderName, Uri};

use super::registry::{self, Registry};
use super::{project_from_dir, setup_text, Target};
use crate::memory::scope::validate_project;

/// What `memproxy intercept` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The project name (else derived from `dir`).
    pub project: Option<String>,
    /// The directory to derive the project from (default: the current one).
    pub dir: Option<PathBuf>,
    /// The central memproxy.
    pub upstream: String,
    pub user: Option<String>,
    pub user_header: String,
    pub key: Option<String>,
    pub host: IpAddr,
    /// A port to use instead of the registry's choice (recorded for the project).
    pub port: Option<u16>,
    /// The registry file (default: [`registry::default_path`]).
    pub registry: Option<PathBuf>,
    /// The ports new projects get (default: [`registry::PORT_RANGE`]).
    pub ports: Option<std::ops::RangeInclusive<u16>>,
}

fn open_registry(path: Option<PathBuf>) -> Result<Registry, ExitCode> {
    match path.map_or_else(registry::default_path, Ok) {
        Ok(p) => Ok(Registry::new(p)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// `memproxy intercept`: runs until a shutdown signal.
#[expect(clippy::print_stdout, clippy::print_stderr, reason = "CLI output")]
pub fn run(
    opts: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> ExitCode {
    let project = match &opts.project {
        Some(p) => match validate_project(p) {
            Ok(()) => p.clone(),
            Err(e) => {
                eprintln!("error: --project: {e}");
                return ExitCode::from(2);
            }
        },
        None => {
            let dir = opts.dir.clone().unwrap_or_else(|| PathBuf::from("."));
            match project_from_dir(&dir) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let upstream: Uri = match opts.upstream.parse() {
        Ok(u) => u,
        Err(_) => {
            eprintln!("error: --upstream {:?} is not a URL", opts.upstream);
            return ExitCode::from(2);
        }
    };
    let user_header = match HeaderName::try_from(opts.user_header.as_str()) {
        Ok(h) => h,
        Err(_) => {
            eprintln!(
                "error: --user-header {:?} is not a header name",
                opts.user_header
            );
            return ExitCode::from(2);
        }
    };
    let target = Target {
        upstream,
        project: project.clone(),
        user: opts.user.clone(),
        user_header,
        key: opts.key.clone(),
    };
    if let Err(e) = target.check() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let reg = match open_registry(opts.registry.clone()) {
        Ok(r) => r.with_ports(opts.ports.clone().unwrap_or(registry::PORT_RANGE)),
        Err(code) => return code,
    };
    let claimed = match reg.claim(&project, opts.host, opts.port, &opts.upstream) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let base = format!("http://{}", SocketAddr::new(opts.host, claimed.port));
    println!(
        "memproxy intercept: project {project} listening on {base} -> {}",
        opts.upstream
    );
    print!("{}", setup_text(&base, &project));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async move {
        claimed.listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(claimed.listener)?;
        super::serve(listener, target, shutdown).await
    });
    let _ = reg.stopped(&project);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `memproxy intercept list`.
#[expect(clippy::print_stdout, clippy::print_stderr, reason = "CLI output")]
pub fn list(registry: Option<PathBuf>) -> ExitCode {
    let reg = match open_registry(registry) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match reg.list() {
        Ok(entries) => {
            println!("{:<32} {:>6}  {:<22} upstream", "project", "port", "status");
            for (name, e) in &entries {
                let status = match (e.running(), e.pid) {
                    (true, Some(pid)) => format!("running (pid {pid})"),
                    _ => "stopped".to_string(),
                };
                println!(
                    "{name:<32} {:>6}  {status:<22} {}",
                    e.port,
                    e.upstream.as_deref().unwrap_or("")
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `memproxy intercept release NAME`.
#[expect(clippy::print_stdout, clippy::print_stderr, reason = "CLI output")]
pub fn release(registry: Option<PathBuf>, project: &str) -> ExitCode {
    let reg = match open_registry(registry) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match reg.release(project) {
        Ok(Some(e)) => {
            if e.running() {
                println!(
                    "released port {} of project {project} (its interceptor, pid {}, still runs until stopped)",
                    e.port,
                    e.pid.unwrap_or_default()
                );
            } else {
                println!("released port {} of project {project}", e.port);
            }
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("error: no port is registered for project {project}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
