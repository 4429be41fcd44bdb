//! The storage layer: one interface per kind of durable state, and the choice of backend,
//! made once at start from `database_url` ([`Storage::open`]).
//!
//! | state | trait | embedded (no `database_url`) | PostgreSQL |
//! | --- | --- | --- | --- |
//! | memories, sessions, vectors | [`crate::memory::MemoryStore`] | [`embedded::memory`] (`memproxy.db`) | [`postgres::memory`] |
//! | usage rows, feedback, key spend | [`crate::analytics::AnalyticsStore`] | [`embedded::analytics`] (`analytics.db`) | [`postgres::analytics`] |
//! | virtual keys | [`crate::keys::KeyStore`] | [`embedded::keys`] (`analytics.db`) | [`postgres::keys`] |
//! | stored responses | [`crate::responses_store::ResponseStore`] | [`embedded::responses`] (`responses.db`) | [`postgres::responses`] |
//!
//! Nothing outside this module knows which backend it talks to: every store is built
//! here ([`Storage::open`], [`Storage::memory_store`], [`Storage::analytics`]) and the
//! rest of the program holds the traits. `memory.backend` may still keep memories
//! embedded (or in Supermemory) while the rest goes to PostgreSQL.
//!
//! - [`postgres`]: the pool, TLS, migrations and the PostgreSQL stores.
//! - [`sqlite`]: how every embedded store opens its file: WAL, its durability settings,
//!   versioned migrations, a newer file refused.
//! - [`batch`]: the one batched writer every store that writes in the background uses
//!   (usage rows, captured memories, stored responses): bounded queue, batches, retries
//!   while a store is away, loss counted.
//! - [`embedded`]: the embedded backend, SQLite files in the data dir (memories,
//!   analytics, keys, stored responses).
//! - [`copy`]: `memproxy storage migrate`, an embedded install copied into PostgreSQL.
//! - [`supermemory`]: memories in the hosted Supermemory API (`memory.backend:
//!   supermemory`), sessions kept embedded.
//! - [`redis`]: state shared by several memproxy instances through Redis: rate-limit
//!   buckets (one atomic Lua script per take) and the change feed for virtual keys.

pub mod batch;
pub mod copy;
pub mod embedded;
pub mod postgres;
pub mod redis;
pub mod sqlite;
pub mod supermemory;

use std::sync::Arc;
use std::time::Duration;

use crate::analytics::{Analytics, AnalyticsStore, Opener};
use crate::config::{AnalyticsSettings, Config, MemoryBackend, MemorySettings};
use crate::keys::{KeyRow, KeyStore, Keys};
use crate::memory::{Clock, MemoryStore, StoreError as MemoryStoreError};
use crate::responses_store::ResponseStore;

/// Why storage could not be opened at start.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database_url: {0}")]
    Url(String),
    #[error("{0}")]
    Postgres(String),
}

/// Which backend holds the durable state.
#[derive(Clone)]
pub enum Backend {
    /// SQLite files in the data dir.
    Embedded,
    /// One PostgreSQL database, shared by every instance pointed at it.
    Postgres(postgres::Pg),
}

/// The stores of one process, chosen once at start.
pub struct Storage {
    backend: Backend,
    /// Presented keys the shared store did not have, with when that was learnt (Unix
    /// ms): looked up again only after [`MISS_TTL_MS`].
    misses: dashmap::DashMap<[u8; 32], i64>,
    /// Virtual keys.
    pub keys: Arc<dyn KeyStore>,
    /// Stored Responses API answers.
    pub responses: Arc<dyn ResponseStore>,
    /// With shared storage and Redis: key revocations and edits told to every instance.
    feed: Option<redis::KeyFeed>,
    /// The subscription to `feed`, ended with the storage.
    feed_task: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
    /// Becomes true once the subscription to `feed` is made.
    feed_subscribed: tokio::sync::watch::Sender<bool>,
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(task) = self.feed_task.lock().ok().and_then(|mut t| t.take()) {
            task.abort();
        }
    }
}

/// How long a key the shared store did not have is not looked up again.
const MISS_TTL_MS: i64 = 5_000;

/// Remembered misses at most (the map is cleared when full).
const MAX_MISSES: usize = 10_000;

/// Longest wait for the shared store when a presented key is not cached.
const KEY_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the key cache is brought in line with a shared store.
pub const KEY_SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// How long readiness waits for a backend to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

impl Storage {
    /// Opens the backend `config.database_url` names (PostgreSQL: connects, applies the
    /// migrations, refuses a newer schema) and returns it with the virtual keys stored
    /// in it. Blocking: call at start-up.
    ///
    /// An unreachable PostgreSQL fails the start: without it no key could be checked.
    /// Once running, the stores ride out an outage (see the store modules).
    pub fn open(config: &Config) -> Result<(Self, Vec<KeyRow>), StorageError> {
        let Some(url) = &config.database_url else {
            let keys = embedded::keys::SqliteKeys::new(config.analytics.data_dir.clone());
            let rows = keys.with_blocking(|s| s.load_keys()).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the virtual keys; continuing without them");
                vec![]
            });
            let storage = Self {
                backend: Backend::Embedded,
                misses: Default::default(),
                keys: Arc::new(keys),
                responses: Arc::new(embedded::responses::SqliteResponseStore::new(
                    &config.memory.data_dir,
                )),
                feed: None,
                feed_task: Default::default(),
                feed_subscribed: Default::default(),
            };
            return Ok((storage, rows));
        };
        let url = postgres::PgUrl::parse(url.expose()).map_err(StorageError::Url)?;
        let rows = url
            .open_blocking(|client| Box::pin(async move { postgres::keys::load(&client).await }))
            .map_err(StorageError::Postgres)?;
        let pg = url.pool().map_err(StorageError::Postgres)?;
        tracing::info!(database = %url.redacted(), "durable state is kept in PostgreSQL");
        let feed = match &config.rate_limits.redis_url {
            Some(redis_url) => Some(
                redis::KeyFeed::new(redis_url.expose(), &config.rate_limits.redis_prefix)
                    .map_err(|e| StorageError::Url(format!("redis_url: {e}")))?,
            ),
            None => None,
        };
        let storage = Self {
            misses: Default::default(),
            feed,
            feed_task: Default::default(),
            feed_subscribed: Default::default(),
            keys: Arc::new(postgres::keys::PgKeys::new(pg.clone())),
            responses: Arc::new(postgres::responses::PgResponses::start(pg.clone())),
            backend: Backend::Postgres(pg),
        };
        Ok((storage, rows))
    }

    /// The backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// `embedded` or `postgres` (readiness, logs).
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Embedded => "embedded",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Whether other instances may share this storage (keys may appear and go
    /// elsewhere).
    pub fn shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Follows the key changes every instance publishes (shared storage with Redis only):
    /// `on_change(hash)` runs for each, so the caller drops its cached copy and the key's
    /// next use reads the store: a revoked key is refused everywhere within one Redis
    /// round trip. Without Redis the periodic re-read ([`KEY_SYNC_INTERVAL`]) is all
    /// there is. The subscription ends with the storage.
    pub fn follow_key_changes(&self, on_change: impl Fn(&str) + Send + Sync + 'static) {
        let Some(feed) = &self.feed else { return };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = feed.subscribe(on_change, Some(ready_tx));
        let subscribed = self.feed_subscribed.clone();
        tokio::spawn(async move {
            if ready_rx.await.is_ok() {
                subscribed.send_replace(true);
            }
        });
        if let Ok(mut slot) = self.feed_task.lock() {
            *slot = Some(task.abort_handle());
        }
    }

    /// Resolves once this instance hears the key changes others publish (at once when
    /// there is no feed to hear).
    pub async fn key_changes_followed(&self) {
        if self.feed.is_none() {
            return;
        }
        let mut rx = self.feed_subscribed.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Forgets that the shared store lacked this key (hash), so its next use looks again.
    pub fn forget_miss(&self, hash: &str) {
        if let Some(raw) = crate::keys::unhex(hash) {
            self.misses.remove(&raw);
        }
    }

    /// Tells every instance that these keys (hashes) changed or went (no-op without a
    /// feed; the store already holds the change).
    pub async fn keys_changed(&self, hashes: &[String]) {
        if let Some(feed) = &self.feed {
            for h in hashes {
                feed.publish(h).await;
            }
        }
    }

    /// With shared storage, caches the presented virtual key when another instance made
    /// it (one store read on a cache miss; misses are remembered for a few seconds). The
    /// embedded backend has nothing to look up: every key was made by this process.
    pub async fn find_key(
        &self,
        keys: &Keys,
        auth: &crate::auth::Auth,
        headers: &axum::http::HeaderMap,
    ) {
        if !self.shared() {
            return;
        }
        let Some(presented) = crate::auth::presented_key(headers) else {
            return;
        };
        if !presented.starts_with("sk-")
            || auth.is_master(presented)
            || keys.find(presented).is_some()
        {
            return;
        }
        let hash = crate::keys::hash_key(presented);
        let now = crate::analytics::timefmt::now_ms();
        if self
            .misses
            .get(&hash)
            .is_some_and(|at| now - *at < MISS_TTL_MS)
        {
            return;
        }
        let hex = crate::keys::hex(&hash);
        match tokio::time::timeout(KEY_LOOKUP_TIMEOUT, self.keys.get(&hex)).await {
            Ok(Ok(Some(row))) => {
                self.misses.remove(&hash);
                keys.insert_row(row);
            }
            Ok(Ok(None)) => {
                if self.misses.len() >= MAX_MISSES {
                    self.misses.clear();
                }
                self.misses.insert(hash, now);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot look up a virtual key"),
            Err(_) => tracing::warn!("looking up a virtual key timed out"),
        }
    }

    /// The usage databank on this backend, its thread started.
    pub fn analytics(&self, settings: &AnalyticsSettings) -> Analytics {
        let opener: Opener = match &self.backend {
            Backend::Embedded => {
                let dir = settings.data_dir.clone();
                Box::new(move || {
                    embedded::analytics::SqliteStore::open(&dir)
                        .map(|s| Box::new(s) as Box<dyn AnalyticsStore>)
                })
            }
            Backend::Postgres(pg) => {
                let url = pg.url().clone();
                Box::new(move || {
                    postgres::analytics::PgAnalytics::open(&url)
                        .map(|s| Box::new(s) as Box<dyn AnalyticsStore>)
                })
            }
        };
        Analytics::with_opener(settings, opener, |_| Ok(())).0
    }

    /// The embedded memory store in `settings.data_dir` (`memproxy.db`), opened and
    /// migrated. Blocking: call at start-up.
    pub fn embedded_memory(
        settings: &MemorySettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn MemoryStore>, MemoryStoreError> {
        Ok(Arc::new(embedded::memory::SqliteStore::open(
            &settings.data_dir,
            embedded::memory::SqliteOptions {
                session_ttl: settings.session_ttl,
                session_max_messages: settings.max_context_messages,
                clock,
                max_memories_per_user: settings.max_memories_per_user,
            },
        )?))
    }

    /// The memory store `memory.backend` names: embedded (the default), PostgreSQL, or
    /// Supermemory (with sessions kept embedded). Blocking: call at start-up.
    pub fn memory_store(
        &self,
        settings: &MemorySettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<dyn MemoryStore>, MemoryStoreError> {
        match (&settings.backend, &self.backend) {
            (MemoryBackend::Embedded, _) => Self::embedded_memory(settings, clock),
            (MemoryBackend::Postgres, Backend::Postgres(pg)) => {
                Ok(Arc::new(postgres::memory::PgMemoryStore::new(
                    pg.clone(),
                    postgres::memory::Options {
                        session_ttl: settings.session_ttl,
                        session_max_messages: settings.max_context_messages,
                        clock,
                        max_memories_per_user: settings.max_memories_per_user,
                    },
                )))
            }
            (MemoryBackend::Postgres, Backend::Embedded) => Err(MemoryStoreError::Backend(
                "memory.backend is postgres but no database_url is set".into(),
            )),
            (MemoryBackend::Supermemory, _) => {
                let sm = settings.supermemory.as_ref().ok_or_else(|| {
                    MemoryStoreError::Backend(
                        "memory.backend is supermemory but memory.supermemory is not set".into(),
                    )
                })?;
                // Sessions have no Supermemory equivalent: they stay in the embedded file.
                let sessions = Self::embedded_memory(settings, clock)?;
                tracing::info!(base_url = %sm.base_url, "long-term memory is kept in Supermemory");
                Ok(Arc::new(supermemory::SupermemoryStore::new(sm, sessions)?))
            }
        }
    }

    /// Whether the shared database answers (readiness); `None` for the embedded backend,
    /// whose stores report their own health.
    pub async fn check(&self) -> Option<Result<(), String>> {
        match &self.backend {
            Backend::Embedded => None,
            Backend::Postgres(pg) => Some(
                match tokio::time::timeout(CHECK_TIMEOUT, pg.check()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
                },
            ),
        }
    }
}
