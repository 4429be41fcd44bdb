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

use crate::config::RateLimitSettings;
use crate::keys::VirtualKey;

pub use crate::clock::{Clock, ManualClock, SystemClock};

pub mod buckets;
pub use buckets::{fmt_reset, Denied, Dimension, LocalBuckets, Quota, RateLimiter, Scope};

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
