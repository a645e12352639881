//! [`MemoryStore`]: locks in a map guarded by a mutex.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;
use verrou_core::{Acquisition, Grant, LockStore, OwnerCheck, Result};

use crate::expiry::{Deadline, ExpiryQueue};

/// Locks held in this process's memory: fast, and shared only by the tasks of one process.
///
/// Each operation is one critical section, O(log n). Expiry uses the monotonic clock.
/// Fencing tokens come from one counter for the whole store, so they grow for every key.
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
    /// Starts at 1 so that every fencing token is positive.
    next_generation: u64,
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
        self.with_table(|table| table.entries.len())
    }

    /// Whether the store holds no lock.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `operation` on the table after dropping the entries that have expired.
    fn with_table<T>(&self, operation: impl FnOnce(&mut Table) -> T) -> T {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.drop_expired(Instant::now());
        operation(&mut table)
    }
}

impl Default for Table {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            waiters: HashMap::new(),
            expiry: ExpiryQueue::default(),
            next_generation: 1,
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

    /// Removes `key` and wakes the tasks waiting for it.
    fn remove(&mut self, key: &str) {
        if self.entries.remove(key).is_some() {
            if let Some(waiters) = self.waiters.get(key) {
                waiters.notify_waiters();
            }
        }
    }

    /// Whether `owner` holds `key` (expired entries are already gone).
    fn is_held_by(&self, key: &str, owner: &str) -> bool {
        self.entries
            .get(key)
            .is_some_and(|entry| &*entry.owner == owner)
    }

    /// Records `key` for `owner` until `ttl` from now, replacing any entry. Returns the
    /// entry's generation: it grows with every call, so it doubles as the fencing token.
    fn put(&mut self, key: &str, owner: &str, ttl: Option<Duration>) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        let key: Arc<str> = self
            .entries
            .get_key_value(key)
            .map_or_else(|| Arc::from(key), |(existing, _)| Arc::clone(existing));
        let expires_at = ttl.map(|ttl| Instant::now() + ttl);
        if let Some(at) = expires_at {
            self.expiry.push(Deadline {
                at,
                generation,
                key: Arc::clone(&key),
            });
        }
        self.entries.insert(
            key,
            Entry {
                owner: owner.into(),
                expires_at,
                generation,
            },
        );
        self.compact_expiry();
        generation
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
        self.store.with_table(|table| {
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

#[async_trait]
impl LockStore for MemoryStore {
    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition> {
        Ok(self.with_table(|table| {
            if table.entries.contains_key(key) {
                Acquisition::Busy
            } else {
                let fencing_token = table.put(key, owner, ttl);
                Acquisition::Granted(Grant::with_fencing_token(fencing_token))
            }
        }))
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        Ok(self.with_table(|table| {
            if table.is_held_by(key, owner) {
                table.remove(key);
                OwnerCheck::Applied
            } else {
                OwnerCheck::NotOwner
            }
        }))
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        self.with_table(|table| table.remove(key));
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.with_table(|table| table.entries.contains_key(key)))
    }

    /// Returns when `key` is released or force-released, when its holder's TTL runs out, or
    /// after `max_wait`, whichever comes first.
    async fn wait_for_release(&self, key: &str, max_wait: Duration) {
        let _leave = LeaveWaiters { store: self, key };
        let (released, wait) = self.with_table(|table| {
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
                .map(|at| at.saturating_duration_since(Instant::now()));
            let wait = until_expiry.map_or(max_wait, |left| left.min(max_wait));
            (notify.notified_owned(), wait)
        });
        let _ = tokio::time::timeout(wait, released).await;
    }

    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck> {
        Ok(self.with_table(|table| {
            if table.is_held_by(key, owner) {
                table.put(key, owner, Some(ttl));
                OwnerCheck::Applied
            } else {
                OwnerCheck::NotOwner
            }
        }))
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
        let queued = store.with_table(|table| table.expiry.len());
        assert!(
            queued <= 2 + 64 + 1,
            "{queued} deadlines queued for 1 entry"
        );
    }
}
