//! The HTTP server: shared state, the app ([`router`]), and [`serve`] with graceful
//! shutdown. Routes are listed in [`routes`]; errors become HTTP only in [`error`].

mod admin;
mod body;
mod chat;
mod embeddings;
pub mod error;
mod messages;
mod middleware;
mod pipeline;
mod respond;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

pub use routes::router;

use crate::auth::Auth;
use crate::config::Config;
use crate::providers::ProviderEnv;
use crate::routing::ModelRouter;

/// Everything request handlers share; built once at start-up, read-only afterwards.
pub struct AppState {
    pub config: Config,
    pub router: ModelRouter,
    pub auth: Auth,
    pub started: Instant,
}

/// Why the server state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the upstream HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

impl AppState {
    /// Builds providers, router and auth from a validated config.
    pub fn new(mut config: Config) -> Result<Arc<Self>, StartError> {
        let env = ProviderEnv::new(&config)?;
        let router = ModelRouter::new(&mut config, &env);
        Ok(Arc::new(Self {
            auth: Auth::new(config.master_key.clone()),
            config,
            router,
            started: Instant::now(),
        }))
    }
}

/// Serves the app on `listener` until `shutdown` resolves, then lets in-flight requests
/// (streams included) finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
