//! [`MemoryStore`]: locks in maps guarded by mutexes, one per shard of keys.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use hashbrown::DefaultHashBuilder;
use verrou_core::{
    Acquisition, Boards, Family, Grant, ImmediateStore, IntoDuration, LockStore, OwnerCheck, Place,
    Result, Share, HANDOVER_WINDOW,
};

use crate::feed::Feed;
use crate::line::Hashed;
use crate::shard::{Shard, Taken, Waiting};
use crate::shares::Request;

/// How many shards the keys are spread over: unrelated keys rarely share a mutex.
const SHARDS: usize = 64;

/// Locks held in this process's memory: fast, and shared only by the tasks of one process.
///
/// Each operation is one critical section of the key's shard, O(log n); keys are spread
/// over 64 shards, so unrelated keys rarely wait for each other. Waiters of a key are
/// served in arrival order (see [`verrou_core::waiting`]): a release hands the key to the
/// front waiter and wakes it alone; so does the expiry of a holder of a key that has
/// waiters, as it happens (nothing else announces an expiry, so the store watches the
/// deadlines of those keys: a waiter gets the key within milliseconds of it, whatever its
/// retry delay). Expiry uses the monotonic clock.
/// Fencing tokens come from one counter per shard (as the Redis store has one per hash
/// slot), so they grow for every key. Each counter starts at the wall clock's nanoseconds
/// since the Unix epoch, so tokens also keep growing across restarts of the process (as
/// long as the wall clock does not run backwards and a shard issued fewer than one token
/// per nanosecond of its life).
/// Expired entries never block anyone and never pile up: every operation first drops the
/// entries whose deadline has passed.
///
/// Cloning gives another handle to the same locks.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    hasher: DefaultHashBuilder,
    shards: Box<[Mutex<Shard>]>,
    /// The boards of the locks, the semaphores and the read-write locks.
    pub(crate) boards: Boards,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let hasher = DefaultHashBuilder::default();
        let first_token = epoch_nanos_now();
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(Shard::new(&hasher, first_token)))
            .collect();
        Self {
            inner: Arc::new_cyclic(|inner| Inner {
                hasher,
                shards,
                boards: Boards::new(|family| Feed::new(Weak::clone(inner), family)),
            }),
        }
    }

    /// How many locks are held (expired ones are not counted).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.inner
            .shards
            .iter()
            .map(|shard| {
                let mut shard = lock(shard);
                shard.drop_expired(now);
                shard.len()
            })
            .sum()
    }

    /// Whether no lock is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Inner {
    /// Runs `operation` on the shard of `key`, with the key's hash and the time, once the
    /// shard's expired locks are dropped.
    pub(crate) fn with_shard<T>(
        &self,
        key: &str,
        operation: impl FnOnce(&mut Shard, Hashed<'_>, Instant) -> T,
    ) -> T {
        self.with_shard_at(key, None, operation)
    }

    /// Like [`with_shard`](Self::with_shard), at `now` if given (else the time once the
    /// shard is locked).
    fn with_shard_at<T>(
        &self,
        key: &str,
        now: Option<Instant>,
        operation: impl FnOnce(&mut Shard, Hashed<'_>, Instant) -> T,
    ) -> T {
        let hash = self.hasher.hash_one(key);
        let mut shard = lock(&self.shards[shard_index(hash)]);
        let now = now.unwrap_or_else(Instant::now);
        shard.drop_expired(now);
        operation(&mut shard, Hashed { hash, key }, now)
    }

    /// The index of the shard of `key`.
    #[cfg(test)]
    fn shard_of(&self, key: &str) -> usize {
        shard_index(self.hasher.hash_one(key))
    }

    /// Wakes the waiter a key of `family` (`None`: a lock's) was handed over to.
    fn wake(&self, family: Option<Family>, key: &str, handed_to: Option<Arc<str>>) {
        if let Some(waiter) = handed_to {
            self.boards.of(family).wake(key, Some(&waiter));
        }
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

fn epoch_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

#[async_trait]
impl LockStore for MemoryStore {
    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition> {
        self.take(key, owner, ttl, None, None)
    }

    async fn save_in_line(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        place: Place<'_>,
    ) -> Result<Acquisition> {
        let waiting = Waiting {
            waiter: place.waiter,
            lease: place.lease,
        };
        self.take(key, owner, ttl, Some(waiting), None)
    }

    async fn leave_line(&self, key: &str, waiter: &str) -> Result<()> {
        let inner = &self.inner;
        let handed_to = inner.with_shard(key, |shard, hashed, now| {
            shard.leave(hashed, waiter, now, HANDOVER_WINDOW)
        });
        inner.wake(None, key, handed_to);
        Ok(())
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        self.delete_now(key, owner)
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        let inner = &self.inner;
        let removed = inner.with_shard(key, |shard, hashed, now| {
            shard.remove(hashed, None, now, HANDOVER_WINDOW)
        });
        inner.wake(None, key, removed.flatten());
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self
            .inner
            .with_shard(key, |shard, hashed, _| shard.is_held(hashed)))
    }

    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck> {
        let ttl = ttl.into_duration()?;
        let inner = &self.inner;
        let extended = inner.with_shard(key, |shard, hashed, now| {
            shard.extend(hashed, owner, ttl, now)
        });
        Ok(if extended {
            OwnerCheck::Applied
        } else {
            OwnerCheck::NotOwner
        })
    }

    fn boards(&self) -> Option<&Boards> {
        Some(&self.inner.boards)
    }

    async fn save_share(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        share: Share,
        place: Option<Place<'_>>,
    ) -> Result<Acquisition> {
        let ttl = ttl.map(IntoDuration::into_duration).transpose()?;
        let inner = &self.inner;
        let request = Request {
            owner,
            ttl,
            share,
            waiting: place.map(|place| Waiting {
                waiter: place.waiter,
                lease: place.lease,
            }),
        };
        let (acquisition, handed) = inner.with_shard(key, |shard, hashed, now| {
            let (shares, tokens) = shard.shares_and_tokens(share.family());
            match shares.take(hashed, request, now, tokens, HANDOVER_WINDOW) {
                Taken::Granted(token) => (
                    Acquisition::Granted(Grant::with_fencing_token(token)),
                    shares.hand_over_after_grant(hashed, share, now, HANDOVER_WINDOW),
                ),
                Taken::Renewed(token) => {
                    (Acquisition::Renewed(Grant::with_fencing_token(token)), None)
                }
                Taken::Busy { handed } => (Acquisition::Busy, handed),
            }
        });
        inner.wake(Some(share.family()), key, handed);
        Ok(acquisition)
    }

    async fn delete_share(&self, key: &str, owner: &str, share: Share) -> Result<OwnerCheck> {
        let inner = &self.inner;
        let removed = inner.with_shard(key, |shard, hashed, now| {
            shard
                .shares(share.family())
                .remove(hashed, owner, share, now, HANDOVER_WINDOW)
        });
        Ok(match removed {
            Some(handed) => {
                inner.wake(Some(share.family()), key, handed);
                OwnerCheck::Applied
            }
            None => OwnerCheck::NotOwner,
        })
    }

    async fn extend_share(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        share: Share,
    ) -> Result<OwnerCheck> {
        let ttl = ttl.into_duration()?;
        let extended = self.inner.with_shard(key, |shard, hashed, now| {
            shard
                .shares(share.family())
                .extend(hashed, owner, share, ttl, now)
        });
        Ok(if extended {
            OwnerCheck::Applied
        } else {
            OwnerCheck::NotOwner
        })
    }

    async fn force_delete_shares(&self, key: &str, family: Family) -> Result<()> {
        let inner = &self.inner;
        let handed = inner.with_shard(key, |shard, hashed, now| {
            shard.shares(family).clear(hashed, now, HANDOVER_WINDOW)
        });
        inner.wake(Some(family), key, handed);
        Ok(())
    }

    async fn count_shares(&self, key: &str, share: Share) -> Result<u32> {
        Ok(self.inner.with_shard(key, |shard, hashed, now| {
            shard.shares(share.family()).count(hashed, share, now)
        }))
    }

    async fn leave_share_line(&self, key: &str, family: Family, waiter: &str) -> Result<()> {
        let inner = &self.inner;
        let handed = inner.with_shard(key, |shard, hashed, now| {
            shard
                .shares(family)
                .leave(hashed, waiter, now, HANDOVER_WINDOW)
        });
        inner.wake(Some(family), key, handed);
        Ok(())
    }

    fn name(&self) -> &'static str {
        "the memory store"
    }

    fn issues_fencing_tokens(&self) -> bool {
        true
    }

    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        Some(self)
    }
}

/// The shard of a key whose hash is `hash`: from the hash's middle bits (the map inside the
/// shard uses the low and the top ones).
fn shard_index(hash: u64) -> usize {
    usize::try_from(hash >> 32).unwrap_or_default() % SHARDS
}

impl ImmediateStore for MemoryStore {
    fn save_now(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<Acquisition> {
        self.take(key, owner, ttl, None, Some(now))
    }

    fn delete_now(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        let inner = &self.inner;
        let removed = inner.with_shard(key, |shard, hashed, now| {
            shard.remove(hashed, Some(owner), now, HANDOVER_WINDOW)
        });
        Ok(match removed {
            Some(handed_to) => {
                inner.wake(None, key, handed_to);
                OwnerCheck::Applied
            }
            None => OwnerCheck::NotOwner,
        })
    }
}

impl MemoryStore {
    /// A take, in the key's line if `waiting`, at `now` if given.
    fn take(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        waiting: Option<Waiting<'_>>,
        now: Option<Instant>,
    ) -> Result<Acquisition> {
        let ttl = ttl.map(IntoDuration::into_duration).transpose()?;
        let inner = &self.inner;
        let taken = inner.with_shard_at(key, now, |shard, hashed, now| {
            shard.take(hashed, owner, ttl, waiting, now)
        });
        Ok(match taken {
            Taken::Granted(token) => Acquisition::Granted(Grant::with_fencing_token(token)),
            Taken::Renewed(token) => Acquisition::Renewed(Grant::with_fencing_token(token)),
            Taken::Busy { handed } => {
                inner.wake(None, key, handed);
                Acquisition::Busy
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys of different shards never wait for each other: a take of a key is served while
    /// another shard is locked, where a take of a key of that shard waits for it.
    #[test]
    fn a_shard_held_up_holds_up_only_its_own_keys() {
        let store = MemoryStore::new();
        let busy = "busy";
        let key_where = |same_shard: bool| {
            (0..10_000)
                .map(|number| format!("key-{number}"))
                .find(|key| (store.inner.shard_of(key) == store.inner.shard_of(busy)) == same_shard)
                .expect("keys in every shard")
        };
        let take_in_background = |key: String| {
            let (store, (answered, answer)) = (store.clone(), std::sync::mpsc::channel());
            std::thread::spawn(move || {
                let taken = store.save_now(&key, "owner", None, Instant::now());
                let _ = answered.send(taken.map(|taken| matches!(taken, Acquisition::Granted(_))));
            });
            answer
        };
        let same_shard = store.inner.with_shard(busy, |_, _, _| {
            let other_shard = take_in_background(key_where(false));
            let served = other_shard.recv_timeout(Duration::from_secs(5));
            assert!(
                matches!(served, Ok(Ok(true))),
                "another shard's key waited: {served:?}"
            );
            let same_shard = take_in_background(key_where(true));
            let served = same_shard.recv_timeout(Duration::from_millis(200));
            assert!(
                served.is_err(),
                "a key of the locked shard was served: {served:?}"
            );
            same_shard
        });
        let served = same_shard.recv_timeout(Duration::from_secs(5));
        assert!(matches!(served, Ok(Ok(true))), "then it is: {served:?}");
    }

    #[test]
    fn the_store_answers_without_io() {
        assert!(MemoryStore::new().immediate().is_some());
    }

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
        let queued = store
            .inner
            .with_shard("hot", |shard, _, _| shard.queued_deadlines());
        assert!(
            queued <= 2 + 64 + 1,
            "{queued} deadlines queued for 1 entry"
        );
    }

    #[tokio::test]
    async fn lines_go_when_their_waiters_leave_or_lapse() {
        let store = MemoryStore::new();
        let lines = |store: &MemoryStore| store.inner.with_shard("k", |shard, _, _| shard.lines());
        store.save("k", "holder", None).await.unwrap();
        let lease = Duration::from_millis(30);
        for waiter in ["a", "b"] {
            let place = Place { waiter, lease };
            let busy = store.save_in_line("k", waiter, None, place).await.unwrap();
            assert_eq!(busy, Acquisition::Busy);
        }
        assert_eq!(lines(&store), 1);
        store.leave_line("k", "a").await.unwrap();
        store.leave_line("k", "b").await.unwrap();
        assert_eq!(lines(&store), 0, "left");
        let place = Place { waiter: "c", lease };
        store.save_in_line("k", "c", None, place).await.unwrap();
        tokio::time::sleep(lease * 2).await;
        assert_eq!(
            store.save("k", "other", None).await.unwrap(),
            Acquisition::Busy
        );
        assert_eq!(lines(&store), 0, "lapsed");
    }

    #[tokio::test]
    async fn the_front_may_come_in_beside_permits_and_readers_but_not_a_writer() {
        let store = MemoryStore::new();
        let may_let_front_in = |family: Family| {
            store.inner.with_shard("k", |shard, hashed, now| {
                shard.shares(family).may_let_front_in(hashed, now)
            })
        };
        let permit = Share::Permit { limit: 2 };
        store
            .save_share("k", "a", None, permit, None)
            .await
            .unwrap();
        assert!(
            may_let_front_in(Family::Semaphore),
            "one permit of two held"
        );
        store
            .save_share("k", "a", None, Share::Read, None)
            .await
            .unwrap();
        assert!(may_let_front_in(Family::RwLock), "a reader holds");
        store.delete_share("k", "a", Share::Read).await.unwrap();
        store
            .save_share("k", "w", None, Share::Write, None)
            .await
            .unwrap();
        assert!(!may_let_front_in(Family::RwLock), "a writer holds");
    }
}
