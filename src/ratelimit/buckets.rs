//! The bucket store behind the rate limits: what a bucket counts, its answers, the
//! [`RateLimiter`] interface, and the in-process implementation ([`LocalBuckets`]); the
//! one shared through Redis is `crate::storage::redis::RedisBuckets`.

use std::sync::Arc;

use dashmap::DashMap;

use crate::clock::Clock;

/// What a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Requests,
    Tokens,
}

/// Whose bucket it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    User,
    Key,
}

impl Scope {
    pub fn label(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Key => "key",
        }
    }
}

/// One bucket's state after a successful take, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset_ms: u64,
}

/// A refused take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}: {limit} {} per minute for this {}; retry in {}",
    if *store_unavailable {
        "the shared rate-limit store (Redis) is unreachable and rate_limits.fail_open is false"
    } else {
        "rate limit exceeded"
    },
    match dimension { Dimension::Requests => "requests", Dimension::Tokens => "tokens" },
    scope.label(),
    fmt_reset(*retry_after_ms)
)]
pub struct Denied {
    pub scope: Scope,
    pub dimension: Dimension,
    pub limit: u64,
    /// When the take would succeed.
    pub retry_after_ms: u64,
    pub reset_ms: u64,
    /// Refused because the shared store could not be asked (`fail_open: false`), not
    /// because the bucket is empty.
    pub store_unavailable: bool,
}

/// A bucket store: in-process ([`LocalBuckets`]) or shared through Redis (a Lua script per
/// take).
pub trait RateLimiter: Send + Sync {
    /// Takes `cost` from bucket `id` (`per_minute` capacity) if at least that much is left
    /// (or the bucket is full, so a cost above capacity can still pass once).
    fn take(
        &self,
        scope: Scope,
        dimension: Dimension,
        id: &str,
        per_minute: u64,
        cost: u64,
    ) -> impl std::future::Future<Output = Result<Quota, Denied>> + Send;

    /// Adds `delta` (negative: charge more) without refusing; fire and forget.
    fn adjust(&self, scope: Scope, dimension: Dimension, id: &str, per_minute: u64, delta: i64);
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
    per_minute: u64,
}

impl Bucket {
    fn refill(&mut self, now: u64, per_minute: u64) {
        let cap = per_minute as f64;
        if self.per_minute != per_minute {
            self.per_minute = per_minute;
            self.tokens = self.tokens.min(cap);
        }
        let elapsed = now.saturating_sub(self.last_ms) as f64;
        self.tokens = (self.tokens + elapsed * cap / 60_000.0).min(cap);
        self.last_ms = now;
    }

    fn ms_until(&self, level: f64) -> u64 {
        let missing = level - self.tokens;
        if missing <= 0.0 {
            0
        } else {
            (missing * 60_000.0 / self.per_minute as f64).ceil() as u64
        }
    }
}

/// Above this many buckets in one map, full (idle) buckets are swept out.
const SWEEP_ABOVE: usize = 50_000;

/// In-process buckets: four sharded maps (scope × dimension).
pub struct LocalBuckets {
    clock: Arc<dyn Clock>,
    maps: [DashMap<Box<str>, Bucket>; 4],
}

impl LocalBuckets {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            maps: Default::default(),
        }
    }

    fn map(&self, scope: Scope, dimension: Dimension) -> &DashMap<Box<str>, Bucket> {
        &self.maps[(scope as usize) * 2 + dimension as usize]
    }

    fn with_bucket<R>(
        &self,
        scope: Scope,
        dimension: Dimension,
        id: &str,
        per_minute: u64,
        f: impl FnOnce(&mut Bucket, u64) -> R,
    ) -> R {
        let now = self.clock.monotonic_ms();
        let map = self.map(scope, dimension);
        if let Some(mut b) = map.get_mut(id) {
            b.refill(now, per_minute);
            return f(&mut b, now);
        }
        if map.len() > SWEEP_ABOVE {
            map.retain(|_, b| {
                b.refill(now, b.per_minute);
                b.tokens < b.per_minute as f64
            });
        }
        let mut entry = map.entry(id.into()).or_insert(Bucket {
            tokens: per_minute as f64,
            last_ms: now,
            per_minute,
        });
        entry.refill(now, per_minute);
        f(&mut entry, now)
    }
}

impl RateLimiter for LocalBuckets {
    fn take(
        &self,
        scope: Scope,
        dimension: Dimension,
        id: &str,
        per_minute: u64,
        cost: u64,
    ) -> impl std::future::Future<Output = Result<Quota, Denied>> + Send {
        let result = self.with_bucket(scope, dimension, id, per_minute, |b, _| {
            let cap = per_minute as f64;
            let cost = cost as f64;
            if b.tokens >= cost || b.tokens >= cap {
                b.tokens -= cost;
                Ok(Quota {
                    limit: per_minute,
                    remaining: b.tokens.max(0.0).floor() as u64,
                    reset_ms: b.ms_until(cap),
                })
            } else {
                Err(Denied {
                    scope,
                    dimension,
                    limit: per_minute,
                    retry_after_ms: b.ms_until(cost.min(cap)),
                    reset_ms: b.ms_until(cap),
                    store_unavailable: false,
                })
            }
        });
        std::future::ready(result)
    }

    fn adjust(&self, scope: Scope, dimension: Dimension, id: &str, per_minute: u64, delta: i64) {
        self.with_bucket(scope, dimension, id, per_minute, |b, _| {
            b.tokens = (b.tokens + delta as f64).min(per_minute as f64);
        });
    }
}

/// OpenAI's reset format: `20ms`, `1.5s`, `6m0s`.
pub fn fmt_reset(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = format!("{:.3}", ms as f64 / 1000.0);
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000).div_ceil(1000))
    }
}
