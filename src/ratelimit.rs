//! Rate limits: token buckets per user id and per virtual key, for requests and for
//! tokens per minute. A bucket holds up to its per-minute limit and refills continuously.
//!
//! Tokens are charged in two steps: the estimated prompt size when the request arrives
//! (refused if the bucket is empty), then the difference to the real usage when the answer
//! is complete ([`RateLimits::settle_tokens`]); a bucket may go below zero, which delays
//! later requests.
//!
//! The bucket store sits behind [`RateLimiter`] (in-process, or shared by every instance
//! through Redis: [`crate::storage::redis`]), dispatched by the [`Limiter`] enum; time comes from a [`Clock`] so tests control
//! it. No global lock: buckets live in sharded maps.

use std::sync::Arc;

use dashmap::DashMap;

use crate::config::RateLimitSettings;
use crate::keys::VirtualKey;

pub use crate::clock::{Clock, ManualClock, SystemClock};

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

/// The configured bucket store, chosen once at start.
pub enum Limiter {
    /// This process's own buckets (one instance).
    Local(LocalBuckets),
    /// Buckets shared by every instance through Redis.
    Redis(crate::storage::redis::RedisBuckets),
}

impl Limiter {
    async fn take(
        &self,
        scope: Scope,
        dimension: Dimension,
        id: &str,
        per_minute: u64,
        cost: u64,
    ) -> Result<Quota, Denied> {
        match self {
            Limiter::Local(l) => l.take(scope, dimension, id, per_minute, cost).await,
            Limiter::Redis(r) => r.take(scope, dimension, id, per_minute, cost).await,
        }
    }

    fn adjust(&self, scope: Scope, dimension: Dimension, id: &str, per_minute: u64, delta: i64) {
        match self {
            Limiter::Local(l) => l.adjust(scope, dimension, id, per_minute, delta),
            Limiter::Redis(r) => r.adjust(scope, dimension, id, per_minute, delta),
        }
    }
}

/// The tightest quota among the buckets a request touched (for the response headers).
fn tighter(a: Option<Quota>, b: Quota) -> Quota {
    match a {
        Some(a) if a.remaining <= b.remaining => a,
        _ => b,
    }
}

/// Tokens charged up front, settled when the answer's real usage is known.
#[derive(Debug, Clone, Default)]
pub struct TokenCharge {
    user: Option<(String, u64)>,
    key: Option<(String, u64)>,
    charged: u64,
}

/// The rate-limit policy: per-user limits from config, per-key limits from the keys.
pub struct RateLimits {
    limiter: Limiter,
    user_rpm: Option<u64>,
    user_tpm: Option<u64>,
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings, clock: Arc<dyn Clock>) -> Self {
        let (user_rpm, user_tpm) = if settings.enabled {
            (settings.requests_per_minute, settings.tokens_per_minute)
        } else {
            (None, None)
        };
        let local = LocalBuckets::new(clock);
        let limiter = match &settings.redis_url {
            Some(url) => match crate::storage::redis::RedisBuckets::new(
                url.expose(),
                &settings.redis_prefix,
                local,
                settings.fail_open,
            ) {
                Ok(r) => Limiter::Redis(r),
                Err(e) => {
                    tracing::warn!(error = %e, "rate_limits: the Redis URL is not usable; limits are per instance");
                    Limiter::Local(LocalBuckets::new(Arc::new(SystemClock)))
                }
            },
            None => Limiter::Local(local),
        };
        Self {
            limiter,
            user_rpm,
            user_tpm,
        }
    }

    /// `Some(healthy)` when limits are shared through Redis.
    pub fn shared_store_healthy(&self) -> Option<bool> {
        match &self.limiter {
            Limiter::Local(_) => None,
            Limiter::Redis(r) => Some(r.healthy()),
        }
    }

    /// Counts one request for the user and the key. `Ok(None)`: no limit applies.
    pub async fn check_request(
        &self,
        user_id: &str,
        key: Option<&VirtualKey>,
    ) -> Result<Option<Quota>, Denied> {
        let mut quota = None;
        if let Some(rpm) = self.user_rpm {
            let q = self
                .limiter
                .take(Scope::User, Dimension::Requests, user_id, rpm, 1)
                .await?;
            quota = Some(q);
        }
        if let Some((k, rpm)) = key.and_then(|k| k.row.rpm_limit.map(|l| (k, l))) {
            match self
                .limiter
                .take(Scope::Key, Dimension::Requests, &k.row.hash, rpm, 1)
                .await
            {
                Ok(q) => quota = Some(tighter(quota, q)),
                Err(d) => {
                    if let Some(rpm) = self.user_rpm {
                        self.limiter
                            .adjust(Scope::User, Dimension::Requests, user_id, rpm, 1);
                    }
                    return Err(d);
                }
            }
        }
        Ok(quota)
    }

    /// Whether any token limit could apply to this caller.
    pub fn limits_tokens(&self, key: Option<&VirtualKey>) -> bool {
        self.user_tpm.is_some() || key.is_some_and(|k| k.row.tpm_limit.is_some())
    }

    /// Charges `estimate` tokens up front.
    pub async fn charge_tokens(
        &self,
        user_id: &str,
        key: Option<&VirtualKey>,
        estimate: u64,
    ) -> Result<(TokenCharge, Option<Quota>), Denied> {
        let mut charge = TokenCharge {
            charged: estimate,
            ..Default::default()
        };
        let mut quota = None;
        if let Some(tpm) = self.user_tpm {
            quota = Some(
                self.limiter
                    .take(Scope::User, Dimension::Tokens, user_id, tpm, estimate)
                    .await?,
            );
            charge.user = Some((user_id.to_string(), tpm));
        }
        if let Some((k, tpm)) = key.and_then(|k| k.row.tpm_limit.map(|l| (k, l))) {
            match self
                .limiter
                .take(Scope::Key, Dimension::Tokens, &k.row.hash, tpm, estimate)
                .await
            {
                Ok(q) => {
                    quota = Some(tighter(quota, q));
                    charge.key = Some((k.row.hash.clone(), tpm));
                }
                Err(d) => {
                    self.settle_tokens(&charge, 0);
                    return Err(d);
                }
            }
        }
        Ok((charge, quota))
    }

    /// Replaces the up-front estimate by the real token count.
    pub fn settle_tokens(&self, charge: &TokenCharge, actual: u64) {
        let delta = charge.charged as i64 - actual as i64;
        if delta == 0 {
            return;
        }
        if let Some((id, tpm)) = &charge.user {
            self.limiter
                .adjust(Scope::User, Dimension::Tokens, id, *tpm, delta);
        }
        if let Some((id, tpm)) = &charge.key {
            self.limiter
                .adjust(Scope::Key, Dimension::Tokens, id, *tpm, delta);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyRow;
    use std::time::Duration;

    fn limits(rpm: Option<u64>, tpm: Option<u64>) -> (RateLimits, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let s = RateLimitSettings {
            enabled: true,
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            redis_url: None,
            redis_prefix: String::new(),
            fail_open: true,
        };
        (RateLimits::new(&s, clock.clone()), clock)
    }

    #[tokio::test]
    async fn requests_refill_continuously() {
        let (l, clock) = limits(Some(60), None);
        for i in 0..60 {
            let q = l.check_request("alice", None).await.unwrap().unwrap();
            assert_eq!(q.remaining, 59 - i);
        }
        let d = l.check_request("alice", None).await.unwrap_err();
        assert_eq!((d.limit, d.retry_after_ms), (60, 1000));
        // Other users have their own bucket.
        assert!(l.check_request("bob", None).await.is_ok());
        clock.advance(Duration::from_millis(999));
        assert!(l.check_request("alice", None).await.is_err());
        clock.advance(Duration::from_millis(1));
        assert!(l.check_request("alice", None).await.is_ok());
        clock.advance(Duration::from_secs(3600));
        let q = l.check_request("alice", None).await.unwrap().unwrap();
        assert_eq!(q.remaining, 59);
    }

    #[tokio::test]
    async fn key_limit_refusal_gives_back_the_user_request() {
        let (l, _) = limits(Some(10), None);
        let key = VirtualKey::new(KeyRow {
            hash: "k".into(),
            rpm_limit: Some(1),
            ..Default::default()
        });
        assert_eq!(
            l.check_request("u", Some(&key)).await.unwrap().unwrap(),
            Quota {
                limit: 1,
                remaining: 0,
                reset_ms: 60_000
            }
        );
        let d = l.check_request("u", Some(&key)).await.unwrap_err();
        assert_eq!(d.scope, Scope::Key);
        let q = l.check_request("u", None).await.unwrap().unwrap();
        assert_eq!(
            q.remaining, 8,
            "the refused request was not counted for the user"
        );
    }

    #[tokio::test]
    async fn tokens_are_estimated_then_settled() {
        let (l, clock) = limits(None, Some(1000));
        let (charge, q) = l.charge_tokens("u", None, 300).await.unwrap();
        assert_eq!(q.unwrap().remaining, 700);
        // The answer used 900 in total: 600 more than estimated.
        l.settle_tokens(&charge, 900);
        let (c2, q) = l.charge_tokens("u", None, 100).await.unwrap();
        assert_eq!(q.unwrap().remaining, 0);
        l.settle_tokens(&c2, 100);
        let d = l.charge_tokens("u", None, 50).await.unwrap_err();
        assert_eq!(d.dimension, Dimension::Tokens);
        assert_eq!(d.retry_after_ms, 3000);
        clock.advance(Duration::from_secs(3));
        assert!(l.charge_tokens("u", None, 50).await.is_ok());
    }

    #[tokio::test]
    async fn oversized_requests_pass_only_on_a_full_bucket() {
        let (l, _) = limits(None, Some(100));
        let (c, _) = l.charge_tokens("u", None, 500).await.unwrap();
        l.settle_tokens(&c, 500);
        assert!(l.charge_tokens("u", None, 1).await.is_err());
    }

    #[test]
    fn reset_format() {
        assert_eq!(fmt_reset(20), "20ms");
        assert_eq!(fmt_reset(1500), "1.5s");
        assert_eq!(fmt_reset(1000), "1s");
        assert_eq!(fmt_reset(360_000), "6m0s");
    }

    #[tokio::test]
    async fn disabled_means_only_key_limits() {
        let clock = Arc::new(ManualClock::default());
        let s = RateLimitSettings {
            enabled: false,
            requests_per_minute: Some(1),
            tokens_per_minute: None,
            redis_url: None,
            redis_prefix: String::new(),
            fail_open: true,
        };
        let l = RateLimits::new(&s, clock);
        for _ in 0..5 {
            assert_eq!(l.check_request("u", None).await, Ok(None));
        }
    }
}
