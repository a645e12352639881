//! Behaviour specific to the memory store: bounded memory and mutual exclusion under load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use verrou_core::conformance::CountingStore;
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

/// Eight workers cycle on one key with the default 250 ms retry delay: waiters are woken by
/// releases (no polling), served in arrival order (a releasing holder that asks again at
/// once goes to the back of the line), and almost never ask the store in vain once in line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_take_turns_without_polling() {
    let counting = Arc::new(CountingStore::new(Arc::new(MemoryStore::new())));
    let factory = LockFactory::from_shared(counting.clone());
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let (factory, order) = (factory.clone(), order.clone());
            tokio::spawn(async move {
                for _ in 0..20 {
                    let lock = factory.create_lock("queue").unwrap();
                    assert!(lock.acquire().await.unwrap());
                    order.lock().unwrap().push(worker);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    lock.release().await.unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let order = order.lock().unwrap();
    assert_eq!(order.len(), 160);
    // Once all eight are in line, every window of eight turns serves eight different
    // workers. Except around a woken waiter that the machine did not run within the
    // hand-over window (a loaded machine: 2 runs in 40 with `yes` on both cores): it goes
    // to the back of the line, as designed, and the windows of about one round show it
    // missing. Two such lapses are let pass; a line that is not kept fails nearly all.
    let unfair = order[8..order.len() - 8]
        .windows(8)
        .filter(|window| {
            window
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
                < 8
        })
        .count();
    assert!(unfair <= 16, "unfair turn order: {:?}", &order[8..]);
    let in_vain = counting.in_vain.load(Ordering::SeqCst);
    assert!(
        in_vain <= 8,
        "{in_vain} store attempts failed: waiters are polling"
    );
}

/// A waiter on another factory (as another part of the program would be) is woken by the
/// store when the key is released, long before its retry delay.
#[tokio::test(start_paused = true)]
async fn the_store_wakes_waiters_of_other_factories() {
    let store = MemoryStore::new();
    let holder = LockFactory::new(store.clone())
        .create_lock("shared")
        .unwrap();
    assert!(holder.acquire().await.unwrap());
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        holder.release().await.unwrap();
    });
    let waiter = LockFactory::new(store).create_lock("shared").unwrap();
    let started = tokio::time::Instant::now();
    assert!(waiter.acquire_with(Retry::new().delay("1h")).await.unwrap());
    // Virtual time (the clock is paused): woken by the release, not by the hour-long delay.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    releaser.await.unwrap();
}

/// Workers with factories of their own (as separate parts of a program would have) share
/// the key fairly too: the line is the store's, so a releasing holder that asks again goes
/// behind the waiter the release woke, and woken waiters rarely ask in vain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_with_their_own_factories_do_not_starve_each_other() {
    let store = MemoryStore::new();
    let probes: Vec<_> = (0..4)
        .map(|_| Arc::new(CountingStore::new(Arc::new(store.clone()))))
        .collect();
    let workers: Vec<_> = probes
        .iter()
        .map(|probe| {
            let factory = LockFactory::from_shared(probe.clone());
            tokio::spawn(async move {
                let mut turns = 0;
                let until = tokio::time::Instant::now() + Duration::from_millis(600);
                while tokio::time::Instant::now() < until {
                    let lock = factory.create_lock("shared-fairly").unwrap();
                    assert!(lock.acquire_with(Retry::new().timeout("5s")).await.unwrap());
                    turns += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    lock.release().await.unwrap();
                }
                turns
            })
        })
        .collect();
    let mut turns = Vec::new();
    for worker in workers {
        turns.push(worker.await.unwrap());
    }
    let (fewest, most) = (*turns.iter().min().unwrap(), *turns.iter().max().unwrap());
    assert!(fewest * 2 >= most, "unfair shares: {turns:?}");
    let in_vain: usize = probes
        .iter()
        .map(|probe| probe.in_vain.load(Ordering::SeqCst))
        .sum();
    let total: usize = turns.iter().sum();
    assert!(
        in_vain * 4 <= total,
        "{in_vain} failed attempts for {total} turns"
    );
}

/// While a lock holds the key for long, a waiter asks the store no more often than its
/// retry delay (its safety net, which also renews its place), since it is woken by the
/// release.
#[tokio::test]
async fn a_long_local_hold_costs_one_attempt_per_retry_delay() {
    let counting = Arc::new(CountingStore::new(Arc::new(MemoryStore::new())));
    let factory = LockFactory::from_shared(counting.clone())
        .with_retry(Retry::new().delay(100))
        .unwrap();
    let first = factory.create_lock("long").unwrap();
    assert!(first.acquire().await.unwrap());
    // Two waiters line up; the first release hands the key to the first of them.
    let (long_holder, last) = (
        factory.create_lock("long").unwrap(),
        factory.create_lock("long").unwrap(),
    );
    let holding = tokio::spawn(async move {
        assert!(long_holder.acquire().await.unwrap());
        long_holder
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiting = tokio::spawn(async move { last.acquire().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(20)).await;
    first.release().await.unwrap();
    let long_holder = holding.await.unwrap();
    let before = counting.busy.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let during = counting.busy.load(Ordering::SeqCst) - before;
    long_holder.release().await.unwrap();
    assert!(waiting.await.unwrap());
    // 1.2 s at a 100 ms delay: about 12 safety-net attempts at most.
    assert!(during <= 13, "{during} failed attempts during a 1.2 s hold");
}

#[tokio::test]
async fn fencing_tokens_keep_growing_across_process_restarts() {
    // A new store stands for the same program started again: its tokens must be above
    // every token the previous one issued, although it remembers nothing.
    let before = MemoryStore::new();
    let mut last = 0;
    for _ in 0..10_000 {
        let verrou_core::Acquisition::Granted(grant) =
            before.save("card:1", "owner", None).await.unwrap()
        else {
            panic!("a free key must be granted");
        };
        last = grant
            .fencing_token
            .expect("the memory store issues fencing tokens");
        before.delete("card:1", "owner").await.unwrap();
    }
    drop(before);
    let after = MemoryStore::new();
    let verrou_core::Acquisition::Granted(grant) =
        after.save("card:1", "owner", None).await.unwrap()
    else {
        panic!("a free key must be granted");
    };
    let first = grant.fencing_token.unwrap();
    assert!(
        first > last,
        "token {first} after a restart is not above {last}"
    );
}

#[tokio::test]
async fn a_ttl_above_the_maximum_is_refused_by_the_store_itself() {
    let store = MemoryStore::new();
    for result in [
        store.save("k", "o", Some(Duration::MAX)).await.map(|_| ()),
        store.extend("k", "o", Duration::MAX).await.map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(verrou_core::Error::InvalidDuration { .. })),
            "{result:?}"
        );
    }
    assert!(store.is_empty(), "nothing may be taken by a refused call");
}
