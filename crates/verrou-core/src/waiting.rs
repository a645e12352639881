//! The waiting line: waiters of one factory queue per key, and only the first asks the store.
//!
//! Without it, every waiter polls the store, and a holder that releases and at once acquires
//! again wins nearly every time (it asks before the woken waiters do). With it, waiters of a
//! key are served in arrival order; only the one at the front of the line talks to the store
//! (woken by a local release, by the store's release notification, or by its retry delay),
//! and a newcomer joins the back of the line instead of overtaking.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How long a factory that released a key to waiters elsewhere leaves it to them before its
/// own next `acquire` of the key asks the store (it asks earlier when it hears the key
/// released again).
pub(crate) const HANDOVER_GRACE: Duration = Duration::from_millis(50);

/// The lines of every key that has waiters, for the locks of one factory.
#[derive(Debug, Default)]
pub(crate) struct WaitRoom {
    /// Keys this factory released while others elsewhere waited, and until when it leaves
    /// them to those waiters.
    handovers: Mutex<HashMap<String, Instant>>,
    /// Whether `handovers` may hold anything, read without its mutex.
    any_handovers: AtomicBool,
    lines: Mutex<HashMap<String, Arc<Line>>>,
    /// How many lines there are, read without the mutex so that acquiring and releasing
    /// cost nothing here while nobody waits.
    line_count: AtomicUsize,
}

/// The waiters of one key.
#[derive(Debug)]
pub(crate) struct Line {
    /// One permit: the waiter that holds it is at the front and may ask the store.
    front: Arc<Semaphore>,
    /// Whether a lock of this factory holds the key (asking the store would be in vain).
    held_here: AtomicBool,
    /// Signalled when a lock of this factory releases the key.
    released: Notify,
}

/// A waiter's place in a line; leaving the room when dropped.
#[derive(Debug)]
pub(crate) struct Ticket<'room> {
    room: &'room WaitRoom,
    key: &'room str,
    line: Arc<Line>,
}

impl WaitRoom {
    /// Joins the line of `key`.
    pub(crate) fn join<'room>(&'room self, key: &'room str) -> Ticket<'room> {
        let line = Arc::clone(self.lock().entry(key.to_owned()).or_insert_with(|| {
            self.line_count.fetch_add(1, Ordering::SeqCst);
            Arc::new(Line {
                front: Arc::new(Semaphore::new(1)),
                held_here: AtomicBool::new(false),
                released: Notify::new(),
            })
        }));
        Ticket {
            room: self,
            key,
            line,
        }
    }

    /// A lock of this factory acquired `key`.
    pub(crate) fn acquired(&self, key: &str) {
        if self.line_count.load(Ordering::SeqCst) == 0 {
            return;
        }
        if let Some(line) = self.lock().get(key) {
            line.held_here.store(true, Ordering::SeqCst);
        }
    }

    /// A lock of this factory released `key` (or learnt it no longer holds it): wake the
    /// waiter at the front.
    pub(crate) fn released(&self, key: &str) {
        if self.line_count.load(Ordering::SeqCst) == 0 {
            return;
        }
        if let Some(line) = self.lock().get(key) {
            line.held_here.store(false, Ordering::SeqCst);
            line.released.notify_one();
        }
    }

    /// A lock of this factory released `key` while others waited for it elsewhere.
    pub(crate) fn handed_over(&self, key: &str) {
        let Some(until) = crate::clock::after(Instant::now(), HANDOVER_GRACE) else {
            return;
        };
        self.current_handovers().insert(key.to_owned(), until);
        self.any_handovers.store(true, Ordering::SeqCst);
    }

    /// Whether this factory recently handed `key` over to waiters elsewhere, so that asking
    /// for it now would overtake them.
    pub(crate) fn recently_handed_over(&self, key: &str) -> bool {
        if !self.any_handovers.load(Ordering::SeqCst) {
            return false;
        }
        let handovers = self.current_handovers();
        if handovers.is_empty() {
            self.any_handovers.store(false, Ordering::SeqCst);
        }
        handovers.contains_key(key)
    }

    /// The handovers whose grace has not run out yet (the others are forgotten).
    fn current_handovers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        let now = Instant::now();
        let mut handovers = self
            .handovers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        handovers.retain(|_, until| *until > now);
        handovers
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Line>>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Ticket<'_> {
    /// The front place, if nobody holds it now.
    pub(crate) fn try_front(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.line.front).try_acquire_owned().ok()
    }

    /// Waits for the front place, keeping this waiter's turn while the future lives.
    pub(crate) async fn front(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.line.front)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the front semaphore is never closed"))
    }

    /// Whether a lock of this factory holds the key.
    pub(crate) fn held_here(&self) -> bool {
        self.line.held_here.load(Ordering::SeqCst)
    }

    /// Completes when a lock of this factory releases the key.
    pub(crate) async fn released(&self) {
        self.line.released.notified().await;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut lines = self.room.lock();
        // The map and this ticket: nobody else waits, so the line goes.
        if Arc::strong_count(&self.line) == 2 {
            lines.remove(self.key);
            self.room.line_count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
