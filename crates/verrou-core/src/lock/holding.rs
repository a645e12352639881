//! What a lock knows of its hold: since when, until when (on the monotonic clock and, once
//! serialized, on the wall clock), with which fencing token; and what a grant makes of it.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use super::{Lock, LockInner};
use crate::clock;
use crate::store::Acquisition;
use crate::take::{Timing, Verdict};

/// What this process knows about its hold on the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holding {
    NotHeld,
    Held {
        /// When the hold began, as this process saw it (its take left, or it was restored).
        since: Instant,
        /// When the hold expires (`None`: never).
        expiry: Option<Expiry>,
        fencing_token: Option<u64>,
    },
}

/// When a hold expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expiry {
    /// On the monotonic clock.
    pub(super) at: Instant,
    /// The same moment on the wall clock, in epoch milliseconds, as the serialized form
    /// carries it: worked out at the first `serialize` (or taken as restored) and kept, so
    /// that serializing again gives the same value.
    pub(super) epoch_millis: Option<u64>,
}

impl Holding {
    /// A hold that started (was requested) at `requested_at` and lasts `ttl`; `None` if it
    /// has already run out at `now`, or runs out further ahead than the clock can tell.
    pub(super) fn starting(
        requested_at: Instant,
        ttl: Option<Duration>,
        fencing_token: Option<u64>,
        now: Instant,
    ) -> Option<Self> {
        let expiry = match ttl {
            None => None,
            Some(ttl) => {
                let at = clock::after(requested_at, ttl)?;
                if at <= now {
                    return None;
                }
                Some(Expiry {
                    at,
                    epoch_millis: None,
                })
            }
        };
        Some(Holding::Held {
            since: requested_at,
            expiry,
            fencing_token,
        })
    }
}

impl LockInner {
    /// Whether this lock holds its key and the hold has not expired, by its own knowledge.
    pub(crate) fn holds_unexpired(&self) -> bool {
        match *self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            Holding::Held { expiry, .. } => expiry.is_none_or(|expiry| expiry.at > Instant::now()),
            Holding::NotHeld => false,
        }
    }
}

impl Lock {
    /// What this lock makes of a grant whose take left at `timing.sent`: it holds it from
    /// then on, unless its TTL had already run out when it arrived (unusable); a renewal of a hold it has and that
    /// has not expired moves that hold's expiry instead (the lock is not reentrant).
    pub(super) fn judge(&self, answer: &Acquisition, timing: Timing) -> Verdict {
        let Timing { sent, arrived } = timing;
        let (Acquisition::Granted(grant) | Acquisition::Renewed(grant)) = answer else {
            return Verdict::Unusable;
        };
        let ttl = self.inner.ttl.as_duration();
        let mut state = self.state();
        if let (Acquisition::Renewed(_), Holding::Held { expiry, .. }) = (answer, &mut *state) {
            match expiry {
                None => return Verdict::AlreadyHeld,
                Some(expiry) if expiry.at > arrived => {
                    // The store started the TTL again, at or after `sent`.
                    if let Some(at) = ttl.and_then(|ttl| clock::after(sent, ttl)) {
                        if at > expiry.at {
                            *expiry = Expiry {
                                at,
                                epoch_millis: None,
                            };
                        }
                    }
                    return Verdict::AlreadyHeld;
                }
                Some(_) => {}
            }
        }
        match Holding::starting(sent, ttl, grant.fencing_token, arrived) {
            Some(holding) => {
                *state = holding;
                Verdict::Adopted
            }
            None => {
                tracing::debug!(key = %self.inner.key(), round_trip = ?arrived.saturating_duration_since(sent), "grant arrived after its TTL ran out; giving it back");
                Verdict::Unusable
            }
        }
    }
}
