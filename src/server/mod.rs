//! The HTTP server: shared state, the app ([`router`]), and [`serve`] with graceful
//! shutdown. Routes are listed in [`routes`]; errors become HTTP only in [`error`].

mod admin;
mod body;
mod chat;
mod embedder;
mod embeddings;
pub mod error;
mod memories;
mod messages;
mod middleware;
mod pipeline;
mod respond;
mod responses;
mod routes;
mod sessions;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

pub use routes::router;

use crate::auth::Auth;
use crate::config::Config;
use crate::memory::{MemoryService, StoreError, SystemClock};
use crate::providers::ProviderEnv;
use crate::responses_store::ResponseStore;
use crate::routing::ModelRouter;

/// Everything request handlers share; built once at start-up, read-only afterwards.
pub struct AppState {
    pub config: Config,
    pub router: Arc<ModelRouter>,
    pub auth: Auth,
    /// Long-term memory and sessions; `None` when `memory.enabled` is false.
    pub memory: Option<Arc<MemoryService>>,
    pub started: Instant,
    /// Stored Responses API answers (`<data_dir>/responses.db`, opened on first use).
    pub responses: Arc<ResponseStore>,
}

/// Why the server state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the upstream HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot open the memory store: {0}")]
    Memory(#[from] StoreError),
}

impl AppState {
    /// Builds providers, router, auth and the memory store from a validated config.
    /// Opens files: call at start-up, inside the tokio runtime.
    pub fn new(mut config: Config) -> Result<Arc<Self>, StartError> {
        let env = ProviderEnv::new(&config)?;
        let router = Arc::new(ModelRouter::new(&mut config, &env));
        let memory = if config.memory.enabled {
            let embedder = config.memory.embedding_model.clone().map(|m| {
                Arc::new(embedder::RouterEmbedder::new(router.clone(), m))
                    as Arc<dyn crate::memory::Embedder>
            });
            Some(Arc::new(MemoryService::open(
                &config.memory,
                embedder,
                Arc::new(SystemClock),
            )?))
        } else {
            None
        };
        Ok(Arc::new(Self {
            auth: Auth::new(config.master_key.clone()),
            responses: Arc::new(ResponseStore::new(&config.memory.data_dir)),
            config,
            router,
            memory,
            started: Instant::now(),
        }))
    }
}

/// Serves the app on `listener` until `shutdown` resolves, then lets in-flight requests
/// (streams included) finish, and flushes the memory write queue and stored responses.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let result = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    if let Some(memory) = &state.memory {
        memory.shutdown().await;
    }
    state.responses.flush().await;
    result
}
