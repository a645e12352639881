//! [`LockGuard`]: a held lock that releases itself, can renew itself and says when it is lost.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio_util::task::AbortOnDropHandle;

use crate::loss::LossSignal;
use crate::{Error, Lock, Result};

/// Proof that a lock is held, from [`Lock::acquire_guard`] and friends.
///
/// - Dropping the guard releases the lock in the background (on the current Tokio runtime,
///   retried while the store fails, and always before a later take of the same lock, so
///   it never releases that take's hold); [`release`](Self::release) releases it now and
///   reports errors.
/// - [`fencing_token`](Self::fencing_token) is the grant's fencing token: pass it with every
///   write to the protected resource and have the resource refuse tokens older than the
///   newest it has seen.
/// - [`auto_extend`](Self::auto_extend) renews the lock every third of its TTL while the
///   guard lives.
/// - [`loss`](Self::loss) fires when the lock is known lost.
///
/// ```
/// # async fn example(lock: verrou_core::Lock) -> verrou_core::Result<()> {
/// if let Some(mut guard) = lock.acquire_guard().await? {
///     guard.auto_extend();
///     let token = guard.fencing_token();
///     // ... write to the resource with `token`, stop if guard.loss().is_lost() ...
///     # let _ = token;
///     guard.release().await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LockGuard {
    lock: Lock,
    fencing_token: Option<u64>,
    loss: LossSignal,
    keeper: Mutex<Option<Keeper>>,
    released: bool,
}

impl LockGuard {
    /// Guards `lock`, which the caller has just acquired.
    pub(crate) fn new(lock: Lock) -> Self {
        Self {
            fencing_token: lock.fencing_token(),
            lock,
            loss: LossSignal::new(),
            keeper: Mutex::new(None),
            released: false,
        }
    }

    /// The guarded lock.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// The fencing token of this grant, when the store issues them.
    pub fn fencing_token(&self) -> Option<u64> {
        self.fencing_token
    }

    /// Renews the lock before it expires (every third of its TTL) until the guard is
    /// released or dropped. A renewal refused with [`Error::NotOwned`] fires the
    /// [`loss`](Self::loss) signal and stops; a store error is retried until a safety margin
    /// before the lock's time is up, then the signal fires. A lost lock is never re-acquired.
    pub fn auto_extend(&mut self) -> &mut Self {
        self.start_keeper(Renewal::On);
        self
    }

    /// The signal that fires when this lock is known lost, or about to be with no way to
    /// renew it: a tenth of the TTL (at most a second) before its local expiry. Without
    /// [`auto_extend`](Self::auto_extend) that is when the TTL is about to run out.
    pub fn loss(&self) -> LossSignal {
        let mut keeper = self.keeper.lock().unwrap_or_else(PoisonError::into_inner);
        if keeper.is_none() {
            *keeper = Some(spawn_keeper(&self.lock, &self.loss, Renewal::Off));
        }
        self.loss.clone()
    }

    /// Pushes the expiry to now + the lock's TTL (see [`Lock::extend`]). `NotOwned` fires
    /// the loss signal.
    pub async fn extend(&self) -> Result<()> {
        let extended = self.lock.extend().await;
        if matches!(extended, Err(Error::NotOwned { .. })) {
            lose(&self.lock, &self.loss);
        }
        extended
    }

    /// Stops renewing and releases the lock now. [`Error::NotOwned`] means the lock had
    /// already been lost.
    pub async fn release(mut self) -> Result<()> {
        self.stop_keeper();
        let released = self.lock.release().await;
        self.released = true;
        released
    }

    /// Whether the lock was known lost, or turned out lost at release time.
    pub(crate) fn is_lost(&self) -> bool {
        self.loss.is_lost()
    }

    fn start_keeper(&self, renewal: Renewal) {
        let keeper = spawn_keeper(&self.lock, &self.loss, renewal);
        *self.keeper.lock().unwrap_or_else(PoisonError::into_inner) = Some(keeper);
    }

    fn stop_keeper(&self) {
        self.keeper
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

impl Drop for LockGuard {
    /// Releases the lock in the background unless it was released: the lock holds nothing
    /// from then on, and the store's key is released before any later take of the lock.
    fn drop(&mut self) {
        self.stop_keeper();
        if !self.released {
            self.lock.release_in_background();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renewal {
    On,
    Off,
}

/// The background task that watches (and maybe renews) a guarded lock; aborted on drop.
type Keeper = AbortOnDropHandle<()>;

/// Spawns the keeper of `lock`.
fn spawn_keeper(lock: &Lock, loss: &LossSignal, renewal: Renewal) -> Keeper {
    AbortOnDropHandle::new(tokio::spawn(keep(lock.clone(), loss.clone(), renewal)))
}

/// How long before a lock's local expiry its loss is declared when it cannot be renewed: a
/// tenth of the TTL, at most a second. The work hears of the loss while the store still
/// holds the lock for it, not a timer tick after someone else may have taken it.
fn loss_margin(ttl: Duration) -> Duration {
    (ttl / 10).min(Duration::from_secs(1))
}

/// Fires `loss` a safety margin before the lock's local time runs out; with renewal, extends
/// it every third of its TTL first. Never outlives the guard (the task is aborted with it).
async fn keep(lock: Lock, loss: LossSignal, renewal: Renewal) {
    let Some(ttl) = lock.ttl().as_duration() else {
        return;
    };
    let margin = loss_margin(ttl);
    // How long the lock can still be counted on: until the margin before its expiry.
    let dependable = || {
        lock.remaining_time()
            .and_then(|remaining| remaining.checked_sub(margin))
            .filter(|left| !left.is_zero())
    };
    while let Some(left) = dependable() {
        if renewal == Renewal::Off {
            tokio::time::sleep(left).await;
            continue;
        }
        // Renew once a third of the TTL has passed, when two thirds remain.
        tokio::time::sleep(
            left.saturating_add(margin)
                .saturating_sub(ttl.saturating_mul(2) / 3),
        )
        .await;
        let Some(left) = dependable() else {
            break;
        };
        tokio::select! {
            extended = lock.extend() => match extended {
                Ok(()) => tracing::trace!(key = %lock.key(), "lock renewed"),
                Err(Error::NotOwned { .. }) => break,
                Err(error) => {
                    tracing::warn!(key = %lock.key(), %error, "lock renewal failed; retrying until the lock expires");
                    let pause = (ttl / 10).max(Duration::from_millis(10));
                    tokio::time::sleep(pause.min(left)).await;
                }
            },
            () = tokio::time::sleep(left) => break,
        }
    }
    lose(&lock, &loss);
}

/// Fires `loss`, once: says so and counts it.
fn lose(lock: &Lock, loss: &LossSignal) {
    if !loss.is_lost() {
        tracing::debug!(key = %lock.key(), "lock lost");
        lock.telemetry().lost();
        loss.fire();
    }
}
