//! A store that answers without I/O ([`ImmediateStore`]) is asked at once: a plain lock's
//! `acquire_immediately` and `release` call its immediate take and release, never the async
//! ones, and a grant it answers with an error is given back before the lock's next take,
//! like any take that may have been applied.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use support::Owners;
use verrou_core::{Acquisition, Error, ImmediateStore, LockFactory, LockStore, OwnerCheck, Result};

/// An in-memory store that counts which of its takes and releases are called, and whose
/// immediate take can be told to fail after applying.
#[derive(Default)]
struct CountingImmediateStore {
    owners: Owners,
    async_calls: AtomicUsize,
    immediate_calls: AtomicUsize,
    /// While set, an immediate take is applied and then answers an error.
    fail_after_take: AtomicBool,
}

#[async_trait]
impl LockStore for CountingImmediateStore {
    async fn save(&self, key: &str, owner: &str, _ttl: Option<Duration>) -> Result<Acquisition> {
        self.async_calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.owners.take(key, owner))
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        self.async_calls.fetch_add(1, Ordering::SeqCst);
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

    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        Some(self)
    }
}

impl ImmediateStore for CountingImmediateStore {
    fn save_now(
        &self,
        key: &str,
        owner: &str,
        _ttl: Option<Duration>,
        _now: Instant,
    ) -> Result<Acquisition> {
        self.immediate_calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.owners.take(key, owner);
        if self.fail_after_take.load(Ordering::SeqCst) {
            return Err(Error::storage("failed after applying the take"));
        }
        Ok(answer)
    }

    fn delete_now(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        self.immediate_calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.owners.release(key, owner))
    }
}

#[tokio::test]
async fn plain_takes_and_releases_go_through_the_immediate_operations() {
    let store = Arc::new(CountingImmediateStore::default());
    let factory = LockFactory::new(Arc::clone(&store));
    for _ in 0..10 {
        let lock = factory.create_lock("immediate").unwrap();
        assert!(lock.acquire_immediately().await.unwrap());
        assert!(
            lock.remaining_time().is_some(),
            "the lock knows it holds the key"
        );
        let other = factory.create_lock("immediate").unwrap();
        assert!(!other.acquire_immediately().await.unwrap(), "busy");
        lock.release().await.unwrap();
    }
    assert_eq!(store.immediate_calls.load(Ordering::SeqCst), 30);
    assert_eq!(store.async_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_immediate_take_that_fails_after_applying_is_given_back() {
    let counting = Arc::new(CountingImmediateStore::default());
    let factory = LockFactory::new(Arc::clone(&counting));
    let lock = factory.create_lock("failing").unwrap();
    counting.fail_after_take.store(true, Ordering::SeqCst);
    assert!(lock.acquire_immediately().await.is_err());
    counting.fail_after_take.store(false, Ordering::SeqCst);
    assert!(
        lock.acquire_immediately().await.unwrap(),
        "the lock's next take gave the stray grant back first, then took the key"
    );
    lock.release().await.unwrap();
    assert!(!counting.owners.is_held("failing"), "nothing is held");
}
