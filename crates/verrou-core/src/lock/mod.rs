//! [`Lock`]: one named lock, held by one owner.
//!
//! The lock's surface is here; what it knows of its hold is in [`holding`], acquiring (the
//! wait loop) in [`acquire`], and running work under the lock in [`run`].

mod acquire;
mod holding;
mod key_and_owner;
mod kind;
mod run;

pub use key_and_owner::KeyAndOwner;

pub use kind::LockKind;

use holding::{Expiry, Holding};

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::clock;
use crate::duration::{IntoDuration, Ttl};
use crate::retry::RetryPolicy;
use crate::serialized::SerializedLock;
use crate::store::{LockStore, OwnerCheck, Share};
use crate::take::{self, Takes};
use crate::telemetry::{Operation, Telemetry};
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
    key_and_owner: KeyAndOwner,
    pub(crate) kind: LockKind,
    pub(crate) ttl: Ttl,
    /// The factory's store, retry policy and telemetry, shared by all its locks (one
    /// reference count to move per lock made and dropped).
    context: Arc<LockContext>,
    /// This lock's public id in its key's waiting line (see [`crate::waiting`]), made when
    /// it first waits.
    waiter: OnceLock<String>,
    /// What this lock's takes may have left on the store (see [`crate::take`]).
    pub(crate) takes: Takes,
    state: Mutex<Holding>,
}

/// What a factory gives each of its locks: the store, the retry policy, the telemetry.
#[derive(Clone)]
pub(crate) struct LockContext {
    pub(crate) store: Arc<dyn LockStore>,
    pub(crate) retry: RetryPolicy,
    pub(crate) telemetry: Telemetry,
}

impl Lock {
    pub(crate) fn new(
        key_and_owner: KeyAndOwner,
        kind: LockKind,
        ttl: Ttl,
        context: &Arc<LockContext>,
    ) -> Self {
        Self {
            inner: Arc::new(LockInner {
                key_and_owner,
                kind,
                ttl,
                context: Arc::clone(context),
                waiter: OnceLock::new(),
                takes: Takes::default(),
                state: Mutex::new(Holding::NotHeld),
            }),
        }
    }

    /// Builds a lock from its serialized form, taking over the expiry it carries.
    ///
    /// A lock with a TTL is held when it carries an expiration time; a lock without TTL
    /// (whose expiration time is always `null`) is held when it carries a fencing token.
    pub(crate) fn restored(serialized: SerializedLock, context: &Arc<LockContext>) -> Result<Self> {
        crate::key::validate(&serialized.key, context.store.as_ref())?;
        let invalid = |reason: &str| Error::InvalidSerializedLock {
            reason: reason.to_owned(),
        };
        let kind = serialized.lock_kind()?;
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
        let key_and_owner = KeyAndOwner::new(&serialized.key, &serialized.owner);
        let lock = Self::new(key_and_owner, kind, ttl, context);
        lock.set_holding(holding);
        Ok(lock)
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// The owner token (a secret: whoever has it can release the lock). Same as the
    /// reference's `getOwner()`.
    pub fn owner(&self) -> &str {
        self.inner.owner()
    }

    /// The lock's TTL.
    pub fn ttl(&self) -> Ttl {
        self.inner.ttl
    }

    /// Releases the lock. Only the owner can: anyone else, or a holder whose lock expired,
    /// gets [`Error::NotOwned`] and the lock is left as it is.
    pub async fn release(&self) -> Result<()> {
        let inner = &self.inner;
        let outcome = match inner.store_release_now() {
            Some(outcome) => outcome?,
            None => {
                inner
                    .telemetry()
                    .store_call(Operation::Release, inner.key(), inner.store_release())
                    .await?
            }
        };
        let held = std::mem::replace(&mut *self.state(), Holding::NotHeld);
        if let Holding::Held { since, .. } = held {
            let released = outcome != OwnerCheck::NotOwner;
            inner.telemetry().hold_ended(released, since);
        }
        match outcome {
            OwnerCheck::Applied => {
                tracing::debug!(key = %inner.key(), "lock released");
                Ok(())
            }
            OwnerCheck::NotOwner => Err(self.not_owned()),
        }
    }

    /// Stops holding the lock at once and releases it in the background, in the lock's turn
    /// (see [`take::give_back_later`]): what a dropped guard does. A take of this lock that
    /// comes first releases it before it is sent, so the release never removes a later hold.
    pub(crate) fn release_in_background(&self) {
        let held = std::mem::replace(&mut *self.state(), Holding::NotHeld);
        if let Holding::Held { since, expiry, .. } = held {
            let unexpired = expiry.is_none_or(|expiry| expiry.at > Instant::now());
            self.inner.telemetry().hold_ended(unexpired, since);
        }
        take::give_back_later(&self.inner);
    }

    /// Releases the lock whoever holds it.
    pub async fn force_release(&self) -> Result<()> {
        let inner = &self.inner;
        inner
            .telemetry()
            .store_call(
                Operation::ForceRelease,
                inner.key(),
                inner.store_force_release(),
            )
            .await?;
        self.set_holding(Holding::NotHeld);
        tracing::debug!(key = %self.inner.key(), "lock force-released");
        Ok(())
    }

    /// Whether anyone (this owner or another) holds the lock right now, by the store: for a
    /// permit, read or write handle, whether any permit, reader or writer is held.
    pub async fn is_locked(&self) -> Result<bool> {
        Ok(self.holders().await? > 0)
    }

    /// How many hold what this lock holds, by the store: 0 or 1 for a plain lock or a write
    /// handle; the permits held for a semaphore permit; the readers for a read handle.
    pub async fn holders(&self) -> Result<u32> {
        let inner = &self.inner;
        inner
            .telemetry()
            .store_call(Operation::Check, inner.key(), inner.store_holders())
            .await
    }

    /// How many more permits a semaphore has free now, by the store (its limit minus the
    /// permits held, as this permit's limit counts). Only for semaphore permits:
    /// [`Error::InvalidArgument`] otherwise.
    pub async fn available(&self) -> Result<u32> {
        match self.inner.kind {
            LockKind::Shared(Share::Permit { limit }) => {
                Ok(limit.saturating_sub(self.holders().await?))
            }
            _ => Err(Error::InvalidArgument(format!(
                "`{}` is not a semaphore permit: available() counts a semaphore's free permits",
                self.inner.key()
            ))),
        }
    }

    /// What this lock holds of its key: the key alone, a permit, a read or the write side.
    pub fn kind(&self) -> LockKind {
        self.inner.kind
    }

    /// Pushes the expiry to now + the lock's TTL. A lock created without a TTL cannot be
    /// extended this way ([`Error::InvalidArgument`]); see [`extend_by`](Self::extend_by).
    /// A lock that expired or is not held gets [`Error::NotOwned`].
    pub async fn extend(&self) -> Result<()> {
        match self.inner.ttl {
            Ttl::After(ttl) => self.extend_for(ttl).await,
            Ttl::Never => Err(Error::InvalidArgument(format!(
                "lock `{}` has no TTL: give extend_by a duration",
                self.inner.key()
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
            .telemetry()
            .store_call(Operation::Extend, inner.key(), inner.store_extend(ttl))
            .await;
        let applied = extended
            .as_ref()
            .ok()
            .map(|outcome| *outcome != OwnerCheck::NotOwner);
        inner.telemetry().renewal(applied);
        match extended? {
            OwnerCheck::Applied => {
                // An extension that arrives after its own TTL ran out leaves nothing to hold.
                let mut state = self.state();
                let (since, fencing_token) = match *state {
                    Holding::Held {
                        since,
                        fencing_token,
                        ..
                    } => (since, fencing_token),
                    // Given up while the extension was on its way (released, or a dropped
                    // guard's hold, given back in the background): it stays given up.
                    Holding::NotHeld => return Ok(()),
                };
                *state =
                    match Holding::starting(requested_at, Some(ttl), fencing_token, Instant::now())
                    {
                        Some(Holding::Held { expiry, .. }) => Holding::Held {
                            since,
                            expiry,
                            fencing_token,
                        },
                        _ => Holding::NotHeld,
                    };
                drop(state);
                tracing::debug!(key = %inner.key(), ttl = ?ttl, "lock extended");
                Ok(())
            }
            OwnerCheck::NotOwner => {
                self.set_holding(Holding::NotHeld);
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
        let (kind, limit) = SerializedLock::kind_fields(self.inner.kind);
        SerializedLock {
            kind,
            limit,
            key: self.inner.key().to_owned(),
            owner: self.inner.owner().to_owned(),
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

    pub(crate) fn telemetry(&self) -> &Telemetry {
        self.inner.telemetry()
    }

    fn not_owned(&self) -> Error {
        Error::NotOwned {
            key: self.inner.key().to_owned(),
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
            .field("key", &self.inner.key())
            .field("owner", &"<redacted>")
            .field("ttl", &self.inner.ttl)
            .field("remaining_time", &self.remaining_time())
            .finish_non_exhaustive()
    }
}

impl LockInner {
    /// The lock's store.
    pub(crate) fn store(&self) -> &Arc<dyn LockStore> {
        &self.context.store
    }

    /// The lock's telemetry.
    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.context.telemetry
    }

    /// The lock's retry policy.
    pub(crate) fn retry(&self) -> RetryPolicy {
        self.context.retry
    }

    /// The lock's key.
    pub(crate) fn key(&self) -> &str {
        self.key_and_owner.key()
    }

    /// The lock's owner token.
    pub(crate) fn owner(&self) -> &str {
        self.key_and_owner.owner()
    }

    /// This lock's waiter id: 64 random bits in hex. Public (it is not a capability), unique
    /// enough to name one waiter among those of a key.
    pub(crate) fn waiter(&self) -> &str {
        self.waiter
            .get_or_init(|| format!("{:016x}", rand::random::<u64>()))
    }
}
