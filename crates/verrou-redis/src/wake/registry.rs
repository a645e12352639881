//! The lock keys this store's waiters watch, and waking those waiters.

use std::collections::{hash_map, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The watched keys of one store, by Redis key (prefix included).
///
/// A key is watched while it has waiters, and for a while after the last one left (so a key
/// waited on again and again keeps its subscription instead of churning it); the subscriber
/// subscribes to a key when it is first watched and unsubscribes when it is
/// [dropped](Self::take_idle).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    keys: Mutex<HashMap<Arc<str>, Watched>>,
    /// How many keys are watched, read without the mutex so that a store nobody waits on
    /// pays nothing in [`mark_take`](Self::mark_take).
    count: AtomicUsize,
}

#[derive(Debug, Default)]
struct Watched {
    signal: Arc<Signal>,
    waiters: usize,
    /// When the last waiter left, if none is left.
    idle_since: Option<Instant>,
}

/// What the waiters of one key wait on.
#[derive(Debug, Default)]
struct Signal {
    /// Counts wake-ups: releases heard, and the key found free once subscribed (a release
    /// may have gone unheard before).
    wakeups: AtomicU64,
    /// How many wake-ups have been acted on: by a take sent after them, or by a waiter
    /// returning for them. One not acted on may be a release the last take did not see, so
    /// a waiter must not sleep through it.
    seen: AtomicU64,
    notify: Notify,
}

impl Signal {
    fn wake(&self) {
        self.wakeups.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Marks every wake-up so far as acted on; whether one had not been.
    fn see_all(&self) -> bool {
        let wakeups = self.wakeups.load(Ordering::SeqCst);
        self.seen.fetch_max(wakeups, Ordering::SeqCst) < wakeups
    }
}

/// A waiter's interest in a key; leaving when dropped.
#[derive(Debug)]
pub(crate) struct Watch<'registry> {
    registry: &'registry Registry,
    key: Arc<str>,
    signal: Arc<Signal>,
}

impl Registry {
    /// Watches `key` for a waiter. Also says whether the key was not watched before (it needs a
    /// subscription).
    pub(crate) fn watch(&self, key: &str) -> (Watch<'_>, bool) {
        let key: Arc<str> = Arc::from(key);
        let mut keys = self.lock();
        let (watched, new) = match keys.entry(Arc::clone(&key)) {
            hash_map::Entry::Occupied(occupied) => (occupied.into_mut(), false),
            hash_map::Entry::Vacant(vacant) => {
                self.count.fetch_add(1, Ordering::SeqCst);
                (vacant.insert(Watched::default()), true)
            }
        };
        watched.waiters += 1;
        watched.idle_since = None;
        let signal = Arc::clone(&watched.signal);
        drop(keys);
        (
            Watch {
                registry: self,
                key,
                signal,
            },
            new,
        )
    }

    /// A take of `key` is about to be sent.
    pub(crate) fn mark_take(&self, key: &str) {
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        if let Some(watched) = self.lock().get(key) {
            let signal = &watched.signal;
            signal.see_all();
        }
    }

    /// Wakes the waiters of `key` (a release was heard, or the key was found free once
    /// subscribed).
    pub(crate) fn wake(&self, key: &str) {
        if let Some(watched) = self.lock().get(key) {
            watched.signal.wake();
        }
    }

    /// Wakes the waiters of `key`, if it has any now.
    pub(crate) fn wake_waiting(&self, key: &str) {
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        if let Some(watched) = self.lock().get(key).filter(|watched| watched.waiters > 0) {
            watched.signal.wake();
        }
    }

    /// Whether `key` is watched (and subscribed, or about to be), and by how many waiters.
    pub(crate) fn interest(&self, key: &str) -> (bool, usize) {
        if self.count.load(Ordering::SeqCst) == 0 {
            return (false, 0);
        }
        self.lock()
            .get(key)
            .map_or((false, 0), |watched| (true, watched.waiters))
    }

    /// Whether `key` is watched.
    pub(crate) fn watches(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// Every watched key.
    pub(crate) fn keys(&self) -> Vec<Arc<str>> {
        self.lock().keys().cloned().collect()
    }

    /// Stops watching the keys nobody has waited on for `linger`, and returns them.
    pub(crate) fn take_idle(&self, linger: Duration) -> Vec<Arc<str>> {
        let mut keys = self.lock();
        let mut idle = Vec::new();
        keys.retain(|key, watched| {
            let keep = watched
                .idle_since
                .is_none_or(|since| since.elapsed() < linger);
            if !keep {
                idle.push(Arc::clone(key));
            }
            keep
        });
        self.count.fetch_sub(idle.len(), Ordering::SeqCst);
        idle
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Watched>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Watch<'_> {
    /// The watched key.
    pub(crate) fn key(&self) -> &Arc<str> {
        &self.key
    }

    /// Waits for a wake-up of the key, or at most `max_wait`. Returns at once if one came
    /// that nobody acted on yet (the last take may have missed that release).
    pub(crate) async fn wait(&self, max_wait: Duration) {
        let notified = self.signal.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.signal.see_all() {
            let _ = tokio::time::timeout(max_wait, notified).await;
            self.signal.see_all();
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if let Some(watched) = self.registry.lock().get_mut(&self.key) {
            watched.waiters -= 1;
            if watched.waiters == 0 {
                watched.idle_since = Some(Instant::now());
            }
        }
    }
}
