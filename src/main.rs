//! The `memproxy` binary: parses the command line, loads the config, serves.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use memproxy::config::{self, Overrides};

/// mimalloc rather than glibc's malloc: the request path allocates many short-lived
/// buffers, among them hyper's 8 KiB read buffers, for which glibc first consolidates its
/// fast bins (malloc and free were ~13 % of the proxy's CPU). `no_thp`: without it, the
/// allocator's arena was backed by transparent huge pages and peak RSS grew by ~12 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "memproxy",
    version,
    about = "A memory gateway for AI clients and LLM providers"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Start the proxy (the default command).
    Serve(ServeArgs),
    /// Storage tools: `storage migrate` copies an embedded install into PostgreSQL.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// A local proxy for one project in front of a central memproxy: tags every request
    /// with the project (x-memory-project), on a port that stays the same for the project
    /// (`intercept list`, `intercept release NAME` manage the ports).
    Intercept(InterceptArgs),
    /// Serve the MCP memory tools over stdio (memory_search, memory_add, memory_get,
    /// memory_delete, memory_list) for one user, on the same store as `serve`.
    Mcp {
        /// The user whose memory the tools use (not needed with a key bound to a user).
        #[arg(long, env = "MEMPROXY_MCP_USER")]
        user: Option<String>,
        /// The project whose memory the tools use (a key bound to a project fixes it).
        #[arg(long, env = "MEMPROXY_MCP_PROJECT")]
        project: Option<String>,
        /// A virtual key (or the master key); a key bound to a user fixes the user.
        #[arg(long, env = "MEMPROXY_MCP_KEY", hide_env_values = true)]
        key: Option<String>,
        #[command(flatten)]
        args: ServeArgs,
    },
    /// Validate a config file and print it resolved, secrets masked.
    CheckConfig {
        /// The config file to check.
        file: String,
        #[command(flatten)]
        args: ServeArgs,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct InterceptArgs {
    #[command(subcommand)]
    command: Option<InterceptCommand>,
    /// The project name (letters, digits, . _ -; at most 64).
    #[arg(long, conflicts_with = "dir")]
    project: Option<String>,
    /// Derive the project from this directory: its git remote `origin`'s repository name,
    /// else its top-level folder's name (default: the current directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// The central memproxy.
    #[arg(
        long,
        env = "MEMPROXY_UPSTREAM",
        default_value = "http://127.0.0.1:8764"
    )]
    upstream: String,
    /// Send this user id with every request.
    #[arg(long, env = "MEMPROXY_USER")]
    user: Option<String>,
    /// The header the central memproxy reads user ids from (user_id_mappings.custom_header).
    #[arg(long, default_value = "x-memory-user-id")]
    user_header: String,
    /// The memproxy key to send (`Authorization: Bearer`), replacing the client's.
    #[arg(long, env = "MEMPROXY_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Use this port (and remember it for the project) instead of the registry's choice.
    #[arg(long)]
    port: Option<u16>,
    /// The port registry file (default: ~/.config/memproxy/intercept-ports.json).
    #[arg(long, env = "MEMPROXY_INTERCEPT_REGISTRY")]
    registry: Option<std::path::PathBuf>,
    /// The ports new projects get, FIRST-LAST (default 18100-18999).
    #[arg(long, env = "MEMPROXY_INTERCEPT_PORTS", value_parser = memproxy::intercept::registry::parse_ports)]
    ports: Option<std::ops::RangeInclusive<u16>>,
}

#[derive(Subcommand)]
enum InterceptCommand {
    /// List the projects with a registered port.
    List {
        #[arg(long, env = "MEMPROXY_INTERCEPT_REGISTRY")]
        registry: Option<std::path::PathBuf>,
    },
    /// Forget a project's port.
    Release {
        /// The project.
        name: String,
        #[arg(long, env = "MEMPROXY_INTERCEPT_REGISTRY")]
        registry: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum StorageCommand {
    /// Copy an embedded install (memories with their vectors, keys, usage rows, stored
    /// responses) into PostgreSQL. Resumable: run it again after an interruption. Ends
    /// with a count check of every kind.
    Migrate {
        /// The embedded install: `sqlite:DIR`, DIR being the data dir that holds
        /// memproxy.db, analytics.db and responses.db.
        #[arg(long)]
        from: String,
        /// The PostgreSQL database (`postgres://…`; default: DATABASE_URL).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        to: String,
    },
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// LiteLLM-style config.yaml; without it, built-in offline defaults are used.
    #[arg(long, env = "LITELLM_CONFIG_PATH")]
    config: Option<String>,
    /// Address to listen on.
    #[arg(long, env = "PROXY_HOST")]
    host: Option<String>,
    /// Port to listen on (default 8764).
    #[arg(long, env = "PROXY_PORT")]
    port: Option<u16>,
    /// Upstream mode: forward every model request to this OpenAI-compatible gateway.
    #[arg(long, env = "LITELLM_BASE_URL")]
    upstream: Option<String>,
    /// Master key (overrides general_settings.master_key).
    #[arg(long, env = "LITELLM_MASTER_KEY", hide_env_values = true)]
    master_key: Option<String>,
    /// Memory data directory (holds memproxy.db; default ./data).
    #[arg(long, env = "MEMPROXY_DATA_DIR")]
    data_dir: Option<String>,
    /// Async worker threads (default: one per CPU but one, at least one).
    #[arg(long, env = "MEMPROXY_WORKER_THREADS")]
    workers: Option<usize>,
    /// Log level or filter (trace, debug, info, warn, error).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "MEMPROXY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "MEMPROXY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            host: self.host.clone(),
            port: self.port,
            upstream: self.upstream.clone(),
            master_key: self.master_key.clone(),
            data_dir: self.data_dir.clone(),
            worker_threads: self.workers,
        }
    }
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file, args }) => check_config(&file, &args),
        Some(Command::Serve(args)) => run(args),
        Some(Command::Mcp {
            user,
            project,
            key,
            args,
        }) => run_mcp(&args, user.as_deref(), project.as_deref(), key.as_deref()),
        Some(Command::Intercept(args)) => intercept(args),
        Some(Command::Storage {
            command: StorageCommand::Migrate { from, to },
        }) => storage_migrate(&from, &to),
        None => run(cli.serve),
    }
}

fn intercept(args: InterceptArgs) -> ExitCode {
    use memproxy::intercept::cli;
    match args.command {
        Some(InterceptCommand::List { registry }) => cli::list(registry),
        Some(InterceptCommand::Release { name, registry }) => cli::release(registry, &name),
        None => cli::run(
            cli::Options {
                project: args.project,
                dir: args.dir,
                upstream: args.upstream,
                user: args.user,
                user_header: args.user_header,
                key: args.key,
                host: args.host,
                port: args.port,
                registry: args.registry,
                ports: args.ports,
            },
            shutdown_signal(),
        ),
    }
}

#[expect(clippy::print_stdout, clippy::print_stderr, reason = "CLI output")]
fn storage_migrate(from: &str, to: &str) -> ExitCode {
    use memproxy::storage::{copy, postgres::PgUrl};
    use std::io::Write;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = match copy::parse_source(from) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: --from: {e}");
            return ExitCode::from(2);
        }
    };
    let url = match PgUrl::parse(to) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: --to: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("copying {} into {}", dir.display(), url.redacted());
    let mut last_kind = String::new();
    let mut progress = |kind: &str, done: u64, total: u64| {
        if kind != last_kind {
            if !last_kind.is_empty() {
                eprintln!();
            }
            last_kind = kind.to_string();
        }
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        let bar: String = (0..30)
            .map(|i| if i * 100 < pct * 30 { '#' } else { '.' })
            .collect();
        eprint!("\r{kind:>9} [{bar}] {done}/{total} ({pct}%)");
        let _ = std::io::stderr().flush();
        true
    };
    let result = runtime.block_on(copy::run(&dir, &url, &mut progress));
    eprintln!();
    match result {
        Ok(counts) => {
            let mut ok = true;
            println!(
                "{:<10} {:>10} {:>10} {:>12}",
                "kind", "source", "postgres", "copied now"
            );
            for c in &counts {
                ok &= c.complete();
                println!(
                    "{:<10} {:>10} {:>10} {:>12}{}",
                    c.kind,
                    c.source,
                    c.target,
                    c.copied_now,
                    if c.complete() { "" } else { "  MISSING ROWS" }
                );
            }
            if ok {
                println!("count check passed: every row of the embedded install is in PostgreSQL");
                ExitCode::SUCCESS
            } else {
                eprintln!("error: count check failed; run the command again to resume");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}; run the command again to resume");
            ExitCode::FAILURE
        }
    }
}

#[expect(clippy::print_stdout, clippy::print_stderr, reason = "CLI output")]
fn check_config(file: &str, args: &ServeArgs) -> ExitCode {
    match config::load(Some(file), &args.overrides(), &env_lookup) {
        Ok(cfg) => {
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            if let Err(e) = cfg.check_exposure() {
                eprintln!("warning: {e}");
            }
            let served = print_deployments(&cfg);
            let listed = cfg.models.len() + cfg.skipped.len();
            println!("{}", serde_json::to_string_pretty(&cfg).unwrap_or_default());
            if served == Some(0) && listed > 0 && cfg.server.upstream.is_none() {
                eprintln!(
                    "error: no model can be served: every model_list entry is skipped or unsupported"
                );
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// One line per `model_list` entry on stderr: served, skipped (and why), or unsupported.
/// Returns how many are served (`None` when that cannot be told).
#[expect(clippy::print_stderr, reason = "CLI output")]
fn print_deployments(cfg: &config::Config) -> Option<usize> {
    let env = match memproxy::providers::ProviderEnv::new(cfg) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("warning: cannot build the upstream HTTP client: {e}");
            return None;
        }
    };
    let mut served = 0;
    for d in &cfg.models {
        let what = format!(
            "`{}` ({}/{})",
            d.model_name, d.provider_name, d.upstream_model
        );
        match memproxy::providers::Provider::new(d, &env) {
            Ok(p) if !p.served() => eprintln!(
                "unsupported: {what}: provider `{}` is not supported; requests answer 501",
                d.provider_name
            ),
            Ok(_) => {
                served += 1;
                eprintln!("served: {what}")
            }
            Err(reason) => eprintln!("skipped: {what}: {reason}"),
        }
    }
    for s in &cfg.skipped {
        eprintln!(
            "skipped: model_list[{}] `{}`: {}",
            s.index, s.model_name, s.reason
        );
    }
    Some(served)
}

#[expect(clippy::print_stderr, reason = "start-up errors before logging is up")]
fn run(args: ServeArgs) -> ExitCode {
    let cfg = match config::load(args.config.as_deref(), &args.overrides(), &env_lookup)
        .and_then(|c| c.check_exposure().map(|()| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match memproxy::server::tls::load(cert, key) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let _telemetry = memproxy::telemetry::init(&args.log_level, &cfg.observability);
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    if cfg.master_key.is_none() {
        tracing::warn!(
            "NO MASTER KEY: every local process can use this proxy without a key. Set \
             general_settings.master_key (or LITELLM_MASTER_KEY) before sharing it."
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.server.worker_threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let addr = format!("{}:{}", cfg.server.host, cfg.server.port);
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
        let models: Vec<String> = cfg.models.iter().map(|m| m.model_name.clone()).collect();
        let state = match memproxy::AppState::new(cfg) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(address = %addr, scheme, models = ?models, "memproxy listening");
        // The accept loop runs as a task on the worker threads, not on this thread.
        let server = match tls {
            Some(tls) => tokio::spawn(memproxy::serve_tls(listener, tls, state, shutdown_signal())),
            None => tokio::spawn(memproxy::serve(listener, state, shutdown_signal())),
        };
        let served = server
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        match served {
            Ok(()) => {
                tracing::info!("memproxy stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// `memproxy mcp`: stdout carries the protocol, so logs go to stderr.
#[expect(clippy::print_stderr, reason = "CLI output")]
fn run_mcp(
    args: &ServeArgs,
    user: Option<&str>,
    project: Option<&str>,
    key: Option<&str>,
) -> ExitCode {
    let cfg = match config::load(args.config.as_deref(), &args.overrides(), &env_lookup) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
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
    runtime.block_on(async move {
        let state = match memproxy::AppState::new(cfg) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let caller = match memproxy::server::mcp::stdio_caller(&state, user, project, key) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let served = memproxy::server::mcp::serve_stdio(state.clone(), caller).await;
        if let Some(m) = &state.memory {
            m.shutdown().await;
        }
        state.analytics.shutdown().await;
        match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
