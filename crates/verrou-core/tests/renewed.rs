//! How a lock reads [`Acquisition::Renewed`], the answer of a store whose client may re-send
//! a take after losing its first answer: adopted when the lock did not know it held the
//! key, and no reentry when it did.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use verrou_core::{Acquisition, Grant, LockFactory, LockStore, OwnerCheck, Result};

/// A store that answers a take by the current owner with `Renewed`, as the Redis store does.
#[derive(Default)]
struct RenewingStore {
    owners: Mutex<HashMap<String, String>>,
    next_token: Mutex<u64>,
}

impl RenewingStore {
    fn token(&self) -> u64 {
        let mut next = self.next_token.lock().unwrap();
        *next += 1;
        *next
    }
}

#[async_trait]
impl LockStore for RenewingStore {
    async fn save(&self, key: &str, owner: &str, _ttl: Option<Duration>) -> Result<Acquisition> {
        let current = self.owners.lock().unwrap().get(key).cloned();
        Ok(match current {
            None => {
                self.owners.lock().unwrap().insert(key.into(), owner.into());
                Acquisition::Granted(Grant::with_fencing_token(self.token()))
            }
            Some(held) if held == owner => {
                Acquisition::Renewed(Grant::with_fencing_token(self.token()))
            }
            Some(_) => Acquisition::Busy,
        })
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        let mut owners = self.owners.lock().unwrap();
        if owners.get(key).is_some_and(|held| held == owner) {
            owners.remove(key);
            Ok(OwnerCheck::Applied)
        } else {
            Ok(OwnerCheck::NotOwner)
        }
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        self.owners.lock().unwrap().remove(key);
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.owners.lock().unwrap().contains_key(key))
    }

    async fn extend(&self, key: &str, owner: &str, _ttl: Duration) -> Result<OwnerCheck> {
        let owners = self.owners.lock().unwrap();
        Ok(if owners.get(key).is_some_and(|held| held == owner) {
            OwnerCheck::Applied
        } else {
            OwnerCheck::NotOwner
        })
    }
}

#[tokio::test]
async fn a_holder_that_takes_again_is_not_reentered_and_keeps_its_token() {
    let factory = LockFactory::new(RenewingStore::default());
    let lock = factory.create_lock_with_ttl("k", "10s").unwrap();
    assert!(lock.acquire_immediately().await.unwrap());
    let token = lock.fencing_token();
    assert!(
        !lock.acquire_immediately().await.unwrap(),
        "locks are not reentrant"
    );
    assert_eq!(lock.fencing_token(), token, "the hold and its token stay");
    assert!(lock.remaining_time().unwrap() > Duration::from_secs(9));
    lock.release().await.unwrap();
}

#[tokio::test]
async fn a_grant_the_lock_did_not_know_of_is_adopted() {
    let store = std::sync::Arc::new(RenewingStore::default());
    let factory = LockFactory::from_shared(store.clone());
    let lock = factory.create_lock_with_ttl("k", "10s").unwrap();
    // The first take was applied, but its answer never reached the lock.
    store
        .save("k", lock.owner(), Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(
        lock.acquire_immediately().await.unwrap(),
        "the re-sent take's answer counts"
    );
    assert_eq!(lock.fencing_token(), Some(2));
    lock.release().await.unwrap();
    assert!(!store.exists("k").await.unwrap());
}
