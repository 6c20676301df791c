//! A token bucket: `per_second` events on average, in bursts of at most a fifth of a second's
//! worth, so writes stay spread over time instead of arriving in once-a-second clumps.

use std::time::{Duration, Instant};

pub(crate) struct TokenBucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(per_second: f64, now: Instant) -> TokenBucket {
        let capacity = (per_second / 5.0).max(1.0);
        TokenBucket {
            per_second,
            capacity,
            tokens: 1.0,
            last: now,
        }
    }

    /// Takes a token at `now`, or says how long to wait for one.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.per_second,
            ))
        }
    }

    /// Waits for a token. Dropping the future mid-wait takes nothing.
    pub(crate) async fn acquire(&mut self) {
        while let Err(wait) = self.take(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_rate_times_time_plus_one_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(50.0, start);
        // Simulated clock: one attempt every millisecond for two seconds.
        let taken = (0..2000)
            .filter(|ms| bucket.take(start + Duration::from_millis(*ms)).is_ok())
            .count();
        // 1 initial token + 50/s over 1.999 s, give or take the rounding of the last token.
        assert!((99..=101).contains(&taken), "{taken}");
    }

    #[test]
    fn an_empty_bucket_says_how_long_to_wait() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, start);
        assert!(bucket.take(start).is_ok());
        let wait = bucket.take(start).err().unwrap_or_default();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert!(bucket.take(start + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn idle_time_buys_at_most_a_fifth_of_a_second_of_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100.0, start);
        let later = start + Duration::from_secs(60);
        let burst = (0..1000).take_while(|_| bucket.take(later).is_ok()).count();
        assert_eq!(burst, 20);
    }
}
