//! One shard of the store: the locks and lines of the keys that hash to it, under one mutex.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::hash_table::Entry as Slot;
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::expiry::{Deadline, ExpiryQueue};
use crate::line::{Hashed, Lines};
use crate::shares::Shares;
use crate::tokens::Tokens;
use verrou_core::{Family, KeyAndOwner, HANDOVER_WINDOW};

/// The locks and waiting lines of some keys.
#[derive(Debug)]
pub(crate) struct Shard {
    entries: HashTable<Entry>,
    lines: Lines,
    /// Deadlines of the entries, naming each by its key's hash (the generation tells it
    /// from the other entries of that hash).
    expiry: ExpiryQueue<u64>,
    semaphores: Shares,
    rw_locks: Shares,
    tokens: Tokens,
}

/// A held lock.
#[derive(Debug)]
struct Entry {
    held: KeyAndOwner,
    /// The key's hash, with the store's hasher.
    hash: u64,
    expires_at: Option<Instant>,
    /// Tells this hold's deadline in the expiry queue from older ones of the key (unique in
    /// the shard: it is the hold's fencing token, or the extension's).
    generation: u64,
}

impl Entry {
    fn new(hashed: Hashed<'_>, owner: &str, expires_at: Option<Instant>, generation: u64) -> Self {
        Self {
            held: KeyAndOwner::new(hashed.key, owner),
            hash: hashed.hash,
            expires_at,
            generation,
        }
    }

    fn key(&self) -> &str {
        self.held.key()
    }

    fn owner(&self) -> &str {
        self.held.owner()
    }

    /// The deadline of this hold, if it expires.
    fn deadline(&self) -> Option<Deadline<u64>> {
        self.expires_at.map(|at| Deadline {
            at,
            generation: self.generation,
            key: self.hash,
        })
    }
}

/// What a take did.
#[derive(Debug)]
pub(crate) enum Taken {
    /// Granted, with this fencing token.
    Granted(u64),
    /// The owner held it already, and its hold starts again (for shares), with this fencing
    /// token.
    Renewed(u64),
    /// Busy; the key was free but for the line, and handed to this waiter, if any.
    Busy { handed: Option<Arc<str>> },
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
    /// computed once), whose first fencing token is `first_token`.
    pub(crate) fn new(hasher: &DefaultHashBuilder, first_token: u64) -> Self {
        Self {
            entries: HashTable::new(),
            lines: Lines::new(hasher),
            expiry: ExpiryQueue::default(),
            semaphores: Shares::new(hasher),
            rw_locks: Shares::new(hasher),
            tokens: Tokens::starting_at(first_token),
        }
    }

    /// How many locks are held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `key` is held.
    pub(crate) fn is_held(&self, key: Hashed<'_>) -> bool {
        self.entries
            .find(key.hash, |entry| entry.key() == key.key)
            .is_some()
    }

    /// The semaphores or the read-write locks.
    pub(crate) fn shares(&mut self, family: Family) -> &mut Shares {
        self.shares_and_tokens(family).0
    }

    /// The semaphores or the read-write locks, with the shard's fencing tokens.
    pub(crate) fn shares_and_tokens(&mut self, family: Family) -> (&mut Shares, &mut Tokens) {
        let shares = match family {
            Family::RwLock => &mut self.rw_locks,
            Family::Semaphore | _ => &mut self.semaphores,
        };
        (shares, &mut self.tokens)
    }

    /// Drops the locks and shares whose deadline is at or before `now`.
    pub(crate) fn drop_expired(&mut self, now: Instant) {
        self.semaphores.drop_expired(now);
        self.rw_locks.drop_expired(now);
        while let Some(deadline) = self.expiry.pop_due(now) {
            let current = self.entries.find_entry(deadline.key, |entry| {
                entry.generation == deadline.generation
            });
            if let Ok(current) = current {
                current.remove();
            }
        }
    }

    /// Takes `key` (whose hash is `hash`) for `owner` if it is free and no live waiter is
    /// ahead of `waiting`; returns the fencing token. When busy, keeps the waiter's place;
    /// when busy only because of the line, hands the key over to the front waiter unless it
    /// was handed the key already (see [`Lines::hand_over_unless_handed`]), for the
    /// [`HANDOVER_WINDOW`].
    pub(crate) fn take(
        &mut self,
        hashed: Hashed<'_>,
        owner: &str,
        ttl: Option<Duration>,
        waiting: Option<Waiting<'_>>,
        now: Instant,
    ) -> Taken {
        let waiter = waiting.map(|waiting| waiting.waiter);
        let mut handed = None;
        if self.lines.lets(hashed, waiter, now) {
            if let Some(token) = self.insert(hashed, owner, ttl, now) {
                if let Some(waiter) = waiter {
                    self.lines.remove(hashed, waiter);
                }
                return Taken::Granted(token);
            }
        } else if !self.is_held(hashed) {
            handed = self
                .lines
                .hand_over_unless_handed(hashed, now, HANDOVER_WINDOW);
        }
        if let Some(waiting) = waiting {
            self.lines
                .keep(hashed, waiting.waiter, waiting.deadline(now));
        }
        Taken::Busy { handed }
    }

    /// Inserts the lock if `key` is free; its fencing token.
    fn insert(
        &mut self,
        hashed: Hashed<'_>,
        owner: &str,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Option<u64> {
        let slot = self.entries.entry(
            hashed.hash,
            |entry| entry.key() == hashed.key,
            |entry| entry.hash,
        );
        let Slot::Vacant(vacant) = slot else {
            return None;
        };
        let token = self.tokens.issue();
        let expires_at = ttl.map(|ttl| now.checked_add(ttl).unwrap_or(now));
        let entry = vacant.insert(Entry::new(hashed, owner, expires_at, token));
        if let Some(deadline) = entry.get().deadline() {
            self.expire_at(deadline);
        }
        Some(token)
    }

    /// Makes `key` expire `ttl` from `now` if `owner` holds it.
    pub(crate) fn extend(
        &mut self,
        key: Hashed<'_>,
        owner: &str,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        let Some(entry) = self
            .entries
            .find_mut(key.hash, |entry| entry.key() == key.key)
        else {
            return false;
        };
        if entry.owner() != owner {
            return false;
        }
        entry.expires_at = Some(now.checked_add(ttl).unwrap_or(now));
        entry.generation = self.tokens.issue();
        if let Some(deadline) = entry.deadline() {
            self.expire_at(deadline);
        }
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
        let held = self
            .entries
            .find_entry(hashed.hash, |entry| entry.key() == hashed.key)
            .ok()?;
        if owner.is_some_and(|owner| held.get().owner() != owner) {
            return None;
        }
        held.remove();
        Some(self.lines.hand_over(hashed, now, window))
    }

    /// When the holder of `key` of `family` (`None`: the lock) that expires first does
    /// (`None`: nobody holds it, or its holders never expire).
    pub(crate) fn next_expiry(
        &mut self,
        family: Option<Family>,
        key: Hashed<'_>,
        now: Instant,
    ) -> Option<Instant> {
        match family {
            None => {
                self.entries
                    .find(key.hash, |entry| entry.key() == key.key)?
                    .expires_at
            }
            Some(family) => self.shares(family).next_expiry(key, now),
        }
    }

    /// Hands `key` of `family` (`None`: the lock) over to its front waiter, as a take
    /// refused only because of the line does, if it is free for the front (for shares, see
    /// [`Shares::pass_to_front`]: a holder that just `expired` may have left room) and the
    /// front was not handed it already: the waiter to wake.
    pub(crate) fn pass_to_front(
        &mut self,
        family: Option<Family>,
        key: Hashed<'_>,
        expired: bool,
        now: Instant,
        window: Duration,
    ) -> Option<Arc<str>> {
        match family {
            None if self.is_held(key) => None,
            None => self.lines.hand_over_unless_handed(key, now, window),
            Some(family) => self.shares(family).pass_to_front(key, expired, now, window),
        }
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
        if self.lines.remove(hashed, waiter) && !self.is_held(hashed) {
            self.lines.hand_over(hashed, now, window)
        } else {
            None
        }
    }

    /// Queues a hold's deadline, and rebuilds the queue if stale deadlines have piled up.
    fn expire_at(&mut self, deadline: Deadline<u64>) {
        self.expiry.push(deadline);
        let entries = &self.entries;
        self.expiry.compact_if_bloated(entries.len(), || {
            entries.iter().filter_map(Entry::deadline).collect()
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
