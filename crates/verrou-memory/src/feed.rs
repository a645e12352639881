//! The store's [`ReleaseFeed`]: how its boards learn that a key they start to watch is free
//! already, and that a holder of a watched key expired.
//!
//! The store wakes the waiters of a key itself when a release, a leave or a refused take
//! hands it over, so the only hand-over a waiter could miss is one between its take and its
//! watch: [`Feed::subscribe`] looks once. Nothing announces an expiry, though, so each
//! watched key has a task that sleeps until its first holder's deadline (at most
//! [`RECHECK_EVERY`], in case the holder changes meanwhile) and then hands the key over to
//! the front waiter if it is free for it, as a take refused only because of the line does:
//! a waiter learns of an expiry when it happens, whatever its retry delay, and a front that
//! is gone is passed a window later.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use tokio::task::JoinHandle;
use verrou_core::{Family, ReleaseFeed, HANDOVER_WINDOW, RECHECK_EVERY};

use crate::store::Inner;

/// The feed of one board of a store (`family`: `None` for plain locks).
#[derive(Debug)]
pub(crate) struct Feed {
    inner: Weak<Inner>,
    family: Option<Family>,
    /// The expiry watch of each watched key.
    watches: Mutex<HashMap<Arc<str>, JoinHandle<()>>>,
    /// Set when a watch ended (see [`Ended`]), so that [`revive`](ReleaseFeed::revive)
    /// looks for the watches to start again only then.
    some_ended: Arc<AtomicBool>,
}

/// Held by a running watch: says so when the watch ends, whether aborted, its store gone,
/// or dropped with its runtime.
struct Ended(Arc<AtomicBool>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Feed {
    /// The feed of `family`'s board of the store `inner`.
    pub(crate) fn new(inner: Weak<Inner>, family: Option<Family>) -> Self {
        Self {
            inner,
            family,
            watches: Mutex::default(),
            some_ended: Arc::default(),
        }
    }

    /// Starts the expiry watch of `key` on the current Tokio runtime (none without one: the
    /// waiters then learn of an expiry at their retry).
    fn start_watch(&self, watches: &mut HashMap<Arc<str>, JoinHandle<()>>, key: Arc<str>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let watch = runtime.spawn(watch_key(
            Weak::clone(&self.inner),
            self.family,
            Arc::clone(&key),
            Ended(Arc::clone(&self.some_ended)),
        ));
        if let Some(earlier) = watches.insert(key, watch) {
            earlier.abort();
        }
    }

    /// The expiry watches, locked.
    fn watches(&self) -> MutexGuard<'_, HashMap<Arc<str>, JoinHandle<()>>> {
        self.watches.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ReleaseFeed for Feed {
    /// Wakes the waiters of `key` if it is free ("free" is free for the front waiter: a key
    /// of shares may have room for it beside its holders), and starts its expiry watch.
    fn subscribe(&self, key: &str) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let free = inner.with_shard(key, |shard, hashed, now| match self.family {
            None => !shard.is_held(hashed),
            Some(family) => shard.shares(family).may_let_front_in(hashed, now),
        });
        if free {
            inner.boards.of(self.family).wake(key, None);
        }
        self.start_watch(&mut self.watches(), Arc::from(key));
    }

    /// Ends the expiry watch of `key`.
    fn unsubscribe(&self, key: &str) {
        if let Some(watch) = self.watches().remove(key) {
            watch.abort();
        }
    }

    /// Starts again, on this runtime, the expiry watches that ended with theirs.
    fn revive(&self) {
        if !self.some_ended.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut watches = self.watches();
        let ended: Vec<Arc<str>> = watches
            .iter()
            .filter(|(_, watch)| watch.is_finished())
            .map(|(key, _)| Arc::clone(key))
            .collect();
        for key in ended {
            self.start_watch(&mut watches, key);
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        for watch in self.watches().values() {
            watch.abort();
        }
    }
}

/// Looks at `key` of `family` in the store `inner` when its first holder's deadline passes,
/// and at least every [`RECHECK_EVERY`] (a hand-over window after handing it over): hands
/// the key over to its front waiter, as a take refused only because of the line does, if
/// the key is free for it (see [`Shard::pass_to_front`](crate::shard::Shard::pass_to_front))
/// and the front was not handed it already, and wakes that waiter; so a front that died
/// holds the line up for one window. Runs until aborted or the store is gone, then drops
/// `_ended`.
async fn watch_key(inner: Weak<Inner>, family: Option<Family>, key: Arc<str>, _ended: Ended) {
    // When the first holder to expire did, at the last look.
    let mut deadline: Option<Instant> = None;
    loop {
        let handed = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let expired = deadline.is_some_and(|deadline| deadline <= Instant::now());
            let handed = inner.with_shard(&key, |shard, hashed, now| {
                deadline = shard.next_expiry(family, hashed, now);
                shard.pass_to_front(family, hashed, expired, now, HANDOVER_WINDOW)
            });
            if let Some(waiter) = &handed {
                inner.boards.of(family).wake(&key, Some(waiter));
            }
            handed
        };
        let pause = if handed.is_some() {
            HANDOVER_WINDOW
        } else {
            RECHECK_EVERY
        };
        let now = Instant::now();
        let look_again = now.checked_add(pause).unwrap_or(now);
        let until = deadline.map_or(look_again, |deadline| deadline.min(look_again));
        tokio::time::sleep_until(until.into()).await;
    }
}
