//! A take that cannot be lost: if nobody is left to hear a grant, the grant is given back.
//!
//! A take travels to the store and back. If the `acquire` that sent it is dropped on the
//! way (a timeout around it, a `select!` that picked another branch, a cancelled task), the
//! store may still apply it, and then nobody owns the grant: every contender would wait its
//! whole TTL. The same holds when the store answers with an error (a timeout, a connection
//! lost after the command was written: it may have been applied), and when a grant arrives
//! too late to be used (its local validity has already run out). In each case the grant is
//! *given back*: the owner-checked release is sent in the background, once the take's own
//! answer is in, so it reaches the store after the take.
//!
//! While a give-back is under way, the lock sends no new take ([`GiveBacks::settled`]): a
//! release meant for the lost grant must never remove the next one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::watch;

use crate::lock::LockInner;
use crate::store::{Acquisition, OwnerCheck};
use crate::Result;

/// The longest a give-back keeps retrying a store that fails, whatever the TTL: past that,
/// the grant has expired (if it has a TTL) or needs an operator (if it has none).
const GIVE_BACK_PATIENCE: Duration = Duration::from_secs(60);

/// The lock a take is for.
type Grantee = Arc<LockInner>;

/// How many give-backs of one lock are under way.
#[derive(Debug)]
pub(crate) struct GiveBacks(watch::Sender<usize>);

impl Default for GiveBacks {
    fn default() -> Self {
        Self(watch::Sender::new(0))
    }
}

impl GiveBacks {
    /// Completes once no give-back of the lock is under way (at once, nearly always).
    pub(crate) async fn settled(&self) {
        if *self.0.borrow() == 0 {
            return;
        }
        let mut pending = self.0.subscribe();
        // The sender lives as long as `self`: the wait cannot fail.
        let _ = pending.wait_for(|count| *count == 0).await;
    }

    fn started(&self) {
        self.0.send_modify(|count| *count += 1);
    }

    fn finished(&self) {
        self.0.send_modify(|count| *count = count.saturating_sub(1));
    }
}

/// A take on its way to the store. Await it for the store's answer; drop it unanswered and
/// the take finishes in the background, giving back what it got.
pub(crate) struct InFlightTake {
    grantee: Grantee,
    take: Option<BoxFuture<'static, Result<Acquisition>>>,
}

impl InFlightTake {
    /// Sends the take of `grantee`'s key. Await [`GiveBacks::settled`] first.
    pub(crate) fn send(grantee: Grantee) -> Self {
        let sent = Arc::clone(&grantee);
        let take = Box::pin(async move {
            sent.store
                .save(&sent.key, &sent.owner, sent.ttl.as_duration())
                .await
        });
        Self {
            grantee,
            take: Some(take),
        }
    }
}

impl Future for InFlightTake {
    type Output = Result<Acquisition>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(take) = self.take.as_mut() else {
            return Poll::Pending;
        };
        let answer = ready!(take.as_mut().poll(context));
        self.take = None;
        if answer.is_err() {
            // The take may have been applied before the failure: give it back.
            give_back(Arc::clone(&self.grantee), "the take failed");
        }
        Poll::Ready(answer)
    }
}

impl Drop for InFlightTake {
    fn drop(&mut self) {
        if let Some(take) = self.take.take() {
            let why = "acquire was dropped while its take was on the wire";
            give_back_after(Arc::clone(&self.grantee), why, Some(take));
        }
    }
}

/// Gives back a grant nobody will use (it arrived too late, or its take failed and may have
/// been applied): releases it in the background; the lock takes again only after that.
pub(crate) fn give_back(grantee: Grantee, why: &'static str) {
    give_back_after(grantee, why, None);
}

/// Gives back, in the background, what `take` grants once it answers (or, without a take,
/// the grant already in): the owner-checked release is sent after the take's answer, so it
/// cannot overtake it. Without a Tokio runtime nothing can be sent, and the grant is left
/// to expire (said at debug level).
fn give_back_after(
    grantee: Grantee,
    why: &'static str,
    take: Option<BoxFuture<'static, Result<Acquisition>>>,
) {
    tracing::debug!(key = %grantee.key, why, "giving back a grant nobody will use");
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::debug!(key = %grantee.key, "no Tokio runtime to give the grant back on: it is left to expire");
        return;
    };
    grantee.give_backs.started();
    runtime.spawn(async move {
        let granted = match take {
            Some(take) => !matches!(take.await, Ok(Acquisition::Busy)),
            None => true,
        };
        if granted {
            release_with_patience(&grantee).await;
        }
        grantee.give_backs.finished();
    });
}

/// The owner-checked release, retried while the store fails, until the grant has expired on
/// its own or [`GIVE_BACK_PATIENCE`] has passed.
async fn release_with_patience(grantee: &Grantee) {
    let started = Instant::now();
    let patience = grantee
        .ttl
        .as_duration()
        .map_or(GIVE_BACK_PATIENCE, |ttl| ttl.min(GIVE_BACK_PATIENCE));
    let mut pause = Duration::from_millis(50);
    loop {
        match grantee.store.delete(&grantee.key, &grantee.owner).await {
            Ok(OwnerCheck::Applied | OwnerCheck::AppliedWithWaiters) => {
                tracing::debug!(key = %grantee.key, "gave back a grant nobody would use");
                grantee.room.released(&grantee.key);
                return;
            }
            Ok(OwnerCheck::NotOwner) => return,
            Err(error) if started.elapsed() < patience => {
                tracing::debug!(key = %grantee.key, %error, "giving back a grant failed; retrying");
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2).min(Duration::from_secs(1));
            }
            Err(error) => {
                tracing::warn!(key = %grantee.key, %error, "could not give back a grant nobody uses: it stays until it expires");
                return;
            }
        }
    }
}
