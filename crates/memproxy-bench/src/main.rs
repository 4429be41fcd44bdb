//! `memproxy-bench`: memproxy's benchmarks and evaluations, kept out of the proxy binary.
//! `eval-locomo` measures retrieval recall on a LoCoMo-format file through the memory API
//! (of a running memproxy, or of one started in-process); `bench-memory` measures the
//! embedded memory store on synthetic memories; `bench-vectors` measures the vector
//! index's two-pass search against its exact scan.

mod calibrate;
mod eval;
mod membench;
mod vectors;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use memproxy::config::{self, Overrides};

#[derive(Parser)]
#[command(
    name = "memproxy-bench",
    version,
    about = "memproxy's benchmarks and evaluations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// Measure the vector index's two-pass search against its exact full scan with the
    /// built-in embedding model: recall of the exact best, and latency of both.
    BenchVectors {
        /// The built-in model's directory (as written by scripts/fetch-model.sh).
        #[arg(long, value_name = "DIR")]
        builtin_model: std::path::PathBuf,
        /// A LoCoMo-format file: its turns are the first memories, its questions the
        /// queries (synthetic ones make up the rest).
        #[arg(long)]
        file: Option<String>,
        /// Numbers of vectors, comma separated (10k, 100k, 1m, or plain numbers).
        #[arg(long, value_delimiter = ',', default_value = "20k,100k", value_parser = membench::parse_size)]
        sizes: Vec<u64>,
        /// Queries per size.
        #[arg(long, default_value_t = 500)]
        queries: usize,
        /// Best vectors asked for per query (a hybrid search's dense pool).
        #[arg(long, default_value_t = 50)]
        pool: usize,
        /// Seed of the synthetic memories and queries.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Where the built-in model's cosine separates a question's evidence from unrelated
    /// text (LoCoMo questions against their evidence and against other conversations):
    /// the data behind the floor of memories found by meaning alone.
    CalibrateDense {
        /// The built-in model's directory (as written by scripts/fetch-model.sh).
        #[arg(long, value_name = "DIR")]
        builtin_model: std::path::PathBuf,
        /// The LoCoMo-format file.
        #[arg(long)]
        file: String,
    },
}

#[derive(Args)]
struct BenchMemoryArgs {
    /// Numbers of memories, comma separated (10k, 100k, 1m, or plain numbers).
    #[arg(long, value_delimiter = ',', default_value = "10k,100k,1m", value_parser = membench::parse_size)]
    sizes: Vec<u64>,
    /// Layouts, comma separated: `one` (all memories of one user), `spread` (over --users users).
    #[arg(long, value_delimiter = ',', default_value = "one,spread", value_parser = membench::parse_layout)]
    layouts: Vec<membench::Layout>,
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
    /// Hybrid search with the built-in embedding model in this directory (as written by
    /// scripts/fetch-model.sh): memories are embedded as they are written
    #[arg(long, value_name = "DIR")]
    builtin_model: Option<std::path::PathBuf>,
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::EvalLocomo {
            file,
            url,
            key,
            config,
        } => eval_locomo(&file, url, key, config.as_deref()),
        Command::BenchMemory(args) => bench_memory(args),
        Command::CalibrateDense {
            builtin_model,
            file,
        } => match calibrate::run(&builtin_model, &file) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::BenchVectors {
            builtin_model,
            file,
            sizes,
            queries,
            pool,
            seed,
        } => {
            let opts = vectors::Options {
                model: &builtin_model,
                file: file.as_deref(),
                sizes: &sizes,
                queries: queries.max(1),
                pool: pool.max(1),
                seed,
            };
            println!(
                "vector index: two passes (head of {} dimensions, {} candidates) against \
                 the exact scan, pool {}, 1 search at a time",
                memproxy::memory::vectors::HEAD,
                memproxy::memory::vectors::candidates(opts.pool),
                opts.pool
            );
            println!("{}", vectors::header());
            match vectors::run(&opts, &mut |line| eprintln!("{line}")) {
                Ok(reports) => {
                    reports.iter().for_each(|r| println!("{r}"));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

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
                let target = eval::Target { url, key };
                eval::run(file, target, &prefix).await
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

fn bench_memory(args: BenchMemoryArgs) -> ExitCode {
    use membench;
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
        builtin_model: args.builtin_model,
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
) -> Result<eval::Report, eval::EvalError> {
    let fail = |e: String| eval::EvalError::Http(e);
    let dir = std::env::temp_dir().join(format!("memproxy-{}", prefix.trim_end_matches('-')));
    let overrides = Overrides {
        host: Some("127.0.0.1".into()),
        data_dir: Some(dir.to_string_lossy().into_owned()),
        ..Default::default()
    };
    // A config file may name environment variables (os.environ/…); without one, the
    // built-in defaults, untouched by the environment but for where the built-in
    // embedding model's weights are.
    let model_env = |k: &str| {
        matches!(k, "MEMPROXY_MODEL_DIR" | "XDG_CACHE_HOME" | "HOME")
            .then(|| env_lookup(k))
            .flatten()
    };
    let cfg = match config_file {
        Some(path) => config::load(Some(path), &overrides, &env_lookup),
        None => config::load(None, &overrides, &model_env),
    }
    .map_err(|e| fail(e.to_string()))?;
    let key = cfg.master_key.as_ref().map(|k| k.expose().clone());
    match cfg.memory.embedder {
        config::EmbedderKind::Builtin => eprintln!(
            "hybrid retrieval: built-in embedding model in {}",
            cfg.memory.embedder_path.display()
        ),
        config::EmbedderKind::External => eprintln!(
            "hybrid retrieval: memory.embedding_model = {}",
            cfg.memory.embedding_model.as_deref().unwrap_or_default()
        ),
        config::EmbedderKind::None => eprintln!("lexical retrieval: memory.embedder = none"),
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
    let target = eval::Target {
        url: format!("http://{addr}"),
        key,
    };
    // Every memory's vector is stored before the first question.
    let settle = async {
        if let Some(m) = &memory {
            m.flush().await;
        }
    };
    let report = eval::run_settled(file, target, prefix, settle).await;
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
    report
}
