//! Log lines that outside input can trigger at will (bad frames, refused hooks, write errors)
//! are let through a few a minute, each saying how many were held back since the last.

use std::time::{Duration, Instant};

/// Lets through at most `burst` warnings per minute, then counts what it held back.
pub struct RateLimitedWarn {
    burst: u32,
    window_start: Instant,
    in_window: u32,
    suppressed: u64,
}

impl RateLimitedWarn {
    pub fn new(burst: u32) -> Self {
        Self { burst, window_start: Instant::now(), in_window: 0, suppressed: 0 }
    }

    /// Returns `Some(suppressed_before)` when this warning may be logged.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.window_start) >= Duration::from_secs(60) {
            self.window_start = now;
            self.in_window = 0;
        }
        if self.in_window < self.burst {
            self.in_window += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_rate_limited_per_minute() {
        let mut limit = RateLimitedWarn::new(2);
        let t = Instant::now();
        assert_eq!(limit.allow(t), Some(0));
        assert_eq!(limit.allow(t), Some(0));
        assert_eq!(limit.allow(t), None);
        assert_eq!(limit.allow(t), None);
        assert_eq!(limit.allow(t + Duration::from_secs(61)), Some(2));
    }
}
