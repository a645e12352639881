//! The waiting line: waiters of separate stores (separate processes, as far as the stores
//! know) are served in arrival order without asking in vain, newcomers never overtake them,
//! a waiter that died or gave up holds the others up no longer than the hand-over window,
//! and the line leaves nothing behind.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{acquired_after, client, config, patient, places, start_waiting, store, unique};
use verrou_core::conformance::CountingStore;
use verrou_core::{Acquisition, LockFactory, LockStore, OwnerCheck, Place, Retry, HANDOVER_WINDOW};
use verrou_postgres::PostgresStore;

/// How soon after a hand-over a woken waiter must have the lock (generous: loaded machines).
const PROMPTLY: Duration = Duration::from_secs(2);

/// A place that outlasts any test.
fn place(waiter: &str) -> Place<'_> {
    Place {
        waiter,
        lease: Duration::from_secs(3600),
    }
}

/// A factory on `store` whose waiters ask every `delay` and give up after a minute.
fn factory(store: impl LockStore, delay: &str) -> LockFactory {
    LockFactory::new(store)
        .with_retry(Retry::new().delay(delay).timeout("60s"))
        .expect("valid retry options")
}

/// Eight workers, each on a store of its own, take turns on one key: each gets about an
/// eighth of the turns, and the only takes answered "busy" are each acquire's first one
/// (joining the line): nobody asks in vain, where waking every waiter at each release
/// would cost seven asks per turn. Retries come every 5 s, far apart from the turns: a
/// worker served in time was woken by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_stores_take_turns_in_arrival_order_without_asking_in_vain() {
    const WORKERS: usize = 8;
    const TURNS: usize = WORKERS * 12;
    let table = unique("fair");
    let key = unique("key");
    let turns = Arc::new(AtomicUsize::new(0));
    let mut counters = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let counting = Arc::new(CountingStore::new(Arc::new(store(&table).await)));
        counters.push(Arc::clone(&counting));
        let lock = LockFactory::from_shared(counting)
            .with_retry(Retry::new().delay("5s").timeout("60s"))
            .expect("valid retry options")
            .create_lock(&key)
            .expect("valid key");
        let turns = Arc::clone(&turns);
        tasks.push(tokio::spawn(async move {
            let mut mine = 0;
            while turns.load(Ordering::SeqCst) < TURNS {
                assert!(lock.acquire().await.expect("acquire"), "gave up waiting");
                turns.fetch_add(1, Ordering::SeqCst);
                mine += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
                lock.release().await.expect("release");
            }
            mine
        }));
    }
    let started = Instant::now();
    let mut shares = Vec::new();
    for task in tasks {
        shares.push(
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("a worker was left waiting")
                .expect("worker"),
        );
    }
    let elapsed = started.elapsed();
    let acquired: usize = shares.iter().sum();
    let count = |read: fn(&CountingStore) -> &AtomicUsize| -> usize {
        counters
            .iter()
            .map(|counting| read(counting).load(Ordering::SeqCst))
            .sum()
    };
    let (busy, in_vain) = (count(|c| &c.busy), count(|c| &c.in_vain));
    println!(
        "{acquired} turns in {elapsed:?}, shares {shares:?}, {busy} busy takes, {in_vain} in \
         vain: {:.2} per turn",
        in_vain as f64 / acquired as f64
    );
    let fair = acquired / WORKERS;
    for share in &shares {
        assert!(
            (fair / 2..=fair * 2).contains(share),
            "unfair shares {shares:?}"
        );
    }
    assert!(
        in_vain * 10 <= acquired,
        "{in_vain} asks in vain for {acquired} turns"
    );
    let line = places(&client(&verrou_testkit::postgres_url()).await, &table, &key).await;
    assert!(line.is_empty(), "places left behind: {line:?}");
}

/// A queued waiter keeps the key from newcomers while its place lives, whether the key
/// came free by a release or by expiry: a plain take and a take joining the line are both
/// busy, and the waiter gets the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_never_takes_the_key_of_a_queued_waiter() {
    let table = unique("newcomer");
    let key = unique("key");
    let (ours, theirs) = (store(&table).await, store(&table).await);
    let ttl = Some(Duration::from_millis(300));
    assert!(matches!(
        ours.save(&key, "holder", ttl).await.expect("save"),
        Acquisition::Granted(_)
    ));
    let queued = ours
        .save_in_line(&key, "queued", None, place("queued"))
        .await
        .expect("save in line");
    assert_eq!(queued, Acquisition::Busy);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!ours.exists(&key).await.expect("exists"), "expired");
    assert_eq!(
        theirs.save(&key, "newcomer", None).await.expect("save"),
        Acquisition::Busy,
        "a plain take overtook the queued waiter"
    );
    assert_eq!(
        theirs
            .save_in_line(&key, "newcomer", None, place("newcomer"))
            .await
            .expect("save in line"),
        Acquisition::Busy,
        "a take joining the line overtook the queued waiter"
    );
    assert!(matches!(
        ours.save_in_line(&key, "queued", None, place("queued"))
            .await
            .expect("save in line"),
        Acquisition::Granted(_)
    ));
    // Released, the key goes to the next in line, the newcomer that joined it.
    assert_eq!(
        ours.delete(&key, "queued").await.expect("delete"),
        OwnerCheck::Applied
    );
    assert_eq!(
        ours.save(&key, "late", None).await.expect("save"),
        Acquisition::Busy
    );
    assert!(matches!(
        theirs
            .save_in_line(&key, "newcomer", None, place("newcomer"))
            .await
            .expect("save in line"),
        Acquisition::Granted(_)
    ));
}

/// The same with locks: while a holder's lock runs out, a waiter and then a second one wait
/// (asking every 300 ms), and a newcomer calls `acquire_immediately` without pause. The
/// newcomer never gets the key before both waiters had it, in their order. Every lock here
/// expires rather than being released, so no hand-over window is involved: the waiters'
/// places alone keep the newcomer out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn newcomers_never_overtake_waiting_locks() {
    let table = unique("overtake");
    let key = unique("key");
    let factories = [
        factory(store(&table).await, "300ms"),
        factory(store(&table).await, "300ms"),
        factory(store(&table).await, "300ms"),
    ];
    let holder = factories[0]
        .create_lock_with_ttl(&key, "1500ms")
        .expect("valid key");
    assert!(holder.acquire().await.expect("acquire"));
    let waiter = |index: usize| {
        factories[index]
            .create_lock_with_ttl(&key, "300ms")
            .expect("valid key")
    };
    let first = start_waiting(waiter(1)).await;
    let second = start_waiting(waiter(2)).await;
    let newcomer = factories[0].create_lock(&key).expect("key");
    let hammer = tokio::spawn(async move {
        loop {
            if newcomer.acquire_immediately().await.expect("acquire") {
                let at = Instant::now();
                newcomer.release().await.expect("release");
                return at;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut served = Vec::new();
    for (name, waiting) in [("first", first), ("second", second)] {
        let (acquired, at) = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .unwrap_or_else(|_| panic!("the {name} waiter never got the key"))
            .expect("waiter");
        assert!(acquired);
        assert!(
            !hammer.is_finished(),
            "the newcomer got in before the {name} waiter"
        );
        served.push(at);
    }
    let newcomer_at = tokio::time::timeout(Duration::from_secs(10), hammer)
        .await
        .expect("the newcomer gets the key once nobody waits")
        .expect("newcomer");
    assert!(served[0] < served[1] && served[1] < newcomer_at);
}

/// A waiter that died in line (its place left behind, lasting an hour) holds the next
/// waiter up after a release by at most the hand-over window and one retry delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_waiter_holds_the_next_up_for_the_window_and_a_retry_at_most() {
    let table = unique("dead");
    let key = unique("key");
    let delay = Duration::from_millis(500);
    let raw = store(&table).await;
    assert!(matches!(
        raw.save(&key, "holder", None).await.expect("save"),
        Acquisition::Granted(_)
    ));
    let ghost = raw
        .save_in_line(&key, "ghost", None, place("ghost"))
        .await
        .expect("save in line");
    assert_eq!(ghost, Acquisition::Busy);
    let waiters = factory(store(&table).await, "500ms");
    let waiting = start_waiting(waiters.create_lock(&key).expect("key")).await;
    let released_at = Instant::now();
    assert_eq!(
        raw.delete(&key, "holder").await.expect("delete"),
        OwnerCheck::Applied
    );
    let waited = acquired_after(waiting, released_at).await;
    println!("behind a dead waiter: acquired {waited:?} after the release");
    assert!(
        waited < HANDOVER_WINDOW + delay + Duration::from_secs(1),
        "acquired {waited:?} after the release"
    );
}

/// A waiter that gives up leaves the line: the next release goes to the waiter behind it,
/// woken at once (its own retries are an hour apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_gives_up_leaves_the_line() {
    let table = unique("gives_up");
    let key = unique("key");
    let url = verrou_testkit::postgres_url();
    let holders = LockFactory::new(store(&table).await);
    let holder = holders.create_lock(&key).expect("key");
    assert!(holder.acquire().await.expect("acquire"));
    let impatient = patient(store(&table).await).create_lock(&key).expect("key");
    let gave_up = tokio::spawn(async move {
        impatient
            .acquire_with(Retry::new().timeout("400ms"))
            .await
            .expect("acquire")
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let next = start_waiting(patient(store(&table).await).create_lock(&key).expect("key")).await;
    assert!(!gave_up.await.expect("impatient waiter"), "it gave up");
    let inspector = client(&url).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while places(&inspector, &table, &key).await.len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the place of the waiter that gave up is left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.release().await.expect("release");
    let waited = acquired_after(next, Instant::now()).await;
    assert!(waited < PROMPTLY, "acquired {waited:?} after the release");
}

/// A waiter handed the key that leaves the line instead of taking it hands it on to the
/// waiter behind it, woken at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_the_front_of_a_free_key_hands_it_on() {
    let table = unique("hand_on");
    let key = unique("key");
    let raw = store(&table).await;
    assert!(matches!(
        raw.save(&key, "holder", None).await.expect("save"),
        Acquisition::Granted(_)
    ));
    let front = raw
        .save_in_line(&key, "front", None, place("front"))
        .await
        .expect("save in line");
    assert_eq!(front, Acquisition::Busy);
    let next = start_waiting(patient(store(&table).await).create_lock(&key).expect("key")).await;
    assert_eq!(
        raw.delete(&key, "holder").await.expect("delete"),
        OwnerCheck::Applied
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!next.is_finished(), "the key was handed to the front");
    let left_at = Instant::now();
    raw.leave_line(&key, "front").await.expect("leave line");
    let waited = acquired_after(next, left_at).await;
    assert!(
        waited < PROMPTLY,
        "acquired {waited:?} after the front left"
    );
    raw.leave_line(&key, "never-there")
        .await
        .expect("leaving a line one is not in succeeds");
}

/// Places whose waiters died lapse and are swept in batches, as expired locks are; live
/// places stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_places_are_swept() {
    let url = verrou_testkit::postgres_url();
    let table = unique("sweep_line");
    let store = PostgresStore::connect({
        let mut config = config(&table);
        config.sweep_interval = Some(Duration::from_millis(100));
        config
    })
    .await
    .expect("store");
    assert!(matches!(
        store.save("held", "holder", None).await.expect("save"),
        Acquisition::Granted(_)
    ));
    let live = store
        .save_in_line("held", "alive", None, place("alive"))
        .await
        .expect("save in line");
    assert_eq!(live, Acquisition::Busy);
    let client = client(&url).await;
    client
        .execute(
            &format!(
                "INSERT INTO \"{table}_waiters\" (key, waiter, arrival, deadline) \
                 SELECT 'held', 'dead' || i, now(), \
                 floor(extract(epoch from now()) * 1000)::bigint - 1000 \
                 FROM generate_series(1, 2500) AS i"
            ),
            &[],
        )
        .await
        .expect("lapsed places");
    let count = format!("SELECT count(*) FROM \"{table}_waiters\"");
    let mut rows: i64 = 2501;
    for _ in 0..100 {
        rows = client.query_one(&count, &[]).await.expect("count").get(0);
        if rows == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = store.save("poke", "me", None).await.expect("save");
        store.force_delete("poke").await.expect("force delete");
    }
    assert_eq!(rows, 1, "only the live place is left");
    assert_eq!(places(&client, &table, "held").await[0].0, "alive");
}

/// On a table the Node.js library created, the line lives beside it and the lock table
/// keeps its exact layout and rows: `key`, `owner`, `expiration` in epoch milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_leaves_the_node_layout_of_the_lock_table_alone() {
    let url = verrou_testkit::postgres_url();
    let table = unique("node_line");
    let client = client(&url).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (\"key\" varchar(255) NOT NULL, \"owner\" varchar(255) NOT NULL, \
             \"expiration\" bigint, CONSTRAINT \"{table}_pkey\" PRIMARY KEY (\"key\"))"
        ))
        .await
        .expect("node table");
    let columns = format!(
        "SELECT column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns WHERE table_name = '{table}' ORDER BY ordinal_position"
    );
    let layout = |rows: Vec<verrou_postgres::tokio_postgres::Row>| {
        rows.iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect::<Vec<(String, String, String)>>()
    };
    let before = layout(client.query(&columns, &[]).await.expect("columns"));

    let factories = [
        factory(store(&table).await, "1h"),
        factory(store(&table).await, "1h"),
    ];
    let holder = factories[0]
        .create_lock_with_ttl("job", "30s")
        .expect("key");
    assert!(holder.acquire().await.expect("acquire"));
    let waiting = start_waiting(factories[1].create_lock("job").expect("key")).await;
    let row = client
        .query_one(
            &format!(
                "SELECT owner, expiration - floor(extract(epoch from now()) * 1000)::bigint \
                 FROM \"{table}\" WHERE key = 'job'"
            ),
            &[],
        )
        .await
        .expect("the lock row");
    let (owner, left): (String, i64) = (row.get(0), row.get(1));
    assert_eq!(owner, holder.owner());
    assert!((25_000..=30_500).contains(&left), "{left} ms left");
    // Every statement runs against the Node.js columns: a plain take, a waiter giving up
    // (leaving the line), a release handing over, a force release.
    let newcomer = factories[0].create_lock("job").expect("key");
    assert!(!newcomer.acquire_immediately().await.expect("acquire"));
    let impatient = factories[0].create_lock("job").expect("key");
    let acquired = impatient
        .acquire_with(Retry::new().timeout("100ms"))
        .await
        .expect("acquire");
    assert!(!acquired);
    holder.release().await.expect("release");
    let waited = acquired_after(waiting, Instant::now()).await;
    assert!(waited < PROMPTLY, "acquired {waited:?} after the release");
    newcomer.force_release().await.expect("force release");

    assert_eq!(
        layout(client.query(&columns, &[]).await.expect("columns")),
        before,
        "the lock table's layout changed"
    );
    assert_eq!(
        before,
        [
            ("key".into(), "character varying".into(), "NO".into()),
            ("owner".into(), "character varying".into(), "NO".into()),
            ("expiration".into(), "bigint".into(), "YES".into()),
        ]
    );
}
