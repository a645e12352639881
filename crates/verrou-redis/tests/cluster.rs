//! The Redis store on a real Redis Cluster (a private one: three masters, three replicas):
//! redirections during a hash slot migration, contenders across migrations back and forth,
//! wake-on-release across nodes, and a connection task that ends being started again.

mod cluster_support;
#[path = "cluster_support/contention.rs"]
mod contention;
#[path = "cluster_support/shared.rs"]
mod shared;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_support::{blocking, connect, connect_fenced, hold_and_wait, other_master};
use contention::{key_on, Contention, TimedStore};
use shared::cluster;
use verrou_core::{Acquisition, Family, LockFactory, LockStore, OwnerCheck, Place, Retry, Share};
use verrou_redis::fred::prelude::{ClientLike, KeysInterface, Options};
use verrou_redis::{RedisConfig, RedisOptions, RedisStore};
use verrou_testkit::hash_slot;

/// Short, so that a call that is stuck shows at once.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Scheduling slack on top of a command timeout on a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(1500);

const TTL: Duration = Duration::from_secs(10);

/// The token of a grant or renewal.
fn token(outcome: &Acquisition) -> u64 {
    match outcome {
        Acquisition::Granted(grant) | Acquisition::Renewed(grant) => {
            grant.fencing_token.expect("a fencing token")
        }
        other => panic!("expected a grant, got {other:?}"),
    }
}

/// While a slot moves, the store's calls on the keys already moved (answered `ASK`, which
/// fred 10.1 does not follow) and its takes of the slot's keys (refused with `TRYAGAIN`
/// while the key and the slot's fencing counter are on different nodes) wait for the
/// migration to end, then get through, following `MOVED`; calls on other keys are served
/// meanwhile. Each call says what it did, once.
///
/// Before the store allowed redirections, the first `ASK` ended the client's connection
/// task and every later call of the store, on any key, timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_a_moving_slot_wait_for_the_migration_then_follow_it() {
    let cluster = cluster();
    let store = Arc::new(connect_fenced(&cluster.url(), COMMAND_TIMEOUT).await);
    let key = "{verrou-ask}:lock".to_owned();
    let elsewhere = "{verrou-ask-elsewhere}:lock";
    let slot = hash_slot(&key);
    assert_ne!(slot, hash_slot(elsewhere));

    let first = store.save(&key, "owner-1", Some(TTL)).await.unwrap();
    let source = cluster.master_of_slot(slot).unwrap();
    let target = other_master(cluster, source);
    let migration = cluster.begin_slot_migration(slot, target).unwrap();
    assert!(
        migration.move_key(&key).unwrap(),
        "the key was on the source"
    );

    // The key is on the target now, its slot's counter still on the source.
    let calls = {
        let (store, key) = (Arc::clone(&store), key.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let exists = store.exists(&key).await;
            let extended = store.extend(&key, "owner-1", TTL).await;
            let taken = store.save(&key, "owner-2", Some(TTL)).await;
            (exists, extended, taken, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !store.exists(elsewhere).await.unwrap(),
        "other keys are served"
    );
    assert!(
        !calls.is_finished(),
        "calls on moved keys wait for the migration"
    );
    blocking(move || migration.finish()).await.unwrap();
    let (exists, extended, taken, took) = calls.await.unwrap();
    assert!(exists.unwrap());
    assert_eq!(extended.unwrap(), OwnerCheck::Applied);
    assert_eq!(taken.unwrap(), Acquisition::Busy, "owner-1 holds it");
    assert!(
        took >= Duration::from_millis(500) && took < COMMAND_TIMEOUT,
        "the calls waited {took:?} for the migration to end"
    );

    // The slot is the target's now: `MOVED`, then the new owner.
    assert_eq!(
        store.delete(&key, "owner-1").await.unwrap(),
        OwnerCheck::Applied
    );
    let second = store.save(&key, "owner-2", Some(TTL)).await.unwrap();
    assert!(matches!(second, Acquisition::Granted(_)), "{second:?}");
    assert!(
        token(&second) > token(&first),
        "the counter moved with the slot"
    );
    store.force_delete(&key).await.unwrap();
}

/// Starts `call` on `store` while `key`'s slot moves (no key moved yet: the source has them
/// all), ends the migration half a second later, and returns what the call answered, once
/// it checked that the call was not served before.
async fn while_the_slot_moves<T, Fut>(
    store: &Arc<RedisStore>,
    key: &str,
    call: impl FnOnce(Arc<RedisStore>) -> Fut,
) -> T
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let call = call(Arc::clone(store));
    let cluster = cluster();
    let slot = hash_slot(key);
    let target = other_master(cluster, cluster.master_of_slot(slot).unwrap());
    let migration = cluster.begin_slot_migration(slot, target).unwrap();
    let call = tokio::spawn(async move {
        let started = Instant::now();
        (call.await, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocking(move || migration.finish()).await.unwrap();
    let (answer, took) = call.await.unwrap();
    assert!(
        took >= Duration::from_millis(400),
        "served while the slot moved, after {took:?}"
    );
    answer
}

/// A waiter's place, for the store calls of a waiting line.
fn place(waiter: &str) -> Place<'_> {
    Place {
        waiter,
        lease: Duration::from_secs(60),
    }
}

/// `key` held by `holder`, with `waiter` in its line.
async fn held_with_a_waiter_in_line(store: &RedisStore, key: &str) {
    let taken = store.save(key, "holder", Some(TTL)).await;
    assert!(matches!(taken.unwrap(), Acquisition::Granted(_)));
    let busy = store
        .save_in_line(key, "waiter-owner", Some(TTL), place("waiter"))
        .await;
    assert_eq!(busy.unwrap(), Acquisition::Busy);
}

/// The scripts that change a waiting line or a holder set can empty one and touch it again
/// (the last place leaves, the last holder goes), which a node refuses for a key it lacks
/// while the slot moves, failing the script halfway: each of these calls must wait for the
/// migration to end and then be served. A waiter's take of a key handed to it (fencing
/// tokens on: the slot's counter exists, so the source has every key the take names)...
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_take_of_a_key_handed_over_waits_for_a_moving_slot() {
    let store = Arc::new(connect_fenced(&cluster().url(), COMMAND_TIMEOUT).await);
    let key = "{verrou-moving-take}:lock";
    held_with_a_waiter_in_line(&store, key).await;
    assert_eq!(
        store.delete(key, "holder").await.unwrap(),
        OwnerCheck::Applied
    );
    let taken = while_the_slot_moves(&store, key, |store| async move {
        store
            .save_in_line(key, "waiter-owner", Some(TTL), place("waiter"))
            .await
    })
    .await;
    assert!(matches!(taken, Ok(Acquisition::Granted(_))), "{taken:?}");
    store.force_delete(key).await.unwrap();
}

/// ...the last waiter leaving the line...
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_waiter_leaving_waits_for_a_moving_slot() {
    let store = Arc::new(connect(&cluster().url(), COMMAND_TIMEOUT).await);
    let key = "{verrou-moving-leave}:lock";
    held_with_a_waiter_in_line(&store, key).await;
    let left = while_the_slot_moves(&store, key, |store| async move {
        store.leave_line(key, "waiter").await
    })
    .await;
    assert!(left.is_ok(), "{left:?}");
    store.force_delete(key).await.unwrap();
}

/// ...and the release of a semaphore's last permit, with a waiter in line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_permits_release_waits_for_a_moving_slot() {
    let store = Arc::new(connect(&cluster().url(), COMMAND_TIMEOUT).await);
    let key = "{verrou-moving-permit}:semaphore";
    let permit = Share::Permit { limit: 1 };
    let taken = store
        .save_share(key, "holder", Some(TTL), permit, None)
        .await;
    assert!(matches!(taken.unwrap(), Acquisition::Granted(_)));
    let busy = store
        .save_share(
            key,
            "waiter-owner",
            Some(TTL),
            permit,
            Some(place("waiter")),
        )
        .await;
    assert_eq!(busy.unwrap(), Acquisition::Busy);
    let released = while_the_slot_moves(&store, key, |store| async move {
        store.delete_share(key, "holder", permit).await
    })
    .await;
    assert!(matches!(released, Ok(OwnerCheck::Applied)), "{released:?}");
    store
        .force_delete_shares(key, Family::Semaphore)
        .await
        .unwrap();
}

/// Several stores contend for three keys of one hash slot while that slot is moved from
/// master to master and back, key by key with pauses: never two holders at once, no fencing
/// token going back, no call longer than the command timeout nor failing (calls on the
/// moving slot wait for the migration to end), and grants again after every migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contenders_keep_a_clean_history_across_slot_migrations() {
    contenders_across_slot_migrations(false).await;
}

/// The same with fencing tokens on: the slot's counter exists, so a node that has the lock
/// key and its line has every key of a take (before the guard, takes in line failed halfway
/// while the slot moved: about ten failed calls in four migrations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_contenders_keep_a_clean_history_across_slot_migrations() {
    contenders_across_slot_migrations(true).await;
}

async fn contenders_across_slot_migrations(fencing_tokens: bool) {
    let cluster = cluster();
    let url = cluster.url();
    let keys: Vec<String> = ["a", "b", "c"]
        .iter()
        // A slot of its own: the two variants run at once.
        .map(|name| format!("{{verrou-migrating-{fencing_tokens}}}:{name}"))
        .collect();
    let slot = hash_slot(&keys[0]);
    let mut stores = Vec::new();
    for _ in 0..4 {
        let store = if fencing_tokens {
            connect_fenced(&url, COMMAND_TIMEOUT).await
        } else {
            connect(&url, COMMAND_TIMEOUT).await
        };
        stores.push(Arc::new(TimedStore::new(store)));
    }
    let contention = Contention::start(&stores, 2, &keys, TTL);
    let warm_up = Instant::now();
    while contention.grants().len() < 20 {
        assert!(
            warm_up.elapsed() < Duration::from_secs(10),
            "no grants at all"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Four migrations, back and forth; each: the keys one by one, then the rest (the
    // counter), 150 ms apart; then 600 ms settled.
    let home = cluster.master_of_slot(slot).unwrap();
    let away = other_master(cluster, home);
    let mut windows = Vec::new();
    for round in 0..4 {
        let (from, to) = if round % 2 == 0 {
            (home, away)
        } else {
            (away, home)
        };
        assert_eq!(cluster.master_of_slot(slot).unwrap(), from);
        let moved = keys.clone();
        let (began, finished) = blocking(move || {
            let pause = || std::thread::sleep(Duration::from_millis(150));
            let began = Instant::now();
            let migration = cluster.begin_slot_migration(slot, to).unwrap();
            pause();
            for key in &moved {
                migration.move_key(key).unwrap();
                pause();
            }
            migration.move_keys().unwrap();
            pause();
            migration.finish().unwrap();
            (began, Instant::now())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        windows.push((began, finished, Instant::now()));
    }
    let (history, grants) = contention.stop().await;

    let holds = history.assert_clean();
    let longest = stores.iter().map(|store| store.longest()).max().unwrap();
    let failures: usize = stores.iter().map(|store| store.failures()).sum();
    println!(
        "{holds} holds, no overlap, no token regression; longest store call {longest:?}, \
         {failures} failed calls"
    );
    for (round, (began, finished, settled)) in windows.iter().enumerate() {
        let during = grants
            .iter()
            .filter(|(at, _)| (began..=finished).contains(&at))
            .count();
        let after = grants
            .iter()
            .filter(|(at, _)| (finished..=settled).contains(&at))
            .count();
        println!(
            "migration {round}: slot open {:?}, {during} grants while open, {after} in the \
             {:?} after",
            *finished - *began,
            *settled - *finished
        );
        assert!(after > 0, "migration {round}: no grant after it ended");
    }
    assert!(
        longest <= COMMAND_TIMEOUT + SLACK,
        "a store call took {longest:?}"
    );
    assert_eq!(
        failures, 0,
        "every call made while the slot moved is served once the migration ends"
    );
}

/// A waiter on one store wakes as soon as a holder on another store releases, for keys on
/// each of the three masters: each release is published on the node that owns the key's
/// slot, where the waiter's store subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_wake_when_holders_on_other_stores_release_on_every_master() {
    let cluster = cluster();
    let url = cluster.url();
    let holders = LockFactory::new(connect(&url, COMMAND_TIMEOUT).await);
    let waiters = LockFactory::new(connect(&url, COMMAND_TIMEOUT).await);
    let masters: Vec<u16> = cluster
        .nodes()
        .unwrap()
        .into_iter()
        .filter(|node| node.is_master())
        .map(|node| node.port)
        .collect();
    assert_eq!(masters.len(), 3);
    for master in masters {
        let key = blocking(move || key_on(cluster, master, "verrou-wake")).await;
        // Without a wake-up, the next attempt is 10 s away.
        let (holder, waiting) = hold_and_wait(&holders, &waiters, &key, "10s", "20s").await;
        let released = Instant::now();
        holder.release().await.unwrap();
        let (acquired, at, waiter) = waiting.await.unwrap();
        let woke = at - released;
        println!("key on master {master}: the waiter had the lock {woke:?} after the release");
        assert!(acquired);
        assert!(
            woke < Duration::from_secs(2),
            "woke {woke:?} after the release"
        );
        waiter.release().await.unwrap();
    }
}

/// A client whose connection task ends with an error is replaced: a command that cannot
/// follow an `ASK` (no write attempt left) ends the task of the client it went through, and
/// the store on that client serves again within a second, without being rebuilt. (Commands
/// sent meanwhile may be dropped by the dying task without fred counting them out, after
/// which a client merely started again would not flush its writes: the test's first calls
/// after the end are such commands, when they arrive in time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_connection_task_ends_is_replaced() {
    let cluster = cluster();
    let config = RedisConfig::new(cluster.url());
    // Unconnected: the store connects it, and watches its connection task.
    let client = config.builder().unwrap().build().unwrap();
    let mut options = RedisOptions::default();
    options.command_timeout = COMMAND_TIMEOUT;
    let store = RedisStore::from_client(client.clone(), options).expect("valid options");
    let key = "{verrou-restart}:lock";
    let slot = hash_slot(key);
    store.save(key, "owner-1", Some(TTL)).await.unwrap();

    let source = cluster.master_of_slot(slot).unwrap();
    let migration = cluster
        .begin_slot_migration(slot, other_master(cluster, source))
        .unwrap();
    migration.move_key(key).unwrap();
    // One attempt: written once, and the `ASK` finds none left. fred 10.1 then ends the
    // client's connection task.
    let once = Options {
        max_attempts: Some(1),
        timeout: Some(Duration::from_millis(500)),
        ..Options::default()
    };
    let killed: Result<Option<String>, _> = client.with_options(&once).get(key).await;
    assert!(
        killed.is_err(),
        "the command cannot follow the ASK: {killed:?}"
    );

    let started = Instant::now();
    let probe = "{verrou-restart-elsewhere}:lock";
    loop {
        // Calls that went into the dead client wait out their timeout: ask again meanwhile.
        match tokio::time::timeout(Duration::from_millis(100), store.exists(probe)).await {
            Ok(Ok(held)) => {
                assert!(!held);
                break;
            }
            Ok(Err(_)) | Err(_) => assert!(
                started.elapsed() < Duration::from_secs(1),
                "the store does not serve again"
            ),
        }
    }
    println!(
        "the store served again {:?} after its client's connection task ended",
        started.elapsed()
    );
    blocking(move || migration.finish()).await.unwrap();
    assert!(store.exists(key).await.unwrap(), "and follows MOVED");
    assert_eq!(
        store.delete(key, "owner-1").await.unwrap(),
        OwnerCheck::Applied
    );
    // The store closes the client it made; the dead one has nothing left to close.
    drop(store);
}

/// Forty waiters, each in a store of its own (forty processes) made just before it waits,
/// on a key of the cluster, with an hour-long retry delay: each hears the release that
/// hands it the key, and all are served in turn. A store's subscriber connects to every
/// master at its first wait, and fred reports each connection before it counts the client
/// as connected (refusing commands until then), so the subscriptions made at each report
/// may all fail; they are made again after a pause. (Without that, one run in 18 on a
/// loaded machine left a waiter deaf until its retry; `wake.rs` checks the retry itself.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_in_new_stores_all_hear_their_turn() {
    const WAITERS: usize = 40;
    let url = cluster().url();
    let key = format!("verrou-new-stores-{}", std::process::id());
    let holder = LockFactory::new(connect(&url, COMMAND_TIMEOUT).await)
        .create_lock_with_ttl(&key, "60s")
        .unwrap();
    assert!(holder.acquire_immediately().await.unwrap());
    let mut waiting = Vec::new();
    for _ in 0..WAITERS {
        let store: Arc<dyn LockStore> = Arc::new(connect(&url, COMMAND_TIMEOUT).await);
        let lock = LockFactory::from_shared(store)
            .with_retry(Retry::new().delay("1h").timeout("60s"))
            .unwrap()
            .create_lock_with_ttl(&key, "60s")
            .unwrap();
        waiting.push(tokio::spawn(async move {
            let acquired = lock.acquire().await.unwrap();
            if acquired {
                lock.release().await.unwrap();
            }
            acquired
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    holder.release().await.unwrap();
    let all_served = async {
        for waiter in waiting {
            assert!(waiter.await.unwrap(), "a waiter gave up");
        }
    };
    tokio::time::timeout(Duration::from_secs(20), all_served)
        .await
        .expect("every waiter hears its turn");
}
