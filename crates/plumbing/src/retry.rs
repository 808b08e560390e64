//! Waiting before trying again: [`RetryPolicy`], bounded retries of one call (the LLM and Crisp
//! clients), and [`Backoff`], the delays of work retried until it succeeds (the stream's
//! reconnects, a reply kept recorded, a store that is down).

use backon::{ExponentialBuilder, Retryable};
use std::future::Future;
use std::time::Duration;

/// An error that knows whether trying again can help, and how long the server asked us to wait.
pub trait RetryableError: std::fmt::Display {
    fn is_transient(&self) -> bool;
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// Delays that double from `min` up to `max`, back to `min` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max: max.max(min), next: min }
    }

    /// The delay before the next attempt, and doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let current = self.next;
        self.next = (self.next * 2).min(self.max);
        current
    }

    /// The longest delay (a configuration error: never retry quickly).
    pub fn longest(&mut self) -> Duration {
        self.next = self.max;
        self.next_delay()
    }

    /// It worked: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// `base` plus 0-10 %, so that many clients do not retry in step.
    pub fn with_jitter(base: Duration) -> Duration {
        use rand::Rng;
        base + base.mul_f64(rand::rng().random_range(0.0..=0.10))
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Sleeping stops once this much was spent waiting.
    pub max_total_delay: Duration,
    /// A server's `Retry-After` is honoured up to this.
    pub retry_after_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_total_delay: Duration::from_secs(20),
            retry_after_cap: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// No retry at all (for tests and for calls that must not repeat).
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// Runs `op` until it succeeds, fails for good, or the policy is spent.
    pub async fn run<T, E, F, Fut>(&self, what: &str, op: F) -> Result<T, E>
    where
        E: RetryableError,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1))
            .with_total_delay(Some(self.max_total_delay))
            .with_jitter();
        let cap = self.retry_after_cap;
        op.retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &E| e.is_transient())
            .adjust(move |e: &E, planned| match (e.retry_after(), planned) {
                (Some(asked), Some(_)) => Some(asked.min(cap)),
                (_, planned) => planned,
            })
            .notify(|e: &E, wait| tracing::warn!(error = %e, ?wait, "{what} failed, retrying"))
            .await
    }
}

/// Parses `Retry-After` given in seconds (the HTTP-date form is treated as absent).
pub fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let seq: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(seq, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        assert_eq!(b.longest(), Duration::from_secs(30));
    }

    #[test]
    fn jitter_adds_at_most_ten_percent() {
        for _ in 0..1000 {
            let d = Backoff::with_jitter(Duration::from_secs(10));
            assert!(d >= Duration::from_secs(10) && d <= Duration::from_secs(11));
        }
    }
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Flaky(bool, Option<Duration>);
    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "flaky")
        }
    }
    impl RetryableError for Flaky {
        fn is_transient(&self) -> bool {
            self.0
        }
        fn retry_after(&self) -> Option<Duration> {
            self.1
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stops_after_max_attempts() {
        let calls = AtomicUsize::new(0);
        let result: Result<(), Flaky> = RetryPolicy::default()
            .run("op", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Flaky(true, None))
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicUsize::new(0);
        let _: Result<(), Flaky> = RetryPolicy::default()
            .run("op", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Flaky(false, None))
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_capped() {
        let start = tokio::time::Instant::now();
        let calls = AtomicUsize::new(0);
        let result = RetryPolicy::default()
            .run("op", || async {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(Flaky(true, Some(Duration::from_secs(3600))))
                } else {
                    Ok(())
                }
            })
            .await;
        assert!(result.is_ok());
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(10) && waited < Duration::from_secs(11), "{waited:?}");
    }
}
