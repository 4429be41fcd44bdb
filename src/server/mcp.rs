//! The MCP memory server (Model Context Protocol, official Rust SDK `rmcp`): the tools
//! `memory_search`, `memory_add`, `memory_get`, `memory_delete` and `memory_list` over
//! the caller's own memory, through the same store and retrieval as the memory API.
//!
//! Two transports:
//! - `/mcp` on the proxy (streamable HTTP, stateless, JSON answers): behind the gateway
//!   layer like every route, so the master key or a virtual key is required; the caller's
//!   scope is what the gateway decided ([`RequestCtx`]).
//! - `memproxy mcp` over stdio ([`serve_stdio`]): a local process whose scope is fixed at
//!   start from `--user` and/or `--key`.
//!
//! The scope of every tool call comes from [`mcp_scope`] alone; a tool never takes a user
//! id as an argument, so no call reaches beyond its caller.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};

use super::error::ApiError;
use super::memories::authorize;
use super::middleware::RequestCtx;
use super::AppState;
use crate::auth::Principal;
use crate::identity::{Decision, MatchedRule};
use crate::memory::{Metadata, NewMemory, StoreError};

/// Largest memory accepted, in bytes of text (as the memory API).
const MAX_CONTENT_BYTES: usize = 1 << 20;
/// Results of `memory_search` when none is asked for.
const DEFAULT_SEARCH_LIMIT: usize = 10;
/// Page size of `memory_list` when none is asked for.
const DEFAULT_PAGE: usize = 20;
/// Most results / items one call returns.
const MAX_LIMIT: usize = 100;

/// The memory scope of an MCP caller, as a store key: the user the gateway decided (a key
/// bound to a user is always that user) and the project the request names (`/p/<project>/mcp`,
/// `x-memory-project`, a key bound to a project, or `memproxy mcp --project`). The one place
/// that decides it.
pub fn mcp_scope(ctx: &RequestCtx) -> String {
    ctx.scope().key()
}

/// The MCP server of one connection (stdio) or one HTTP request.
#[derive(Clone)]
pub struct MemoryMcp {
    state: Arc<AppState>,
    /// The caller of a stdio server; `None` over HTTP (read from each request).
    fixed: Option<RequestCtx>,
}

impl MemoryMcp {
    fn caller(&self, context: &RequestContext<RoleServer>) -> Option<RequestCtx> {
        if let Some(c) = &self.fixed {
            return Some(c.clone());
        }
        context
            .extensions
            .get::<axum::http::request::Parts>()?
            .extensions
            .get::<RequestCtx>()
            .cloned()
    }

    async fn run(&self, name: &str, args: &JsonObject, ctx: &RequestCtx) -> Result<Value, String> {
        let mem = super::memories::service(&self.state).map_err(|e| e.to_string())?;
        let scope = mcp_scope(ctx);
        authorize(ctx, &ctx.identity.user_id).map_err(|e: ApiError| e.to_string())?;
        match name {
            "memory_search" => {
                let query = string_arg(args, "query")?;
                let limit = limit_arg(args, DEFAULT_SEARCH_LIMIT)?;
                let hits = mem
                    .try_search(&scope, &query, limit)
                    .await
                    .map_err(store_msg)?;
                Ok(json!({ "results": hits }))
            }
            "memory_add" => {
                let content = string_arg(args, "content")?;
                if content.len() > MAX_CONTENT_BYTES {
                    return Err(format!(
                        "`content` is longer than {MAX_CONTENT_BYTES} bytes"
                    ));
                }
                let mut metadata = Metadata::new();
                metadata.insert("source".into(), Value::from("mcp"));
                let created = mem
                    .add(NewMemory {
                        user_id: scope,
                        content,
                        metadata,
                        session_id: None,
                    })
                    .await
                    .map_err(store_msg)?;
                Ok(json!(created))
            }
            "memory_get" => {
                let id = string_arg(args, "id")?;
                let m = mem.store().get(&scope, &id).await.map_err(store_msg)?;
                Ok(json!(m))
            }
            "memory_delete" => {
                let id = string_arg(args, "id")?;
                mem.store().delete(&scope, &id).await.map_err(store_msg)?;
                Ok(json!({ "id": id, "deleted": true }))
            }
            "memory_list" => {
                let limit = limit_arg(args, DEFAULT_PAGE)?;
                let cursor = match args.get("cursor") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(_) => return Err("`cursor` must be a non-empty string".into()),
                };
                let page = mem
                    .store()
                    .list(&scope, limit, cursor.as_deref())
                    .await
                    .map_err(store_msg)?;
                Ok(json!({ "items": page.items, "next_cursor": page.next_cursor }))
            }
            other => Err(format!("unknown tool `{other}`")),
        }
    }
}

fn store_msg(e: StoreError) -> String {
    match e {
        StoreError::NotFound => "no such memory".into(),
        other => other.to_string(),
    }
}

fn string_arg(args: &JsonObject, name: &str) -> Result<String, String> {
    match args.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(format!("`{name}` must be a non-empty string"))
        }
        Some(_) => Err(format!("`{name}` must be a string")),
    }
}

fn limit_arg(args: &JsonObject, default: usize) -> Result<usize, String> {
    match args.get("limit") {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .map(|n| n as usize)
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| format!("`limit` must be a whole number from 1 to {MAX_LIMIT}")),
    }
}

fn schema(v: Value) -> Arc<JsonObject> {
    match v {
        Value::Object(m) => Arc::new(m),
        _ => Arc::new(JsonObject::new()),
    }
}

/// The tools with their input schemas.
pub fn tools() -> Vec<Tool> {
    let limit = |default: usize| {
        json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": default,
               "description": "How many to return at most."})
    };
    let id = json!({"type": "string", "description": "The memory's id."});
    vec![
        Tool::new(
            "memory_search",
            "Search your long-term memory for facts relevant to a query; best first.",
            schema(json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "What to look for."},
                    "limit": limit(DEFAULT_SEARCH_LIMIT),
                },
                "required": ["query"],
                "additionalProperties": false,
            })),
        ),
        Tool::new(
            "memory_add",
            "Store a fact in your long-term memory (durable when this returns).",
            schema(json!({
                "type": "object",
                "properties": {
                    "content": {"type": "string", "description": "The fact to remember."},
                },
                "required": ["content"],
                "additionalProperties": false,
            })),
        ),
        Tool::new(
            "memory_get",
            "Read one memory by id.",
            schema(json!({
                "type": "object",
                "properties": {"id": id},
                "required": ["id"],
                "additionalProperties": false,
            })),
        ),
        Tool::new(
            "memory_delete",
            "Delete one memory by id.",
            schema(json!({
                "type": "object",
                "properties": {"id": id},
                "required": ["id"],
                "additionalProperties": false,
            })),
        ),
        Tool::new(
            "memory_list",
            "List your memories, newest first; pass `next_cursor` back as `cursor` for more.",
            schema(json!({
                "type": "object",
                "properties": {
                    "limit": limit(DEFAULT_PAGE),
                    "cursor": {"type": "string", "description": "From the previous page."},
                },
                "additionalProperties": false,
            })),
        ),
    ]
}

impl ServerHandler for MemoryMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("memproxy", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Long-term memory of the current user: search it before answering questions \
                 about the user or earlier work, add durable facts worth remembering.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !tools().iter().any(|t| t.name == request.name) {
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{}`", request.name),
                None,
            ));
        }
        let Some(ctx) = self.caller(&context) else {
            return Err(ErrorData::internal_error("the request has no caller", None));
        };
        let args = request.arguments.unwrap_or_default();
        let result = match self.run(&request.name, &args, &ctx).await {
            Ok(v) => CallToolResult::structured(v),
            Err(msg) => CallToolResult::error(vec![ContentBlock::text(msg)]),
        };
        Ok(result.into())
    }
}

/// The `/mcp` service (streamable HTTP, stateless, JSON answers), mounted on the router
/// behind the gateway layer. `Host` is not restricted: every request is authenticated.
pub fn http_service(state: Arc<AppState>) -> StreamableHttpService<MemoryMcp, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .disable_allowed_hosts()
        .with_max_request_body_bytes(state.config.server.max_body_bytes);
    StreamableHttpService::new(
        move || {
            Ok(MemoryMcp {
                state: state.clone(),
                fixed: None,
            })
        },
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// Who a stdio server acts for: `--key` (authenticated like an HTTP request) and/or
/// `--user`. A key bound to a user fixes the user; a different `--user` is refused. Without
/// a key the process is trusted as whoever may read its config and data.
pub fn stdio_caller(
    state: &AppState,
    user: Option<&str>,
    project: Option<&str>,
    key: Option<&str>,
) -> Result<RequestCtx, String> {
    let principal = match key {
        Some(k) => {
            let mut headers = axum::http::HeaderMap::new();
            let value = axum::http::HeaderValue::from_str(&format!("Bearer {k}"))
                .map_err(|_| "--key is not a valid key".to_string())?;
            headers.insert(axum::http::header::AUTHORIZATION, value);
            state
                .auth
                .authenticate(&headers, &state.keys, crate::analytics::timefmt::now_ms())
                .map_err(|e| format!("--key: {e}"))?
        }
        None => Principal::Open,
    };
    let bound = principal.key().and_then(|k| k.row.user_id.clone());
    let user_id = match (bound, user) {
        (Some(b), Some(u)) if b != u => {
            return Err(format!(
                "this key is bound to user `{b}` and cannot act for `{u}`"
            ))
        }
        (Some(b), _) => b,
        (None, Some(u)) => {
            crate::identity::validate_user_id(u).map_err(|e| format!("--user: {e}"))?;
            u.to_string()
        }
        (None, None) => return Err("give --user, or --key with a key bound to a user".into()),
    };
    let bound_project = principal.key().and_then(|k| k.row.project.clone());
    let project = match (bound_project, project) {
        (Some(b), Some(p)) if b != p => {
            return Err(format!(
                "this key is bound to project `{b}` and cannot act in `{p}`"
            ))
        }
        (Some(b), _) => Some(b),
        (None, Some(p)) => {
            crate::memory::scope::validate_project(p).map_err(|e| format!("--project: {e}"))?;
            Some(p.to_string())
        }
        (None, None) => None,
    };
    let ctx = RequestCtx {
        project,
        request_id: format!("mcp-stdio-{}", uuid::Uuid::new_v4().simple()),
        principal,
        identity: Decision {
            user_id,
            rule: MatchedRule::KeyBinding,
        },
        client: Cow::Borrowed("mcp-stdio"),
        session_id: None,
        started: Instant::now(),
        arrived_ms: crate::analytics::timefmt::now_ms(),
        row: Default::default(),
    };
    authorize(&ctx, &ctx.identity.user_id).map_err(|e| e.to_string())?;
    Ok(ctx)
}

/// Serves MCP over stdin/stdout for `caller` until the client closes stdin.
pub async fn serve_stdio(state: Arc<AppState>, caller: RequestCtx) -> Result<(), String> {
    let server = MemoryMcp {
        state,
        fixed: Some(caller),
    };
    let running = server
        .serve(rmcp::transport::io::stdio())
        .await
        .map_err(|e| format!("MCP start failed: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| format!("MCP server failed: {e}"))?;
    Ok(())
}
