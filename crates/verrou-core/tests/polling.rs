//! A third-party store that implements only the required calls of `LockStore` (no waiting
//! line, no release announcements) still serves waiters: they poll at their retry delay.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use support::Owners;
use verrou_core::{Acquisition, LockFactory, LockStore, OwnerCheck, Result, Retry};

/// Keys and their owners, and nothing but the calls a store must provide.
#[derive(Default)]
struct PlainStore {
    owners: Owners,
    /// Takes asked, granted or not.
    takes: AtomicUsize,
}

#[async_trait]
impl LockStore for PlainStore {
    async fn save(&self, key: &str, owner: &str, _ttl: Option<Duration>) -> Result<Acquisition> {
        self.takes.fetch_add(1, Ordering::SeqCst);
        Ok(self.owners.take(key, owner))
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        Ok(self.owners.release(key, owner))
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        self.owners.remove(key);
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.owners.is_held(key))
    }

    async fn extend(&self, key: &str, owner: &str, _ttl: Duration) -> Result<OwnerCheck> {
        Ok(self.owners.extend(key, owner))
    }
}

/// How often the waiters ask.
const RETRY_DELAY: Duration = Duration::from_millis(20);

/// How long the first holder keeps the key.
const FIRST_HOLD: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_a_store_without_lines_take_turns_by_polling() {
    let store = Arc::new(PlainStore::default());
    assert!(store.boards().is_none(), "the store announces nothing");
    let factory = LockFactory::from_shared(Arc::clone(&store) as Arc<dyn LockStore>)
        .with_retry(Retry::new().delay(RETRY_DELAY).timeout("10s"))
        .unwrap();
    let holder = factory.create_lock("report").unwrap();
    assert!(holder.acquire().await.unwrap());
    let started = Instant::now();
    let inside = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let lock = factory.create_lock("report").unwrap();
            let inside = Arc::clone(&inside);
            tokio::spawn(async move {
                assert!(
                    lock.acquire().await.unwrap(),
                    "the waiter got the key in time"
                );
                let acquired_after = started.elapsed();
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "one holder at a time"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                lock.release().await.unwrap();
                acquired_after
            })
        })
        .collect();
    tokio::time::sleep(FIRST_HOLD).await;
    let takes_while_held = store.takes.load(Ordering::SeqCst);
    holder.release().await.unwrap();
    let mut acquired_after = Vec::new();
    for waiter in waiters {
        acquired_after.push(waiter.await.unwrap());
    }
    acquired_after.sort();
    // Four waiters asking every 20 ms for 200 ms: the waits poll, and keep polling.
    assert!(
        takes_while_held >= 4 * 5,
        "{takes_while_held} takes while the key was held"
    );
    // Each waiter is served within a few retry delays of the key coming free (an hour-long
    // wait, or a wait for the 10 s timeout, would fail this), never before the release.
    assert!(acquired_after[0] >= FIRST_HOLD, "{acquired_after:?}");
    let last_bound = FIRST_HOLD + Duration::from_secs(2);
    assert!(acquired_after[3] < last_bound, "{acquired_after:?}");
}
