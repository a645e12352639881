//! The listener on private servers: it listens again after a restart, the line's
//! statements (takes, hand-overs, waiters leaving, the listener's checks) leave the server
//! log clean (no error, no deadlock, no warning), and it looks again only at the keys
//! waited for.

mod common;

use std::time::{Duration, Instant};

use common::{
    client, error_lines, private_server, private_server_logging_every_statement, statements_naming,
    unique, warning_lines,
};
use verrou_core::{LockFactory, Retry, RECHECK_EVERY};
use verrou_postgres::{PostgresConfig, PostgresStore, LISTENER_APPLICATION_NAME};

/// A factory on a new store (and listener) on `url`, whose waiters retry every `delay`.
async fn factory(url: &str, delay: &str) -> LockFactory {
    let mut config = PostgresConfig::new(url);
    config.connect_timeout = Duration::from_secs(2);
    let store = PostgresStore::connect(config).await.expect("store");
    LockFactory::new(store)
        .with_retry(Retry::new().delay(delay).timeout("60s"))
        .expect("valid retry options")
}

/// Waits until `count` listeners are connected to the server at `url`.
async fn listeners_connected(url: &str, count: i64) {
    let admin = client(url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connected: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&LISTENER_APPLICATION_NAME],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if connected == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{connected} listeners, not {count}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// After a restart the listeners listen again: a release wakes its waiter well before the
/// listener's next look at the watched keys ([`RECHECK_EVERY`]), which would let it in
/// without any announcement (one in four would be that lucky), in five of six rounds (one
/// slow round is left to a loaded machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_listens_again_after_a_server_restart() {
    let mut server = private_server();
    let url = server.url();
    let waiters = factory(&url, "1h").await;
    let holders = factory(&url, "1h").await;
    let key = unique("restart");
    let holder = holders.create_lock(&key).expect("valid key");
    assert!(holder.acquire().await.expect("acquire"));
    listeners_connected(&url, 2).await;

    server.stop();
    server.restart().expect("the server restarts");
    listeners_connected(&url, 2).await;
    // The pool finds out about the restart on its first use after it.
    while holder.is_locked().await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut waits = Vec::new();
    for round in 0..6 {
        if round > 0 {
            assert!(holder.acquire().await.expect("acquire"));
        }
        let waiter = waiters.create_lock(&key).expect("valid key");
        let waiting = tokio::spawn(async move {
            assert!(waiter.acquire().await.expect("acquire"));
            (Instant::now(), waiter)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "round {round}: the key is held");
        holder.release().await.expect("release");
        let released_at = Instant::now();
        let (acquired_at, waiter) = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiter was not woken")
            .expect("waiter");
        waits.push(acquired_at.saturating_duration_since(released_at));
        waiter.release().await.expect("release");
    }
    let quick = waits
        .iter()
        .filter(|waited| **waited < RECHECK_EVERY / 4)
        .count();
    assert!(quick >= 5, "acquired after the releases: {waits:?}");
}

/// Three stores hand keys around with wake-ups, some releases forced and some waiters
/// giving up while others are handed the key, many keys are waited for at once, and keys
/// are watched again later: the server logs neither an error nor a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_leave_the_server_log_clean() {
    let server = private_server();
    let url = server.url();
    let factories = [
        factory(&url, "1h").await,
        factory(&url, "1h").await,
        factory(&url, "1h").await,
    ];

    // One hot key, nine workers in three stores; some releases are forced, and now and then
    // a worker first sends a lock of its own that gives up at once (leaving the line).
    let hot = unique("hot");
    let mut workers = Vec::new();
    for worker in 0..9 {
        let factory = factories[worker % 3].clone();
        let lock = factory.create_lock(&hot).expect("valid key");
        let hot = hot.clone();
        workers.push(tokio::spawn(async move {
            for round in 0..10 {
                if (worker + round) % 4 == 0 {
                    let impatient = factory.create_lock(&hot).expect("valid key");
                    if impatient
                        .acquire_with(Retry::new().timeout("2ms"))
                        .await
                        .expect("acquire")
                    {
                        impatient.release().await.expect("release");
                    }
                }
                assert!(lock.acquire().await.expect("acquire"));
                tokio::time::sleep(Duration::from_millis(1)).await;
                if (worker + round) % 7 == 0 {
                    lock.force_release().await.expect("force release");
                } else {
                    lock.release().await.expect("release");
                }
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }

    // Many keys waited for at once, by waiters that also poll (every 200 ms).
    let pollers = factory(&url, "200ms").await;
    let mut held = Vec::new();
    let mut waiting = Vec::new();
    for index in 0..70 {
        let key = format!("{hot}:{index}");
        let holder = factories[0].create_lock(&key).expect("valid key");
        assert!(holder.acquire().await.expect("acquire"));
        held.push(holder);
        let waiter = pollers.create_lock(&key).expect("valid key");
        waiting.push(tokio::spawn(async move {
            assert!(waiter.acquire().await.expect("acquire"));
            waiter.release().await.expect("release");
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for holder in held {
        holder.release().await.expect("release");
    }
    for waiter in waiting {
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("every waiter gets its lock")
            .expect("waiter");
    }
    // And one more key, waited for after all that.
    let key = unique("late");
    let holder = factories[1].create_lock(&key).expect("valid key");
    assert!(holder.acquire().await.expect("acquire"));
    let waiter = pollers.create_lock(&key).expect("valid key");
    let late = tokio::spawn(async move { waiter.acquire().await.expect("acquire") });
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.release().await.expect("release");
    assert!(late.await.expect("waiter"));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let log = server.log_contents();
    let mut problems = error_lines(&log);
    problems.extend(warning_lines(&log));
    assert!(
        problems.is_empty(),
        "the server logged:\n{}",
        problems.join("\n")
    );
}

/// Each second the listener looks again at the keys its waiters wait for, and only at
/// those: a key whose last waiter here left lingers (still watched, for the next waiter),
/// but is not looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_looks_again_only_at_keys_waited_for() {
    let server = private_server_logging_every_statement().await;
    let url = server.url();
    let (waiters, holders) = (factory(&url, "1h").await, factory(&url, "1h").await);
    let (lingering, waited) = (unique("look-lingering"), unique("look-waited"));
    let mut held = Vec::new();
    for key in [&lingering, &waited] {
        let holder = holders.create_lock(key).expect("valid key");
        assert!(holder.acquire_immediately().await.expect("acquire"));
        held.push(holder);
    }
    // A waiter gives up on one key, which then lingers; another waits for the other key.
    let gone = waiters.create_lock(&lingering).expect("valid key");
    let given_up = gone.acquire_with(Retry::new().timeout("300ms"));
    assert!(!given_up.await.expect("acquire"));
    let waiter = waiters.create_lock(&waited).expect("valid key");
    let waiting = tokio::spawn(async move {
        assert!(waiter.acquire().await.expect("acquire"));
        waiter
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Three looks again, within the linger (a look may come late on a loaded machine).
    let from = server.log_contents().len();
    tokio::time::sleep(RECHECK_EVERY * 3).await;
    let log = server.log_contents();
    assert_eq!(
        statements_naming(&log, from, &lingering),
        0,
        "a lingering key was looked at"
    );
    assert!(
        statements_naming(&log, from, &waited) >= 2,
        "the key waited for was not looked at each second"
    );

    for holder in held {
        holder.release().await.expect("release");
    }
    let waiter = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter gets its lock")
        .expect("waiter");
    waiter.release().await.expect("release");
}
