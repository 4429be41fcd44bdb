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
    /// Measure memory retrieval on a LoCoMo-format file through the memory API
    /// (without --url: against an in-process server with a temporary data dir).
    EvalLocomo {
        /// The LoCoMo JSON file (e.g. ../shared/data/locomo-dev.json).
        #[arg(long)]
        file: String,
        /// Base URL of a running memproxy; its memories of the eval users are deleted after.
        #[arg(long)]
        url: Option<String>,
        /// Master key of that memproxy.
        #[arg(long, env = "MEMPROXY_EVAL_KEY", hide_env_values = true)]
        key: Option<String>,
        /// Without --url: run the in-process server with this config (e.g. one whose
        /// memory.embedding_model gives hybrid retrieval); its data dir is replaced by a
        /// temporary one. Vectors are all stored before the questions are asked.
        #[arg(long, conflicts_with = "url")]
        config: Option<String>,
    },
    /// Benchmark the embedded memory store on synthetic memories: write throughput through
    /// the write queue, search latency (p50/p99) per size and layout.
    BenchMemory(BenchMemoryArgs),
    /// Run a local forwarder for one project in front of a central memproxy: every request
    /// gets the project (and your user id), so an IDE pointed at it has one memory per
    /// project. Each project keeps its port (registry in ~/.config/memproxy).
    Intercept(InterceptArgs),
    /// Serve the memory over MCP on stdin/stdout (for Claude Code, Codex, Cursor): tools
    /// memory_search, memory_add, memory_get, memory_delete, memory_list, scoped to one
    /// user and project. Uses the config's memory store (for a shared memproxy, use its
    /// /mcp endpoint instead).
    Mcp(McpArgs),
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
    action: Option<InterceptAction>,
    /// The project id (default: derived from --dir: its git remote's repository name,
    /// else its top-level folder name).
    #[arg(long, conflicts_with = "dir")]
    project: Option<String>,
    /// The directory whose project this is (default: the current directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// The central memproxy's URL.
    #[arg(long, env = "MEMPROXY_URL", default_value = "http://127.0.0.1:8764")]
    upstream: String,
    /// Your user id, sent as x-memory-user-id when the client sends none.
    #[arg(long, env = "MEMPROXY_USER")]
    user: Option<String>,
    /// A memproxy key, sent when the client sends none.
    #[arg(long, env = "MEMPROXY_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port registry's directory (default: $XDG_CONFIG_HOME/memproxy or ~/.config/memproxy).
    #[arg(long, env = "MEMPROXY_INTERCEPT_DIR")]
    registry_dir: Option<std::path::PathBuf>,
    /// Log level.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
}

#[derive(Args)]
struct McpArgs {
    /// The user whose memory this is (default: the config's default_user_id).
    #[arg(long, env = "MEMPROXY_USER")]
    user: Option<String>,
    /// The project (default: none, the user's general memory).
    #[arg(long, conflicts_with = "dir")]
    project: Option<String>,
    /// Derive the project from this directory (git remote, else folder name).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum InterceptAction {
    /// List the projects' ports and whether their interceptor runs.
    List {
        #[arg(long, env = "MEMPROXY_INTERCEPT_DIR")]
        registry_dir: Option<std::path::PathBuf>,
    },
    /// Forget a project's port (it gets a new one at its next start).
    Release {
        project: String,
        #[arg(long, env = "MEMPROXY_INTERCEPT_DIR")]
        registry_dir: Option<std::path::PathBuf>,
    },
}

#[derive(Args)]
struct BenchMemoryArgs {
    /// Numbers of memories, comma separated (10k, 100k, 1m, or plain numbers).
    #[arg(long, value_delimiter = ',', default_value = "10k,100k,1m", value_parser = memproxy::membench::parse_size)]
    sizes: Vec<u64>,
    /// Layouts, comma separated: `one` (all memories of one user), `spread` (over --users users).
    #[arg(long, value_delimiter = ',', default_value = "one,spread", value_parser = memproxy::membench::parse_layout)]
    layouts: Vec<memproxy::membench::Layout>,
    /// Users of the spread layout.
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// The user id of the one-user layout, and of the first user of the spread layout.
    #[arg(long, default_value = "membench-user")]
    user: String,
    /// Measured searches per case; 0 only writes (e.g. to preload a data dir).
    #[arg(long, default_value_t = 2000)]
    searches: usize,
    /// Memories asked for per search (context_retrieval.max_results).
    #[arg(long, default_value_t = 5)]
    limit: usize,
    /// Seed of the synthetic data (same seed, same memories and queries).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Keep each case's data dir under DIR (`SIZE-one-USER`, `SIZE-spread-USERS-USER`) and reuse
    /// it when it holds the same case; without it, temporary dirs are used and removed.
    #[arg(long, value_name = "DIR")]
    keep: Option<std::path::PathBuf>,
    /// Search this text every time instead of synthetic conversations (e.g. the proxy
    /// benchmark's question, to profile the search its requests make).
    #[arg(long, value_name = "TEXT")]
    query: Option<String>,
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
        Some(Command::EvalLocomo {
            file,
            url,
            key,
            config,
        }) => eval_locomo(&file, url, key, config.as_deref()),
        Some(Command::BenchMemory(args)) => bench_memory(args),
        Some(Command::Intercept(args)) => intercept(args),
        Some(Command::Mcp(args)) => mcp(args),
        None => run(cli.serve),
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
            print_deployments(&cfg);
            println!("{}", serde_json::to_string_pretty(&cfg).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// One line per `model_list` entry on stderr: served, skipped (and why), or unsupported.
#[expect(clippy::print_stderr, reason = "CLI output")]
fn print_deployments(cfg: &config::Config) {
    let env = match memproxy::providers::ProviderEnv::new(cfg) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("warning: cannot build the upstream HTTP client: {e}");
            return;
        }
    };
    for d in &cfg.models {
        let what = format!(
            "`{}` ({}/{})",
            d.model_name, d.provider_name, d.upstream_model
        );
        match memproxy::providers::Provider::new(d, &env) {
            Ok(memproxy::providers::Provider::Unsupported(name)) => {
                eprintln!(
                    "unsupported: {what}: provider `{name}` is not supported; requests answer 501"
                )
            }
            Ok(_) => eprintln!("served: {what}"),
            Err(reason) => eprintln!("skipped: {what}: {reason}"),
        }
    }
    for s in &cfg.skipped {
        eprintln!(
            "skipped: model_list[{}] `{}`: {}",
            s.index, s.model_name, s.reason
        );
    }
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
        tracing::info!(address = %addr, models = ?models, "memproxy listening");
        // The accept loop runs as a task on the worker threads, not on this thread.
        let server = tokio::spawn(memproxy::serve(listener, state, shutdown_signal()));
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

#[expect(clippy::print_stdout, clippy::print_stderr, reason = "CLI output")]
fn eval_locomo(
    file: &str,
    url: Option<String>,
    key: Option<String>,
    config: Option<&str>,
) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Warnings (e.g. a failing embedding model) to stderr; the report goes to stdout.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .try_init();
    let prefix = format!("eval-{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let result = runtime.block_on(async {
        match url {
            Some(url) => {
                let target = memproxy::eval::Target { url, key };
                memproxy::eval::run(file, target, &prefix).await
            }
            None => eval_in_process(file, &prefix, config).await,
        }
    });
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[expect(clippy::print_stdout, clippy::print_stderr, reason = "CLI output")]
fn bench_memory(args: BenchMemoryArgs) -> ExitCode {
    use memproxy::membench;
    let opts = membench::Options {
        sizes: args.sizes,
        layouts: args.layouts,
        users: args.users.max(1),
        user: args.user,
        searches: args.searches,
        limit: args.limit.max(1),
        seed: args.seed,
        data_dir: args.keep,
        query: args.query,
        ..Default::default()
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "memory benchmark: seed {}, vocabulary {} words (Zipf s={}), {} searches per case \
         (limit {}, query strategies in turn), 1 search at a time",
        opts.seed, opts.vocabulary, opts.zipf, opts.searches, opts.limit
    );
    println!("{}", membench::header());
    let result = runtime.block_on(membench::run(
        &opts,
        &mut |line| eprintln!("{line}"),
        &mut |r| println!("{r}"),
    ));
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts memproxy on a random loopback port with a temporary data dir and evaluates it.
async fn eval_in_process(
    file: &str,
    prefix: &str,
    config_file: Option<&str>,
) -> Result<memproxy::eval::Report, memproxy::eval::EvalError> {
    let fail = |e: String| memproxy::eval::EvalError::Http(e);
    let dir = std::env::temp_dir().join(format!("memproxy-{}", prefix.trim_end_matches('-')));
    let overrides = Overrides {
        host: Some("127.0.0.1".into()),
        data_dir: Some(dir.to_string_lossy().into_owned()),
        ..Default::default()
    };
    // A config file may name environment variables (os.environ/…); without one, the
    // built-in defaults, untouched by the environment.
    let cfg = match config_file {
        Some(path) => config::load(Some(path), &overrides, &env_lookup),
        None => config::load(None, &overrides, &|_| None),
    }
    .map_err(|e| fail(e.to_string()))?;
    let key = cfg.master_key.as_ref().map(|k| k.expose().clone());
    if let Some(model) = &cfg.memory.embedding_model {
        eprintln!("hybrid retrieval: memory.embedding_model = {model}");
    }
    let state = memproxy::AppState::new(cfg).map_err(|e| fail(e.to_string()))?;
    let memory = state.memory.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| fail(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| fail(e.to_string()))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(memproxy::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let target = memproxy::eval::Target {
        url: format!("http://{addr}"),
        key,
    };
    // Every memory's vector is stored before the first question.
    let settle = async {
        if let Some(m) = &memory {
            m.flush().await;
        }
    };
    let report = memproxy::eval::run_settled(file, target, prefix, settle).await;
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
    report
}

#[expect(clippy::print_stderr, reason = "CLI output")]
fn mcp(args: McpArgs) -> ExitCode {
    let fail = |e: String| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    };
    let cfg = match config::load(
        args.serve.config.as_deref(),
        &args.serve.overrides(),
        &env_lookup,
    ) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    // stdout carries the protocol: logs go to stderr.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.serve.log_level))
        .try_init();
    let user = args
        .user
        .unwrap_or_else(|| cfg.identity.default_user_id.clone());
    let project = match (args.project, args.dir) {
        (Some(p), _) => Some(p),
        (None, Some(d)) => match memproxy::intercept::project::derive(&d) {
            Some(p) => Some(p),
            None => return fail(format!("cannot derive a project id from {}", d.display())),
        },
        (None, None) => None,
    };
    let scope = match memproxy::memory::Scope::new(&user, project.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(memproxy::mcp::serve_stdio(&cfg, scope)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.to_string()),
    }
}

fn intercept_registry(
    dir: Option<std::path::PathBuf>,
) -> Result<memproxy::intercept::registry::Registry, String> {
    dir.or_else(memproxy::intercept::registry::default_dir)
        .map(memproxy::intercept::registry::Registry::new)
        .ok_or_else(|| {
            "no config directory: set XDG_CONFIG_HOME or HOME, or pass --registry-dir".into()
        })
}

#[expect(clippy::print_stdout, clippy::print_stderr, reason = "CLI output")]
fn intercept(args: InterceptArgs) -> ExitCode {
    use memproxy::intercept;
    let fail = |e: String| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    };
    match args.action {
        Some(InterceptAction::List { registry_dir }) => {
            let entries = match intercept_registry(registry_dir)
                .and_then(|r| r.list().map_err(|e| e.to_string()))
            {
                Ok(e) => e,
                Err(e) => return fail(e),
            };
            println!("{:<32} {:>5}  {:<8} upstream", "project", "port", "state");
            for (project, e) in entries {
                let state = if e.running() { "running" } else { "stopped" };
                println!("{project:<32} {:>5}  {state:<8} {}", e.port, e.upstream);
            }
            return ExitCode::SUCCESS;
        }
        Some(InterceptAction::Release {
            project,
            registry_dir,
        }) => {
            return match intercept_registry(registry_dir)
                .and_then(|r| r.release(&project).map_err(|e| e.to_string()))
            {
                Ok(Some(e)) => {
                    println!("released port {} of project `{project}`", e.port);
                    ExitCode::SUCCESS
                }
                Ok(None) => fail(format!("project `{project}` has no port")),
                Err(e) => fail(e),
            };
        }
        None => {}
    }
    let registry = match intercept_registry(args.registry_dir) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let dir = match args
        .dir
        .clone()
        .map(Ok)
        .unwrap_or_else(std::env::current_dir)
    {
        Ok(d) => d,
        Err(e) => return fail(format!("cannot read the current directory: {e}")),
    };
    let project = match args.project.or_else(|| intercept::project::derive(&dir)) {
        Some(p) => p,
        None => {
            return fail(format!(
                "cannot derive a project id from {}; pass --project",
                dir.display()
            ))
        }
    };
    // Log lines to stderr; stdout has the URLs to paste.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async move {
        let opts = intercept::Options {
            project,
            dir: Some(dir),
            upstream: args.upstream,
            user: args.user,
            key: args.key,
            host: args.host,
            registry,
        };
        let running = match intercept::start(opts).await {
            Ok(r) => r,
            Err(e) => return fail(e.to_string()),
        };
        println!("{}", running.instructions());
        match running.run_until(shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e.to_string()),
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
