//! Per-connection token bucket: `rate` tokens per second, holding at most one second's worth.

use std::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket: a new connection may burst one second's worth straight away.
    pub fn new(rate_per_second: u32, now: Instant) -> Self {
        TokenBucket {
            rate: f64::from(rate_per_second),
            tokens: f64::from(rate_per_second),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_full_bucket_allows_one_second_of_burst_then_refuses() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, t0);
        let allowed = (0..15).filter(|_| bucket.try_take(t0)).count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn tokens_refill_at_the_configured_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, t0);
        for _ in 0..10 {
            assert!(bucket.try_take(t0));
        }
        assert!(!bucket.try_take(t0));
        // 100 ms at 10/s refills exactly one token.
        let t1 = t0 + Duration::from_millis(100);
        assert!(bucket.try_take(t1));
        assert!(!bucket.try_take(t1));
        // A long pause refills no more than the burst.
        let t2 = t1 + Duration::from_secs(60);
        let allowed = (0..20).filter(|_| bucket.try_take(t2)).count();
        assert_eq!(allowed, 10);
    }
}
