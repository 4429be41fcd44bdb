//! memproxy: a memory gateway between AI clients and LLM providers.
//!
//! # Layout
//! - [`analytics`]: the usage databank: one row per model request, written in batches by
//!   the store's own thread; prices; the usage queries.
//! - [`config`]: LiteLLM-compatible `config.yaml`, env references, precedence, validation.
//! - [`server`]: the HTTP app (route table, gateway middleware, handlers, error mapping).
//! - [`auth`]: master-key and virtual-key authentication.
//! - [`intercept`]: `memproxy intercept`, the per-project local proxy in front of a
//!   central memproxy, and its port registry.
//! - [`keys`]: virtual keys (`/key/*`): hashed storage, hot-path cache, limits, budgets.
//! - [`ratelimit`]: token buckets per user id and per key, behind a clock and a store trait.
//! - [`metrics`]: Prometheus metrics for `/metrics`.
//! - [`identity`]: client detection → `user_id` (memory scope).
//! - [`memory`]: long-term memory and sessions: store trait, embedded SQLite backend,
//!   ranking, write queue, query/injection/capture functions.
//! - [`protocol`]: client wire formats; the OpenAI chat shape is the internal representation.
//! - [`routing`]: model name → deployments, load balancing, retries, fallbacks.
//! - [`tools`]: memory tools the model calls (`memory_search`, `memory_get`), run by
//!   memproxy in a multi-round loop.
//! - [`providers`]: one file per provider behind one interface.
//! - [`storage`]: state shared by several instances (Redis: rate limits, key changes).
//! - [`responses_store`]: stored Responses API answers (`previous_response_id`, GET/DELETE).
//! - [`storage`]: the backend of every durable store (embedded SQLite or PostgreSQL),
//!   chosen once at start; the PostgreSQL stores; `memproxy storage migrate`.
//! - [`telemetry`]: JSON logging; OpenTelemetry traces over OTLP when configured.
//!
//! (`eval-locomo` and `bench-memory` live in `crates/memproxy-bench`.)
//!
//! A request's path: `server::routes` → `server::middleware::gateway` (request id, auth,
//! identity, budget, request rate limits) → `server::chat` → `server::pipeline::run`
//! (model allow-list, token limits) → `routing::ModelRouter::chat` → `providers::*`; the
//! answer's completion hook writes the analytics row (`server::accounting`).

pub mod analytics;
pub mod auth;
pub mod clock;
pub mod config;
pub mod glob;
pub mod identity;
pub mod intercept;
pub mod keys;
pub mod memory;
pub mod metrics;
pub mod protocol;
pub mod providers;
pub mod ratelimit;
pub mod responses_store;
pub mod routing;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod tools;

pub use server::{router, serve, serve_tls, AppState};

/// Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`; not for the product).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::providers::{fuzz_frames as bedrock_frames, fuzz_lines as ollama_lines};

    /// The identity rules of the built-in default config.
    pub fn identity_rules() -> crate::identity::IdentityConfig {
        let lookup = |_: &str| None;
        crate::config::load(None, &crate::config::Overrides::default(), &lookup)
            .expect("the built-in defaults load")
            .identity
    }
}
