//! Fencing tokens: strictly growing per hash slot, even across a server that restarts
//! empty, never below the server's time in microseconds; fencing counters that lock names
//! cannot reach and that a take never leaves half-updated.

mod support;

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{connect, raw_client, unique_key};
use verrou_core::conformance::History;
use verrou_core::{Acquisition, Error, LockFactory, LockStore, Retry};
use verrou_redis::fred::prelude::{Client, ClientLike, KeysInterface, Value};
use verrou_redis::fred::types::{ClusterHash, CustomCommand};
use verrou_redis::fred::util::redis_keyslot;
use verrou_redis::{RedisConfig, RedisStore};
use verrou_testkit::{redis_url, RedisServer};

const TTL: Duration = Duration::from_secs(10);

/// The server's time, in microseconds since the Unix epoch.
async fn server_micros(raw: &Client) -> u64 {
    let time: Vec<u64> = raw
        .custom(
            CustomCommand::new_static("TIME", ClusterHash::Random, false),
            Vec::<Value>::new(),
        )
        .await
        .expect("TIME");
    time[0] * 1_000_000 + time[1]
}

/// Fencing tokens on: what every store of these tests asks for.
fn fenced(config: &mut RedisConfig) {
    config.fencing_tokens = true;
}

/// The fencing counter of `key`'s hash slot: `verrou:fence:{N}`, `N` the smallest number
/// whose decimal text hashes to that slot.
fn counter_of(key: &str) -> String {
    let slot = redis_keyslot(key.as_bytes());
    let number = (0u32..)
        .find(|number| redis_keyslot(number.to_string().as_bytes()) == slot)
        .expect("every slot has a number");
    format!("verrou:fence:{{{number}}}")
}

/// Takes the free `key` and returns the grant's fencing token.
async fn token(store: &RedisStore, key: &str, owner: &str) -> u64 {
    match store.save(key, owner, Some(TTL)).await.expect("the take") {
        Acquisition::Granted(grant) => grant.fencing_token.expect("a fencing token"),
        other => panic!("expected a grant of {key}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_keep_growing_after_the_server_restarts_without_its_data() {
    let mut server = RedisServer::start().expect("a private redis-server");
    let store = connect(&server.url(), fenced).await;
    let key = unique_key("fence-restart");
    let before = token(&store, &key, "owner-1").await;

    // The server crashes and comes back empty (no persistence): the counter is gone, as it
    // is after a failover to a replica that missed the last increment.
    server.kill();
    server.restart().expect("the server restarts on its port");

    // The same store reconnects by itself; ask until it answers.
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        match store.save(&key, "owner-2", Some(TTL)).await {
            Ok(Acquisition::Granted(grant)) => break grant.fencing_token.expect("a token"),
            Ok(other) => panic!("the restarted server is empty, yet {other:?}"),
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "no answer after restart: {error:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(
        after > before,
        "token {after} after the restart, {before} before"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_strictly_increase_and_are_at_least_the_servers_time_in_microseconds() {
    let url = redis_url();
    let (store, raw) = (connect(&url, fenced).await, raw_client(&url).await);
    // Several lock keys of one hash slot share its counter.
    let tag = unique_key("fence-many");
    let keys: Vec<String> = (0..4).map(|n| format!("{{{tag}}}:{n}")).collect();

    let mut last = 0;
    for round in 0..500 {
        let key = &keys[round % keys.len()];
        let floor = server_micros(&raw).await;
        let token = token(&store, key, "owner").await;
        assert!(token > last, "grant {round}: token {token} after {last}");
        assert!(
            token >= floor,
            "grant {round}: token {token} below the server's time {floor} µs"
        );
        last = token;
        store.delete(key, "owner").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_grants_of_one_slot_never_share_a_token() {
    let url = redis_url();
    let stores: Vec<Arc<RedisStore>> = vec![
        Arc::new(connect(&url, fenced).await),
        Arc::new(
            connect(&url, |config| {
                fenced(config);
                config.pool_size = 4;
            })
            .await,
        ),
    ];
    let tag = unique_key("fence-concurrent");
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = Arc::clone(&stores[task % stores.len()]);
            let key = format!("{{{tag}}}:{task}");
            tokio::spawn(async move {
                let mut tokens = Vec::new();
                for _ in 0..100 {
                    tokens.push(token(&store, &key, "owner").await);
                    store.delete(&key, "owner").await.unwrap();
                }
                tokens
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let tokens = task.await.expect("a granting task panicked");
        assert!(
            tokens.windows(2).all(|pair| pair[0] < pair[1]),
            "{tokens:?}"
        );
        all.extend(tokens);
    }
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count, "some tokens were issued twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_ahead_of_the_clock_is_the_tie_breaker_exactly() {
    // A private server: the counter is set by hand.
    let server = RedisServer::start().expect("a private redis-server");
    let (store, raw) = (
        connect(&server.url(), fenced).await,
        raw_client(&server.url()).await,
    );
    let key = unique_key("fence-ahead");
    let counter = counter_of(&key);
    // 2^53 + 1: not a double, so only exact integer arithmetic gets the next token right.
    for (value, expected) in [
        ("9007199254740993", 9_007_199_254_740_994),
        ("9223372036854775806", 9_223_372_036_854_775_807),
    ] {
        let _: () = raw.set(&counter, value, None, None, false).await.unwrap();
        assert_eq!(token(&store, &key, "owner").await, expected);
        store.delete(&key, "owner").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_with_an_unusable_counter_fails_and_writes_nothing() {
    // A private server: the counter is spoiled by hand.
    let server = RedisServer::start().expect("a private redis-server");
    let (store, raw) = (
        connect(&server.url(), fenced).await,
        raw_client(&server.url()).await,
    );
    let key = unique_key("fence-spoiled");
    let counter = counter_of(&key);

    // Not integers, negative, with a leading zero, or with no room for one more token.
    for garbage in [
        "",
        "garbage",
        "12abc",
        "1.5",
        "-3",
        "007",
        " 5",
        "9223372036854775807",
        "99999999999999999999",
    ] {
        let _: () = raw.set(&counter, garbage, None, None, false).await.unwrap();
        assert_refused(&store, &raw, &key, &counter).await;
        let left: String = raw.get(&counter).await.unwrap();
        assert_eq!(left, garbage, "the counter was changed");
    }

    // Not even a string.
    let _: i64 = raw.del(&counter).await.unwrap();
    let _: i64 = raw
        .custom(
            CustomCommand::new_static(
                "RPUSH",
                ClusterHash::Custom(redis_keyslot(counter.as_bytes())),
                false,
            ),
            vec![counter.as_str(), "a", "b"],
        )
        .await
        .unwrap();
    assert_refused(&store, &raw, &key, &counter).await;

    // Repaired, the slot works again.
    let _: i64 = raw.del(&counter).await.unwrap();
    assert!(token(&store, &key, "owner").await > 0);
}

/// Asserts that taking `key` fails naming `counter`, and that the key was not taken.
async fn assert_refused(store: &RedisStore, raw: &Client, key: &str, counter: &str) {
    match store.save(key, "owner", Some(TTL)).await {
        Err(error @ Error::Storage { .. }) => {
            let cause = error.source().map(ToString::to_string).unwrap_or_default();
            assert!(cause.contains(counter), "{cause}");
        }
        other => panic!("expected Error::Storage, got {other:?}"),
    }
    let exists: i64 = raw.exists(key).await.unwrap();
    assert_eq!(exists, 0, "the lock key was set by a failed take");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_names_in_the_stores_namespace_are_invalid_keys() {
    let url = redis_url();
    let plain = LockFactory::new(connect(&url, fenced).await);
    let prefixed = LockFactory::new(
        connect(&url, |config| {
            fenced(config);
            config.key_prefix = "ver".into();
        })
        .await,
    );
    let namespaced = LockFactory::new(
        connect(&url, |config| {
            fenced(config);
            config.key_prefix = "verrou:app:".into();
        })
        .await,
    );

    for (factory, name) in [
        (&plain, "verrou:fence:{1}"),
        (&plain, "verrou:released:{1}:job"),
        (&plain, "verrou:anything"),
        // The Redis key is what counts: prefix and name together.
        (&prefixed, "rou:fence:{1}"),
        (&namespaced, "job"),
    ] {
        match factory.create_lock(name) {
            Err(Error::InvalidKey { reason, .. }) => {
                assert!(reason.contains("`verrou:`"), "{name}: {reason}");
            }
            other => panic!("{name}: expected InvalidKey, got {other:?}"),
        }
        let serialized =
            format!(r#"{{"key":"{name}","owner":"o","ttl":null,"expirationTime":null}}"#);
        assert!(
            matches!(
                factory.restore_lock(serialized),
                Err(Error::InvalidKey { .. })
            ),
            "{name}: restored"
        );
    }

    for (factory, name) in [
        (&plain, "verrou-job"),
        (&plain, "Verrou:job"),
        (&plain, "app:verrou:fence:{1}"),
        (&prefixed, "ify"),
    ] {
        let lock = factory
            .create_lock(name)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(lock.acquire_immediately().await.unwrap(), "{name}");
        lock.release().await.unwrap();
    }
}

/// A single Redis server killed (`kill -9`) and restarted empty while contenders in several
/// "processes" (one store each) take and release locks: the one documented case where mutual
/// exclusion breaks (a lock held across the restart is gone, so it can be granted again), but
/// fencing tokens must still increase, and every store must recover by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_persistence_may_regrant_but_tokens_still_increase() {
    let mut server = RedisServer::start().expect("a private redis-server");
    let history = Arc::new(History::new());
    let keys = [unique_key("restart-a"), unique_key("restart-b")];
    let stop_at = Instant::now() + Duration::from_secs(4);
    let mut contenders = Vec::new();
    for index in 0..4 {
        let store = connect(&server.url(), |config| {
            fenced(config);
            config.command_timeout = Duration::from_secs(1);
            config.connect_timeout = Duration::from_secs(1);
        })
        .await;
        let factory = LockFactory::new(store)
            .with_retry(Retry::new().delay(20).timeout("1s"))
            .expect("a valid retry policy");
        let keys = keys.clone();
        let history = Arc::clone(&history);
        contenders.push(tokio::spawn(async move {
            let mut grants = 0u32;
            while Instant::now() < stop_at {
                let key = &keys[index % keys.len()];
                let lock = factory.create_lock_with_ttl(key, "30s").expect("a lock");
                if let Ok(true) = lock.acquire().await {
                    let hold = history.granted(&lock, format!("store-{index}"));
                    // Holds longer than the outage, so that some span the restart.
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    history.released(hold);
                    let _ = lock.release().await;
                    grants += 1;
                }
            }
            grants
        }));
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server.kill();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().expect("the server restarts on its port");
    println!("server down for {:?}", killed_at.elapsed());
    for contender in contenders {
        let grants = contender.await.expect("a contender");
        assert!(grants > 0, "a store never got a lock");
    }
    let verdict = history.verdict();
    println!(
        "{} holds; {} re-grants of a lock lost in the restart (documented); {} token regressions",
        verdict.holds,
        verdict.overlaps.len(),
        verdict.token_regressions.len()
    );
    assert!(
        verdict.token_regressions.is_empty(),
        "fencing tokens went back across the restart: {:?}",
        verdict.token_regressions
    );
    // Every overlap must involve a hold that spanned the kill: outside the restart, mutual
    // exclusion holds.
    for (earlier, later) in &verdict.overlaps {
        assert!(
            earlier.granted_at <= killed_at && later.granted_at >= killed_at,
            "an overlap that the restart does not explain: {earlier:?} / {later:?}"
        );
    }
}
