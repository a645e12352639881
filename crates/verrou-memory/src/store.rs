//! [`MemoryStore`]: locks in a map guarded by a mutex.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hashbrown::hash_map::{EntryRef, RawEntryMut};
use hashbrown::HashMap;
use tokio::sync::Notify;
use verrou_core::{Acquisition, Grant, IntoDuration, LockStore, OwnerCheck, Result};

use crate::expiry::{Deadline, ExpiryQueue};

/// Locks held in this process's memory: fast, and shared only by the tasks of one process.
///
/// Each operation is one critical section, O(log n). Expiry uses the monotonic clock.
/// Fencing tokens come from one counter for the whole store, so they grow for every key.
/// The counter starts at the wall clock's nanoseconds since the Unix epoch, so tokens also
/// keep growing across restarts of the process (as long as the wall clock does not run
/// backwards and the store issued fewer than one token per nanosecond of its life).
/// Expired entries never block anyone and never pile up: every operation first drops the
/// entries whose deadline has passed.
///
/// Cloning gives another handle to the same locks.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    table: Arc<Mutex<Table>>,
}

#[derive(Debug)]
struct Table {
    entries: HashMap<Arc<str>, Entry>,
    /// Tasks waiting for a key to be released, woken by release and force release.
    waiters: HashMap<Arc<str>, Arc<Notify>>,
    expiry: ExpiryQueue,
    /// Starts at the wall clock in nanoseconds (at least 1, so every token is positive).
    next_generation: u64,
}

/// What [`Table::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    NotHeld,
    Removed,
    RemovedWithWaiters,
}

#[derive(Debug)]
struct Entry {
    owner: Box<str>,
    expires_at: Option<Instant>,
    generation: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many locks the store holds, not counting expired ones.
    pub fn len(&self) -> usize {
        self.with_table(|table, _| table.entries.len())
    }

    /// Whether the store holds no lock.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `operation` on the table, with the time, after dropping the entries that have
    /// expired.
    fn with_table<T>(&self, operation: impl FnOnce(&mut Table, Instant) -> T) -> T {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        table.drop_expired(now);
        operation(&mut table, now)
    }
}

impl Default for Table {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            waiters: HashMap::new(),
            expiry: ExpiryQueue::default(),
            next_generation: epoch_nanos_now().max(1),
        }
    }
}

impl Table {
    fn drop_expired(&mut self, now: Instant) {
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

    /// A new generation: it grows with every grant and extension, so it doubles as the
    /// fencing token.
    fn next_generation(&mut self) -> u64 {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.saturating_add(1);
        generation
    }

    /// Takes `key` for `owner` until `ttl` after `now` if it is free; the fencing token.
    fn take(&mut self, key: &str, owner: &str, ttl: Option<Duration>, now: Instant) -> Option<u64> {
        let generation = self.next_generation;
        let hash = self.entries.hasher().hash_one(key);
        let RawEntryMut::Vacant(vacant) = self
            .entries
            .raw_entry_mut()
            .from_key_hashed_nocheck(hash, key)
        else {
            return None;
        };
        let expires_at = ttl.map(|ttl| deadline(now, ttl));
        let entry = Entry {
            owner: owner.into(),
            expires_at,
            generation,
        };
        let (key, _) = vacant.insert_hashed_nocheck(hash, Arc::from(key), entry);
        let key = Arc::clone(key);
        self.granted(key, expires_at, generation);
        Some(generation)
    }

    /// Moves the expiry of `key` to `ttl` after `now` if `owner` holds it.
    fn extend(&mut self, key: &str, owner: &str, ttl: Duration, now: Instant) -> bool {
        let generation = self.next_generation;
        let Some((key, entry)) = self.entries.get_key_value_mut(key) else {
            return false;
        };
        if &*entry.owner != owner {
            return false;
        }
        let at = deadline(now, ttl);
        entry.expires_at = Some(at);
        entry.generation = generation;
        let key = Arc::clone(key);
        self.granted(key, Some(at), generation);
        true
    }

    /// Books the expiry of the entry of `key` just given `generation`, and moves the
    /// generation on.
    fn granted(&mut self, key: Arc<str>, expires_at: Option<Instant>, generation: u64) {
        if let Some(at) = expires_at {
            self.expiry.push(Deadline {
                at,
                generation,
                key,
            });
        }
        self.next_generation();
        self.compact_expiry();
    }

    /// Removes `key` if `owner` holds it (or whoever holds it, without owner) and wakes the
    /// task that has waited longest for it.
    fn remove(&mut self, key: &str, owner: Option<&str>) -> Removal {
        let EntryRef::Occupied(occupied) = self.entries.entry_ref(key) else {
            return Removal::NotHeld;
        };
        if owner.is_some_and(|owner| &*occupied.get().owner != owner) {
            return Removal::NotHeld;
        }
        occupied.remove();
        match self.waiters.get(key) {
            // Each waiter holds a clone while it waits.
            Some(waiters) if Arc::strong_count(waiters) > 1 => {
                waiters.notify_one();
                Removal::RemovedWithWaiters
            }
            _ => Removal::Removed,
        }
    }

    fn compact_expiry(&mut self) {
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
}

/// Forgets the waiters entry of a key once its last waiter is gone, even if the wait was
/// cancelled.
struct LeaveWaiters<'a> {
    store: &'a MemoryStore,
    key: &'a str,
}

impl Drop for LeaveWaiters<'_> {
    fn drop(&mut self) {
        self.store.with_table(|table, _| {
            let unused = table
                .waiters
                .get(self.key)
                .is_some_and(|notify| Arc::strong_count(notify) == 1);
            if unused {
                table.waiters.remove(self.key);
            }
        });
    }
}

/// The wall clock in nanoseconds since the Unix epoch (0 before it, `u64::MAX` after 2554).
fn epoch_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// `now + ttl` for a TTL checked by [`IntoDuration`] (at most `MAX_DURATION`).
fn deadline(now: Instant, ttl: Duration) -> Instant {
    // At most MAX_DURATION ahead: representable on every platform Tokio runs on.
    now.checked_add(ttl).unwrap_or(now)
}

#[async_trait]
impl LockStore for MemoryStore {
    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition> {
        let ttl = ttl.map(IntoDuration::into_duration).transpose()?;
        Ok(
            self.with_table(|table, now| match table.take(key, owner, ttl, now) {
                Some(fencing_token) => {
                    Acquisition::Granted(Grant::with_fencing_token(fencing_token))
                }
                None => Acquisition::Busy,
            }),
        )
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        Ok(
            self.with_table(|table, _| match table.remove(key, Some(owner)) {
                Removal::Removed => OwnerCheck::Applied,
                Removal::RemovedWithWaiters => OwnerCheck::AppliedWithWaiters,
                Removal::NotHeld => OwnerCheck::NotOwner,
            }),
        )
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        self.with_table(|table, _| table.remove(key, None));
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.with_table(|table, _| table.entries.contains_key(key)))
    }

    /// Returns when `key` is released or force-released, when its holder's TTL runs out, or
    /// after `max_wait`, whichever comes first.
    async fn wait_for_release(&self, key: &str, max_wait: Duration) {
        let _leave = LeaveWaiters { store: self, key };
        let (released, wait) = self.with_table(|table, now| {
            let notify = Arc::clone(
                table
                    .waiters
                    .entry(Arc::from(key))
                    .or_insert_with(|| Arc::new(Notify::new())),
            );
            let until_expiry = table
                .entries
                .get(key)
                .and_then(|entry| entry.expires_at)
                .map(|at| at.saturating_duration_since(now));
            let wait = until_expiry.map_or(max_wait, |left| left.min(max_wait));
            (notify.notified_owned(), wait)
        });
        let _ = tokio::time::timeout(wait, released).await;
    }

    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck> {
        let ttl = ttl.into_duration()?;
        Ok(
            self.with_table(|table, now| match table.extend(key, owner, ttl, now) {
                true => OwnerCheck::Applied,
                false => OwnerCheck::NotOwner,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn released_and_extended_locks_leave_a_bounded_expiry_queue() {
        let store = MemoryStore::new();
        let hour = Some(Duration::from_secs(3600));
        for _ in 0..10_000 {
            assert!(matches!(
                store.save("hot", "me", hour).await.unwrap(),
                Acquisition::Granted(_)
            ));
            assert_eq!(
                store
                    .extend("hot", "me", Duration::from_secs(3600))
                    .await
                    .unwrap(),
                OwnerCheck::Applied
            );
            assert_eq!(
                store.delete("hot", "me").await.unwrap(),
                OwnerCheck::Applied
            );
        }
        store.save("never", "me", None).await.unwrap();
        assert_eq!(store.len(), 1);
        let queued = store.with_table(|table, _| table.expiry.len());
        assert!(
            queued <= 2 + 64 + 1,
            "{queued} deadlines queued for 1 entry"
        );
    }
}
