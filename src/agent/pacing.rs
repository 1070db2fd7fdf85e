//! Client-side pacing: the server cuts off a node that sends faster than its message rate
//! (close 4003), so the agent spaces its messages out itself. A token bucket: `burst` messages
//! at once, then `per_second`.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Pacer {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    last: Instant,
}

impl Pacer {
    /// `per_second == 0`: no limit.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let capacity = f64::from(burst.max(1));
        Self { tokens: capacity, capacity, per_second: f64::from(per_second), last: Instant::now() }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_second).min(self.capacity);
        self.last = now;
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be there.
    pub fn next_token_at(&mut self) -> Instant {
        if self.per_second <= 0.0 {
            return Instant::now();
        }
        self.refill();
        let missing = (1.0 - self.tokens).max(0.0);
        self.last + Duration::from_secs_f64(missing / self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_then_the_rate() {
        let mut pacer = Pacer::new(10, 3);
        assert!((0..3).all(|_| pacer.try_take()));
        assert!(!pacer.try_take());
        let next = pacer.next_token_at();
        let wait = next - Instant::now();
        assert!(wait > Duration::from_millis(80) && wait <= Duration::from_millis(100), "{wait:?}");
        tokio::time::sleep_until(next).await;
        assert!(pacer.try_take());
        assert!(!pacer.try_take());
        let mut unlimited = Pacer::new(0, 1);
        assert!((0..1000).all(|_| unlimited.try_take()));
    }
}
