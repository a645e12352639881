//! Waiters wake on release: a waiter whose retry delay is an hour gets the lock within a
//! moment of its release by another store (another process, as far as the stores know), a
//! release announces itself only when someone waits, and lock operations never depend on
//! the listener.

mod common;

use std::time::{Duration, Instant};

use common::{
    acquired_after, client, listen, names_in_line, patient, places, start_waiting, store, unique,
};
use verrou_core::{
    Acquisition, Lock, LockFactory, LockStore, OwnerCheck, Place, Retry, HANDOVER_WINDOW,
    RECHECK_EVERY,
};
use verrou_postgres::{PostgresConfig, PostgresStore, MAX_KEY_LEN};

/// How soon after a release a woken waiter must have the lock: generous for an announced
/// release (loaded machines), and well before the listener's next look at the watched keys
/// (every [`RECHECK_EVERY`]), which would let the waiter in that soon only half the time.
const PROMPTLY: Duration = RECHECK_EVERY.saturating_sub(Duration::from_millis(500));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_by_another_store_wakes_the_waiter() {
    let table = unique("wake");
    let waiters = patient(store(&table).await);
    let holders = LockFactory::new(store(&table).await);
    // The longest key travels in the announcement, like any other.
    for key in [unique("key"), "k".repeat(MAX_KEY_LEN)] {
        let holder = holders.create_lock(key.as_str()).expect("valid key");
        assert!(holder.acquire().await.expect("acquire"));
        let waiting = start_waiting(waiters.create_lock(key.as_str()).expect("key")).await;
        holder.release().await.expect("release");
        let waited = acquired_after(waiting, Instant::now()).await;
        assert!(waited < PROMPTLY, "acquired {waited:?} after the release");
    }
}

/// Hand-overs go to the waiter's store whatever name the releasing store knows the table
/// by: `verrou` and `public.verrou` are one table. A waiter must have the lock well before
/// its listener's next look at the watched keys ([`RECHECK_EVERY`]), which would let it in
/// without any announcement: one in four would be that lucky, so five of six rounds must
/// be that quick (one slow round is left to a loaded machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_through_the_schema_qualified_name_wakes_the_waiter() {
    let table = unique("wake_qualified");
    // The first store creates the table's hand-over function.
    let holders = LockFactory::new(store(&format!("public.{table}")).await);
    let waiters = patient(store(&table).await);
    let mut waits = Vec::new();
    for _ in 0..6 {
        let key = unique("key");
        let holder = holders.create_lock(key.as_str()).expect("valid key");
        assert!(holder.acquire().await.expect("acquire"));
        let waiting = start_waiting(waiters.create_lock(key.as_str()).expect("key")).await;
        holder.release().await.expect("release");
        waits.push(acquired_after(waiting, Instant::now()).await);
    }
    let quick = waits
        .iter()
        .filter(|waited| **waited < RECHECK_EVERY / 4)
        .count();
    assert!(quick >= 5, "acquired after the releases: {waits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_release_by_another_store_wakes_the_waiter() {
    let table = unique("wake_force");
    let key = unique("key");
    let waiters = patient(store(&table).await);
    let others = LockFactory::new(store(&table).await);
    let holder = others.create_lock(&key).expect("valid key");
    assert!(holder.acquire().await.expect("acquire"));
    let waiting = start_waiting(waiters.create_lock(&key).expect("key")).await;
    let intruder = others.create_lock(&key).expect("valid key");
    intruder.force_release().await.expect("force release");
    let waited = acquired_after(waiting, Instant::now()).await;
    assert!(
        waited < PROMPTLY,
        "acquired {waited:?} after the force release"
    );
}

/// A store kept across Tokio runtimes (as a `static` shared by `#[tokio::test]`s is): once
/// the runtime its listener ran on has shut down, the next waiter starts the listener again
/// on its own runtime and is woken by a release, on a key the first runtime's waiter left
/// watched as on a new one.
#[test]
fn a_store_that_outlives_its_runtime_still_wakes_its_waiters() {
    let runtime = || tokio::runtime::Runtime::new().expect("a Tokio runtime");
    let table = unique("wake_runtimes");
    let first = runtime();
    let (waiters, holders) = first.block_on(async {
        (
            patient(store(&table).await),
            LockFactory::new(store(&table).await),
        )
    });
    let watched = unique("key");
    let waited = first.block_on(woken_by_release(&waiters, &holders, &watched));
    assert!(waited < PROMPTLY, "acquired {waited:?} after the release");
    drop(first);
    let second = runtime();
    for key in [watched, unique("key")] {
        let waited = second.block_on(woken_by_release(&waiters, &holders, &key));
        assert!(
            waited < PROMPTLY,
            "on the next runtime, acquired {waited:?} after the release"
        );
    }
}

/// How soon after a holder of `holders` releases `key` a waiter of `waiters` gets it.
async fn woken_by_release(waiters: &LockFactory, holders: &LockFactory, key: &str) -> Duration {
    let holder = holders.create_lock(key).expect("valid key");
    assert!(holder.acquire().await.expect("acquire"));
    let waiter = waiters.create_lock(key).expect("valid key");
    let waiting = tokio::spawn(async move {
        let acquired = waiter.acquire().await.expect("acquire");
        let at = Instant::now();
        waiter.release().await.expect("release");
        (acquired, at)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released = Instant::now();
    holder.release().await.expect("release");
    acquired_after(waiting, released).await
}

/// Many waiters in several stores, one key: every hand-over is a wake-up, never a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_several_stores_are_served_one_after_another() {
    served_one_after_another("wake_many", |factory, key| factory.create_lock(key)).await;
}

/// The same with the only permit of a semaphore: its hand-overs wake too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_for_a_permit_are_served_one_after_another() {
    served_one_after_another("wake_permits", |factory, key| {
        factory.create_semaphore(key, 1)
    })
    .await;
}

/// The same with the writers of a read-write lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_are_served_one_after_another() {
    served_one_after_another("wake_writers", |factory, key| {
        factory.create_rw_lock(key)?.write()
    })
    .await;
}

/// 12 waiters in 4 stores (on a table named after `table`) take turns 5 times each at one
/// key, with locks `lock_of` makes, within a minute although they retry only every hour.
async fn served_one_after_another(
    table: &str,
    lock_of: fn(&LockFactory, &str) -> verrou_core::Result<Lock>,
) {
    let table = unique(table);
    let key = unique("key");
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..4 {
        let factory = patient(store(&table).await);
        for _ in 0..3 {
            let lock = lock_of(&factory, &key).expect("valid key");
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    assert!(lock.acquire().await.expect("acquire"));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    lock.release().await.expect("release");
                }
            }));
        }
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("a waiter was left waiting for its retry")
            .expect("worker");
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A store whose listener can not connect works as usual; its waiters poll. Its role may
/// have one connection, the pool's: the server turns the listener away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_operations_do_not_need_the_listener() {
    let role = unique("one_connection");
    let key = unique("key");
    let url = verrou_testkit::postgres_url();
    client(&url)
        .await
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN CONNECTION LIMIT 1; \
             CREATE SCHEMA {role} AUTHORIZATION {role}"
        ))
        .await
        .expect("a role that may have one connection");
    let separator = if url.contains('?') { '&' } else { '?' };
    let mut config = PostgresConfig::new(format!("{url}{separator}user={role}"));
    config.table = format!("{role}.verrou");
    config.pool_size = 1;
    let deaf = PostgresStore::connect(config)
        .await
        .expect("the store starts without its listener");
    let factory = LockFactory::new(deaf)
        .with_retry(Retry::new().delay(50).timeout("10s"))
        .expect("valid retry options");
    let holder = factory
        .create_lock_with_ttl(&key, "30s")
        .expect("valid key");
    let started = Instant::now();
    assert!(holder.acquire_immediately().await.expect("acquire"));
    assert!(holder.is_locked().await.expect("is_locked"));
    holder.extend().await.expect("extend");
    let waiter = factory.create_lock(&key).expect("valid key");
    let waiting = tokio::spawn(async move { waiter.acquire().await.expect("acquire") });
    tokio::time::sleep(Duration::from_millis(200)).await;
    holder.release().await.expect("release");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiter polls")
            .expect("waiter"),
        "the waiter got the lock by polling"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let sessions: i64 = client(&url)
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .expect("the role's sessions")
        .get(0);
    assert_eq!(sessions, 1, "the pool's connection, and no listener");
}

/// A release hands the key over to the front waiter by name: its place is cut to the
/// hand-over window and one notification names it and the key, on the channel of the
/// waiter's store only: the listeners of other stores (other processes) on the table do not
/// hear it. A release nobody waits for sends nothing, nor does a take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_announces_only_a_hand_over_to_the_front_waiters_store() {
    let table = unique("handover");
    let key = format!("{} with spaces", unique("key"));
    let (releaser, front, behind) = (
        store(&table).await,
        store(&table).await,
        store(&table).await,
    );
    let url = verrou_testkit::postgres_url();
    let inspector = client(&url).await;
    let take = || async {
        let taken = releaser.save(&key, "holder", None).await.expect("save");
        assert!(matches!(taken, Acquisition::Granted(_)), "{taken:?}");
    };

    take().await;
    for (waiter, store) in [("first", &front), ("second", &behind)] {
        let place = Place {
            waiter,
            lease: Duration::from_secs(60),
        };
        let busy = store
            .save_in_line(&key, waiter, None, place)
            .await
            .expect("save in line");
        assert_eq!(busy, Acquisition::Busy);
    }
    let names = names_in_line(&inspector, &table, &key).await;
    let store_of = |index: usize| names[index].0.split_once('.').expect("a store id").0;
    assert_ne!(
        store_of(0),
        store_of(1),
        "each store names its waiters: {names:?}"
    );
    let mut heard_front = listen(&url, &format!("verrou:{}", store_of(0))).await;
    let mut heard_behind = listen(&url, &format!("verrou:{}", store_of(1))).await;
    let mut heard_table = listen(&url, &format!("verrou:{table}")).await;
    let releaser_id = store_id(&releaser, &table).await;
    let mut heard_releaser = listen(&url, &format!("verrou:{releaser_id}")).await;

    assert_eq!(
        releaser.delete(&key, "holder").await.expect("delete"),
        OwnerCheck::Applied
    );
    assert_eq!(
        heard_front.within(Duration::from_millis(300)).await,
        [format!("{} {key}", names[0].0)],
        "one notification, naming the front waiter, to its store"
    );
    let line = places(&inspector, &table, &key).await;
    let window = i64::try_from(HANDOVER_WINDOW.as_millis()).expect("small");
    assert_eq!(line.len(), 2, "{line:?}");
    assert!(line[0].0 == "first" && line[0].1 <= window, "{line:?}");
    assert!(line[1].0 == "second" && line[1].1 > 50_000, "{line:?}");
    assert_eq!(
        heard_behind.within(Duration::ZERO).await,
        Vec::<String>::new(),
        "the store of the waiter behind heard nothing"
    );

    front.leave_line(&key, "first").await.expect("leave");
    assert_eq!(
        heard_behind.within(Duration::from_millis(300)).await,
        [format!("{} {key}", names[1].0)],
        "the front left: the key goes on to the next waiter, announced to its store"
    );
    behind.leave_line(&key, "second").await.expect("leave");
    assert!(places(&inspector, &table, &key).await.is_empty());

    take().await;
    assert_eq!(
        releaser.delete(&key, "holder").await.expect("delete"),
        OwnerCheck::Applied
    );
    take().await;
    releaser.force_delete(&key).await.expect("force delete");
    for heard in [&mut heard_front, &mut heard_behind, &mut heard_table] {
        assert_eq!(
            heard.within(Duration::from_millis(300)).await,
            Vec::<String>::new(),
            "nobody waits: no notification; and never on the table's channel"
        );
    }
    assert_eq!(
        heard_releaser.within(Duration::ZERO).await,
        Vec::<String>::new(),
        "no waiter of the releasing store: nothing on its own channel"
    );
}

/// The id of `store` (on `table`), as it names its waiters in a line: read from a place it
/// takes, and leaves, in the line of a key of its own.
async fn store_id(store: &PostgresStore, table: &str) -> String {
    let key = unique("id-of");
    let taken = store.save(&key, "holder", None).await.expect("save");
    assert!(matches!(taken, Acquisition::Granted(_)), "{taken:?}");
    let place = Place {
        waiter: "probe",
        lease: Duration::from_secs(60),
    };
    let busy = store.save_in_line(&key, "probe", None, place).await;
    assert_eq!(busy.expect("save in line"), Acquisition::Busy);
    let inspector = client(&verrou_testkit::postgres_url()).await;
    let names = names_in_line(&inspector, table, &key).await;
    store.leave_line(&key, "probe").await.expect("leave");
    store.force_delete(&key).await.expect("force delete");
    let (id, _) = names[0].0.split_once('.').expect("a store id");
    id.to_owned()
}
