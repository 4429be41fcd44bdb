//! The embedded backend (the default, no `database_url`): SQLite files in the data dir,
//! each opened and migrated by [`super::sqlite::open`].
//!
//! - [`memory`]: memories, sessions and vectors (`<data_dir>/memproxy.db`: WAL, FTS5,
//!   vectors as blobs).
//! - [`analytics`]: usage rows, rollups, feedback and key spend (`analytics.db`), with
//!   `analytics/rollup.rs` (its per-minute/hour/day tables).
//! - [`keys`]: the virtual keys, in the analytics file.
//! - [`responses`]: stored Responses API answers (`responses.db`).

pub mod analytics;
pub mod keys;
pub mod memory;
pub mod responses;
