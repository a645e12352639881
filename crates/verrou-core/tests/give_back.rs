//! A grant that may have been applied when its take failed is given back, and the lock
//! settles it before its next take — also when the runtime that was giving it back shut
//! down first.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use support::Owners;
use verrou_core::{Acquisition, Error, LockFactory, LockStore, OwnerCheck, Result};

/// A store whose answers can be lost: while `down`, every call is applied but answers an
/// error, as when a connection dies after the command was written.
#[derive(Default)]
struct AnswerLosingStore {
    owners: Owners,
    down: AtomicBool,
    /// While set, a take is applied and then never answers.
    hang: AtomicBool,
}

impl AnswerLosingStore {
    fn answer<T>(&self, answer: T) -> Result<T> {
        if self.down.load(Ordering::SeqCst) {
            Err(Error::storage("connection lost after writing"))
        } else {
            Ok(answer)
        }
    }
}

#[async_trait]
impl LockStore for AnswerLosingStore {
    async fn save(&self, key: &str, owner: &str, _ttl: Option<Duration>) -> Result<Acquisition> {
        let answer = self.owners.take(key, owner);
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.answer(answer)
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        if self.down.load(Ordering::SeqCst) {
            // Not applied: the store is unreachable for releases.
            return Err(Error::storage("unreachable"));
        }
        Ok(self.owners.release(key, owner))
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        self.owners.remove(key);
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.owners.is_held(key))
    }

    async fn extend(&self, _key: &str, _owner: &str, _ttl: Duration) -> Result<OwnerCheck> {
        Ok(OwnerCheck::NotOwner)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_grant_whose_answer_was_lost_is_settled_across_runtimes() {
    let store = Arc::new(AnswerLosingStore::default());
    let factory = LockFactory::from_shared(store.clone());
    let lock = factory.create_lock_with_ttl("k", "30s").unwrap();
    store.down.store(true, Ordering::SeqCst);
    runtime().block_on(async {
        assert!(matches!(
            lock.acquire_immediately().await,
            Err(Error::Storage { .. })
        ));
        // The grant was applied; giving it back fails while the store is down, so the
        // background keeps trying... until this runtime shuts down.
        tokio::time::sleep(Duration::from_millis(20)).await;
    });
    assert!(
        runtime().block_on(store.exists("k")).unwrap(),
        "the grant nobody owns"
    );
    store.down.store(false, Ordering::SeqCst);
    runtime().block_on(async {
        // The next take settles the lost grant first, then takes the key for real.
        assert!(lock.acquire_immediately().await.unwrap());
        lock.release().await.unwrap();
        assert!(!store.exists("k").await.unwrap());
    });
}

#[test]
fn a_runtime_shut_down_with_a_take_on_the_wire_leaves_it_to_the_next_take() {
    let store = Arc::new(AnswerLosingStore::default());
    let factory = LockFactory::from_shared(store.clone());
    let lock = factory.create_lock_with_ttl("k", "30s").unwrap();
    store.hang.store(true, Ordering::SeqCst);
    let taking = lock.clone();
    runtime().block_on(async {
        tokio::spawn(async move { taking.acquire_immediately().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The runtime now shuts down with the take on the wire: its task is dropped, and
        // the background settling it would be given is refused at once.
    });
    store.hang.store(false, Ordering::SeqCst);
    runtime().block_on(async {
        assert!(
            lock.acquire_immediately().await.unwrap(),
            "the next take settles, then takes"
        );
        lock.release().await.unwrap();
        assert!(!store.exists("k").await.unwrap());
    });
}

#[test]
fn a_failed_take_by_the_holder_never_releases_its_hold() {
    let store = Arc::new(AnswerLosingStore::default());
    let factory = LockFactory::from_shared(store.clone());
    let lock = factory.create_lock_with_ttl("k", "30s").unwrap();
    runtime().block_on(async {
        assert!(lock.acquire_immediately().await.unwrap());
        // A second acquire by the holder fails on the way (its answer lost): whatever the
        // store made of it, the key is the holder's and must stay so.
        store.down.store(true, Ordering::SeqCst);
        assert!(lock.acquire_immediately().await.is_err());
        store.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(store.exists("k").await.unwrap(), "the hold was given back");
        assert!(!lock.acquire_immediately().await.unwrap(), "not reentrant");
        assert!(store.exists("k").await.unwrap(), "the hold was given back");
        lock.release().await.unwrap();
    });
}
