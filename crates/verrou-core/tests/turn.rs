//! A lock's clones talk to the store about its grants one at a time (the lock's turn), and
//! a clone that waits for the turn gets it when the turn is given back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use verrou_core::{Acquisition, LockFactory, LockStore, OwnerCheck, Result};

/// A store whose takes answer "busy" after a pause, counting how many are on the way at once.
#[derive(Default)]
struct SlowStore {
    sending: AtomicUsize,
    most_at_once: AtomicUsize,
    takes: AtomicUsize,
}

#[async_trait]
impl LockStore for SlowStore {
    async fn save(&self, _key: &str, _owner: &str, _ttl: Option<Duration>) -> Result<Acquisition> {
        let at_once = self.sending.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(at_once, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.sending.fetch_sub(1, Ordering::SeqCst);
        self.takes.fetch_add(1, Ordering::SeqCst);
        Ok(Acquisition::Busy)
    }

    async fn delete(&self, _key: &str, _owner: &str) -> Result<OwnerCheck> {
        Ok(OwnerCheck::NotOwner)
    }

    async fn force_delete(&self, _key: &str) -> Result<()> {
        Ok(())
    }

    async fn exists(&self, _key: &str) -> Result<bool> {
        Ok(false)
    }

    async fn extend(&self, _key: &str, _owner: &str, _ttl: Duration) -> Result<OwnerCheck> {
        Ok(OwnerCheck::NotOwner)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_of_one_lock_take_one_at_a_time_and_each_gets_its_turn() {
    let store = Arc::new(SlowStore::default());
    let factory = LockFactory::from_shared(Arc::clone(&store) as Arc<dyn LockStore>);
    let lock = factory.create_lock("k").unwrap();
    let (clones, rounds) = (8, 5);
    let tasks: Vec<_> = (0..clones)
        .map(|_| {
            let lock = lock.clone();
            tokio::spawn(async move {
                for _ in 0..rounds {
                    assert!(!lock.acquire_immediately().await.unwrap());
                }
            })
        })
        .collect();
    let all = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .expect("every clone gets its turn");
    assert_eq!(store.takes.load(Ordering::SeqCst), clones * rounds);
    assert_eq!(store.most_at_once.load(Ordering::SeqCst), 1);
}
