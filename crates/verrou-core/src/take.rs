//! A take that cannot be lost: if nobody is left to use a grant, the grant is given back.
//!
//! A take travels to the store and back. If the `acquire` that sent it is dropped on the
//! way (a timeout around it, a `select!` that picked another branch, a cancelled task), the
//! store may still apply it, and then nobody owns the grant: every contender would wait its
//! whole TTL. The same holds when the store answers with an error (a timeout, a connection
//! lost after the command was written: it may have been applied), and when a grant arrives
//! too late to be used (its local validity has already run out).
//!
//! So each lock keeps what it may have left on the store, [`Unsettled`], and one task at a
//! time has the lock's *turn* ([`Turn`]) to talk to the store about its grants. It *settles*
//! what is left — awaits the answer of a take still on the wire, then releases a
//! grant nobody uses, owner-checked — before it sends its next take, and in the background
//! as soon as it is left unsettled. The release goes out after the take's own answer, so it
//! cannot overtake it, and no take is sent while a release for an earlier grant may still be
//! sent, so that release can never remove the next grant.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use crate::lock::LockInner;
use crate::store::{Acquisition, ImmediateStore, OwnerCheck};
use crate::telemetry::Operation;
use crate::{Backoff, Error, Result};

/// The longest the background keeps retrying a store that fails, whatever the TTL: past
/// that, the grant has expired (if it has a TTL), or the lock's next take settles it.
const GIVE_BACK_PATIENCE: Duration = Duration::from_secs(60);

/// What a lock may have left on its store without knowing it holds it.
#[derive(Default)]
enum Unsettled {
    /// Nothing: the lock knows everything it holds.
    #[default]
    Nothing,
    /// A take whose answer nobody has heard yet.
    Answer(BoxFuture<'static, Result<Acquisition>>),
    /// A grant that may be held on the store and that nobody uses.
    Grant,
}

impl Unsettled {
    fn is_nothing(&self) -> bool {
        matches!(self, Unsettled::Nothing)
    }
}

/// [`Takes::turn`]: some task has the turn.
const TAKEN: u8 = 1;
/// [`Takes::turn`]: some task waits for the turn, to be told when it is given back.
const WANTED: u8 = 2;

/// One lock's turn and what its last turn left, shared by the lock's clones. Taking and
/// giving back the turn is an atomic flag and, only when someone waits, a notification: no
/// lock on the way of a plain take.
#[derive(Default)]
pub(crate) struct Takes {
    /// [`TAKEN`] while some task has the turn, with [`WANTED`] if others wait for it.
    turn: AtomicU8,
    /// Signalled when the turn is given back and it was [`WANTED`].
    idle: Notify,
    /// Whether `left` holds something (read without its mutex).
    anything_left: AtomicBool,
    /// What the last turn left unsettled, for the next one.
    left: Mutex<Unsettled>,
    /// How many attempts to give back a grant have failed so far.
    failures: AtomicU64,
    /// Whether a wait that stopped without the lock left a place in the key's line that
    /// nobody has left or renewed since (see [`leave_line_later`]).
    leave_pending: AtomicBool,
}

/// The right to talk to the store about one lock's grants, with what is unsettled. Given
/// back when dropped; dropped with something unsettled, it settles it on a background task
/// first. It borrows the lock while the task that took it has it (no reference count to
/// move on the way of a take), and owns a reference when a background task settles for it.
struct Turn<'lock> {
    lock: Cow<'lock, Arc<LockInner>>,
    unsettled: Unsettled,
    /// False once handed to a background task (which gives the turn back itself).
    owned: bool,
    /// Whether a background task holds it: dropped (the runtime shutting down), it leaves
    /// what is unsettled to the lock's next take instead of spawning again.
    in_background: bool,
}

impl<'lock> Turn<'lock> {
    /// Waits for `lock`'s turn.
    async fn wait_for(lock: &'lock Arc<LockInner>) -> Turn<'lock> {
        let takes = &lock.takes;
        loop {
            if let Some(turn) = Self::try_take(lock) {
                return turn;
            }
            let idle = takes.idle.notified();
            tokio::pin!(idle);
            // Listening before saying so: a give-back that sees `WANTED` wakes this task.
            idle.as_mut().enable();
            takes.turn.fetch_or(WANTED, Ordering::AcqRel);
            if let Some(turn) = Self::try_take(lock) {
                return turn;
            }
            idle.await;
        }
    }

    fn try_take(lock: &'lock Arc<LockInner>) -> Option<Turn<'lock>> {
        let takes = &lock.takes;
        if takes.turn.fetch_or(TAKEN, Ordering::Acquire) & TAKEN != 0 {
            return None;
        }
        let anything_left = takes.anything_left.load(Ordering::Acquire)
            && takes.anything_left.swap(false, Ordering::Acquire);
        let unsettled = if anything_left {
            std::mem::take(&mut *takes.left.lock().unwrap_or_else(PoisonError::into_inner))
        } else {
            Unsettled::Nothing
        };
        Some(Turn {
            lock: Cow::Borrowed(lock),
            unsettled,
            owned: true,
            in_background: false,
        })
    }

    /// This turn, owning a reference to its lock (for a background task).
    fn into_owned(mut self) -> Turn<'static> {
        self.hand_off()
    }

    /// The turn and what is unsettled, moved to a turn that owns a reference to the lock;
    /// this one no longer has the turn.
    fn hand_off(&mut self) -> Turn<'static> {
        let turn = Turn {
            lock: Cow::Owned(Arc::clone(&self.lock)),
            unsettled: std::mem::take(&mut self.unsettled),
            owned: self.owned,
            in_background: self.in_background,
        };
        self.owned = false;
        turn
    }

    /// Gives the turn back, leaving what is unsettled for the next one.
    fn give_back_turn(&mut self) {
        let takes = &self.lock.takes;
        let unsettled = std::mem::take(&mut self.unsettled);
        if !unsettled.is_nothing() {
            *takes.left.lock().unwrap_or_else(PoisonError::into_inner) = unsettled;
            takes.anything_left.store(true, Ordering::Release);
        }
        self.owned = false;
        if takes.turn.swap(0, Ordering::AcqRel) & WANTED != 0 {
            // Every waiter tries again; those that lose say `WANTED` again.
            takes.idle.notify_waiters();
        }
    }

    /// Gives the turn back with what is unsettled left for the lock's next take. A take
    /// still on the wire is left as a grant to give back: its future belongs to a runtime
    /// that may be gone (this happens when the runtime shuts down), and releasing a grant
    /// that was never made is harmless.
    fn leave_for_next_take(&mut self) {
        if matches!(self.unsettled, Unsettled::Answer(_)) {
            self.unsettled = Unsettled::Grant;
        }
        self.give_back_turn();
    }

    /// Settles what is unsettled, once: hears the answer of a take in flight, and releases
    /// a grant nobody uses. Fails, leaving the grant unsettled, if the release fails, or at
    /// once if an attempt failed since the count of failures was `failures_seen` (the
    /// background has just tried).
    async fn settle(&mut self, failures_seen: Option<u64>) -> Result<()> {
        loop {
            match &mut self.unsettled {
                Unsettled::Nothing => return Ok(()),
                Unsettled::Answer(answer) => {
                    self.unsettled = match answer.await {
                        Ok(Acquisition::Busy) => Unsettled::Nothing,
                        _ => Unsettled::Grant,
                    };
                }
                Unsettled::Grant if self.lock.holds_unexpired() => {
                    // The lock holds the key (the take was its holder's: a second acquire,
                    // or one re-sent): releasing would end the hold it relies on.
                    self.unsettled = Unsettled::Nothing;
                }
                Unsettled::Grant => {
                    let lock = &self.lock;
                    if failures_seen
                        .is_some_and(|seen| lock.takes.failures.load(Ordering::Acquire) != seen)
                    {
                        return Err(Error::storage(
                            "an earlier grant of this lock, which nobody uses, could not be given back: the store does not answer",
                        ));
                    }
                    let release = lock.store_release();
                    let released =
                        lock.telemetry()
                            .store_call(Operation::Release, lock.key(), release);
                    match released.await {
                        Ok(outcome) => {
                            if outcome != OwnerCheck::NotOwner {
                                tracing::debug!(key = %lock.key(), "gave back a grant nobody used");
                            }
                            self.unsettled = Unsettled::Nothing;
                        }
                        Err(error) => {
                            lock.takes.failures.fetch_add(1, Ordering::AcqRel);
                            return Err(error);
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if self.unsettled.is_nothing() || self.in_background {
            self.leave_for_next_take();
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                tracing::debug!(key = %self.lock.key(), "settling a take nobody waits for, in the background");
                let mut turn = self.hand_off();
                turn.in_background = true;
                runtime.spawn(settle_in_background(turn));
            }
            Err(_) => {
                tracing::debug!(key = %self.lock.key(), "no Tokio runtime to settle a take on: the lock's next take will");
                self.leave_for_next_take();
            }
        }
    }
}

/// What the lock makes of a grant (told when its take left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The lock holds it now.
    Adopted,
    /// The lock held the key already and goes on holding it.
    AlreadyHeld,
    /// Nobody will use it (it arrived too late): give it back.
    Unusable,
}

/// When a take was sent and when its answer arrived, for judging a grant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) sent: Instant,
    pub(crate) arrived: Instant,
}

/// Sends a take of `lock`'s key (in its line, with a place of `lease`, if given) once what an
/// earlier take left is settled, and returns the
/// store's answer with what `judge` made of a grant (`None` when busy). A grant judged
/// [`Verdict::Unusable`] is given back.
///
/// Fails with the store's error if the take fails, or if a grant left earlier cannot be
/// given back (the store does not answer): no take is sent then.
pub(crate) async fn take(
    lock: &Arc<LockInner>,
    lease: Option<Duration>,
    judge: impl FnOnce(&Acquisition, Timing) -> Verdict,
) -> Result<Option<Verdict>> {
    let failures_seen = lock.takes.failures.load(Ordering::Acquire);
    let mut turn = Turn::wait_for(lock).await;
    if !turn.unsettled.is_nothing() {
        // Rare: boxed, so that the plain take's future stays small.
        Box::pin(turn.settle(Some(failures_seen))).await?;
    }
    if lease.is_some() {
        // This take renews the place a wait left: leaving it now would lose the new one.
        lock.takes.leave_pending.store(false, Ordering::Release);
    }
    let sent = Instant::now();
    let sending = Arc::clone(lock);
    turn.unsettled = Unsettled::Answer(Box::pin(async move {
        let save = sending.store_take(lease);
        sending
            .telemetry()
            .store_call(Operation::Take, sending.key(), save)
            .await
    }));
    let Unsettled::Answer(answer) = &mut turn.unsettled else {
        return Ok(None);
    };
    let answer = answer.await;
    let arrived = Instant::now();
    adopt(&mut turn, answer, judge, Timing { sent, arrived })
}

/// Like [`take`] without a line, all at once, on `store`, `lock`'s store answering without
/// I/O ([`LockInner::immediate`]): no future, one clock reading, which the store uses too
/// (so a grant can never arrive late). `None` when the take must go through [`take`]: the
/// lock's turn is busy or has something to settle.
pub(crate) fn take_now(
    lock: &Arc<LockInner>,
    store: &dyn ImmediateStore,
    judge: impl FnOnce(&Acquisition, Timing) -> Verdict,
) -> Option<Result<Option<Verdict>>> {
    let mut turn = Turn::try_take(lock)?;
    if !turn.unsettled.is_nothing() {
        turn.give_back_turn();
        return None;
    }
    let now = Instant::now();
    let answer = lock.store_take_now(store, now);
    let timing = Timing {
        sent: now,
        arrived: now,
    };
    Some(adopt(&mut turn, answer, judge, timing))
}

/// What `judge` makes of the store's `answer` to a take in `turn`; a grant nobody will use,
/// or a take that may have been applied before it failed, is left to be given back.
fn adopt(
    turn: &mut Turn<'_>,
    answer: Result<Acquisition>,
    judge: impl FnOnce(&Acquisition, Timing) -> Verdict,
    timing: Timing,
) -> Result<Option<Verdict>> {
    let (unsettled, verdict) = match answer {
        Ok(Acquisition::Busy) => (Unsettled::Nothing, Ok(None)),
        Ok(granted) => match judge(&granted, timing) {
            Verdict::Unusable => (Unsettled::Grant, Ok(Some(Verdict::Unusable))),
            verdict => (Unsettled::Nothing, Ok(Some(verdict))),
        },
        // The take may have been applied before the failure.
        Err(error) => (Unsettled::Grant, Err(error)),
    };
    turn.unsettled = unsettled;
    verdict
}

/// Leaves `lock`'s place in its key's line, in the background and in the lock's turn,
/// unless a take in line renews the place first: a wait that stopped without the lock (it
/// gave up, or was dropped) must not leave a place that holds up the waiters behind it, nor
/// remove the place of the lock's next wait.
pub(crate) fn leave_line_later(lock: &Arc<LockInner>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    lock.takes.leave_pending.store(true, Ordering::Release);
    let lock = Arc::clone(lock);
    runtime.spawn(async move {
        let turn = Turn::wait_for(&lock).await;
        if lock.takes.leave_pending.swap(false, Ordering::AcqRel) {
            if let Err(error) = lock.store_leave_line().await {
                tracing::debug!(key = %lock.key(), %error, "could not leave the waiting line; the place lapses with its lease");
            }
        }
        drop(turn);
    });
}

/// Leaves a hold of `lock` that nobody uses any more (a dropped guard's) to be given back,
/// like a grant nobody uses: in the background, in the lock's turn, and before the lock's
/// next take is sent if that comes first, so that the release can never remove the next
/// hold. Without a Tokio runtime here, the lock's next take gives it back.
pub(crate) fn give_back_later(lock: &Arc<LockInner>) {
    {
        let mut left = lock
            .takes
            .left
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if left.is_nothing() {
            *left = Unsettled::Grant;
        }
    }
    lock.takes.anything_left.store(true, Ordering::Release);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let lock = Arc::clone(lock);
    runtime.spawn(async move {
        let mut turn = Turn::wait_for(&lock).await;
        if turn.unsettled.is_nothing() {
            // A take of the lock gave it back meanwhile.
            return;
        }
        turn.in_background = true;
        settle_in_background(turn.into_owned()).await;
    });
}

/// Settles what `turn` holds, retrying a failing store with growing pauses — during which
/// the turn is given back, so that a take of the lock may settle it instead — until the
/// grant has expired on its own or [`GIVE_BACK_PATIENCE`] has passed; the lock's next take
/// settles what is left.
async fn settle_in_background(mut turn: Turn<'static>) {
    let started = Instant::now();
    let lock = Arc::clone(&turn.lock);
    let patience = lock
        .ttl
        .as_duration()
        .map_or(GIVE_BACK_PATIENCE, |ttl| ttl.min(GIVE_BACK_PATIENCE));
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        match turn.settle(None).await {
            Ok(()) => return,
            Err(error) if started.elapsed() < patience => {
                tracing::debug!(key = %lock.key(), %error, "giving back a grant failed; retrying");
            }
            Err(error) => {
                tracing::warn!(key = %lock.key(), %error, "could not give back a grant nobody uses: it stays until it expires or the lock takes again");
                turn.give_back_turn();
                return;
            }
        }
        turn.give_back_turn();
        drop(turn);
        tokio::time::sleep(backoff.next_pause()).await;
        turn = Turn::wait_for(&lock).await.into_owned();
        turn.in_background = true;
        if turn.unsettled.is_nothing() {
            // A take of the lock settled it meanwhile.
            return;
        }
    }
}
