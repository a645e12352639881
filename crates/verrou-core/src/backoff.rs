//! [`Backoff`]: the growing pause between tries of something that keeps failing.

use std::time::Duration;

/// A pause that doubles after each use, from a first pause up to a longest one: how the
/// library and its stores wait before trying again what failed (giving a grant back, a
/// reconnection, a subscription, a command Redis Cluster refused), so that a server that is
/// down is not hammered and one that is back is tried again soon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    longest: Duration,
    next: Duration,
}

impl Backoff {
    /// Pauses from `first`, doubling up to `longest` (never shorter than `first`).
    pub fn new(first: Duration, longest: Duration) -> Self {
        Self {
            first,
            longest: longest.max(first),
            next: first,
        }
    }

    /// The pause to make now; the next one is twice as long, up to the longest.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = pause.saturating_mul(2).min(self.longest);
        pause
    }

    /// Back to the first pause, after a success; whether any pause was made since the last
    /// reset (something had failed).
    pub fn reset(&mut self) -> bool {
        let had_failed = self.next != self.first;
        self.next = self.first;
        had_failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_longest_and_start_over_after_a_reset() {
        let millis = Duration::from_millis;
        let mut backoff = Backoff::new(millis(50), millis(300));
        let pauses: Vec<_> = (0..5).map(|_| backoff.next_pause()).collect();
        assert_eq!(
            pauses,
            [
                millis(50),
                millis(100),
                millis(200),
                millis(300),
                millis(300)
            ]
        );
        assert!(backoff.reset(), "pauses were made");
        assert!(!backoff.reset(), "none since");
        assert_eq!(backoff.next_pause(), millis(50));
    }

    #[test]
    fn extreme_pauses_saturate() {
        let mut backoff = Backoff::new(Duration::MAX, Duration::ZERO);
        assert_eq!(backoff.next_pause(), Duration::MAX);
        assert_eq!(backoff.next_pause(), Duration::MAX);
    }
}
