//! A take that cannot be lost: if nobody is left to use a grant, the grant is given back.
//!
//! A take travels to the store and back. If the `acquire` that sent it is dropped on the
//! way (a timeout around it, a `select!` that picked another branch, a cancelled task), the
//! store may still apply it, and then nobody owns the grant: every contender would wait its
//! whole TTL. The same holds when the store answers with an error (a timeout, a connection
//! lost after the command was written: it may have been applied), and when a grant arrives
//! too late to be used (its local validity has already run out).
//!
//! So each lock keeps what it may have left on the store, [`Unsettled`], behind an async
//! mutex, and *settles* it — awaits the answer of a take still on the wire, then releases a
//! grant nobody uses, owner-checked — before it sends its next take, and in the background
//! as soon as it is left unsettled. The release goes out after the take's own answer, so it
//! cannot overtake it, and no take is sent while a release for an earlier grant may still be
//! sent, so that release can never remove the next grant.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::lock::LockInner;
use crate::store::{Acquisition, OwnerCheck};
use crate::{Error, Result};

/// The longest the background keeps retrying a store that fails, whatever the TTL: past
/// that, the grant has expired (if it has a TTL), or the lock's next take settles it.
const GIVE_BACK_PATIENCE: Duration = Duration::from_secs(60);

/// What a lock may have left on its store without knowing it holds it.
enum Unsettled {
    /// Nothing: the lock knows everything it holds.
    Nothing,
    /// A take whose answer nobody has heard yet.
    Answer(BoxFuture<'static, Result<Acquisition>>),
    /// A grant that may be held on the store and that nobody uses; `failed_at` is when the
    /// last attempt to release it failed.
    Grant { failed_at: Option<Instant> },
}

/// One lock's unsettled state, shared by its clones.
pub(crate) struct Takes(Arc<Mutex<Unsettled>>);

impl Default for Takes {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Unsettled::Nothing)))
    }
}

/// When a take left, on both clocks: the start of the validity of the grant it brings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    /// On the monotonic clock.
    pub(crate) at: Instant,
    /// On the wall clock, in epoch milliseconds.
    pub(crate) epoch_millis: u64,
}

/// Sends a take of `lock`'s key once what an earlier take left is settled, and returns the
/// store's answer. A grant for which `usable` (told when the take left) says no is given
/// back, and answered [`Acquisition::Busy`].
///
/// Fails with the store's error if the take fails, or if a grant left earlier cannot be
/// given back (the store does not answer): no take is sent then.
pub(crate) async fn take(
    lock: &Arc<LockInner>,
    usable: impl FnOnce(&Acquisition, Sent) -> bool,
) -> Result<Acquisition> {
    let waited_from = Instant::now();
    let mut settling = Settling {
        state: Some(Arc::clone(&lock.takes.0).lock_owned().await),
        lock: Arc::clone(lock),
    };
    settling.settle(Some(waited_from)).await?;
    let sent_at = Sent {
        at: Instant::now(),
        epoch_millis: crate::clock::epoch_millis_now(),
    };
    let sent = Arc::clone(lock);
    settling.set(Unsettled::Answer(Box::pin(async move {
        sent.store
            .save(&sent.key, &sent.owner, sent.ttl.as_duration())
            .await
    })));
    let answer = settling.answer().await;
    match &answer {
        Ok(granted @ Acquisition::Granted(_)) if !usable(granted, sent_at) => {
            settling.set(Unsettled::Grant { failed_at: None });
            Ok(Acquisition::Busy)
        }
        Ok(_) => {
            settling.set(Unsettled::Nothing);
            answer
        }
        // The take may have been applied before the failure.
        Err(_) => {
            settling.set(Unsettled::Grant { failed_at: None });
            answer
        }
    }
}

/// A lock's unsettled state, held locked. Dropped while something is unsettled (the
/// future holding it was dropped, or a grant is to be given back), it settles it on a
/// background task.
struct Settling {
    state: Option<OwnedMutexGuard<Unsettled>>,
    lock: Arc<LockInner>,
}

impl Settling {
    fn set(&mut self, unsettled: Unsettled) {
        if let Some(state) = self.state.as_mut() {
            **state = unsettled;
        }
    }

    /// Waits for the answer of the take in flight (the state must be
    /// [`Unsettled::Answer`]), leaving the state as it is for the caller to set.
    async fn answer(&mut self) -> Result<Acquisition> {
        match self.state.as_deref_mut() {
            Some(Unsettled::Answer(answer)) => answer.await,
            _ => Ok(Acquisition::Busy),
        }
    }

    /// Settles the state once: hears the answer of a take in flight, and releases a grant
    /// nobody uses. Fails, leaving the grant to settle later, if the release fails, or at
    /// once if it failed since `waited_from` (the background just tried).
    async fn settle(&mut self, waited_from: Option<Instant>) -> Result<()> {
        let lock = Arc::clone(&self.lock);
        loop {
            let Some(state) = self.state.as_deref_mut() else {
                return Ok(());
            };
            match state {
                Unsettled::Nothing => return Ok(()),
                Unsettled::Answer(answer) => {
                    *state = match answer.await {
                        Ok(Acquisition::Busy) => Unsettled::Nothing,
                        _ => Unsettled::Grant { failed_at: None },
                    };
                }
                Unsettled::Grant { failed_at } => {
                    if let (Some(failed), Some(from)) = (*failed_at, waited_from) {
                        if failed >= from {
                            return Err(Error::storage(
                                "an earlier grant of this lock, which nobody uses, could not be given back: the store does not answer",
                            ));
                        }
                    }
                    match lock.store.delete(&lock.key, &lock.owner).await {
                        Ok(outcome) => {
                            if outcome != OwnerCheck::NotOwner {
                                tracing::debug!(key = %lock.key, "gave back a grant nobody used");
                                lock.room.released(&lock.key);
                            }
                            *state = Unsettled::Nothing;
                        }
                        Err(error) => {
                            *failed_at = Some(Instant::now());
                            return Err(error);
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Settling {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        if matches!(*state, Unsettled::Nothing) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                tracing::debug!(key = %self.lock.key, "settling a take nobody waits for, in the background");
                runtime.spawn(settle_in_background(state, Arc::clone(&self.lock)));
            }
            // The state stays: the lock's next take settles it first.
            Err(_) => {
                tracing::debug!(key = %self.lock.key, "no Tokio runtime to settle a take on: the lock's next take will")
            }
        }
    }
}

/// Settles `state` (held locked), retrying a failing store with growing pauses — during
/// which the lock's own takes may settle it instead — until the grant has expired on its
/// own or [`GIVE_BACK_PATIENCE`] has passed; the lock's next take settles what is left.
async fn settle_in_background(state: OwnedMutexGuard<Unsettled>, lock: Arc<LockInner>) {
    let started = Instant::now();
    let patience = lock
        .ttl
        .as_duration()
        .map_or(GIVE_BACK_PATIENCE, |ttl| ttl.min(GIVE_BACK_PATIENCE));
    let mut pause = Duration::from_millis(50);
    let mut settling = Settling {
        state: Some(state),
        lock,
    };
    loop {
        match settling.settle(None).await {
            Ok(()) => return,
            Err(error) if started.elapsed() < patience => {
                tracing::debug!(key = %settling.lock.key, %error, "giving back a grant failed; retrying");
            }
            Err(error) => {
                tracing::warn!(key = %settling.lock.key, %error, "could not give back a grant nobody uses: it stays until it expires or the lock takes again");
                // Leave it for the lock's next take, without another background task.
                settling.state = None;
                return;
            }
        }
        // Unlocked while pausing, so that a take of the lock can settle it itself.
        settling.state = None;
        tokio::time::sleep(pause).await;
        pause = pause.saturating_mul(2).min(Duration::from_secs(1));
        settling.state = Some(Arc::clone(&settling.lock.takes.0).lock_owned().await);
    }
}
