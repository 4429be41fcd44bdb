//! The HTTP server: shared state, the app ([`router`]), and [`serve`] with graceful
//! shutdown. Routes are listed in [`routes`]; errors become HTTP only in [`error`].

mod accounting;
mod admin;
mod chat;
mod drain;
mod embedder;
mod embeddings;
pub mod error;
mod keys_api;
pub mod mcp;
mod memories;
mod messages;
mod middleware;
mod pipeline;
mod respond;
mod responses;
mod routes;
mod sessions;
pub mod tls;
mod ui;
mod usage_api;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

pub use routes::router;

use crate::analytics::Analytics;
use crate::auth::Auth;
use crate::config::Config;
use crate::keys::{KeyStore, Keys};
use crate::memory::{MemoryService, StoreError, SystemClock};
use crate::metrics::Metrics;
use crate::providers::ProviderEnv;
use crate::ratelimit::{Clock, RateLimits};
use crate::responses_store::ResponseStore;
use crate::routing::ModelRouter;
use crate::storage::{Storage, StorageError};

/// Everything request handlers share; built once at start-up, read-only afterwards.
pub struct AppState {
    pub config: Config,
    pub router: Arc<ModelRouter>,
    pub auth: Auth,
    /// Long-term memory and sessions; `None` when `memory.enabled` is false.
    pub memory: Option<Arc<MemoryService>>,
    pub started: Instant,
    /// The usage databank.
    pub analytics: Analytics,
    /// Virtual keys, cached for the hot path.
    pub keys: Keys,
    /// Where virtual keys are stored.
    pub key_store: Arc<dyn KeyStore>,
    /// The backend every durable store uses (readiness reports it).
    pub storage: Storage,
    pub limits: RateLimits,
    pub metrics: Metrics,
    /// Open a GenAI span around each model call (traces are exported).
    pub genai_spans: bool,
    /// Stored Responses API answers.
    pub responses: Arc<dyn ResponseStore>,
    /// Ends open streams once the shutdown grace period is over.
    pub drain: drain::Drain,
}

/// Why the server state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Http(#[from] crate::providers::http::HttpInitError),
    #[error("cannot open the memory store: {0}")]
    Memory(#[from] StoreError),
    #[error("cannot open storage: {0}")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Embedder(#[from] crate::memory::embed::ModelError),
    #[error("no model can be served: every model_list entry was skipped or names an unsupported provider (see the warnings above, or run `memproxy check-config`)")]
    NothingToServe,
}

impl AppState {
    /// Builds providers, router, auth, the memory store and the operations stores from a
    /// validated config. Opens files and starts the store threads: call at start-up,
    /// inside the tokio runtime.
    pub fn new(config: Config) -> Result<Arc<Self>, StartError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// Like [`AppState::new`], with the clock the rate limits use (tests control time).
    pub fn with_clock(mut config: Config, clock: Arc<dyn Clock>) -> Result<Arc<Self>, StartError> {
        let env = ProviderEnv::new(&config)?;
        let listed = config.models.len() + config.skipped.len();
        let router = Arc::new(ModelRouter::new(&mut config, &env));
        if listed > 0 && !router.can_serve() {
            return Err(StartError::NothingToServe);
        }
        let (storage, keys) = Storage::open(&config)?;
        let analytics = storage.analytics(&config.analytics);
        let metrics = Metrics::new(router.model_names().iter().map(String::as_str));
        let memory = if config.memory.enabled {
            let embedder = embedder::configured(&config.memory, &router)?;
            let clock = Arc::new(SystemClock);
            let store = storage.memory_store(&config.memory, clock)?;
            let memory = Arc::new(MemoryService::with_store(store, &config.memory, embedder));
            memory.start_reembedding();
            Some(memory)
        } else {
            None
        };
        let state = Arc::new(Self {
            auth: Auth::new(config.master_key.clone()),
            analytics,
            keys: Keys::from_rows(keys),
            key_store: storage.keys.clone(),
            limits: RateLimits::new(&config.rate_limits, clock),
            metrics,
            genai_spans: crate::telemetry::traces_enabled(),
            responses: storage.responses.clone(),
            drain: drain::Drain::default(),
            storage,
            config,
            router,
            memory,
            started: Instant::now(),
        });
        if let Some(redis_url) = &state.config.rate_limits.redis_url {
            match crate::storage::redis::SharedSessions::new(
                redis_url.expose(),
                &state.config.rate_limits.redis_prefix,
            ) {
                Ok(shared) => state.auth.sessions.share_through(shared),
                Err(e) => {
                    tracing::warn!(error = %e, "dashboard sessions stay per instance")
                }
            }
        }
        if state.storage.shared() {
            tokio::spawn(follow_keys(Arc::downgrade(&state)));
            let weak = Arc::downgrade(&state);
            state.storage.follow_key_changes(move |hash| {
                if let Some(state) = weak.upgrade() {
                    state.keys.forget(hash);
                    state.storage.forget_miss(hash);
                }
            });
        }
        Ok(state)
    }
}

/// With shared storage, re-reads the virtual keys now and then, so that keys made,
/// deleted or spent on other instances reach this one's cache; ends with the state.
async fn follow_keys(state: std::sync::Weak<AppState>) {
    let mut tick = tokio::time::interval(crate::storage::KEY_SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        let read_at = crate::analytics::timefmt::now_ms();
        match state.key_store.load().await {
            Ok(rows) => state.keys.sync(rows, read_at),
            Err(e) => tracing::debug!(error = %e, "cannot re-read the virtual keys"),
        }
    }
}

/// Serves the app on `listener` until `shutdown` resolves, then lets in-flight requests
/// (streams included) finish — those still open after `server.shutdown_grace_seconds` end
/// with an error event — then flushes the memory write queue and stored responses,
/// and writes every queued analytics row.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    serve_on(listener, state, shutdown).await
}

/// [`serve`] over HTTPS (see [`tls`]).
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(tls::TlsListener::new(listener, config)?, state, shutdown).await
}

async fn serve_on<L>(
    listener: L,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let shutdown = state
        .drain
        .after_signal(shutdown, state.config.server.shutdown_grace);
    let result = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    if let Some(memory) = &state.memory {
        memory.shutdown().await;
    }
    state.responses.shutdown().await;
    state.analytics.shutdown().await;
    result
}
