//! Behaviour specific to the memory store: bounded memory and mutual exclusion under load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use verrou_core::{LockFactory, LockStore, Retry};
use verrou_memory::MemoryStore;

#[tokio::test]
async fn expired_entries_do_not_pile_up() {
    let store = MemoryStore::new();
    for index in 0..100_000 {
        let outcome = store
            .save(
                &format!("job:{index}"),
                "owner",
                Some(Duration::from_millis(1)),
            )
            .await
            .unwrap();
        assert!(matches!(outcome, verrou_core::Acquisition::Granted(_)));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.len(), 0, "every expired entry must be gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_on_one_key_never_overlap() {
    let factory = LockFactory::new(MemoryStore::new());
    let holders = Arc::new(AtomicUsize::new(0));
    let turns = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (factory, holders, turns) = (factory.clone(), holders.clone(), turns.clone());
            tokio::spawn(async move {
                for _ in 0..20 {
                    let lock = factory.create_lock("payment:7").unwrap();
                    let retry = Retry::new().delay(1).timeout("60s");
                    assert!(lock.acquire_with(retry).await.unwrap());
                    assert_eq!(
                        holders.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two holders at once"
                    );
                    tokio::task::yield_now().await;
                    holders.fetch_sub(1, Ordering::SeqCst);
                    turns.fetch_add(1, Ordering::SeqCst);
                    lock.release().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(turns.load(Ordering::SeqCst), 64 * 20);
}

#[tokio::test]
async fn clones_share_locks_and_separate_stores_do_not() {
    let store = MemoryStore::new();
    let first = LockFactory::new(store.clone());
    let clone = LockFactory::new(store);
    let separate = LockFactory::new(MemoryStore::new());
    assert!(first
        .create_lock("k")
        .unwrap()
        .acquire_immediately()
        .await
        .unwrap());
    assert!(!clone
        .create_lock("k")
        .unwrap()
        .acquire_immediately()
        .await
        .unwrap());
    assert!(separate
        .create_lock("k")
        .unwrap()
        .acquire_immediately()
        .await
        .unwrap());
}
