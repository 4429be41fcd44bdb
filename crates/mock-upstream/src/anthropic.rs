//! The mock's Anthropic Messages (`POST /v1/messages`, JSON and named SSE events).

use std::sync::Arc;

use axum::Router;

use crate::Shared;

/// This format's routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
}
