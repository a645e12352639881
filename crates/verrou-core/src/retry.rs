//! How long and how often `acquire` keeps trying.

use std::time::Duration;

use crate::duration::IntoDuration;
use crate::{Error, Result};

/// Default pause between two attempts, as in the Node.js library.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(250);

/// Retry options for [`Lock::acquire_with`](crate::Lock::acquire_with) and
/// [`LockFactory::with_retry`](crate::LockFactory::with_retry).
///
/// Options left unset keep the factory's value (or the defaults: unlimited attempts, 250 ms
/// delay, no timeout). Durations take every form of [`IntoDuration`]; a bad one is reported
/// as [`Error::InvalidDuration`] by the call that uses the options.
///
/// ```
/// use verrou_core::Retry;
///
/// let patient = Retry::new().timeout("5s").delay("50ms");
/// let three_tries = Retry::new().attempts(3);
/// # let _ = (patient, three_tries);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Retry {
    attempts: Option<u32>,
    delay: Option<Duration>,
    timeout: Option<Duration>,
    invalid: Option<(String, String)>,
}

impl Retry {
    /// Options that change nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives up after this many attempts in all (at least 1).
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = Some(attempts);
        self
    }

    /// Waits this long between attempts (default 250 ms).
    pub fn delay(mut self, delay: impl IntoDuration) -> Self {
        self.delay = self.remember(delay.into_duration());
        self
    }

    /// Gives up once this much time has passed since `acquire` started: a deadline, not a
    /// number of delays.
    pub fn timeout(mut self, timeout: impl IntoDuration) -> Self {
        self.timeout = self.remember(timeout.into_duration());
        self
    }

    fn remember(&mut self, duration: Result<Duration>) -> Option<Duration> {
        match duration {
            Ok(duration) => Some(duration),
            Err(Error::InvalidDuration { input, reason }) => {
                self.invalid.get_or_insert((input, reason));
                None
            }
            Err(other) => {
                self.invalid
                    .get_or_insert((String::new(), other.to_string()));
                None
            }
        }
    }
}

/// Resolved retry settings: what `acquire` actually does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    pub(crate) attempts: Option<u32>,
    pub(crate) delay: Duration,
    pub(crate) timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: None,
            delay: DEFAULT_RETRY_DELAY,
            timeout: None,
        }
    }
}

impl RetryPolicy {
    /// This policy with the options that `retry` sets replaced.
    pub(crate) fn overridden_by(&self, retry: &Retry) -> Result<Self> {
        if let Some((input, reason)) = &retry.invalid {
            return Err(Error::InvalidDuration {
                input: input.clone(),
                reason: reason.clone(),
            });
        }
        if retry.attempts == Some(0) {
            return Err(Error::InvalidArgument(
                "retry attempts must be at least 1".into(),
            ));
        }
        Ok(Self {
            attempts: retry.attempts.or(self.attempts),
            delay: retry.delay.unwrap_or(self.delay),
            timeout: retry.timeout.or(self.timeout),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_reference() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.attempts, None);
        assert_eq!(policy.delay, Duration::from_millis(250));
        assert_eq!(policy.timeout, None);
    }

    #[test]
    fn per_call_options_override_only_what_they_set() {
        let factory = RetryPolicy::default()
            .overridden_by(&Retry::new().attempts(5).timeout("1s"))
            .unwrap();
        let call = factory.overridden_by(&Retry::new().delay(10)).unwrap();
        assert_eq!(call.attempts, Some(5));
        assert_eq!(call.delay, Duration::from_millis(10));
        assert_eq!(call.timeout, Some(Duration::from_secs(1)));
    }

    #[test]
    fn bad_durations_and_zero_attempts_are_errors() {
        let policy = RetryPolicy::default();
        assert!(matches!(
            policy.overridden_by(&Retry::new().timeout("10 parsecs")),
            Err(Error::InvalidDuration { input, .. }) if input == "10 parsecs"
        ));
        assert!(matches!(
            policy.overridden_by(&Retry::new().delay(0)),
            Err(Error::InvalidDuration { .. })
        ));
        assert!(matches!(
            policy.overridden_by(&Retry::new().attempts(0)),
            Err(Error::InvalidArgument(_))
        ));
    }
}
