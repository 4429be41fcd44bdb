//! Redis: what several memproxy instances share in memory.
//!
//! - [`RedisBuckets`]: the rate-limit buckets of every instance, a token bucket per id
//!   kept in a Redis hash and changed only by one Lua script (refill, then take or adjust,
//!   atomically, on Redis's own clock so instances with skewed clocks agree). When Redis
//!   cannot be reached the instance falls back to its own in-process buckets with a
//!   warning (`rate_limits.fail_open: true`, the default) or refuses requests with 429
//!   (`fail_open: false`), and goes back to Redis as soon as it answers again.
//! - [`KeyFeed`]: virtual-key changes (revocations, edits) published on a channel so every
//!   instance drops its cached copy at once.
//! - [`CookieJars`]: each user's cookies for a Supermemory router, so a challenge session
//!   made through one instance goes on through any other.
//! - [`SharedSessions`]: dashboard sign-ins, so a browser signed in through one instance
//!   is signed in on all of them, and signed out everywhere at once.
//!
//! Connections are made lazily by a connection manager that reconnects by itself; no
//! call waits more than [`COMMAND_TIMEOUT`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::ratelimit::buckets::{Denied, Dimension, LocalBuckets, Quota, RateLimiter, Scope};

/// The longest a rate-limit check waits for Redis before the fallback decides.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// How long after a failure the fallback is used before Redis is tried again.
const RETRY_AFTER_MS: u64 = 1_000;

/// Refill, then take (`ARGV[3] == "take"`) or adjust by a signed amount. Buckets hold at
/// most `per_minute` and refill continuously; an idle bucket expires after two minutes
/// (it would be full again anyway). Returns `{granted, tokens}` with tokens as text
/// (Lua numbers would be truncated to integers).
const BUCKET_SCRIPT: &str = r"
local cap = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(v[1])
local ts = tonumber(v[2])
if tokens == nil or ts == nil then tokens = cap; ts = now end
if tokens > cap then tokens = cap end
if now > ts then tokens = math.min(cap, tokens + (now - ts) * cap / 60000) end
local granted = 1
if ARGV[3] == 'take' then
  if tokens >= amount or tokens >= cap then tokens = tokens - amount else granted = 0 end
else
  tokens = math.min(cap, tokens + amount)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 120000)
return {granted, tostring(tokens)}
";

/// A lazily connected, self-reconnecting Redis connection.
struct Conn {
    client: redis::Client,
    manager: OnceCell<ConnectionManager>,
}

impl Conn {
    fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            manager: OnceCell::new(),
        })
    }

    async fn get(&self) -> Result<ConnectionManager, redis::RedisError> {
        self.manager
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_response_timeout(Some(COMMAND_TIMEOUT))
                    .set_number_of_retries(1);
                self.client.get_connection_manager_with_config(config).await
            })
            .await
            .cloned()
    }
}

/// Rate-limit buckets shared through Redis (see the module docs).
pub struct RedisBuckets(Arc<Inner>);

struct Inner {
    conn: Conn,
    script: redis::Script,
    prefix: String,
    fallback: LocalBuckets,
    fail_open: bool,
    /// Milliseconds (on `fallback`'s clock, see [`RedisBuckets::now`]) until which Redis is
    /// not tried again after a failure; 0 = healthy.
    down_until: AtomicU64,
    /// The last call failed (cleared by the next success).
    failing: AtomicBool,
    started: std::time::Instant,
}

/// The result of one script run: granted, and the bucket level after it.
type ScriptReply = (i64, String);

impl RedisBuckets {
    /// Buckets under `prefix` (e.g. `memproxy:rl:`) on the Redis at `url`.
    pub fn new(
        url: &str,
        prefix: &str,
        fallback: LocalBuckets,
        fail_open: bool,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self(Arc::new(Inner {
            conn: Conn::new(url)?,
            script: redis::Script::new(BUCKET_SCRIPT),
            prefix: prefix.to_string(),
            fallback,
            fail_open,
            down_until: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            started: std::time::Instant::now(),
        })))
    }

    /// Whether Redis answered the last time it was asked.
    pub fn healthy(&self) -> bool {
        !self.0.failing.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn key(&self, scope: Scope, dimension: Dimension, id: &str) -> String {
        let d = match dimension {
            Dimension::Requests => "rpm",
            Dimension::Tokens => "tpm",
        };
        format!("{}{}:{d}:{id}", self.prefix, scope.label())
    }

    /// Not within the pause after a failure.
    fn due(&self) -> bool {
        self.down_until.load(Ordering::Relaxed) <= self.now()
    }

    /// Runs the bucket script; `None` when Redis did not answer (then the caller
    /// decides by `fail_open`).
    async fn run(
        &self,
        key: String,
        per_minute: u64,
        amount: i64,
        op: &str,
    ) -> Option<(bool, f64)> {
        if !self.due() {
            return None;
        }
        let call = async {
            let mut conn = self.conn.get().await?;
            self.script
                .key(key)
                .arg(per_minute)
                .arg(amount)
                .arg(op)
                .invoke_async::<ScriptReply>(&mut conn)
                .await
        };
        match tokio::time::timeout(COMMAND_TIMEOUT * 2, call).await {
            Ok(Ok((granted, tokens))) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::warn!("Redis answers again; rate limits are shared again");
                }
                Some((granted == 1, tokens.parse::<f64>().unwrap_or(0.0)))
            }
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer in time".to_string(),
                };
                self.down_until
                    .store(self.now() + RETRY_AFTER_MS, Ordering::Relaxed);
                metrics::counter!("memproxy_redis_errors_total").increment(1);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %why,
                        fail_open = self.fail_open,
                        "Redis is unreachable; rate limits {}",
                        if self.fail_open {
                            "fall back to this instance's own buckets"
                        } else {
                            "refuse requests until it answers (rate_limits.fail_open: false)"
                        }
                    );
                }
                None
            }
        }
    }
}

impl RateLimiter for RedisBuckets {
    fn take(
        &self,
        scope: Scope,
        dimension: Dimension,
        id: &str,
        per_minute: u64,
        cost: u64,
    ) -> impl std::future::Future<Output = Result<Quota, Denied>> + Send {
        let this = &self.0;
        let key = this.key(scope, dimension, id);
        async move {
            let Some((granted, level)) = this.run(key, per_minute, cost as i64, "take").await
            else {
                if this.fail_open {
                    return this
                        .fallback
                        .take(scope, dimension, id, per_minute, cost)
                        .await;
                }
                return Err(Denied {
                    scope,
                    dimension,
                    limit: per_minute,
                    retry_after_ms: RETRY_AFTER_MS,
                    reset_ms: RETRY_AFTER_MS,
                    store_unavailable: true,
                });
            };
            let cap = per_minute as f64;
            let ms_until = |target: f64| -> u64 {
                let missing = target - level;
                if missing <= 0.0 {
                    0
                } else {
                    (missing * 60_000.0 / cap).ceil() as u64
                }
            };
            if granted {
                Ok(Quota {
                    limit: per_minute,
                    remaining: level.max(0.0).floor() as u64,
                    reset_ms: ms_until(cap),
                })
            } else {
                Err(Denied {
                    scope,
                    dimension,
                    limit: per_minute,
                    retry_after_ms: ms_until((cost as f64).min(cap)),
                    reset_ms: ms_until(cap),
                    store_unavailable: false,
                })
            }
        }
    }

    fn adjust(&self, scope: Scope, dimension: Dimension, id: &str, per_minute: u64, delta: i64) {
        if !self.0.due() {
            self.0
                .fallback
                .adjust(scope, dimension, id, per_minute, delta);
            return;
        }
        let key = self.0.key(scope, dimension, id);
        let this = self.0.clone();
        tokio::spawn(async move {
            if this.run(key, per_minute, delta, "adjust").await.is_none() {
                tracing::debug!("a rate-limit adjustment was not applied (Redis unreachable)");
            }
        });
    }
}

/// Virtual-key changes shared by every instance: an instance that revokes or edits a key
/// publishes its hash; every instance (itself included) is told and drops its cached
/// copy, so the next use reads the shared store. Delivery takes one Redis round trip;
/// while the subscription is down it is re-made every [`RETRY_AFTER_MS`].
pub struct KeyFeed {
    conn: Conn,
    channel: String,
}

impl KeyFeed {
    /// The feed on channel `{prefix}keys` of the Redis at `url`.
    pub fn new(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            conn: Conn::new(url)?,
            channel: format!("{prefix}keys"),
        })
    }

    /// Tells every instance that the key with this hash changed. Errors are logged: the
    /// change itself is already in the shared store.
    pub async fn publish(&self, hash: &str) {
        let call = async {
            let mut conn = self.conn.get().await?;
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(hash)
                .query_async::<i64>(&mut conn)
                .await
        };
        match tokio::time::timeout(COMMAND_TIMEOUT * 2, call).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not publish a key change to Redis"),
            Err(_) => tracing::warn!("could not publish a key change to Redis: no answer in time"),
        }
    }

    /// Calls `on_change(hash)` for every change published by any instance, until the
    /// returned task is aborted. `ready` is sent once the first subscription is made.
    pub fn subscribe(
        &self,
        on_change: impl Fn(&str) + Send + Sync + 'static,
        ready: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> tokio::task::JoinHandle<()> {
        let client = self.conn.client.clone();
        let channel = self.channel.clone();
        tokio::spawn(async move {
            let mut ready = ready;
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                        Ok(()) => {
                            if let Some(tx) = ready.take() {
                                let _ = tx.send(());
                            }
                            let mut messages = pubsub.on_message();
                            while let Some(msg) = futures_util::StreamExt::next(&mut messages).await
                            {
                                if let Ok(hash) = msg.get_payload::<String>() {
                                    on_change(&hash);
                                }
                            }
                            tracing::warn!(
                                "the Redis key-change subscription ended; re-subscribing"
                            );
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot subscribe to key changes"),
                    },
                    Err(e) => tracing::debug!(error = %e, "Redis unreachable for key changes"),
                }
                tokio::time::sleep(Duration::from_millis(RETRY_AFTER_MS)).await;
            }
        })
    }
}

/// How long a user's shared cookie jar lives after its last change.
const JAR_TTL_SECS: u64 = 86_400;

/// Each user's cookies for Supermemory routers, shared by every instance: one Redis hash
/// per user (`{prefix}jar:{user}`), a field per router and cookie name holding the raw
/// `Set-Cookie` value. A call waits at most [`COMMAND_TIMEOUT`]; without an answer the
/// request goes on with the cookies it has (none), as a new session would.
pub struct CookieJars {
    conn: Conn,
    prefix: String,
}

impl CookieJars {
    /// The jars under `prefix` in the Redis at `url` (connected on first use).
    pub fn new(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            conn: Conn::new(url)?,
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, user_id: &str) -> String {
        format!("{}jar:{user_id}", self.prefix)
    }

    /// The raw `Set-Cookie` values `router` gave `user_id`, through any instance.
    pub async fn load(&self, user_id: &str, router: &str) -> Vec<String> {
        let call = async {
            let mut conn = self.conn.get().await?;
            redis::cmd("HGETALL")
                .arg(self.key(user_id))
                .query_async::<Vec<(String, String)>>(&mut conn)
                .await
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(fields)) => fields
                .into_iter()
                .filter(|(field, _)| field.split_once(' ').is_some_and(|(r, _)| r == router))
                .map(|(_, raw)| raw)
                .collect(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read a shared cookie jar from Redis");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!("cannot read a shared cookie jar from Redis: no answer in time");
                Vec::new()
            }
        }
    }

    /// Keeps the cookies (`(name, raw Set-Cookie)`) `router` just set for `user_id`.
    pub async fn save(&self, user_id: &str, router: &str, cookies: &[(String, String)]) {
        if cookies.is_empty() {
            return;
        }
        let key = self.key(user_id);
        let call = async {
            let mut conn = self.conn.get().await?;
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (name, raw) in cookies {
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg(format!("{router} {name}"))
                    .arg(raw)
                    .ignore();
            }
            pipe.cmd("EXPIRE").arg(&key).arg(JAR_TTL_SECS).ignore();
            pipe.query_async::<()>(&mut conn).await
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot share a cookie jar through Redis"),
            Err(_) => tracing::warn!("cannot share a cookie jar through Redis: no answer in time"),
        }
    }
}

/// Dashboard sessions in Redis: `{prefix}session:{id}` holds one session (the caller's
/// serialised [`crate::auth`] session) until it expires; signing out deletes it. `id` is
/// the SHA-256 of the cookie token, never the token itself.
pub struct SharedSessions {
    conn: Conn,
    prefix: String,
}

impl SharedSessions {
    /// The sessions under `prefix` in the Redis at `url` (connected on first use).
    pub fn new(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            conn: Conn::new(url)?,
            prefix: prefix.to_string(),
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }

    async fn call<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, String> {
        let call = async {
            let mut conn = self.conn.get().await?;
            cmd.query_async::<T>(&mut conn).await
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer in time".into()),
        }
    }

    /// Keeps a session for `ttl_ms`.
    pub async fn save(&self, id: &str, value: &str, ttl_ms: i64) -> Result<(), String> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(id))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms.max(1));
        self.call(cmd).await
    }

    /// The session, if Redis still has it (`Err` when Redis cannot be asked).
    pub async fn load(&self, id: &str) -> Result<Option<String>, String> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(id));
        self.call(cmd).await
    }

    /// Ends a session everywhere.
    pub async fn delete(&self, id: &str) -> Result<(), String> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(id));
        self.call::<i64>(cmd).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> String {
        std::env::var("MEMPROXY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    #[tokio::test]
    async fn key_changes_reach_every_subscriber() {
        let prefix = format!("memproxy-unit:{}:", uuid::Uuid::new_v4());
        let a = KeyFeed::new(&url(), &prefix).unwrap();
        let b = KeyFeed::new(&url(), &prefix).unwrap();
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = b.subscribe(
            move |h| {
                let _ = seen_tx.send(h.to_string());
            },
            Some(ready_tx),
        );
        tokio::time::timeout(Duration::from_secs(5), ready_rx)
            .await
            .expect("the test Redis is unreachable")
            .unwrap();
        a.publish("abc123").await;
        let got = tokio::time::timeout(Duration::from_secs(1), seen_rx.recv())
            .await
            .expect("delivered within 1 s");
        assert_eq!(got.as_deref(), Some("abc123"));
        task.abort();
    }
}
