//! Retry delays for clients of the control plane (the ADS stream, the CA service):
//! exponential backoff with decorrelated jitter, so a fleet of ztunnels and node agents
//! that lost the control plane at the same moment does not come back in lockstep.
//!
//! Each delay is drawn uniformly between the base and three times the previous delay, and
//! capped: it never drops below the base (no hot loop), never exceeds the cap, and grows
//! geometrically until the cap. [`Backoff::reset`] starts again from the base once a
//! connection proved healthy. Owns only the arithmetic; callers sleep.

use std::time::Duration;

/// A sequence of retry delays.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    previous: Duration,
    rng: u64,
}

impl Backoff {
    /// Delays from `base` up to `cap`, jittered with a seed that differs between processes.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self::with_seed(base, cap, random_seed())
    }

    /// Like [`Backoff::new`] with a fixed seed: the same seed gives the same delays.
    pub fn with_seed(base: Duration, cap: Duration, seed: u64) -> Self {
        let cap = cap.max(base);
        Self {
            base,
            cap,
            previous: base,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt: uniform in [base, 3 × previous], at most the cap.
    pub fn next_delay(&mut self) -> Duration {
        let low = self.base.as_nanos();
        let high = (self.previous.as_nanos() * 3).max(low);
        let span = high - low + 1;
        let drawn = low + u128::from(self.next_random()) % span;
        let delay = Duration::from_nanos(u64::try_from(drawn).unwrap_or(u64::MAX)).min(self.cap);
        self.previous = delay;
        delay
    }

    /// Starts again from the base (after an attempt that went well).
    pub fn reset(&mut self) {
        self.previous = self.base;
    }

    /// The shortest delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest delay.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// xorshift64*: plenty for spreading retries, no dependency.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A seed that differs between processes and calls: the standard library's randomly keyed
/// hasher, hashing nothing.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    #[test]
    fn every_delay_stays_between_the_base_and_the_cap() {
        for seed in 0..200 {
            let mut backoff = Backoff::with_seed(BASE, CAP, seed);
            let mut previous = BASE;
            for _ in 0..50 {
                let delay = backoff.next_delay();
                assert!(delay >= BASE && delay <= CAP, "seed {seed}: {delay:?}");
                assert!(
                    delay <= previous * 3,
                    "seed {seed}: {delay:?} after {previous:?}"
                );
                previous = delay;
            }
        }
    }

    #[test]
    fn delays_grow_from_the_first_retry_until_the_cap() {
        // Averaged over many sequences, each step is longer than the one before until the
        // cap, and a long run of failures spends most retries near the cap.
        let runs = 500u32;
        let steps = 12;
        let mut sums = vec![Duration::ZERO; steps];
        for seed in 0..runs {
            let mut backoff = Backoff::with_seed(BASE, CAP, u64::from(seed));
            for sum in &mut sums {
                *sum += backoff.next_delay();
            }
        }
        let means: Vec<Duration> = sums.iter().map(|s| *s / runs).collect();
        for pair in means[..6].windows(2) {
            assert!(pair[1] > pair[0], "means {means:?}");
        }
        assert!(
            means[0] < Duration::from_millis(250),
            "first retry {:?}",
            means[0]
        );
        assert!(
            means[steps - 1] > Duration::from_millis(2500),
            "means {means:?}"
        );
        // The cap itself is reached.
        let mut backoff = Backoff::with_seed(BASE, CAP, 7);
        assert!((0..100).any(|_| backoff.next_delay() == CAP));
    }

    #[test]
    fn reset_starts_again_from_the_base() {
        let mut backoff = Backoff::with_seed(BASE, CAP, 42);
        for _ in 0..30 {
            backoff.next_delay();
        }
        backoff.reset();
        let first = backoff.next_delay();
        assert!(first >= BASE && first <= BASE * 3, "{first:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_delays_and_others_differ() {
        let run = |seed| {
            let mut b = Backoff::with_seed(BASE, CAP, seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        let (mut a, mut b) = (Backoff::new(BASE, CAP), Backoff::new(BASE, CAP));
        let a: Vec<_> = (0..8).map(|_| a.next_delay()).collect();
        let b: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert_ne!(a, b, "two clients draw different delays");
    }

    #[test]
    fn a_cap_below_the_base_is_the_base() {
        let mut backoff = Backoff::with_seed(BASE, Duration::from_millis(10), 1);
        assert_eq!(backoff.next_delay(), BASE);
        assert_eq!(backoff.cap(), BASE);
    }
}
