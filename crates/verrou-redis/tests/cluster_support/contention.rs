//! Contenders fighting over a few keys of a Redis Cluster while the test changes the
//! cluster under them: every hold recorded in a [`History`], every grant's time kept, every
//! store call timed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::task::JoinHandle;
use verrou_core::conformance::History;
use verrou_core::{
    Acquisition, Boards, Error, Family, LockFactory, LockStore, OwnerCheck, Place,
    Result as VerrouResult, Retry, Share,
};
use verrou_redis::RedisStore;
use verrou_testkit::{hash_slot, RedisCluster};

/// The first of `name-0`, `name-1`, ... whose hash slot the master on port `master` serves.
pub(crate) fn key_on(cluster: &RedisCluster, master: u16, name: &str) -> String {
    (0..)
        .map(|index| format!("{name}-{index}"))
        .find(|key| {
            cluster
                .master_of_slot(hash_slot(key))
                .expect("the cluster answers")
                == master
        })
        .expect("every master serves some slots")
}

/// A store that times its calls (waits between attempts excepted): the longest, and how
/// many failed.
pub(crate) struct TimedStore {
    inner: RedisStore,
    longest: Mutex<Duration>,
    failures: AtomicUsize,
}

impl TimedStore {
    /// Times the calls of `inner`.
    pub(crate) fn new(inner: RedisStore) -> Self {
        Self {
            inner,
            longest: Mutex::new(Duration::ZERO),
            failures: AtomicUsize::new(0),
        }
    }

    /// The longest call so far.
    pub(crate) fn longest(&self) -> Duration {
        *self.longest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many calls failed so far.
    pub(crate) fn failures(&self) -> usize {
        self.failures.load(Ordering::SeqCst)
    }

    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = VerrouResult<T>>,
    ) -> VerrouResult<T> {
        let started = Instant::now();
        let outcome = call.await;
        let took = started.elapsed();
        let mut longest = self.longest.lock().unwrap_or_else(PoisonError::into_inner);
        *longest = (*longest).max(took);
        if outcome.is_err() {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
        outcome
    }
}

#[async_trait]
impl LockStore for TimedStore {
    fn validate_key(&self, key: &str) -> VerrouResult<()> {
        self.inner.validate_key(key)
    }

    async fn save(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> VerrouResult<Acquisition> {
        self.timed(self.inner.save(key, owner, ttl)).await
    }

    async fn delete(&self, key: &str, owner: &str) -> VerrouResult<OwnerCheck> {
        self.timed(self.inner.delete(key, owner)).await
    }

    async fn force_delete(&self, key: &str) -> VerrouResult<()> {
        self.timed(self.inner.force_delete(key)).await
    }

    async fn exists(&self, key: &str) -> VerrouResult<bool> {
        self.timed(self.inner.exists(key)).await
    }

    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> VerrouResult<OwnerCheck> {
        self.timed(self.inner.extend(key, owner, ttl)).await
    }

    async fn save_in_line(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        place: Place<'_>,
    ) -> VerrouResult<Acquisition> {
        self.timed(self.inner.save_in_line(key, owner, ttl, place))
            .await
    }

    async fn leave_line(&self, key: &str, waiter: &str) -> VerrouResult<()> {
        self.timed(self.inner.leave_line(key, waiter)).await
    }

    fn boards(&self) -> Option<&Boards> {
        self.inner.boards()
    }

    async fn save_share(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        share: Share,
        place: Option<Place<'_>>,
    ) -> VerrouResult<Acquisition> {
        self.timed(self.inner.save_share(key, owner, ttl, share, place))
            .await
    }

    async fn delete_share(&self, key: &str, owner: &str, share: Share) -> VerrouResult<OwnerCheck> {
        self.timed(self.inner.delete_share(key, owner, share)).await
    }

    async fn extend_share(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        share: Share,
    ) -> VerrouResult<OwnerCheck> {
        self.timed(self.inner.extend_share(key, owner, ttl, share))
            .await
    }

    async fn force_delete_shares(&self, key: &str, family: Family) -> VerrouResult<()> {
        self.timed(self.inner.force_delete_shares(key, family))
            .await
    }

    async fn count_shares(&self, key: &str, share: Share) -> VerrouResult<u32> {
        self.timed(self.inner.count_shares(key, share)).await
    }

    async fn leave_share_line(&self, key: &str, family: Family, waiter: &str) -> VerrouResult<()> {
        self.timed(self.inner.leave_share_line(key, family, waiter))
            .await
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}

/// When a contender got which key.
pub(crate) type Grants = Vec<(Instant, String)>;

/// Contenders running until [`stop`](Self::stop)ped.
pub(crate) struct Contention {
    history: Arc<History>,
    grants: Arc<Mutex<Grants>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Contention {
    /// Starts `per_store` contenders on each of `stores` (each store one factory, as one
    /// process would have), taking `keys` in turn with locks of `ttl`.
    pub(crate) fn start(
        stores: &[Arc<TimedStore>],
        per_store: usize,
        keys: &[String],
        ttl: Duration,
    ) -> Self {
        let history = Arc::new(History::new());
        let grants = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (index, store) in stores.iter().enumerate() {
            let shared: Arc<dyn LockStore> = store.clone();
            let factory = LockFactory::from_shared(shared);
            for task in 0..per_store {
                let contender = Contender {
                    factory: factory.clone(),
                    name: format!("store-{index}/{task}"),
                    keys: keys.to_vec(),
                    first: index * per_store + task,
                    ttl,
                    history: Arc::clone(&history),
                    grants: Arc::clone(&grants),
                    stop: Arc::clone(&stop),
                };
                tasks.push(tokio::spawn(contender.run()));
            }
        }
        Self {
            history,
            grants,
            stop,
            tasks,
        }
    }

    /// Every grant so far.
    pub(crate) fn grants(&self) -> Grants {
        self.grants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the contenders, waits until each has let go, and returns the history of their
    /// holds and every grant.
    pub(crate) async fn stop(self) -> (Arc<History>, Grants) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("a contender");
        }
        let grants = self
            .grants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (self.history, grants)
    }
}

/// One contender: until stopped, takes the next of its keys (waiting up to a second), holds
/// it two milliseconds and releases it.
struct Contender {
    factory: LockFactory,
    name: String,
    keys: Vec<String>,
    /// The index of its first key.
    first: usize,
    ttl: Duration,
    history: Arc<History>,
    grants: Arc<Mutex<Grants>>,
    stop: Arc<AtomicBool>,
}

impl Contender {
    async fn run(self) {
        let mut turn = self.first;
        while !self.stop.load(Ordering::SeqCst) {
            let key = &self.keys[turn % self.keys.len()];
            turn += 1;
            let lock = self
                .factory
                .create_lock_with_ttl(key, self.ttl)
                .expect("a valid lock");
            match lock
                .acquire_with(Retry::new().delay(20).timeout("1s"))
                .await
            {
                Ok(true) => {
                    let hold = self.history.granted(&lock, self.name.as_str());
                    self.grants
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((Instant::now(), key.clone()));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    self.history.released(hold);
                    // Until the store answers (a failover takes seconds); past the TTL the
                    // lock is gone anyway.
                    let started = Instant::now();
                    while let Err(Error::Storage { .. }) = lock.release().await {
                        if started.elapsed() > self.ttl {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Ok(false) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}
