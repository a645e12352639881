//! Semaphores and read-write locks on the server: the room check holds when many stores
//! (processes, as far as they know) take at the very same moment, waiters in line are not
//! overtaken, contention leaves the server log clean, and rows and places do not outlive
//! their holders and waiters.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    client, config, error_lines, missed_first_waiter, patient, private_server, row_locked, store,
    unique, warning_lines, Row,
};
use tokio::sync::Barrier;
use verrou_core::conformance::CountingStore;
use verrou_core::{
    Acquisition, Family, LockFactory, LockStore, OwnerCheck, Place, Retry, Share, RECHECK_EVERY,
};
use verrou_postgres::tokio_postgres::Client;
use verrou_postgres::{PostgresConfig, PostgresStore};

/// How many store instances contend: each stands for a process.
const STORES: usize = 8;

/// A TTL no test outlives.
const HOUR: Option<Duration> = Some(Duration::from_secs(3600));

/// How many rows `relation` has.
async fn rows(admin: &Client, relation: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM \"{relation}\"");
    admin.query_one(&sql, &[]).await.expect("count").get(0)
}

/// `STORES` stores on `table`.
async fn stores(table: &str) -> Vec<Arc<PostgresStore>> {
    let mut stores = Vec::new();
    for _ in 0..STORES {
        stores.push(Arc::new(store(table).await));
    }
    stores
}

/// Sends `takes` of `key`, all at once (released by one barrier), spread over `stores`, and
/// returns the shares granted.
async fn take_at_once(stores: &[Arc<PostgresStore>], key: &str, takes: &[Share]) -> Vec<Share> {
    let barrier = Arc::new(Barrier::new(takes.len()));
    let mut tasks = Vec::new();
    for (index, share) in takes.iter().copied().enumerate() {
        let store = Arc::clone(&stores[index % stores.len()]);
        let barrier = Arc::clone(&barrier);
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            let owner = format!("owner-{index}");
            barrier.wait().await;
            let taken = store.save_share(&key, &owner, HOUR, share, None).await;
            matches!(taken.expect("take"), Acquisition::Granted(_)).then_some(share)
        }));
    }
    let mut granted = Vec::new();
    for task in tasks {
        granted.extend(task.await.expect("taker"));
    }
    granted
}

/// Thirty-two takes of a semaphore of 3 (and of a read-write lock's write side, and of a
/// mix of reads and writes) sent at the same moment from eight stores, round after round:
/// exactly 3 permits, exactly 1 writer, and never a reader beside a writer. This is the
/// room check under READ COMMITTED: two takes must never both see the last free permit.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn simultaneous_takes_from_eight_stores_never_exceed_the_room() {
    let table = unique("shares_race");
    let stores = stores(&table).await;
    for round in 0..15 {
        let key = unique("race");
        let granted = take_at_once(&stores, &key, &[Share::Permit { limit: 3 }; 32]).await;
        assert_eq!(
            granted.len(),
            3,
            "round {round}: {granted:?} of a semaphore of 3"
        );
        let count = stores[0]
            .count_shares(&key, Share::Permit { limit: 3 })
            .await;
        assert_eq!(count.expect("count"), 3);

        let writers = take_at_once(&stores, &key, &[Share::Write; 32]).await;
        assert_eq!(writers.len(), 1, "round {round}: {writers:?}");

        let mixed: Vec<Share> = (0..32)
            .map(|index| {
                if index % 4 == 0 {
                    Share::Write
                } else {
                    Share::Read
                }
            })
            .collect();
        let other = unique("mixed");
        let granted = take_at_once(&stores, &other, &mixed).await;
        let wrote = granted
            .iter()
            .filter(|share| **share == Share::Write)
            .count();
        assert!(
            (wrote == 1 && granted.len() == 1) || (wrote == 0 && !granted.is_empty()),
            "round {round}: {granted:?}"
        );
    }
}

/// Thirty-two readers of one key, on eight stores, release at the same instant: every
/// release applies (none is undone by another one's rewrite of the row) and the last one
/// deletes the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn simultaneous_releases_all_apply_and_leave_no_row() {
    let table = unique("shares_release");
    let stores = stores(&table).await;
    let admin = client(&verrou_testkit::postgres_url()).await;
    for round in 0..10 {
        let key = unique("release");
        let granted = take_at_once(&stores, &key, &[Share::Read; 32]).await;
        assert_eq!(granted.len(), 32, "readers share");
        let barrier = Arc::new(Barrier::new(32));
        let mut tasks = Vec::new();
        for index in 0..32 {
            let store = Arc::clone(&stores[index % STORES]);
            let (barrier, key) = (Arc::clone(&barrier), key.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let owner = format!("owner-{index}");
                store.delete_share(&key, &owner, Share::Read).await
            }));
        }
        for task in tasks {
            let released = task.await.expect("releaser").expect("release");
            assert_eq!(released, OwnerCheck::Applied, "round {round}");
        }
        let sql = format!("SELECT count(*) FROM \"{table}_shares\" WHERE key = $1");
        let left: i64 = admin.query_one(&sql, &[&key]).await.expect("rows").get(0);
        assert_eq!(left, 0, "round {round}: the row outlived its holders");
    }
}

/// A waiter in a semaphore's line that its own limit keeps out (limit 1, one permit held)
/// is not overtaken by a plain take that would fit (limit 2): the line comes first. Once
/// the holder releases, the release hands the key over to the waiter, which gets in.
#[tokio::test]
async fn a_plain_take_does_not_overtake_a_waiter_in_a_semaphores_line() {
    let store = store(&unique("shares_line")).await;
    let key = unique("line");
    let (strict, generous) = (Share::Permit { limit: 1 }, Share::Permit { limit: 2 });
    let took = store.save_share(&key, "holder", HOUR, generous, None).await;
    assert!(matches!(took.expect("take"), Acquisition::Granted(_)));
    let place = Place {
        waiter: "waiter",
        lease: Duration::from_secs(3600),
    };
    let waiting = store.save_share(&key, "w", HOUR, strict, Some(place)).await;
    assert_eq!(waiting.expect("take"), Acquisition::Busy);
    let newcomer = store.save_share(&key, "new", HOUR, generous, None).await;
    assert_eq!(
        newcomer.expect("take"),
        Acquisition::Busy,
        "overtook the waiter"
    );
    let released = store.delete_share(&key, "holder", generous).await;
    assert_eq!(released.expect("release"), OwnerCheck::Applied);
    let served = store.save_share(&key, "w", HOUR, strict, Some(place)).await;
    assert!(matches!(served.expect("take"), Acquisition::Granted(_)));
}

/// The key's lock and its read-write lock have lines of their own: a waiter in the read-write
/// lock's line does not hold back the plain lock of the same key, and `leave_share_line`
/// removes the place.
#[tokio::test]
async fn a_share_line_is_not_the_lock_line_of_its_key() {
    let table = unique("shares_lines");
    let store = store(&table).await;
    let key = unique("both");
    let took = store
        .save_share(&key, "writer", HOUR, Share::Write, None)
        .await;
    assert!(matches!(took.expect("take"), Acquisition::Granted(_)));
    let place = Place {
        waiter: "reader",
        lease: Duration::from_secs(3600),
    };
    let read = store
        .save_share(&key, "r", HOUR, Share::Read, Some(place))
        .await;
    assert_eq!(read.expect("take"), Acquisition::Busy);
    let lock = store.save(&key, "lock", HOUR).await;
    assert!(matches!(lock.expect("take"), Acquisition::Granted(_)));
    let admin = client(&verrou_testkit::postgres_url()).await;
    let places = format!("{table}_waiters");
    assert_eq!(rows(&admin, &places).await, 1);
    store
        .leave_share_line(&key, Family::RwLock, "reader")
        .await
        .expect("leave");
    assert_eq!(rows(&admin, &places).await, 0);
}

/// Rows go with their last holder: a release of the last one deletes the row, and rows
/// whose holders all expired are swept.
#[tokio::test]
async fn share_rows_go_with_their_last_holder() {
    let table = unique("shares_sweep");
    let mut swept = config(&table);
    swept.sweep_interval = Some(Duration::from_millis(100));
    let store = PostgresStore::connect(swept).await.expect("store");
    let admin = client(&verrou_testkit::postgres_url()).await;
    let shares = format!("{table}_shares");
    let permit = Share::Permit { limit: 5 };
    for owner in ["a", "b"] {
        let took = store.save_share("kept", owner, HOUR, permit, None).await;
        assert!(matches!(took.expect("take"), Acquisition::Granted(_)));
    }
    assert_eq!(rows(&admin, &shares).await, 1, "one row per key");
    for owner in ["a", "b"] {
        let released = store.delete_share("kept", owner, permit).await;
        assert_eq!(released.expect("release"), OwnerCheck::Applied);
    }
    assert_eq!(rows(&admin, &shares).await, 0, "released to the last");

    let short = Some(Duration::from_millis(50));
    for key in ["left-1", "left-2"] {
        let took = store
            .save_share(key, "crashed", short, Share::Read, None)
            .await;
        assert!(matches!(took.expect("take"), Acquisition::Granted(_)));
    }
    assert_eq!(rows(&admin, &shares).await, 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A take starts the sweep that is due.
    let took = store
        .save_share("other", "me", None, Share::Write, None)
        .await;
    assert!(matches!(took.expect("take"), Acquisition::Granted(_)));
    let mut left = rows(&admin, &shares).await;
    for _ in 0..50 {
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = rows(&admin, &shares).await;
    }
    assert_eq!(left, 1, "the expired rows were not swept");
}

/// A semaphore of 3 and a read-write lock (2 writers, 6 readers), each worked by eight
/// workers on eight stores (and eight listeners) with waiters in line, some giving up and
/// some writers forcing their release:
/// never more than 3 inside, never a reader beside a writer, and the server logs neither an
/// error (a deadlock, a failed statement) nor a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contention_keeps_the_room_and_the_server_log_clean() {
    let server = private_server();
    let url = server.url();
    let mut factories = Vec::new();
    for _ in 0..STORES {
        let store = PostgresStore::connect(PostgresConfig::new(&url))
            .await
            .expect("store");
        factories.push(
            LockFactory::new(store)
                .with_retry(Retry::new().delay("300ms").timeout("60s"))
                .expect("valid retry options"),
        );
    }
    let (permits, readers, writers) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (semaphore, rw) = (unique("pool"), unique("cache"));
    let mut workers = Vec::new();
    for (worker, factory) in factories.iter().enumerate() {
        let permit = factory.create_semaphore(&semaphore, 3).expect("valid key");
        let permits = Arc::clone(&permits);
        let impatient = factory.create_semaphore(&semaphore, 3).expect("valid key");
        workers.push(tokio::spawn(async move {
            for round in 0..8 {
                if (worker + round) % 3 == 0
                    && impatient
                        .acquire_with(Retry::new().timeout("5ms"))
                        .await
                        .expect("acquire")
                {
                    impatient.release().await.expect("release");
                }
                assert!(permit.acquire().await.expect("acquire"));
                let inside = permits.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(inside <= 3, "{inside} inside a semaphore of 3");
                tokio::time::sleep(Duration::from_millis(5)).await;
                permits.fetch_sub(1, Ordering::SeqCst);
                permit.release().await.expect("release");
            }
        }));
        let lock = factory.create_rw_lock(&rw).expect("valid key");
        let write = worker < 2;
        let handle = if write { lock.write() } else { lock.read() }.expect("a handle");
        let (mine, theirs) = if write {
            (Arc::clone(&writers), Arc::clone(&readers))
        } else {
            (Arc::clone(&readers), Arc::clone(&writers))
        };
        workers.push(tokio::spawn(async move {
            for round in 0..8 {
                assert!(handle.acquire().await.expect("acquire"));
                let inside = mine.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(!write || inside == 1, "two writers");
                assert_eq!(theirs.load(Ordering::SeqCst), 0, "a reader beside a writer");
                tokio::time::sleep(Duration::from_millis(5)).await;
                mine.fetch_sub(1, Ordering::SeqCst);
                // A writer holds the key alone: forcing it frees nobody else.
                if write && round % 3 == 0 {
                    handle.force_release().await.expect("force release");
                } else {
                    handle.release().await.expect("release");
                }
            }
        }));
    }
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(120), worker)
            .await
            .expect("the workers finish")
            .expect("worker");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log_contents();
    let mut problems = error_lines(&log);
    problems.extend(warning_lines(&log));
    assert!(
        problems.is_empty(),
        "the server logged:\n{}",
        problems.join("\n")
    );
}

/// A force release of a semaphore and a waiter's take of it, both queued behind another
/// statement that has the key's shares row locked, never deadlock: the force release locks
/// the row before any place, in the order every take locks them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_force_release_and_a_waiters_take_queued_on_the_row_do_not_deadlock() {
    let table = unique("shares_deadlock");
    let store = Arc::new(store(&table).await);
    let key = unique("key");
    let strict = Share::Permit { limit: 1 };
    let place = Place {
        waiter: "waiter",
        lease: Duration::from_secs(3600),
    };
    let took = store.save_share(&key, "holder", HOUR, strict, None).await;
    assert!(matches!(took.expect("take"), Acquisition::Granted(_)));
    let waiting = store.save_share(&key, "w", HOUR, strict, Some(place)).await;
    assert_eq!(waiting.expect("take"), Acquisition::Busy);
    let mut admin = client(&verrou_testkit::postgres_url()).await;
    let blocker = row_locked(&mut admin, &table, Row::Semaphore, &key).await;
    let take = tokio::spawn({
        let (store, key) = (Arc::clone(&store), key.clone());
        async move { store.save_share(&key, "w", HOUR, strict, Some(place)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let force = tokio::spawn({
        let (store, key) = (Arc::clone(&store), key.clone());
        async move { store.force_delete_shares(&key, Family::Semaphore).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.commit().await.expect("committed");
    take.await.expect("the taker").expect("the take");
    force
        .await
        .expect("the force release")
        .expect("the force release");
}

/// A semaphore's release that missed its first waiter (see
/// [`common::missed_first_waiter`]) still lets the waiter in within the listener's next
/// look at its watched keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_missed_the_first_waiter_still_lets_it_in() {
    let table = unique("shares_missed_first");
    let waited = missed_first_waiter(&table, Row::Semaphore, |factory, key| {
        factory.create_semaphore(key, 1)
    })
    .await;
    assert!(
        waited < RECHECK_EVERY + Duration::from_secs(2),
        "acquired {waited:?} after the release"
    );
}

/// The listener's look again at a watched semaphore wakes the front of its line alone (the
/// server cannot tell whether the front's permit fits, so it asks), not every waiter: while
/// the semaphore stays full, the waiters behind the front never ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recheck_of_a_full_semaphore_wakes_its_front_alone() {
    let table = unique("shares_recheck");
    let key = unique("key");
    let holders = LockFactory::new(store(&table).await);
    let holder = holders.create_semaphore(&key, 1).expect("key");
    assert!(holder.acquire().await.expect("acquire"));
    let counting = Arc::new(CountingStore::new(Arc::new(store(&table).await)));
    let waiters = LockFactory::from_shared(Arc::clone(&counting) as Arc<dyn LockStore>)
        .with_retry(Retry::new().delay("1h"))
        .expect("valid retry options");
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let waiter = waiters.create_semaphore(&key, 1).expect("key");
        waiting.push(tokio::spawn(async move { waiter.acquire().await }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rechecks = 3;
    tokio::time::sleep(RECHECK_EVERY * rechecks + Duration::from_millis(500)).await;
    // The front asks once when its store starts watching the key, then at each recheck
    // (the listener's ticks are not aligned with this test: one more may fall in); every
    // waiter woken each time would be three times as many.
    let in_vain = counting.in_vain.load(Ordering::SeqCst);
    assert!(
        in_vain <= rechecks as usize + 2,
        "{in_vain} asks in vain in {rechecks} rechecks"
    );
    holder.release().await.expect("release");
    for waiter in waiting {
        waiter.abort();
    }
}

/// A semaphore nobody holds any more (its holder's TTL ran out: no release, no
/// announcement) whose line's front is a waiter that never asks (a process that died, a
/// store without a listener) does not hold up the waiter behind it for its hour-long retry:
/// a recheck of a key nobody holds wakes every waiter here, whose take hands the key to
/// the front, which is passed after its window, and the next recheck wakes the waiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recheck_passes_a_deaf_front_of_a_semaphore_nobody_holds() {
    let table = unique("shares_deaf_front");
    let key = unique("key");
    let raw = store(&table).await;
    let strict = Share::Permit { limit: 1 };
    let short = Some(Duration::from_millis(300));
    let took = raw.save_share(&key, "holder", short, strict, None).await;
    assert!(matches!(took.expect("take"), Acquisition::Granted(_)));
    let deaf = Place {
        waiter: "deaf",
        lease: Duration::from_secs(3600),
    };
    let queued = raw.save_share(&key, "deaf", HOUR, strict, Some(deaf)).await;
    assert_eq!(queued.expect("take"), Acquisition::Busy);
    let waiter = patient(store(&table).await)
        .create_semaphore(&key, 1)
        .expect("key");
    let waiting = tokio::spawn(async move { waiter.acquire().await });
    let started = std::time::Instant::now();
    let acquired = tokio::time::timeout(RECHECK_EVERY * 3 + Duration::from_secs(2), waiting)
        .await
        .expect("the waiter behind the deaf front got the permit")
        .expect("waiter task");
    assert!(acquired.expect("acquire"), "{:?}", started.elapsed());
}
