//! `/mcp`: the MCP memory server over streamable HTTP ([`crate::mcp`]), behind the gateway
//! like every route, so it is authenticated like the memory API and its tools act on the
//! scope the gateway decided (key bindings, user detection, project).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tower_service::Service;

use super::error::ApiError;
use super::middleware::RequestCtx;
use super::AppState;
use crate::config::Config;
use crate::mcp::{Caller, MemoryServer};
use crate::memory::MemoryService;

/// The `/mcp` service: one [`MemoryServer`] per MCP session.
pub type McpService = StreamableHttpService<MemoryServer, LocalSessionManager>;

/// Builds the service. The SDK's Host check (against DNS rebinding of unauthenticated
/// local servers) stays on, loopback only, while the proxy is open; with a master key
/// every request is authenticated and the proxy may be reached by any host name.
pub fn service(config: &Config, memory: Arc<MemoryService>) -> McpService {
    let mode = config.retrieval.project_scope;
    let mut http = StreamableHttpServerConfig::default();
    if config.master_key.is_some() {
        http = http.disable_allowed_hosts();
    }
    StreamableHttpService::new(
        move || Ok(MemoryServer::new(memory.clone(), mode, None)),
        Arc::new(LocalSessionManager::default()),
        http,
    )
}

/// `/mcp` (POST, GET, DELETE): hands the request, with its [`Caller`], to the SDK.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    Extension(ctx): Extension<RequestCtx>,
    mut req: Request,
) -> Response {
    let Some(mcp) = &state.mcp else {
        return ApiError::MemoryDisabled.into_response();
    };
    req.extensions_mut().insert(Caller {
        scope: ctx.scope.clone(),
    });
    match mcp.clone().call(req).await {
        Ok(resp) => resp.map(Body::new),
        Err(never) => match never {},
    }
}
