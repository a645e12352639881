//! One shard of the store: the locks and lines of the keys that hash to it, under one mutex.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::hash_map::RawEntryMut;
use hashbrown::{DefaultHashBuilder, HashMap};

use crate::expiry::{Deadline, ExpiryQueue};
use crate::line::{Hashed, Lines};
use crate::shares::Shares;
use verrou_core::Family;

/// The locks and waiting lines of some keys.
#[derive(Debug)]
pub(crate) struct Shard {
    entries: HashMap<Arc<str>, Entry, DefaultHashBuilder>,
    lines: Lines,
    expiry: ExpiryQueue,
    semaphores: Shares,
    rw_locks: Shares,
}

/// A held lock.
#[derive(Debug)]
struct Entry {
    owner: Box<str>,
    expires_at: Option<Instant>,
    /// Tells this hold's deadline in the expiry queue from older ones of the key.
    generation: u64,
}

/// A take's place in the key's line, if it waits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiting<'a> {
    pub(crate) waiter: &'a str,
    pub(crate) lease: Duration,
}

impl Waiting<'_> {
    /// When a place kept `now` lapses.
    pub(crate) fn deadline(self, now: Instant) -> Instant {
        now.checked_add(self.lease).unwrap_or(now)
    }
}

impl Shard {
    /// An empty shard whose maps hash with `hasher` (the store's, so a key's hash is
    /// computed once).
    pub(crate) fn new(hasher: &DefaultHashBuilder) -> Self {
        Self {
            entries: HashMap::with_hasher(hasher.clone()),
            lines: Lines::new(hasher),
            expiry: ExpiryQueue::default(),
            semaphores: Shares::new(hasher),
            rw_locks: Shares::new(hasher),
        }
    }

    /// How many locks are held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `key` is held.
    pub(crate) fn is_held(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The semaphores or the read-write locks.
    pub(crate) fn shares(&mut self, family: Family) -> &mut Shares {
        match family {
            Family::RwLock => &mut self.rw_locks,
            Family::Semaphore | _ => &mut self.semaphores,
        }
    }

    /// Drops the locks and shares whose deadline is at or before `now`.
    pub(crate) fn drop_expired(&mut self, now: Instant) {
        self.semaphores.drop_expired(now);
        self.rw_locks.drop_expired(now);
        while let Some(deadline) = self.expiry.pop_due(now) {
            let current = self
                .entries
                .get(&deadline.key)
                .is_some_and(|entry| entry.generation == deadline.generation);
            if current {
                self.entries.remove(&deadline.key);
            }
        }
    }

    /// Takes `key` (whose hash is `hash`) for `owner` if it is free and no live waiter is
    /// ahead of `waiting`; returns the fencing token, drawn from `tokens`. When busy, keeps
    /// the waiter's place.
    pub(crate) fn take(
        &mut self,
        hashed: Hashed<'_>,
        owner: &str,
        ttl: Option<Duration>,
        waiting: Option<Waiting<'_>>,
        now: Instant,
        tokens: &AtomicU64,
    ) -> Option<u64> {
        let waiter = waiting.map(|waiting| waiting.waiter);
        if self.lines.lets(hashed, waiter, now) {
            if let Some(token) = self.insert(hashed, owner, ttl, now, tokens) {
                if let Some(waiter) = waiter {
                    self.lines.remove(hashed, waiter);
                }
                return Some(token);
            }
        }
        if let Some(waiting) = waiting {
            self.lines
                .keep(hashed, waiting.waiter, waiting.deadline(now));
        }
        None
    }

    /// Inserts the lock if `key` is free; its fencing token.
    fn insert(
        &mut self,
        hashed: Hashed<'_>,
        owner: &str,
        ttl: Option<Duration>,
        now: Instant,
        tokens: &AtomicU64,
    ) -> Option<u64> {
        let RawEntryMut::Vacant(vacant) = self
            .entries
            .raw_entry_mut()
            .from_key_hashed_nocheck(hashed.hash, hashed.key)
        else {
            return None;
        };
        let token = tokens.fetch_add(1, Ordering::Relaxed);
        let expires_at = ttl.map(|ttl| now.checked_add(ttl).unwrap_or(now));
        let entry = Entry {
            owner: owner.into(),
            expires_at,
            generation: token,
        };
        let (key, _) = vacant.insert_hashed_nocheck(hashed.hash, Arc::from(hashed.key), entry);
        if let Some(at) = expires_at {
            let key = Arc::clone(key);
            self.expire_at(key, at, token);
        }
        Some(token)
    }

    /// Makes `key` expire `ttl` from `now` if `owner` holds it.
    pub(crate) fn extend(
        &mut self,
        key: &str,
        owner: &str,
        ttl: Duration,
        now: Instant,
        tokens: &AtomicU64,
    ) -> bool {
        let Some((key, entry)) = self.entries.get_key_value_mut(key) else {
            return false;
        };
        if &*entry.owner != owner {
            return false;
        }
        let at = now.checked_add(ttl).unwrap_or(now);
        let generation = tokens.fetch_add(1, Ordering::Relaxed);
        entry.expires_at = Some(at);
        entry.generation = generation;
        let key = Arc::clone(key);
        self.expire_at(key, at, generation);
        true
    }

    /// Deletes `key` if `owner` (any owner if `None`) holds it. `None` if it was not held;
    /// else the waiter the key was handed over to, if anyone waits.
    pub(crate) fn remove(
        &mut self,
        hashed: Hashed<'_>,
        owner: Option<&str>,
        now: Instant,
        window: Duration,
    ) -> Option<Option<Arc<str>>> {
        let RawEntryMut::Occupied(occupied) = self
            .entries
            .raw_entry_mut()
            .from_key_hashed_nocheck(hashed.hash, hashed.key)
        else {
            return None;
        };
        if owner.is_some_and(|owner| &*occupied.get().owner != owner) {
            return None;
        }
        occupied.remove();
        Some(self.lines.hand_over(hashed, now, window))
    }

    /// Removes `waiter`'s place; if it was at the front and the key is free, hands the key
    /// over to the next waiter, returned.
    pub(crate) fn leave(
        &mut self,
        hashed: Hashed<'_>,
        waiter: &str,
        now: Instant,
        window: Duration,
    ) -> Option<Arc<str>> {
        if self.lines.remove(hashed, waiter) && !self.is_held(hashed.key) {
            self.lines.hand_over(hashed, now, window)
        } else {
            None
        }
    }

    /// Queues the deadline of `key`'s hold `generation`, and rebuilds the queue if stale
    /// deadlines have piled up.
    fn expire_at(&mut self, key: Arc<str>, at: Instant, generation: u64) {
        self.expiry.push(Deadline {
            at,
            generation,
            key,
        });
        let entries = &self.entries;
        self.expiry.compact_if_bloated(entries.len(), || {
            entries
                .iter()
                .filter_map(|(key, entry)| {
                    entry.expires_at.map(|at| Deadline {
                        at,
                        generation: entry.generation,
                        key: Arc::clone(key),
                    })
                })
                .collect()
        });
    }

    #[cfg(test)]
    pub(crate) fn queued_deadlines(&self) -> usize {
        self.expiry.len()
    }

    #[cfg(test)]
    pub(crate) fn lines(&self) -> usize {
        self.lines.len()
    }
}
