//! The mock's Gemini generateContent / streamGenerateContent (`?alt=sse`).

use std::sync::Arc;

use axum::Router;

use crate::Shared;

/// This format's routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
}
