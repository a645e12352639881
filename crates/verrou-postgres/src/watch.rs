//! The keys this store's waiters wait for, and how they are woken.
//!
//! A waiting `acquire` joins the watch of its key. The listener (see `listener.rs`) takes
//! a session-level shared advisory lock on the key's id for every watched key: releases
//! check that lock and announce themselves only when someone holds it, so uncontended
//! releases never pay for `NOTIFY`. When the listener hears an announcement it wakes the
//! key's waiters. All of this is bookkeeping in memory; the listener does the talking.
//!
//! Two windows are closed here, so that no release goes unheard:
//! - a release between a waiter's failed take and the registration of its key: right
//!   after registering, the listener checks whether the key is still held (see
//!   `Statements::probe`) and wakes the waiters if not;
//! - a release between a waiter's failed take and the moment it starts waiting: every
//!   watch counts the releases it heard, the store notes the count before each take, and
//!   a waiter that finds the count moved returns at once.
//!
//! A key is let go (its advisory lock given back) when the listener next syncs after its
//! last waiter left, so that a release is announced only while someone waits: the releasing
//! store can then tell its factory that others wait (`OwnerCheck::AppliedWithWaiters`). A
//! key that gets a new waiter before that keeps its registration. At most
//! [`MAX_WATCHED_KEYS`] keys are watched at once, so that a process with many waiters
//! cannot fill the server's lock table; waiters of further keys poll at their retry delay.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// The most keys one store watches at once: the advisory locks a session may hold on
/// average with PostgreSQL's default `max_locks_per_transaction`.
pub(crate) const MAX_WATCHED_KEYS: usize = 64;

/// The watched keys of one store, shared by the store and its listener.
#[derive(Debug, Default)]
pub(crate) struct Watches {
    slots: Mutex<Slots>,
    /// How many keys are watched, read without the mutex: a take costs nothing here while
    /// nobody waits.
    len: AtomicUsize,
    /// Tells the listener that there are keys to register or unregister.
    work: Notify,
}

#[derive(Debug, Default)]
struct Slots {
    by_id: HashMap<i64, Slot>,
    /// Ids whose advisory lock the listener holds but no longer needs.
    to_unlock: Vec<i64>,
}

#[derive(Debug)]
struct Slot {
    watch: Arc<Watch>,
    waiters: usize,
    registration: Registration,
    /// Whether the registration attempt before the current one was refused.
    refused_last_time: bool,
}

/// Where the advisory lock of a watched key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registration {
    /// Not held; the listener should take it.
    Wanted,
    /// The listener is taking it.
    Requested,
    /// Held by the listener's session: releases of the key announce themselves.
    Held,
    /// The last attempt was refused; tried again at the listener's next tick.
    Refused,
}

/// One watched key.
#[derive(Debug)]
struct Watch {
    key: String,
    woken: Notify,
    /// Releases heard for the key (announcements, and releases found by a probe).
    heard: AtomicU64,
    /// The value of `heard` that the waiters have accounted for: read before their last
    /// failed take, or when they last woke.
    seen: AtomicU64,
}

/// A key's release count, read before a take: if the take fails, [`busy`](Self::busy)
/// records it, and a release heard since makes the next wait return at once.
#[derive(Debug)]
pub(crate) struct BeforeTake {
    watch: Arc<Watch>,
    heard: u64,
}

/// A waiter's place in the watch of its key; leaving when dropped.
#[derive(Debug)]
pub(crate) struct Waiter<'watches> {
    watches: &'watches Watches,
    id: i64,
    watch: Arc<Watch>,
}

/// A key the listener should register: its id, and the key itself for the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) id: i64,
    pub(crate) key: String,
}

impl Watches {
    /// Notes the release count of a key before a take, if the key is watched. The key's
    /// id is computed (by `id`) only when some key is.
    pub(crate) fn before_take(&self, id: impl FnOnce() -> i64) -> Option<BeforeTake> {
        if self.len.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let id = id();
        let slots = self.lock();
        let watch = Arc::clone(&slots.by_id.get(&id)?.watch);
        let heard = watch.heard.load(Ordering::SeqCst);
        Some(BeforeTake { watch, heard })
    }

    /// Joins the watch of `key` (whose id is `id`), starting one if needed. `None` when
    /// [`MAX_WATCHED_KEYS`] keys with waiters are watched already.
    pub(crate) fn join(&self, key: &str, id: i64) -> Option<Waiter<'_>> {
        let mut slots = self.lock();
        if let Some(slot) = slots.by_id.get_mut(&id) {
            slot.waiters += 1;
            let watch = Arc::clone(&slot.watch);
            return Some(Waiter {
                watches: self,
                id,
                watch,
            });
        }
        if slots.by_id.len() >= MAX_WATCHED_KEYS {
            slots.drop_idle();
            if slots.by_id.len() >= MAX_WATCHED_KEYS {
                return None;
            }
        }
        let watch = Arc::new(Watch {
            key: key.to_owned(),
            woken: Notify::new(),
            heard: AtomicU64::new(0),
            seen: AtomicU64::new(0),
        });
        slots.by_id.insert(
            id,
            Slot {
                watch: Arc::clone(&watch),
                waiters: 1,
                registration: Registration::Wanted,
                refused_last_time: false,
            },
        );
        self.len.store(slots.by_id.len(), Ordering::SeqCst);
        drop(slots);
        self.work.notify_one();
        Some(Waiter {
            watches: self,
            id,
            watch,
        })
    }

    /// Wakes the waiters of the key with `id`: it was released.
    pub(crate) fn released(&self, id: i64) {
        if let Some(slot) = self.lock().by_id.get(&id) {
            slot.watch.wake();
        }
    }

    /// Completes when there may be keys to register or unregister.
    pub(crate) async fn work(&self) {
        self.work.notified().await;
    }

    /// The keys to register, now marked as being registered.
    pub(crate) fn take_wanted(&self) -> Vec<Wanted> {
        let mut slots = self.lock();
        slots
            .by_id
            .iter_mut()
            .filter(|(_, slot)| slot.registration == Registration::Wanted)
            .map(|(id, slot)| {
                slot.registration = Registration::Requested;
                Wanted {
                    id: *id,
                    key: slot.watch.key.clone(),
                }
            })
            .collect()
    }

    /// Records which keys the listener could register (`true`) and which it could not:
    /// someone held the advisory lock exclusively, most likely a release of that very key
    /// committing, so the key's waiters are woken to ask again. A refused key is tried
    /// again at the listener's next tick, and a second refusal in a row wakes nobody (an
    /// application's own advisory lock with the same number would otherwise keep them
    /// busy).
    pub(crate) fn registered(&self, outcomes: &[(i64, bool)]) {
        let mut slots = self.lock();
        for (id, held) in outcomes {
            let Some(slot) = slots.by_id.get_mut(id) else {
                continue;
            };
            if *held {
                slot.registration = Registration::Held;
                slot.refused_last_time = false;
            } else {
                slot.registration = Registration::Refused;
                if !slot.refused_last_time {
                    slot.watch.wake();
                }
                slot.refused_last_time = true;
            }
        }
    }

    /// Lets go of the keys nobody waits for any more; returns the ids whose advisory locks
    /// the listener should give back.
    pub(crate) fn take_unlocks(&self) -> Vec<i64> {
        let mut slots = self.lock();
        slots.drop_idle();
        self.len.store(slots.by_id.len(), Ordering::SeqCst);
        std::mem::take(&mut slots.to_unlock)
    }

    /// The listener lost its session, and with it every advisory lock: all keys need
    /// registering again.
    pub(crate) fn disconnected(&self) {
        let mut slots = self.lock();
        slots.to_unlock.clear();
        for slot in slots.by_id.values_mut() {
            slot.registration = Registration::Wanted;
        }
    }

    /// Makes the keys whose registration was refused wanted again.
    pub(crate) fn retry_refused(&self) {
        for slot in self.lock().by_id.values_mut() {
            if slot.registration == Registration::Refused {
                slot.registration = Registration::Wanted;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Slots {
    /// Stops watching the keys nobody waits for (but not those being registered: their
    /// answer must find them).
    fn drop_idle(&mut self) {
        let to_unlock = &mut self.to_unlock;
        self.by_id.retain(|id, slot| {
            let idle = slot.waiters == 0 && slot.registration != Registration::Requested;
            if idle && slot.registration == Registration::Held {
                to_unlock.push(*id);
            }
            !idle
        });
    }
}

impl Watch {
    fn wake(&self) {
        self.heard.fetch_add(1, Ordering::SeqCst);
        self.woken.notify_waiters();
    }
}

impl BeforeTake {
    /// The take failed: releases heard from now on are news to the waiter.
    pub(crate) fn busy(self) {
        self.watch.seen.store(self.heard, Ordering::SeqCst);
    }
}

impl Waiter<'_> {
    /// Waits until the key is heard released, or at most `max_wait`. Returns at once if a
    /// release was heard since the waiter's last failed take.
    pub(crate) async fn wait(&self, max_wait: Duration) {
        let woken = self.watch.woken.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let heard = self.watch.heard.load(Ordering::SeqCst);
        if self.watch.seen.swap(heard, Ordering::SeqCst) < heard {
            return;
        }
        if tokio::time::timeout(max_wait, woken).await.is_ok() {
            let heard = self.watch.heard.load(Ordering::SeqCst);
            self.watch.seen.store(heard, Ordering::SeqCst);
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut slots = self.watches.lock();
        if let Some(slot) = slots.by_id.get_mut(&self.id) {
            slot.waiters -= 1;
            if slot.waiters == 0 {
                drop(slots);
                self.watches.work.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(3600);

    async fn returns_soon(waiter: &Waiter<'_>) -> bool {
        tokio::time::timeout(Duration::from_secs(1), waiter.wait(LONG))
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_release_wakes_the_waiters_of_its_key_only() {
        let watches = Arc::new(Watches::default());
        let waiting = Arc::clone(&watches);
        let task = tokio::spawn(async move {
            let waiter = waiting.join("a", 1).expect("room");
            waiter.wait(LONG).await;
        });
        let other = watches.join("b", 2).expect("room");
        while watches.before_take(|| 1).is_none() {
            tokio::task::yield_now().await;
        }
        watches.released(1);
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("woken")
            .expect("task");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), other.wait(LONG))
                .await
                .is_err(),
            "another key's release wakes nobody here"
        );
    }

    #[tokio::test]
    async fn a_release_heard_between_a_failed_take_and_the_wait_is_not_lost() {
        let watches = Watches::default();
        let waiter = watches.join("a", 1).expect("room");
        let before = watches.before_take(|| 1).expect("watched");
        watches.released(1); // while the take was on its way
        before.busy();
        assert!(returns_soon(&waiter).await, "returns at once");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiter.wait(LONG))
                .await
                .is_err(),
            "the release is accounted for: no busy loop"
        );
    }

    #[tokio::test]
    async fn a_refused_registration_wakes_once_and_is_wanted_again() {
        let watches = Watches::default();
        let waiter = watches.join("a", 1).expect("room");
        let wanted = watches.take_wanted();
        assert_eq!(
            wanted,
            vec![Wanted {
                id: 1,
                key: "a".into()
            }]
        );
        assert!(watches.take_wanted().is_empty(), "requested once");
        watches.registered(&[(1, false)]);
        assert!(returns_soon(&waiter).await);
        assert!(
            watches.take_wanted().is_empty(),
            "not again before the next tick"
        );
        watches.retry_refused();
        assert_eq!(watches.take_wanted().len(), 1);
        watches.registered(&[(1, false)]);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiter.wait(LONG))
                .await
                .is_err(),
            "a second refusal in a row wakes nobody"
        );
    }

    #[test]
    fn keys_nobody_waits_for_are_let_go_unless_a_waiter_came_back() {
        let watches = Watches::default();
        drop(watches.join("a", 1).expect("room"));
        let _ = watches.take_wanted();
        watches.registered(&[(1, true)]);
        let again = watches.join("a", 1).expect("room");
        assert!(watches.take_unlocks().is_empty(), "a waiter came back");
        assert!(watches.take_wanted().is_empty(), "still registered");
        drop(again);
        assert_eq!(watches.take_unlocks(), vec![1]);
        assert!(watches.before_take(|| 1).is_none());
        assert!(watches.take_unlocks().is_empty());
    }

    #[test]
    fn at_most_max_keys_are_watched_and_idle_ones_make_room() {
        let watches = Watches::default();
        let waiters: Vec<_> = (0..MAX_WATCHED_KEYS)
            .map(|id| {
                let id = i64::try_from(id).expect("small");
                watches.join(&id.to_string(), id).expect("room")
            })
            .collect();
        assert!(watches.join("full", -1).is_none(), "no room: poll");
        let _ = watches.take_wanted();
        watches.registered(&[(0, true)]);
        drop(waiters);
        assert!(watches.join("full", -1).is_some(), "idle keys made room");
        assert_eq!(
            watches.take_unlocks(),
            vec![0],
            "the registered one is unlocked"
        );
    }

    #[test]
    fn a_lost_session_means_registering_again() {
        let watches = Watches::default();
        let _waiter = watches.join("a", 1).expect("room");
        let _ = watches.take_wanted();
        watches.registered(&[(1, true)]);
        assert!(watches.take_wanted().is_empty());
        watches.disconnected();
        assert_eq!(watches.take_wanted().len(), 1);
    }
}
