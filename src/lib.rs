//! memproxy: a memory gateway between AI clients and LLM providers.
//!
//! # Layout
//! - [`config`]: LiteLLM-compatible `config.yaml`, env references, precedence, validation.
//! - [`server`]: the HTTP app (route table, gateway middleware, handlers, error mapping).
//! - [`auth`]: master-key authentication.
//! - [`identity`]: client detection → `user_id` (memory scope).
//! - [`memory`]: long-term memory and sessions: store trait, embedded SQLite backend,
//!   ranking, write queue, query/injection/capture functions.
//! - [`protocol`]: client wire formats; the OpenAI chat shape is the internal representation.
//! - [`routing`]: model name → deployments, load balancing, retries, fallbacks.
//! - [`providers`]: one file per provider behind one interface.
//! - [`responses_store`]: stored Responses API answers (`previous_response_id`, GET/DELETE).
//! - [`telemetry`]: JSON logging.
//! - [`eval`]: retrieval-quality evaluation on LoCoMo-format data (`memproxy eval-locomo`).
//!
//! A request's path: `server::routes` → `server::middleware::gateway` (request id, auth,
//! identity) → `server::chat` → `routing::ModelRouter::chat` → `providers::*`.

pub mod auth;
pub mod config;
pub mod eval;
pub mod identity;
pub mod memory;
pub mod protocol;
pub mod providers;
pub mod responses_store;
pub mod routing;
pub mod server;
pub mod telemetry;

pub use server::{router, serve, AppState};
