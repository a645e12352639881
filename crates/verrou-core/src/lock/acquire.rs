//! Acquiring: one take, or the wait loop around it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{Instrument, Span};

use super::{Lock, LockInner};
use crate::clock;
use crate::retry::{Retry, RetryPolicy};
use crate::take::{self, Verdict};
use crate::telemetry::{Outcome, Waiting};
use crate::waiting::{self, Ticket};
use crate::Result;

impl Lock {
    /// Acquires the lock, waiting and retrying by the factory's retry policy.
    ///
    /// `Ok(true)` once acquired, `Ok(false)` when the policy gives up (attempts or timeout
    /// exhausted); `Err` only for store failures.
    pub async fn acquire(&self) -> Result<bool> {
        self.observed_acquire(self.acquire_by(self.inner.retry()))
            .await
    }

    /// Like [`acquire`](Self::acquire), with some retry options overridden for this call.
    ///
    /// ```
    /// # async fn example(lock: verrou_core::Lock) -> verrou_core::Result<()> {
    /// use verrou_core::Retry;
    ///
    /// let acquired = lock.acquire_with(Retry::new().timeout("1s")).await?;
    /// # let _ = acquired; Ok(()) }
    /// ```
    pub async fn acquire_with(&self, retry: Retry) -> Result<bool> {
        let policy = self.inner.retry().overridden_by(&retry)?;
        self.observed_acquire(self.acquire_by(policy)).await
    }

    /// Runs `acquire` in a `verrou.acquire` span, counted in the metrics.
    async fn observed_acquire(&self, acquire: impl Future<Output = Result<bool>>) -> Result<bool> {
        let span = self.acquire_span();
        let waiting = self.inner.telemetry().waiting();
        let acquired = acquire.instrument(span.clone()).await;
        observed(&span, waiting, acquired)
    }

    /// A `verrou.acquire` span for this lock, its outcome to be recorded.
    fn acquire_span(&self) -> Span {
        let inner = &self.inner;
        tracing::debug_span!(
            "verrou.acquire",
            key = %inner.key(),
            store = inner.telemetry().store(),
            outcome = tracing::field::Empty,
        )
    }

    /// Tries to acquire the lock once, without waiting: `Ok(false)` if someone holds it.
    pub async fn acquire_immediately(&self) -> Result<bool> {
        if let Some(acquired) = self.acquire_now() {
            return acquired;
        }
        self.observed_acquire(async {
            let acquired = self.try_acquire(None).await?;
            self.acquired_at_once(acquired);
            Ok(acquired)
        })
        .await
    }

    /// [`acquire_immediately`](Self::acquire_immediately) all at once, with no future, when
    /// the store answers without I/O (see [`take::take_now`]); `None` when it cannot.
    fn acquire_now(&self) -> Option<Result<bool>> {
        let store = self.inner.immediate()?;
        let span = self.acquire_span();
        let waiting = self.inner.telemetry().waiting();
        let acquired = span.in_scope(|| {
            let verdict = take::take_now(&self.inner, store, |answer, timing| {
                self.judge(answer, timing)
            })?;
            let acquired = verdict.map(|verdict| self.took(verdict));
            self.acquired_at_once(acquired.as_ref().is_ok_and(|acquired| *acquired));
            Some(acquired)
        })?;
        Some(observed(&span, waiting, acquired))
    }

    /// Logs an `acquire_immediately` that got the lock.
    fn acquired_at_once(&self, acquired: bool) {
        if acquired {
            tracing::debug!(key = %self.inner.key(), wait = ?Duration::ZERO, "lock acquired");
        }
    }

    /// Asks the store until it grants the lock or the policy gives up (see
    /// [`crate::waiting`]): once the key is found busy, this lock has a place in the store's
    /// line for the key (if the store keeps lines) and asks again when the store hands the
    /// key over to it, or when an attempt is due.
    ///
    /// Attempts are scheduled one retry delay apart, and each renews the place. A wake-up in
    /// between asks the store at once, as a bonus that does not count: a notification that
    /// was not a release never shortens the policy.
    async fn acquire_by(&self, policy: RetryPolicy) -> Result<bool> {
        let inner = &self.inner;
        let started = Instant::now();
        // Durations are at most MAX_DURATION, so a deadline always exists; if the clock
        // could not count that far, there is no deadline to keep.
        let deadline = policy
            .timeout
            .and_then(|timeout| clock::after(started, timeout));
        let lease = waiting::lease_for(policy.delay);
        let waiters = inner.store_waiters();
        let mut seen = waiters.map_or(0, |waiters| waiters.generation(inner.key()));
        let mut ticket: Option<Ticket<'_>> = None;
        let mut in_line = InLine::new(inner);
        // When the next attempt that counts is due: one retry delay after the last.
        let mut due = started;
        let mut attempts_made = 0u32;
        loop {
            let counts = Instant::now() >= due;
            if let Some(ticket) = &mut ticket {
                ticket.asking();
            }
            in_line.entered();
            if self.try_acquire(Some(lease)).await? {
                in_line.left();
                tracing::debug!(key = %inner.key(), wait = ?started.elapsed(), attempts = attempts_made + 1, "lock acquired");
                return Ok(true);
            }
            if counts {
                attempts_made += 1;
                due = clock::after(Instant::now(), policy.delay).unwrap_or(due);
            }
            let out_of_attempts = policy.attempts.is_some_and(|max| attempts_made >= max);
            let time_left =
                deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            if out_of_attempts || time_left == Some(Duration::ZERO) {
                tracing::debug!(key = %inner.key(), wait = ?started.elapsed(), attempts = attempts_made, "gave up acquiring lock");
                return Ok(false);
            }
            let until_due = due.saturating_duration_since(Instant::now());
            let pause = time_left.map_or(until_due, |left| left.min(until_due));
            match waiters {
                Some(waiters) => {
                    let ticket = ticket.get_or_insert_with(|| {
                        waiters.join(inner.key(), inner.waiter(), std::mem::take(&mut seen))
                    });
                    ticket.wait(pause).await;
                }
                None => tokio::time::sleep(pause).await,
            }
        }
    }

    /// Asks the store once, in the key's line with a place of `lease` if given. A grant
    /// whose local validity, counted from before the request, has already run out when it
    /// arrives is no grant: it is given back, and this is `Ok(false)` like a busy key.
    async fn try_acquire(&self, lease: Option<Duration>) -> Result<bool> {
        let inner = &self.inner;
        let verdict = take::take(inner, lease, |answer, timing| self.judge(answer, timing)).await?;
        Ok(self.took(verdict))
    }

    /// Whether a take that got `verdict` (`None`: busy) acquired the lock.
    fn took(&self, verdict: Option<Verdict>) -> bool {
        let inner = &self.inner;
        if verdict.is_none() {
            inner.telemetry().take_refused();
        }
        if verdict != Some(Verdict::Adopted) {
            return false;
        }
        tracing::trace!(key = %inner.key(), owner = %inner.owner(), "owner took lock");
        true
    }
}

/// Records how an acquire in `span`, counted in `waiting`, ended, and passes its result on.
fn observed(span: &Span, waiting: Waiting<'_>, acquired: Result<bool>) -> Result<bool> {
    let outcome = Outcome::of(&acquired);
    span.record("outcome", tracing::field::debug(outcome));
    waiting.ended(outcome);
    acquired
}

/// Whether a waiting `acquire` may have a place in its key's line: if it stops waiting
/// without the lock (it gave up, failed, or was dropped), the place is left in the
/// background ([`take::leave_line_later`]), so that those behind it do not wait out its
/// lease.
struct InLine<'lock> {
    lock: &'lock Arc<LockInner>,
    maybe: bool,
}

impl<'lock> InLine<'lock> {
    fn new(lock: &'lock Arc<LockInner>) -> Self {
        Self { lock, maybe: false }
    }

    /// A take that may leave a place is about to be sent.
    fn entered(&mut self) {
        self.maybe = true;
    }

    /// The key was granted, which removed the place.
    fn left(&mut self) {
        self.maybe = false;
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        if self.maybe {
            take::leave_line_later(self.lock);
        }
    }
}
