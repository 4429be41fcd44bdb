//! Durable and shared state behind one layer. Each kind of state has an interface and an
//! implementation per backend, chosen once at start from the config; nothing above this
//! layer knows which backend it talks to.
//!
//! - [`redis`]: state shared by several memproxy instances through Redis: rate-limit
//!   buckets (one atomic Lua script per take) and the change feed for virtual keys.

pub mod redis;
