//! Token buckets: the channels' rate limits, their failure budgets and the widget polls' rate.
//! Each lives in this gateway process (per replica, see docs/gateway.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Requests per second that may fail verification on one channel (a missing or wrong
/// signature or token, a wrong identity or session token, a refused origin), after
/// [`FAILURE_BURST`]. Beyond it, failures are answered 429 `too_many_failures` and are no
/// longer logged one by one. Verified requests never spend it, so a flood of forged requests
/// cannot take a channel's rate from its real provider or users.
pub const FAILURE_RATE_PER_SECOND: f64 = 1.0;
/// Failed verifications one channel may have in a burst.
pub const FAILURE_BURST: f64 = 20.0;

/// Requests (sessions and messages) anonymous visitors may make per second from one client
/// address, after [`ANONYMOUS_ADDRESS_BURST`], per gateway replica: a script cycling visitor
/// ids from one address gets no further than this. Generous enough for an office or a mobile
/// carrier's NAT, where many visitors share one address.
pub const ANONYMOUS_ADDRESS_RATE_PER_SECOND: f64 = 2.0;
/// Anonymous requests one client address may make in a burst.
pub const ANONYMOUS_ADDRESS_BURST: f64 = 60.0;
/// Requests (sessions and messages) one anonymous visitor may make per second, after
/// [`ANONYMOUS_VISITOR_BURST`]: 12 a minute, per gateway replica.
pub const ANONYMOUS_VISITOR_RATE_PER_SECOND: f64 = 0.2;
/// Anonymous requests one visitor may make in a burst.
pub const ANONYMOUS_VISITOR_BURST: f64 = 10.0;

/// Past this many keys, a map of buckets drops those that are full again (nothing to remember).
const PRUNE_AT: usize = 10_000;

/// Holds up to `burst` tokens, refilled at `rate` per second; a request takes one.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.max(0.0)).min(burst);
        self.at = now;
    }

    /// Takes a token at `now`, or says how many whole seconds (1 to 3600) until there is one.
    pub fn take(&mut self, now: Instant, rate: f64, burst: f64) -> Result<(), u64> {
        self.refill(now, rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - self.tokens) / rate.max(0.001)).ceil();
            Err(wait.clamp(1.0, 3600.0) as u64)
        }
    }

    fn is_full(&self, now: Instant, rate: f64, burst: f64) -> bool {
        let mut b = *self;
        b.refill(now, rate, burst);
        b.tokens >= burst
    }
}

/// Buckets by key, each remembering how many requests it refused since it last let one
/// through (for rate-limited logging).
#[derive(Default)]
pub struct Buckets(Mutex<HashMap<String, (Bucket, u64)>>);

impl Buckets {
    /// [`Bucket::take`] on `key`'s bucket.
    pub fn take(&self, key: &str, rate: f64, burst: f64) -> Result<(), u64> {
        self.take_counting(key, rate, burst).map(|_| ())
    }

    /// [`Bucket::take`], returning on success how many requests the bucket refused since its
    /// last success.
    pub fn take_counting(&self, key: &str, rate: f64, burst: f64) -> Result<u64, u64> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if m.len() >= PRUNE_AT && !m.contains_key(key) {
            m.retain(|_, (b, _)| !b.is_full(now, rate, burst));
        }
        let (bucket, refused) = m
            .entry(key.to_string())
            .or_insert_with(|| (Bucket::full(burst, now), 0));
        match bucket.take(now, rate, burst) {
            Ok(()) => Ok(std::mem::take(refused)),
            Err(wait) => {
                *refused += 1;
                Err(wait)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_lets_a_burst_through_then_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3.0, t0);
        for _ in 0..3 {
            assert_eq!(b.take(t0, 2.0, 3.0), Ok(()));
        }
        assert_eq!(b.take(t0, 2.0, 3.0), Err(1), "half a second, said as 1");
        let later = t0 + Duration::from_millis(500);
        assert_eq!(b.take(later, 2.0, 3.0), Ok(()));
        assert_eq!(b.take(later, 2.0, 3.0), Err(1));
        // Never above the burst, however long it rests.
        let much_later = later + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(b.take(much_later, 2.0, 3.0), Ok(()));
        }
        assert!(b.take(much_later, 2.0, 3.0).is_err());
        // A slow rate: the wait is the whole seconds to the next token.
        let mut slow = Bucket::full(1.0, t0);
        assert_eq!(slow.take(t0, 0.1, 1.0), Ok(()));
        assert_eq!(slow.take(t0, 0.1, 1.0), Err(10));
    }

    #[test]
    fn buckets_count_the_refusals_between_two_successes() {
        let b = Buckets::default();
        assert_eq!(b.take_counting("a", 0.001, 1.0), Ok(0));
        assert!(b.take_counting("a", 0.001, 1.0).is_err());
        assert!(b.take_counting("a", 0.001, 1.0).is_err());
        assert_eq!(
            b.take_counting("b", 0.001, 1.0),
            Ok(0),
            "one bucket per key"
        );
    }
}
