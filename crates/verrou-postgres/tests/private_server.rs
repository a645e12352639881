//! Tests that read, stop or reconfigure their server, each on a private PostgreSQL of its own.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{client, error_lines, private_server, private_server_logging_every_statement, unique};
use verrou_core::{Acquisition, Error, LockFactory, LockStore, OwnerCheck, Place};
use verrou_postgres::{PostgresConfig, PostgresStore};

fn granted(acquisition: Acquisition) -> bool {
    matches!(acquisition, Acquisition::Granted(_))
}

/// Sixteen stores start at once on a fresh database, then 32 tasks hammer one key (and
/// abandon others to expiry, which the stores sweep every 20 ms): not one statement fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contended_run_leaves_no_error_in_the_server_log() {
    let server = private_server();
    let mut config = PostgresConfig::new(server.url());
    config.pool_size = 4;
    config.sweep_interval = Some(Duration::from_millis(20));
    let starts: Vec<_> = (0..16)
        .map(|_| tokio::spawn(PostgresStore::connect(config.clone())))
        .collect();
    let mut stores = Vec::new();
    for start in starts {
        stores.push(Arc::new(
            start.await.expect("task").expect("every store starts"),
        ));
    }

    let hot_key = unique("hot");
    let attempts = Arc::new(AtomicUsize::new(0));
    let grants = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let store = Arc::clone(&stores[worker % stores.len()]);
        let (hot_key, attempts, grants) =
            (hot_key.clone(), Arc::clone(&attempts), Arc::clone(&grants));
        tasks.push(tokio::spawn(async move {
            let owner = format!("worker{worker}");
            let ttl = Some(Duration::from_millis(20));
            let mut round = 0usize;
            while Instant::now() < deadline {
                round += 1;
                attempts.fetch_add(1, Ordering::Relaxed);
                if !granted(store.save(&hot_key, &owner, ttl).await.expect("save")) {
                    let _ = store.exists(&hot_key).await.expect("exists");
                    let _ = store.delete(&hot_key, &owner).await.expect("delete");
                    continue;
                }
                grants.fetch_add(1, Ordering::Relaxed);
                match round % 3 {
                    0 => {
                        let _ = store
                            .extend(&hot_key, &owner, Duration::from_millis(20))
                            .await
                            .expect("extend");
                        let _ = store.delete(&hot_key, &owner).await.expect("delete");
                    }
                    1 => {
                        let _ = store.delete(&hot_key, &owner).await.expect("delete");
                    }
                    _ => {
                        // Abandon the hot key to expiry, and a key nobody will ask for again.
                        let lost = format!("{owner}:{round}");
                        let _ = store.save(&lost, &owner, ttl).await.expect("save");
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("worker");
    }
    stores[0]
        .force_delete(&hot_key)
        .await
        .expect("force delete");

    let log = server.log_contents();
    let errors = error_lines(&log);
    assert!(
        errors.is_empty(),
        "the server logged errors:\n{}",
        errors.join("\n")
    );
    let (attempts, grants) = (
        attempts.load(Ordering::Relaxed),
        grants.load(Ordering::Relaxed),
    );
    assert!(
        grants > 0 && attempts > grants * 2,
        "{grants} grants in {attempts} attempts: no contention"
    );
}

/// A client-clock implementation would send instants (13-digit epoch milliseconds) as
/// statement parameters; this one sends only keys, owners, waiters and durations (TTLs and
/// leases).
#[tokio::test]
async fn only_durations_reach_the_server_never_client_instants() {
    let server = private_server_logging_every_statement().await;
    let store = PostgresStore::connect({
        let mut config = PostgresConfig::new(server.url());
        config.sweep_interval = None;
        config
    })
    .await
    .expect("store");
    assert!(granted(
        store
            .save("clock", "me", Some(Duration::from_secs(60)))
            .await
            .expect("save")
    ));
    assert!(store.exists("clock").await.expect("exists"));
    assert_eq!(
        store
            .extend("clock", "me", Duration::from_secs(45))
            .await
            .expect("extend"),
        OwnerCheck::Applied
    );
    let place = Place {
        waiter: "w",
        lease: Duration::from_secs(30),
    };
    assert_eq!(
        store
            .save_in_line("clock", "you", None, place)
            .await
            .expect("save in line"),
        Acquisition::Busy
    );
    assert_eq!(
        store.delete("clock", "me").await.expect("delete"),
        OwnerCheck::Applied
    );

    let log = server.log_contents();
    let parameters: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("parameters:"))
        .collect();
    assert!(
        parameters
            .iter()
            .any(|line| line.ends_with("$1 = 'clock', $2 = 'me', $3 = '60000'")),
        "save sends the TTL: {parameters:#?}"
    );
    assert!(
        parameters.iter().any(
            |line| line.contains("$1 = 'clock', $2 = 'you', $3 = NULL, $4 = '")
                && line.ends_with(".w', $5 = '30000'")
        ),
        "a take in line sends the lease: {parameters:#?}"
    );
    assert!(
        parameters
            .iter()
            .any(|line| line.ends_with("$1 = 'clock', $2 = 'me', $3 = '45000'")),
        "extend sends the TTL: {parameters:#?}"
    );
    // An instant is a number near the current time, in epoch seconds, milliseconds or
    // microseconds.
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    let near_now = |number: u128| {
        [now_ms / 1000, now_ms, now_ms * 1000]
            .iter()
            .any(|instant| number.abs_diff(*instant) < instant / 1000)
    };
    for line in &parameters {
        let instant = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|digits| digits.parse::<u128>().ok())
            .find(|number| near_now(*number));
        assert_eq!(instant, None, "a client instant was sent: {line}");
    }
}

/// Stopping the server fails operations with a storage error that keeps its cause; once
/// the server is back the same store works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_is_a_storage_error_then_the_same_store_recovers() {
    let mut server = private_server();
    let store = PostgresStore::connect({
        let mut config = PostgresConfig::new(server.url());
        config.connect_timeout = Duration::from_secs(2);
        config
    })
    .await
    .expect("store");
    let key = unique("restart");
    assert!(granted(store.save(&key, "me", None).await.expect("save")));

    server.stop();
    match store.exists(&key).await {
        Err(error @ Error::Storage { .. }) => {
            assert!(
                std::error::Error::source(&error).is_some(),
                "the cause is kept: {error:?}"
            );
        }
        other => panic!("expected Error::Storage while the server is down, got {other:?}"),
    }

    server.restart().expect("the server restarts");
    let mut held = None;
    for _ in 0..50 {
        match store.exists(&key).await {
            Ok(answer) => {
                held = Some(answer);
                break;
            }
            Err(Error::Storage { .. }) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(other) => panic!("unexpected error after the restart: {other:?}"),
        }
    }
    assert_eq!(
        held,
        Some(true),
        "the same store answers again, and the lock survived"
    );
    assert_eq!(
        store.delete(&key, "me").await.expect("delete"),
        OwnerCheck::Applied
    );
    assert!(granted(store.save(&key, "you", None).await.expect("save")));
}

/// Epoch milliseconds now, by this machine's clock (the private server's clock too).
fn epoch_ms_now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("not that far")
}

/// A guarded, auto-extended lock whose server dies during the work: the loss signal fires
/// before the lock's TTL runs out on the server, that is before anyone else could take it
/// (the core's guard keeper declares the loss a safety margin before the local expiry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_fires_the_loss_signal_before_the_lock_expires_there() {
    let mut server = private_server();
    let table = unique("loss");
    let store = PostgresStore::connect({
        let mut config = PostgresConfig::new(server.url());
        config.table = table.clone();
        config.connect_timeout = Duration::from_millis(500);
        config.command_timeout = Duration::from_millis(500);
        config
    })
    .await
    .expect("store");
    let admin = client(&server.url()).await;
    let lock = LockFactory::new(store)
        .create_lock_with_ttl(unique("key"), "2s")
        .expect("valid key and TTL");
    let asked_at_ms = epoch_ms_now();
    let mut guard = lock
        .acquire_guard()
        .await
        .expect("acquire")
        .expect("the key is free");
    guard.auto_extend();
    let loss = guard.loss();
    let expires_at_ms: i64 = admin
        .query_one(
            &format!("SELECT expiration FROM \"{table}\" WHERE key = $1"),
            &[&lock.key()],
        )
        .await
        .expect("the lock's row")
        .get(0);

    server.stop(); // before the first renewal, due a third of the TTL in
    tokio::time::timeout(Duration::from_secs(10), loss.lost())
        .await
        .expect("the loss signal fires");
    let fired_at_ms = epoch_ms_now();
    assert!(
        fired_at_ms < expires_at_ms,
        "the loss signal fired {} ms after asking for the lock, {} ms after the lock expired on \
         the server",
        fired_at_ms - asked_at_ms,
        fired_at_ms - expires_at_ms
    );
    drop(guard);
}
