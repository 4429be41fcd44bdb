//! The MCP memory server (SPEC §5), on the official Rust MCP SDK (`rmcp`): tools
//! `memory_search`, `memory_add`, `memory_get`, `memory_delete` and `memory_list` over the
//! caller's memory, served over stdio (`memproxy mcp`, a fixed scope chosen on the
//! command line) and over streamable HTTP at `/mcp` on the proxy (the scope of the
//! authenticated request: its key's bindings, user detection and project, exactly as for
//! model requests).
//!
//! A caller reads its own scope and, for a project with `project_then_user`, its user's
//! general memories; it writes only its own scope. Nothing of another user or project is
//! ever reachable: ids outside those scopes are "not found".

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Extensions, Implementation, ServerCapabilities, ServerConfig,
};
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, ServerHandler};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::ProjectScope;
use crate::memory::inject::allot;
use crate::memory::{Memory, MemoryService, Metadata, NewMemory, Scope, StoreError};

/// Largest memory `memory_add` accepts, in bytes.
const MAX_CONTENT_BYTES: usize = 1 << 20;

/// Who is calling, put into a `/mcp` request's extensions by the server after
/// authentication; the stdio server has one fixed caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's scope (user and project).
    pub scope: Scope,
}

/// The MCP server of one connection (stdio) or session (HTTP).
#[derive(Clone)]
pub struct MemoryServer {
    memory: Arc<MemoryService>,
    /// How far a project's caller reads (`context_retrieval.project_scope`).
    mode: ProjectScope,
    /// The stdio caller; `None` over HTTP (each request carries its [`Caller`]).
    fixed: Option<Caller>,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchArgs {
    /// What to look for, in plain words.
    pub query: String,
    /// Results at most (1-50, default 10).
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AddArgs {
    /// The text to remember.
    pub content: String,
    /// Optional JSON object stored with it.
    pub metadata: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct IdArgs {
    /// A memory id from memory_search or memory_list.
    pub id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ListArgs {
    /// Memories per page (1-100, default 20).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn store_error(e: StoreError) -> ErrorData {
    match e {
        StoreError::NotFound => ErrorData::resource_not_found("memory not found", None),
        StoreError::Invalid(m) => ErrorData::invalid_params(m, None),
        other => ErrorData::internal_error(other.to_string(), None),
    }
}

fn ok(v: Value) -> Result<CallToolResult, ErrorData> {
    Ok(CallToolResult::success(vec![ContentBlock::text(
        v.to_string(),
    )]))
}

/// A memory as a tool result: its scope shown as user and project.
fn memory_json(m: &Memory) -> Value {
    let scope = Scope::parse(&m.user_id).ok();
    json!({
        "id": m.id,
        "content": m.content,
        "metadata": m.metadata,
        "project": scope.as_ref().and_then(Scope::project),
        "created_at": m.created_at,
    })
}

#[tool_router]
impl MemoryServer {
    /// A server for `memory`; `fixed` is the stdio caller.
    pub fn new(memory: Arc<MemoryService>, mode: ProjectScope, fixed: Option<Caller>) -> Self {
        Self {
            memory,
            mode,
            fixed,
            tool_router: Self::tool_router(),
        }
    }

    /// The caller: the fixed one, else the one the HTTP layer attached.
    fn caller(&self, ext: &Extensions) -> Result<Caller, ErrorData> {
        if let Some(c) = &self.fixed {
            return Ok(c.clone());
        }
        ext.get::<axum::http::request::Parts>()
            .and_then(|p| p.extensions.get::<Caller>())
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("no authenticated caller", None))
    }

    /// The memory `id` in the first readable scope that has it.
    async fn find(&self, caller: &Caller, id: &str) -> Result<Memory, ErrorData> {
        for scope in caller.scope.readable(self.mode) {
            match self.memory.store().get(scope.key(), id).await {
                Err(StoreError::NotFound) => continue,
                other => return other.map_err(store_error),
            }
        }
        Err(store_error(StoreError::NotFound))
    }

    #[tool(
        description = "Search your long-term memory (this project's first, then your general memories) for facts, preferences and earlier conversations. Returns the best matches with their ids."
    )]
    async fn memory_search(
        &self,
        Parameters(args): Parameters<SearchArgs>,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = self.caller(&ext)?;
        if args.query.trim().is_empty() {
            return Err(ErrorData::invalid_params("`query` must not be empty", None));
        }
        let limit = args.limit.unwrap_or(10).clamp(1, 50);
        let scopes = caller.scope.readable(self.mode);
        let found = self
            .memory
            .try_search_scopes(&scopes, &args.query, limit)
            .await
            .map_err(store_error)?;
        let counts: Vec<usize> = found.iter().map(Vec::len).collect();
        let results: Vec<Value> = found
            .iter()
            .zip(allot(&counts, limit))
            .flat_map(|(hits, take)| hits.iter().take(take))
            .map(|h| {
                let mut v = memory_json(&h.memory);
                v["score"] = json!((h.score * 1000.0).round() / 1000.0);
                v
            })
            .collect();
        ok(json!({"query": args.query, "results": results}))
    }

    #[tool(
        description = "Remember something for later (stored in this project's memory when you work in a project). Returns the new memory's id."
    )]
    async fn memory_add(
        &self,
        Parameters(args): Parameters<AddArgs>,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = self.caller(&ext)?;
        let content = args.content.trim();
        if content.is_empty() || args.content.len() > MAX_CONTENT_BYTES {
            return Err(ErrorData::invalid_params(
                format!("`content` must be 1 to {MAX_CONTENT_BYTES} bytes of text"),
                None,
            ));
        }
        let mut metadata: Metadata = args.metadata.unwrap_or_default();
        metadata
            .entry("source")
            .or_insert_with(|| Value::from("mcp"));
        let created = self
            .memory
            .add(NewMemory {
                user_id: caller.scope.key().to_string(),
                content: content.to_string(),
                metadata,
                session_id: None,
            })
            .await
            .map_err(store_error)?;
        ok(memory_json(&created))
    }

    #[tool(description = "Read one memory in full by its id.")]
    async fn memory_get(
        &self,
        Parameters(args): Parameters<IdArgs>,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = self.caller(&ext)?;
        let m = self.find(&caller, &args.id).await?;
        ok(memory_json(&m))
    }

    #[tool(description = "Delete one memory by its id.")]
    async fn memory_delete(
        &self,
        Parameters(args): Parameters<IdArgs>,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = self.caller(&ext)?;
        let m = self.find(&caller, &args.id).await?;
        self.memory
            .store()
            .delete(&m.user_id, &m.id)
            .await
            .map_err(store_error)?;
        ok(json!({"id": m.id, "deleted": true}))
    }

    #[tool(
        description = "List your memories in this scope (this project's, or your general ones outside a project), newest first."
    )]
    async fn memory_list(
        &self,
        Parameters(args): Parameters<ListArgs>,
        ext: Extensions,
    ) -> Result<CallToolResult, ErrorData> {
        let caller = self.caller(&ext)?;
        let limit = args.limit.unwrap_or(20).clamp(1, 100);
        let page = self
            .memory
            .store()
            .list(caller.scope.key(), limit, args.cursor.as_deref())
            .await
            .map_err(store_error)?;
        let items: Vec<Value> = page.items.iter().map(memory_json).collect();
        ok(json!({"memories": items, "next_cursor": page.next_cursor}))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for MemoryServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("memproxy", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "memproxy's long-term memory of this user (and project): search it before \
                 answering questions about earlier work, add durable facts and preferences.",
            )
    }
}

/// Why the stdio server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("cannot open the memory store: {0}")]
    Store(#[from] StoreError),
    #[error("memory is disabled in this config (memory.enabled: false)")]
    Disabled,
    #[error("MCP session failed: {0}")]
    Session(String),
}

/// `memproxy mcp`: serves `scope`'s memory over stdin/stdout until the client closes it.
/// The store is the config's own (the same data dir as `memproxy serve`, which may run
/// at the same time); searches are lexical here, vectors are computed by the proxy.
pub async fn serve_stdio(config: &crate::config::Config, scope: Scope) -> Result<(), StdioError> {
    use rmcp::ServiceExt;
    if !config.memory.enabled {
        return Err(StdioError::Disabled);
    }
    let memory = Arc::new(MemoryService::open(
        &config.memory,
        None,
        Arc::new(crate::memory::SystemClock),
    )?);
    let server = MemoryServer::new(
        memory.clone(),
        config.retrieval.project_scope,
        Some(Caller { scope }),
    );
    let result = match server.serve(rmcp::transport::stdio()).await {
        Ok(running) => running
            .waiting()
            .await
            .map(|_| ())
            .map_err(|e| StdioError::Session(e.to_string())),
        Err(e) => Err(StdioError::Session(e.to_string())),
    };
    memory.shutdown().await;
    result
}
