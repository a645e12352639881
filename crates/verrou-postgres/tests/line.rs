//! The waiting line: waiters of separate stores (separate processes, as far as the stores
//! know) are served in arrival order without asking in vain, a release reserves the key for
//! the front waiter so that newcomers never take it, a waiter that died or gave up holds the
//! others up no longer than the hand-over window, and the line leaves nothing behind.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    acquired_after, client, config, missed_first_waiter, patient, places, row_locked,
    server_now_ms, start_waiting, store, unique, waiter_id, Row,
};
use verrou_core::conformance::CountingStore;
use verrou_core::{
    Acquisition, Error, LockFactory, LockStore, OwnerCheck, Place, Retry, HANDOVER_WINDOW,
    RECHECK_EVERY,
};
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

/// `owner`'s take of `key` from outside the line, without TTL: the store's answer.
async fn take(store: &impl LockStore, key: &str, owner: &str) -> Acquisition {
    store.save(key, owner, None).await.expect("save")
}

/// A take of `key` in the line as `waiter`, for `owner`, without TTL: the store's answer.
async fn take_in_line(store: &impl LockStore, key: &str, owner: &str, waiter: &str) -> Acquisition {
    store
        .save_in_line(key, owner, None, place(waiter))
        .await
        .expect("save in line")
}

/// A lock row's owner, with the store id taken out of a reservation's: `\u{1}<store
/// id>.<waiter id>` reads `\u{1}<waiter id>`.
fn without_store_id(owner: &str) -> String {
    match owner.strip_prefix('\u{1}') {
        Some(name) => format!("\u{1}{}", waiter_id(name)),
        None => owner.to_owned(),
    }
}

/// A factory on `store` whose waiters ask every `delay` and give up after a minute.
fn factory(store: impl LockStore, delay: &str) -> LockFactory {
    LockFactory::new(store)
        .with_retry(Retry::new().delay(delay).timeout("60s"))
        .expect("valid retry options")
}

/// The Node.js library's take of key `$1` on `table`, as one statement: insert the row, or
/// take it over if it has expired. Executed, it answers how many rows it wrote (1: taken).
fn node_take(table: &str) -> String {
    format!(
        "INSERT INTO \"{table}\" (key, owner, expiration) \
         VALUES ($1, 'node-owner', floor(extract(epoch from now()) * 1000)::bigint + 30000) \
         ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expiration = excluded.expiration \
         WHERE \"{table}\".expiration <= floor(extract(epoch from now()) * 1000)::bigint"
    )
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

/// A release with a waiter in line reserves the key for it: a plain take and a take joining
/// the line by a newcomer are both busy, and the waiter gets the key. A key that came free
/// without a release (its holder's TTL ran out) is reserved for nobody: a plain take may get
/// it before the waiter asks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_never_takes_a_key_released_to_a_queued_waiter() {
    let table = unique("newcomer");
    let key = unique("key");
    let (ours, theirs) = (store(&table).await, store(&table).await);
    assert!(matches!(
        take(&ours, &key, "holder").await,
        Acquisition::Granted(_)
    ));
    let queued = take_in_line(&ours, &key, "queued", "queued").await;
    assert_eq!(queued, Acquisition::Busy);
    assert_eq!(
        ours.delete(&key, "holder").await.expect("delete"),
        OwnerCheck::Applied
    );
    assert_eq!(
        take(&theirs, &key, "newcomer").await,
        Acquisition::Busy,
        "a plain take overtook the queued waiter"
    );
    assert_eq!(
        take_in_line(&theirs, &key, "newcomer", "newcomer").await,
        Acquisition::Busy,
        "a take joining the line overtook the queued waiter"
    );
    assert!(matches!(
        take_in_line(&ours, &key, "queued", "queued").await,
        Acquisition::Granted(_)
    ));
    // Released, the key goes to the next in line, the newcomer that joined it.
    assert_eq!(
        ours.delete(&key, "queued").await.expect("delete"),
        OwnerCheck::Applied
    );
    assert_eq!(take(&ours, &key, "late").await, Acquisition::Busy);
    assert!(matches!(
        take_in_line(&theirs, &key, "newcomer", "newcomer").await,
        Acquisition::Granted(_)
    ));
    assert_eq!(
        theirs.delete(&key, "newcomer").await.expect("delete"),
        OwnerCheck::Applied
    );

    // No release, no reservation: the holder's TTL runs out while a waiter is in line.
    let ttl = Some(Duration::from_millis(300));
    assert!(matches!(
        ours.save(&key, "holder", ttl).await.expect("save"),
        Acquisition::Granted(_)
    ));
    let queued = take_in_line(&ours, &key, "queued", "queued").await;
    assert_eq!(queued, Acquisition::Busy);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(
        take(&theirs, &key, "newcomer").await,
        Acquisition::Granted(_)
    ));
}

/// A line of two waiters keeps a newcomer out across every release: each release reserves
/// the key for the next waiter, and the newcomer (a plain take, ours or the Node.js
/// library's) gets the key only once nobody waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomers_never_overtake_a_line_across_releases() {
    let url = verrou_testkit::postgres_url();
    let table = unique("overtake");
    let key = unique("key");
    let (ours, theirs) = (store(&table).await, store(&table).await);
    let node = client(&url).await;
    let node_take = node_take(&table);
    let mut holder = "holder";
    assert!(matches!(
        take(&ours, &key, holder).await,
        Acquisition::Granted(_)
    ));
    for waiter in ["first", "second"] {
        let busy = take_in_line(&theirs, &key, waiter, waiter).await;
        assert_eq!(busy, Acquisition::Busy);
    }
    for waiter in ["first", "second"] {
        assert_eq!(
            ours.delete(&key, holder).await.expect("delete"),
            OwnerCheck::Applied
        );
        assert_eq!(
            take(&ours, &key, "newcomer").await,
            Acquisition::Busy,
            "a plain take overtook the {waiter} waiter"
        );
        let taken = node.execute(&node_take, &[&key]).await.expect("node take");
        assert_eq!(taken, 0, "a Node.js take overtook the {waiter} waiter");
        assert!(matches!(
            take_in_line(&theirs, &key, waiter, waiter).await,
            Acquisition::Granted(_)
        ));
        holder = waiter;
    }
    assert_eq!(
        ours.delete(&key, holder).await.expect("delete"),
        OwnerCheck::Applied
    );
    assert!(matches!(
        take(&ours, &key, "newcomer").await,
        Acquisition::Granted(_)
    ));
}

/// What a release with a waiter in line leaves: the lock row reserved for the front waiter
/// (its owner U+0001 and the waiter's id, expiring at the end of the hand-over window), a
/// live row to every other take, which only that waiter takes, though no owner holds it (it
/// is not locked); if it never comes, the
/// window runs out and the key is free to all, a Node.js take too. Leaving the line passes
/// the reservation on to the next waiter, or frees the key if nobody is left; a force release
/// clears it and hands the key over again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_reserves_the_key_for_the_front_waiter_for_the_window() {
    let url = verrou_testkit::postgres_url();
    let table = unique("reserved");
    let store = store(&table).await;
    let inspector = client(&url).await;
    let node_take = node_take(&table);
    // Expirations are written rounded up to the millisecond.
    let window = i64::try_from(HANDOVER_WINDOW.as_millis()).expect("small");
    let row = |key: String| {
        let inspector = &inspector;
        let table = &table;
        async move {
            inspector
                .query_opt(
                    &format!(
                        "SELECT owner, expiration - floor(extract(epoch from clock_timestamp()) \
                         * 1000)::bigint FROM \"{table}\" WHERE key = $1"
                    ),
                    &[&key],
                )
                .await
                .expect("the lock row")
                .map(|row| {
                    let owner = row.get::<_, String>(0);
                    (without_store_id(&owner), row.get::<_, Option<i64>>(1))
                })
        }
    };
    let hold_with_line = |key: String, waiters: &'static [&'static str]| {
        let store = &store;
        async move {
            assert!(matches!(
                take(store, &key, "holder").await,
                Acquisition::Granted(_)
            ));
            for waiter in waiters {
                let busy = take_in_line(store, &key, waiter, waiter).await;
                assert_eq!(busy, Acquisition::Busy);
            }
            assert_eq!(
                store.delete(&key, "holder").await.expect("delete"),
                OwnerCheck::Applied
            );
        }
    };

    // Reserved, the front waiter takes it; nobody else does. (Each step is one round trip,
    // well within the window.)
    let key = unique("taken");
    hold_with_line(key.clone(), &["front", "behind"]).await;
    let (owner, left) = row(key.clone()).await.expect("a reservation");
    assert_eq!(owner, "\u{1}front");
    assert!(
        left.is_some_and(|left| left <= window + 1),
        "reserved for {left:?} ms"
    );
    assert!(
        !store.exists(&key).await.expect("exists"),
        "a reservation is no owner's lock"
    );
    let taken = inspector
        .execute(&node_take, &[&key])
        .await
        .expect("node take");
    assert_eq!(taken, 0, "a Node.js take got a reserved key");
    assert_eq!(
        take_in_line(&store, &key, "behind-owner", "behind").await,
        Acquisition::Busy,
        "the waiter behind took the front's key"
    );
    assert!(matches!(
        take_in_line(&store, &key, "front-owner", "front").await,
        Acquisition::Granted(_)
    ));
    assert_eq!(
        row(key.clone()).await.map(|(owner, _)| owner).as_deref(),
        Some("front-owner")
    );
    assert_eq!(
        store.delete(&key, "front-owner").await.expect("delete"),
        OwnerCheck::Applied
    );
    assert_eq!(
        row(key.clone()).await.map(|(owner, _)| owner).as_deref(),
        Some("\u{1}behind"),
        "the next release reserves it for the next waiter"
    );
    // No owner the store accepts is a reservation's.
    assert_eq!(
        store
            .extend(&key, "\u{1}behind", Duration::from_secs(60))
            .await
            .expect("extend"),
        OwnerCheck::NotOwner
    );
    assert_eq!(
        store.delete(&key, "\u{1}behind").await.expect("delete"),
        OwnerCheck::NotOwner
    );
    assert!(matches!(
        store.save(&key, "\u{1}behind", None).await,
        Err(Error::InvalidArgument(_))
    ));
    store.leave_line(&key, "behind").await.expect("leave line");
    assert_eq!(row(key.clone()).await, None, "nobody left: the key is free");

    // The front never comes: once the window is over, a Node.js take gets the key.
    let key = unique("lapsed");
    hold_with_line(key.clone(), &["gone"]).await;
    assert_eq!(
        inspector
            .execute(&node_take, &[&key])
            .await
            .expect("node take"),
        0
    );
    tokio::time::sleep(HANDOVER_WINDOW + Duration::from_millis(50)).await;
    assert_eq!(
        inspector
            .execute(&node_take, &[&key])
            .await
            .expect("node take"),
        1,
        "the window is over: a Node.js take gets the key"
    );

    // The front leaves: the reservation goes on to the next waiter.
    let key = unique("passed-on");
    hold_with_line(key.clone(), &["first", "second"]).await;
    store.leave_line(&key, "first").await.expect("leave line");
    assert_eq!(
        row(key.clone()).await.map(|(owner, _)| owner).as_deref(),
        Some("\u{1}second")
    );
    let first = take_in_line(&store, &key, "first-owner", "first").await;
    assert_eq!(
        first,
        Acquisition::Busy,
        "the key went on to the second waiter"
    );

    // A force release clears the reservation and hands the key over again: to the second
    // waiter, or, if its place (cut to the window when the first left) has lapsed meanwhile,
    // to the first, back in line.
    store.force_delete(&key).await.expect("force delete");
    let (owner, left) = row(key.clone()).await.expect("a reservation");
    assert!(
        left.is_some_and(|left| left <= window + 1),
        "reserved for {left:?} ms"
    );
    let waiter = owner.strip_prefix('\u{1}').expect("a reservation");
    assert!(["first", "second"].contains(&waiter), "{owner:?}");
    assert!(matches!(
        take_in_line(&store, &key, &format!("{waiter}-owner"), waiter).await,
        Acquisition::Granted(_)
    ));
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
        take(&raw, &key, "holder").await,
        Acquisition::Granted(_)
    ));
    let ghost = take_in_line(&raw, &key, "ghost", "ghost").await;
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
        take(&raw, &key, "holder").await,
        Acquisition::Granted(_)
    ));
    let front = take_in_line(&raw, &key, "front", "front").await;
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

/// A release that starts while the first waiter's take has the key's row locked (the waiter
/// joining the line) reads the line as it was when it started: it hands nothing over. The
/// waiter still gets the free key within the listener's next look at its watched keys, not
/// at its hour-long retry (see [`missed_first_waiter`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_missed_the_first_waiter_still_lets_it_in() {
    let table = unique("missed_first");
    let waited =
        missed_first_waiter(&table, Row::Lock, |factory, key| factory.create_lock(key)).await;
    assert!(
        waited < RECHECK_EVERY + PROMPTLY,
        "acquired {waited:?} after the release"
    );
}

/// A release that waited for the key's row (here 300 ms, for a transaction that had it
/// locked) leaves the front waiter its whole hand-over window, counted from the hand-over:
/// counted from when the release arrived, the reservation and the front's place would have
/// lapsed before the release even committed, and any newcomer would have got the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_waited_for_the_row_leaves_the_front_its_whole_window() {
    let table = unique("late_window");
    let key = unique("key");
    let store = Arc::new(store(&table).await);
    assert!(matches!(
        take(&*store, &key, "holder").await,
        Acquisition::Granted(_)
    ));
    let front = take_in_line(&*store, &key, "front-owner", "front").await;
    assert_eq!(front, Acquisition::Busy);
    let mut admin = client(&verrou_testkit::postgres_url()).await;
    let transaction = row_locked(&mut admin, &table, Row::Lock, &key).await;
    let releasing = tokio::spawn({
        let (store, key) = (Arc::clone(&store), key.clone());
        async move { store.delete(&key, "holder").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let inspector = client(&verrou_testkit::postgres_url()).await;
    let before_commit = server_now_ms(&inspector).await;
    transaction.commit().await.expect("commit");
    let released = releasing.await.expect("release task").expect("release");
    assert_eq!(released, OwnerCheck::Applied);

    let window = i64::try_from(HANDOVER_WINDOW.as_millis()).expect("small");
    for (what, ends) in [
        (
            "the reservation",
            format!("SELECT expiration FROM \"{table}\" WHERE key = $1"),
        ),
        (
            "the front's place",
            format!("SELECT deadline FROM \"{table}_waiters\" WHERE key = $1 AND split_part(waiter, '.', 2) = 'front'"),
        ),
    ] {
        let ends: i64 = inspector
            .query_one(&ends, &[&key])
            .await
            .expect(what)
            .get(0);
        assert!(
            ends >= before_commit + window,
            "{what} ends {} ms after the row came free",
            ends - before_commit
        );
    }
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
        take(&store, "held", "holder").await,
        Acquisition::Granted(_)
    ));
    let live = take_in_line(&store, "held", "alive", "alive").await;
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
        let _ = take(&store, "poke", "me").await;
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
