//! The route table: paths → handlers. Handlers are thin; the work is in the modules they call.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use super::error::ApiError;
use super::{
    admin, chat, embeddings, keys_api, mcp, memories, messages, middleware, responses, sessions,
    ui, usage_api, AppState,
};

/// Builds the application: every route behind the gateway middleware, each also under a
/// `/p/<project>` base-URL prefix ([`middleware::project_prefix`], which runs before
/// routing).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .fallback_service(routes(state))
        .layer(axum::middleware::from_fn(middleware::project_prefix))
}

fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/chat/completions", post(chat::chat_completions))
        .route("/v1/messages", post(messages::messages))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route("/v1/responses", post(responses::create))
        .route("/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::retrieve).delete(responses::delete),
        )
        .route(
            "/responses/{id}",
            get(responses::retrieve).delete(responses::delete),
        )
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/embeddings", post(embeddings::embeddings))
        .route("/v1/models", get(admin::models))
        .route("/models", get(admin::models))
        .route("/health", get(admin::health))
        .route("/health/liveliness", get(admin::liveliness))
        .route("/health/liveness", get(admin::liveliness))
        .route("/health/readiness", get(admin::readiness))
        .route(
            "/v1/memories",
            post(memories::add)
                .get(memories::list)
                .delete(memories::delete_user),
        )
        .route("/v1/memories/search", get(memories::search))
        .route("/v1/memories/projects", get(memories::projects))
        .route("/v1/memories/export", get(memories::export))
        .route("/v1/memories/import", post(memories::import))
        .route(
            "/v1/memories/{id}",
            get(memories::get)
                .delete(memories::delete)
                .patch(memories::patch),
        )
        .route("/v1/sessions", get(sessions::list))
        .route(
            "/v1/sessions/{id}",
            get(sessions::get).delete(sessions::delete),
        )
        .route("/memory-routing/info", get(admin::routing_info))
        .route("/v1/debug/routing", get(admin::routing_info))
        .route("/metrics", get(admin::metrics))
        .route("/v1/usage", get(usage_api::usage))
        .route("/v1/usage/requests", get(usage_api::requests))
        .route(
            "/v1/usage/requests/{request_id}",
            get(usage_api::request_detail),
        )
        .route("/v1/usage/timeseries", get(usage_api::timeseries))
        .route("/v1/feedback", post(usage_api::feedback))
        .route("/key/generate", post(keys_api::generate))
        .route("/key/info", get(keys_api::info))
        .route("/key/delete", post(keys_api::delete))
        .route("/key/update", post(keys_api::update))
        .route("/key/list", get(keys_api::list))
        .route_service("/mcp", mcp::http_service(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::gateway,
        ))
        // The dashboard: outside the gateway layer, nothing added to the request path.
        .merge(ui::routes())
        .with_state(state)
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path();
    ApiError::NotFound {
        method: req.method().to_string(),
        path: path.to_string(),
    }
    .into_response_for(middleware::client_format(path))
}
