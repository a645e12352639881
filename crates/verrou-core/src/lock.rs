//! [`Lock`]: one named lock, held by one owner.

use std::fmt;
use std::future::Future;
use std::panic::{resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tracing::Instrument;

use crate::clock;
use crate::duration::{IntoDuration, Ttl};
use crate::guard::LockGuard;
use crate::loss::LossSignal;
use crate::retry::{Retry, RetryPolicy};
use crate::serialized::SerializedLock;
use crate::store::{Acquisition, LockStore, OwnerCheck};
use crate::take::{self, Takes, Verdict};
use crate::telemetry::{Operation, Outcome, Telemetry};
use crate::waiting::{WaitRoom, HANDOVER_GRACE};
use crate::{Error, Result};

/// A named lock with an owner token, a TTL and a handle to its store.
///
/// Made by [`LockFactory::create_lock`](crate::LockFactory::create_lock) or restored from
/// another process with [`LockFactory::restore_lock`](crate::LockFactory::restore_lock).
/// Cloning is cheap and the clones are the same lock (same owner, shared expiry).
///
/// A lock is not reentrant: acquiring it again while it is held waits like any other owner.
///
/// ```
/// # async fn example(factory: verrou_core::LockFactory) -> verrou_core::Result<()> {
/// let lock = factory.create_lock("invoice:42")?;
/// if lock.acquire().await? {
///     // ... charge the card, once ...
///     lock.release().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Lock {
    inner: Arc<LockInner>,
}

pub(crate) struct LockInner {
    pub(crate) key: String,
    pub(crate) owner: String,
    pub(crate) ttl: Ttl,
    retry: RetryPolicy,
    pub(crate) store: Arc<dyn LockStore>,
    pub(crate) room: Arc<WaitRoom>,
    pub(crate) telemetry: Telemetry,
    /// What this lock's takes may have left on the store (see [`crate::take`]).
    pub(crate) takes: Takes,
    state: Mutex<Holding>,
}

/// What a factory gives each of its locks: the store, the retry policy, the waiting room.
#[derive(Clone)]
pub(crate) struct LockContext {
    pub(crate) store: Arc<dyn LockStore>,
    pub(crate) retry: RetryPolicy,
    pub(crate) room: Arc<WaitRoom>,
    pub(crate) telemetry: Telemetry,
}

/// What this process knows about its hold on the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holding {
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
struct Expiry {
    /// On the monotonic clock.
    at: Instant,
    /// The same moment on the wall clock, in epoch milliseconds, as the serialized form
    /// carries it: worked out at the first `serialize` (or taken as restored) and kept, so
    /// that serializing again gives the same value.
    epoch_millis: Option<u64>,
}

impl Holding {
    /// A hold that started (was requested) at `requested_at` and lasts `ttl`; `None` if it
    /// has already run out, or runs out further ahead than the clock can tell.
    fn starting(
        requested_at: Instant,
        ttl: Option<Duration>,
        fencing_token: Option<u64>,
    ) -> Option<Self> {
        let expiry = match ttl {
            None => None,
            Some(ttl) => {
                let at = clock::after(requested_at, ttl)?;
                if at <= Instant::now() {
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
    pub(crate) fn new(key: String, owner: String, ttl: Ttl, context: &LockContext) -> Self {
        Self {
            inner: Arc::new(LockInner {
                key,
                owner,
                ttl,
                retry: context.retry,
                store: Arc::clone(&context.store),
                room: Arc::clone(&context.room),
                telemetry: context.telemetry.clone(),
                takes: Takes::default(),
                state: Mutex::new(Holding::NotHeld),
            }),
        }
    }

    /// Builds a lock from its serialized form, taking over the expiry it carries.
    ///
    /// A lock with a TTL is held when it carries an expiration time; a lock without TTL
    /// (whose expiration time is always `null`) is held when it carries a fencing token.
    pub(crate) fn restored(serialized: SerializedLock, context: &LockContext) -> Result<Self> {
        crate::key::validate(&serialized.key, context.store.as_ref())?;
        let invalid = |reason: &str| Error::InvalidSerializedLock {
            reason: reason.to_owned(),
        };
        if serialized.owner.is_empty() {
            return Err(invalid("the owner is empty"));
        }
        let ttl =
            match serialized.ttl {
                Some(millis) => Ttl::After(millis.into_duration().map_err(|error| {
                    invalid(&format!("its ttl is not a usable duration: {error}"))
                })?),
                None => Ttl::Never,
            };
        let fencing_token = serialized.fencing_token;
        let holding = match (ttl, serialized.expiration_time) {
            (Ttl::After(_), Some(epoch_millis)) => Holding::Held {
                since: Instant::now(),
                expiry: Some(Expiry {
                    at: clock::instant_at_epoch_millis(epoch_millis).ok_or_else(|| {
                        invalid("its expirationTime is more than 3650 days ahead (verrou::MAX_DURATION)")
                    })?,
                    epoch_millis: Some(epoch_millis),
                }),
                fencing_token,
            },
            (Ttl::Never, None) if fencing_token.is_some() => Holding::Held {
                since: Instant::now(),
                expiry: None,
                fencing_token,
            },
            (Ttl::Never, Some(_)) => {
                return Err(invalid(
                    "it has an expirationTime but no ttl: a lock without TTL never expires",
                ))
            }
            _ => Holding::NotHeld,
        };
        let lock = Self::new(serialized.key, serialized.owner, ttl, context);
        lock.set_holding(holding);
        Ok(lock)
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The owner token (a secret: whoever has it can release the lock). Same as the
    /// reference's `getOwner()`.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The lock's TTL.
    pub fn ttl(&self) -> Ttl {
        self.inner.ttl
    }

    /// Acquires the lock, waiting and retrying by the factory's retry policy.
    ///
    /// `Ok(true)` once acquired, `Ok(false)` when the policy gives up (attempts or timeout
    /// exhausted); `Err` only for store failures.
    pub async fn acquire(&self) -> Result<bool> {
        self.observed_acquire(self.acquire_by(self.inner.retry))
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
        let policy = self.inner.retry.overridden_by(&retry)?;
        self.observed_acquire(self.acquire_by(policy)).await
    }

    /// Runs `acquire` in a `verrou.acquire` span, counted in the metrics.
    async fn observed_acquire(&self, acquire: impl Future<Output = Result<bool>>) -> Result<bool> {
        let inner = &self.inner;
        let span = tracing::debug_span!(
            "verrou.acquire",
            key = %inner.key,
            store = inner.telemetry.store(),
            outcome = tracing::field::Empty,
        );
        let waiting = inner.telemetry.waiting();
        let acquired = acquire.instrument(span.clone()).await;
        let outcome = Outcome::of(&acquired);
        span.record("outcome", tracing::field::debug(outcome));
        waiting.ended(outcome);
        acquired
    }

    /// Tries to acquire the lock once, without waiting: `Ok(false)` if someone holds it.
    pub async fn acquire_immediately(&self) -> Result<bool> {
        self.observed_acquire(async {
            let acquired = self.try_acquire().await?;
            if acquired {
                tracing::debug!(key = %self.inner.key, wait = ?Duration::ZERO, "lock acquired");
            }
            Ok(acquired)
        })
        .await
    }

    /// Asks the store until it grants the lock or the policy gives up. Waiters of this
    /// factory queue per key (see [`WaitRoom`]): only the front one asks the store, woken by
    /// a local release, by the store's release notification, or by the retry delay.
    ///
    /// Attempts are scheduled one retry delay apart; each is a store call, or a turn spent
    /// behind another waiter of this factory (who asked in its place). A wake-up in between
    /// (a release heard) asks the store at once, as a bonus that does not count: a
    /// notification that was not a release never shortens the policy.
    async fn acquire_by(&self, policy: RetryPolicy) -> Result<bool> {
        let inner = &self.inner;
        let started = Instant::now();
        // Durations are at most MAX_DURATION, so a deadline always exists; if the clock
        // could not count that far, there is no deadline to keep.
        let deadline = policy
            .timeout
            .and_then(|timeout| clock::after(started, timeout));
        let ticket = inner.room.join(&inner.key);
        let mut front = ticket.try_front();
        let queue = ticket.front();
        tokio::pin!(queue);
        // Just released to waiters elsewhere: leave it to them rather than overtake.
        let mut yielding = inner.room.recently_handed_over(&inner.key);
        let mut ask = !ticket.held_here() && !yielding;
        // When the next attempt that counts is due: one retry delay after the last.
        let mut due = started;
        let mut attempts_made = 0u32;
        loop {
            let counts = Instant::now() >= due;
            if front.is_some() && ask && self.try_acquire().await? {
                tracing::debug!(key = %inner.key, wait = ?started.elapsed(), attempts = attempts_made + 1, "lock acquired");
                return Ok(true);
            }
            if counts {
                // A scheduled attempt: a store call, or a turn spent behind a waiter of
                // this factory who asked in its place.
                attempts_made += 1;
                due = clock::after(Instant::now(), policy.delay).unwrap_or(due);
            }
            let out_of_attempts = policy.attempts.is_some_and(|max| attempts_made >= max);
            let time_left =
                deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            if out_of_attempts || time_left == Some(Duration::ZERO) {
                tracing::debug!(key = %inner.key, wait = ?started.elapsed(), attempts = attempts_made, "gave up acquiring lock");
                return Ok(false);
            }
            let until_due = due.saturating_duration_since(Instant::now());
            let mut pause = time_left.map_or(until_due, |left| left.min(until_due));
            if std::mem::take(&mut yielding) {
                // Wait for the woken waiter's release, but check back soon in case it did
                // not take the key after all.
                pause = pause.min(HANDOVER_GRACE);
            }
            if front.is_some() {
                tokio::select! {
                    () = inner.store.wait_for_release(&inner.key, pause) => {}
                    () = ticket.released() => {}
                }
                // Woken before the attempt is due while a lock of this factory holds the
                // key (a late or doubled notification): asking would be in vain.
                ask = Instant::now() >= due || !ticket.held_here();
            } else {
                tokio::select! {
                    permit = &mut queue => {
                        front = Some(permit);
                        ask = !ticket.held_here();
                    }
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }

    /// Asks the store once. A grant whose local validity, counted from before the request,
    /// has already run out when it arrives is no grant: it is given back, and this is
    /// `Ok(false)` like a busy key.
    async fn try_acquire(&self) -> Result<bool> {
        let inner = &self.inner;
        let verdict = take::take(inner, |answer, sent| self.judge(answer, sent)).await?;
        if verdict.is_none() {
            inner.telemetry.take_refused();
        }
        if verdict != Some(Verdict::Adopted) {
            return Ok(false);
        }
        inner.room.acquired(&inner.key);
        tracing::trace!(key = %inner.key, owner = %inner.owner, "owner took lock");
        Ok(true)
    }

    /// What this lock makes of a grant whose take left at `sent`: it holds it from then on,
    /// unless its TTL has already run out (unusable); a renewal of a hold it has and that
    /// has not expired moves that hold's expiry instead (the lock is not reentrant).
    fn judge(&self, answer: &Acquisition, sent: Instant) -> Verdict {
        let (Acquisition::Granted(grant) | Acquisition::Renewed(grant)) = answer else {
            return Verdict::Unusable;
        };
        let ttl = self.inner.ttl.as_duration();
        let mut state = self.state();
        if let (Acquisition::Renewed(_), Holding::Held { expiry, .. }) = (answer, &mut *state) {
            let now = Instant::now();
            match expiry {
                None => return Verdict::AlreadyHeld,
                Some(expiry) if expiry.at > now => {
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
        match Holding::starting(sent, ttl, grant.fencing_token) {
            Some(holding) => {
                *state = holding;
                Verdict::Adopted
            }
            None => {
                tracing::debug!(key = %self.inner.key, round_trip = ?sent.elapsed(), "grant arrived after its TTL ran out; giving it back");
                Verdict::Unusable
            }
        }
    }

    /// Releases the lock. Only the owner can: anyone else, or a holder whose lock expired,
    /// gets [`Error::NotOwned`] and the lock is left as it is.
    pub async fn release(&self) -> Result<()> {
        let inner = &self.inner;
        let outcome = inner
            .telemetry
            .store_call(
                Operation::Release,
                &inner.key,
                inner.store.delete(&inner.key, &inner.owner),
            )
            .await?;
        let held = std::mem::replace(&mut *self.state(), Holding::NotHeld);
        if let Holding::Held { since, .. } = held {
            let released = outcome != OwnerCheck::NotOwner;
            inner.telemetry.hold_ended(released, since.elapsed());
        }
        inner.room.released(&inner.key);
        match outcome {
            OwnerCheck::Applied | OwnerCheck::AppliedWithWaiters => {
                if outcome == OwnerCheck::AppliedWithWaiters {
                    inner.room.handed_over(&inner.key);
                }
                tracing::debug!(key = %inner.key, "lock released");
                Ok(())
            }
            OwnerCheck::NotOwner => Err(self.not_owned()),
        }
    }

    /// Releases the lock whoever holds it.
    pub async fn force_release(&self) -> Result<()> {
        let inner = &self.inner;
        inner
            .telemetry
            .store_call(
                Operation::ForceRelease,
                &inner.key,
                inner.store.force_delete(&inner.key),
            )
            .await?;
        self.set_holding(Holding::NotHeld);
        self.inner.room.released(&self.inner.key);
        tracing::debug!(key = %self.inner.key, "lock force-released");
        Ok(())
    }

    /// Whether anyone (this owner or another) holds the lock right now, by the store.
    pub async fn is_locked(&self) -> Result<bool> {
        let inner = &self.inner;
        inner
            .telemetry
            .store_call(Operation::Check, &inner.key, inner.store.exists(&inner.key))
            .await
    }

    /// Pushes the expiry to now + the lock's TTL. A lock created without a TTL cannot be
    /// extended this way ([`Error::InvalidArgument`]); see [`extend_by`](Self::extend_by).
    /// A lock that expired or is not held gets [`Error::NotOwned`].
    pub async fn extend(&self) -> Result<()> {
        match self.inner.ttl {
            Ttl::After(ttl) => self.extend_for(ttl).await,
            Ttl::Never => Err(Error::InvalidArgument(format!(
                "lock `{}` has no TTL: give extend_by a duration",
                self.inner.key
            ))),
        }
    }

    /// Pushes the expiry to now + `ttl` (the lock's own TTL stays what it was for the next
    /// acquisition).
    ///
    /// ```
    /// # async fn example(lock: verrou_core::Lock) -> verrou_core::Result<()> {
    /// lock.extend_by("20s").await?;
    /// # Ok(()) }
    /// ```
    pub async fn extend_by(&self, ttl: impl IntoDuration) -> Result<()> {
        self.extend_for(ttl.into_duration()?).await
    }

    async fn extend_for(&self, ttl: Duration) -> Result<()> {
        let inner = &self.inner;
        let requested_at = Instant::now();
        let extended = inner
            .telemetry
            .store_call(
                Operation::Extend,
                &inner.key,
                inner.store.extend(&inner.key, &inner.owner, ttl),
            )
            .await;
        let applied = extended
            .as_ref()
            .ok()
            .map(|outcome| *outcome != OwnerCheck::NotOwner);
        inner.telemetry.renewal(applied);
        match extended? {
            OwnerCheck::Applied | OwnerCheck::AppliedWithWaiters => {
                // An extension that arrives after its own TTL ran out leaves nothing to hold.
                let mut state = self.state();
                let (since, fencing_token) = match *state {
                    Holding::Held {
                        since,
                        fencing_token,
                        ..
                    } => (since, fencing_token),
                    Holding::NotHeld => (requested_at, None),
                };
                *state = match Holding::starting(requested_at, Some(ttl), fencing_token) {
                    Some(Holding::Held { expiry, .. }) => Holding::Held {
                        since,
                        expiry,
                        fencing_token,
                    },
                    _ => Holding::NotHeld,
                };
                drop(state);
                tracing::debug!(key = %inner.key, ttl = ?ttl, "lock extended");
                Ok(())
            }
            OwnerCheck::NotOwner => {
                self.set_holding(Holding::NotHeld);
                inner.room.released(&inner.key);
                Err(self.not_owned())
            }
        }
    }

    /// Whether this process's hold has run past its TTL, by the local monotonic clock started
    /// before the store request (so it errs on the side of "expired"). No store call. A lock
    /// without TTL, or not held, is not expired.
    pub fn is_expired(&self) -> bool {
        self.remaining_time() == Some(Duration::ZERO)
    }

    /// How long until the hold expires (zero once expired), by the local monotonic clock. No
    /// store call. `None` when the lock is not held or has no TTL.
    pub fn remaining_time(&self) -> Option<Duration> {
        match self.holding() {
            Holding::Held {
                expiry: Some(expiry),
                ..
            } => Some(expiry.at.saturating_duration_since(Instant::now())),
            _ => None,
        }
    }

    /// The portable form of this lock, for [`LockFactory::restore_lock`](crate::LockFactory::restore_lock)
    /// in another process. It contains the owner token: treat it as a secret.
    pub fn serialize(&self) -> SerializedLock {
        let (expiration_time, fencing_token) = {
            let mut state = self.state();
            match &mut *state {
                Holding::Held {
                    expiry,
                    fencing_token,
                    ..
                } => {
                    let expiration_time = expiry.as_mut().map(|expiry| {
                        *expiry
                            .epoch_millis
                            .get_or_insert_with(|| clock::epoch_millis_at(expiry.at))
                    });
                    (expiration_time, *fencing_token)
                }
                Holding::NotHeld => (None, None),
            }
        };
        SerializedLock {
            key: self.inner.key.clone(),
            owner: self.inner.owner.clone(),
            ttl: self.inner.ttl.as_duration().map(clock::millis_ceil),
            expiration_time,
            fencing_token,
        }
    }

    /// The fencing token of the current hold: strictly greater than any token issued before
    /// for this key by this store. `None` when not held, or when the store issues none.
    pub fn fencing_token(&self) -> Option<u64> {
        match self.holding() {
            Holding::Held { fencing_token, .. } => fencing_token,
            Holding::NotHeld => None,
        }
    }

    /// Acquires the lock (retrying by the factory's policy), runs `work`, and releases the
    /// lock, whether `work` returns or panics (the panic resumes after the release).
    ///
    /// `Ok(None)` if the lock could not be acquired (`work` did not run), `Ok(Some(value))`
    /// with what `work` returned. If the lock was lost before `work` finished (it expired and
    /// possibly went to someone else) the section was not exclusive: that is
    /// [`Error::LockLost`]. Dropping the returned future after the lock was acquired releases
    /// the lock in the background (on the current Tokio runtime).
    ///
    /// ```
    /// # async fn example(lock: verrou_core::Lock) -> verrou_core::Result<()> {
    /// match lock.run(|| async { 42 }).await? {
    ///     Some(answer) => assert_eq!(answer, 42),
    ///     None => println!("someone else is on it"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn run<F, Fut, T>(&self, work: F) -> Result<Option<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        if !self.acquire().await? {
            return Ok(None);
        }
        self.run_held(work).await.map(Some)
    }

    /// Like [`run`](Self::run), with some retry options overridden for this call.
    pub async fn run_with<F, Fut, T>(&self, retry: Retry, work: F) -> Result<Option<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        if !self.acquire_with(retry).await? {
            return Ok(None);
        }
        self.run_held(work).await.map(Some)
    }

    /// Like [`run`](Self::run), but tries to acquire only once: `Ok(None)` at once if the
    /// lock is held.
    pub async fn run_immediately<F, Fut, T>(&self, work: F) -> Result<Option<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        if !self.acquire_immediately().await? {
            return Ok(None);
        }
        self.run_held(work).await.map(Some)
    }

    /// Like [`run`](Self::run), renewing the lock while the work runs (every third of its
    /// TTL), so work longer than the TTL keeps the lock. The work gets the [`LossSignal`]
    /// that fires if the lock is lost anyway (renewal refused, or the store unreachable until
    /// the lock's time ran out); `run_auto_extend` then returns [`Error::LockLost`].
    ///
    /// ```
    /// # async fn example(lock: verrou_core::Lock) -> verrou_core::Result<()> {
    /// let rows = lock
    ///     .run_auto_extend(|loss| async move {
    ///         let mut rows = 0;
    ///         while rows < 1_000 && !loss.is_lost() {
    ///             rows += 1; // ... one write, fenced ...
    ///         }
    ///         rows
    ///     })
    ///     .await?;
    /// # let _ = rows; Ok(()) }
    /// ```
    pub async fn run_auto_extend<F, Fut, T>(&self, work: F) -> Result<Option<T>>
    where
        F: FnOnce(LossSignal) -> Fut,
        Fut: Future<Output = T>,
    {
        let Some(mut guard) = self.acquire_guard().await? else {
            return Ok(None);
        };
        guard.auto_extend();
        let loss = guard.loss();
        guard_run(guard, || work(loss)).await.map(Some)
    }

    /// Acquires the lock (retrying by the factory's policy) and returns a [`LockGuard`] that
    /// releases it when dropped, or `None` when the policy gave up.
    pub async fn acquire_guard(&self) -> Result<Option<LockGuard>> {
        Ok(self.acquire().await?.then(|| LockGuard::new(self.clone())))
    }

    /// Like [`acquire_guard`](Self::acquire_guard), with some retry options overridden.
    pub async fn acquire_guard_with(&self, retry: Retry) -> Result<Option<LockGuard>> {
        Ok(self
            .acquire_with(retry)
            .await?
            .then(|| LockGuard::new(self.clone())))
    }

    /// Like [`acquire_guard`](Self::acquire_guard), trying only once.
    pub async fn acquire_guard_immediately(&self) -> Result<Option<LockGuard>> {
        Ok(self
            .acquire_immediately()
            .await?
            .then(|| LockGuard::new(self.clone())))
    }

    async fn run_held<F, Fut, T>(&self, work: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        guard_run(LockGuard::new(self.clone()), work).await
    }

    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    fn not_owned(&self) -> Error {
        Error::NotOwned {
            key: self.inner.key.clone(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Holding> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn holding(&self) -> Holding {
        *self.state()
    }

    fn set_holding(&self, holding: Holding) {
        *self.state() = holding;
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Lock")
            .field("key", &self.inner.key)
            .field("owner", &"<redacted>")
            .field("ttl", &self.inner.ttl)
            .field("remaining_time", &self.remaining_time())
            .finish_non_exhaustive()
    }
}

/// Runs `work` while `guard` holds the lock, then releases it, whether the work returns or
/// panics (the panic resumes after the release). A lock lost on the way is
/// [`Error::LockLost`]. If this future is dropped, the guard releases in the background.
async fn guard_run<F, Fut, T>(guard: LockGuard, work: F) -> Result<T>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    let outcome = AssertUnwindSafe(async move { work().await })
        .catch_unwind()
        .await;
    let lost_during_work = guard.is_lost();
    let key = guard.lock().key().to_owned();
    let released = guard.release().await;
    let value = match outcome {
        Ok(value) => value,
        Err(panic) => resume_unwind(panic),
    };
    match released {
        Ok(()) if !lost_during_work => Ok(value),
        Ok(()) | Err(Error::NotOwned { .. }) => Err(Error::LockLost { key }),
        Err(other) => Err(other),
    }
}
