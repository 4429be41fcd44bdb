//! Where "now" comes from, behind one trait so that tests can move time instead of
//! sleeping: wall-clock Unix milliseconds (memory timestamps, session expiry) and
//! monotonic milliseconds (rate-limit buckets, which must not jump with the wall clock).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time.
pub trait Clock: Send + Sync {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> i64;
    /// Milliseconds on a monotonic clock (never goes back; its zero is arbitrary).
    fn monotonic_ms(&self) -> u64;
}

/// The system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    fn monotonic_ms(&self) -> u64 {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_millis() as u64
    }
}

/// A clock that moves only when told to (tests): both readings advance together.
#[derive(Debug, Default)]
pub struct ManualClock {
    unix: AtomicI64,
    monotonic: AtomicU64,
}

impl ManualClock {
    /// A clock showing Unix time `ms` (its monotonic reading starts at 0).
    pub fn at(ms: i64) -> Self {
        Self {
            unix: AtomicI64::new(ms),
            monotonic: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        let ms = d.as_millis() as u64;
        self.unix.fetch_add(ms as i64, Ordering::SeqCst);
        self.monotonic.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.unix.load(Ordering::SeqCst)
    }

    fn monotonic_ms(&self) -> u64 {
        self.monotonic.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_both_readings() {
        let c = ManualClock::at(1_000);
        c.advance(Duration::from_millis(250));
        assert_eq!((c.now_ms(), c.monotonic_ms()), (1_250, 250));
        let s = SystemClock;
        let a = s.monotonic_ms();
        assert!(s.monotonic_ms() >= a);
        assert!(s.now_ms() > 1_700_000_000_000);
    }
}
