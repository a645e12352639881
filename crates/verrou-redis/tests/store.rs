//! What the Redis store writes and sends: the Node.js library's layout, one command per
//! operation, scripts that survive a flushed script cache, exclusion between stores.

mod stats_support;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stats_support::{command_calls, reset_command_calls};
use support::{connect, raw_client, unique_key};
use verrou_core::{
    Acquisition, Error, LockFactory, LockStore, OwnerCheck, Place, Retry, MAX_DURATION,
};
use verrou_redis::fred::prelude::{Client, ClientLike, KeysInterface, LuaInterface, Pool};
use verrou_redis::fred::types::{ClusterHash, CustomCommand};
use verrou_redis::fred::util::redis_keyslot;
use verrou_redis::{RedisOptions, RedisStore};
use verrou_testkit::{redis_url, RedisServer};

const TTL: Duration = Duration::from_secs(10);

fn granted(outcome: Acquisition) -> bool {
    matches!(outcome, Acquisition::Granted(_))
}

async fn pttl(client: &Client, key: &str) -> i64 {
    client.pttl(key).await.expect("PTTL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_is_a_string_key_holding_the_owner_with_a_px_ttl() {
    let url = redis_url();
    let (store, raw) = (connect(&url, |_| {}).await, raw_client(&url).await);
    let key = unique_key("layout");

    assert!(granted(
        store.save(&key, "owner-1", Some(TTL)).await.unwrap()
    ));
    let value: Option<String> = raw.get(&key).await.unwrap();
    assert_eq!(value.as_deref(), Some("owner-1"));
    let left = pttl(&raw, &key).await;
    assert!(
        (9_000..=10_000).contains(&left),
        "PTTL {left} ms for a 10 s TTL"
    );

    // What another client (the Node.js library) writes is a lock to this store.
    let foreign = unique_key("layout-foreign");
    let _: () = raw
        .set(&foreign, "node-owner", None, None, false)
        .await
        .unwrap();
    assert!(store.exists(&foreign).await.unwrap());
    assert_eq!(
        store.delete(&foreign, "node-owner").await.unwrap(),
        OwnerCheck::Applied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_without_ttl_has_no_expiry_and_extend_sets_one() {
    let url = redis_url();
    let (store, raw) = (connect(&url, |_| {}).await, raw_client(&url).await);
    let key = unique_key("no-ttl");

    assert!(granted(store.save(&key, "owner-1", None).await.unwrap()));
    assert_eq!(pttl(&raw, &key).await, -1, "no TTL means no expiry");
    assert_eq!(
        store.extend(&key, "owner-1", TTL).await.unwrap(),
        OwnerCheck::Applied
    );
    let left = pttl(&raw, &key).await;
    assert!(
        (9_000..=10_000).contains(&left),
        "PTTL {left} ms after extend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_millisecond_ttls_round_up() {
    let url = redis_url();
    let (store, raw) = (connect(&url, |_| {}).await, raw_client(&url).await);
    let key = unique_key("tiny-ttl");

    let ttl = Duration::from_micros(1_500);
    assert!(granted(
        store.save(&key, "owner-1", Some(ttl)).await.unwrap()
    ));
    let left = pttl(&raw, &key).await;
    assert!(left == -2 || (0..=2).contains(&left), "PTTL {left} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_prefix_is_part_of_every_redis_key() {
    let url = redis_url();
    let prefix = unique_key("prefix") + ":";
    let store = connect(&url, |config| config.key_prefix = prefix.clone()).await;
    let raw = raw_client(&url).await;
    let key = "job";
    let redis_key = format!("{prefix}{key}");

    assert!(granted(
        store.save(key, "owner-1", Some(TTL)).await.unwrap()
    ));
    let value: Option<String> = raw.get(&redis_key).await.unwrap();
    assert_eq!(value.as_deref(), Some("owner-1"));
    assert!(store.exists(key).await.unwrap());
    assert_eq!(
        store.extend(key, "owner-1", TTL * 2).await.unwrap(),
        OwnerCheck::Applied
    );
    assert!(pttl(&raw, &redis_key).await > 10_000);
    assert_eq!(
        store.delete(key, "owner-1").await.unwrap(),
        OwnerCheck::Applied
    );
    let exists: i64 = raw.exists(&redis_key).await.unwrap();
    assert_eq!(exists, 0);

    let _: () = raw
        .set(&redis_key, "other", None, None, false)
        .await
        .unwrap();
    store.force_delete(key).await.unwrap();
    assert!(!store.exists(key).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_and_extend_work_after_the_script_cache_is_flushed() {
    let url = redis_url();
    let (store, raw) = (connect(&url, |_| {}).await, raw_client(&url).await);
    let key = unique_key("script-flush");

    assert!(granted(
        store.save(&key, "owner-1", Some(TTL)).await.unwrap()
    ));
    raw.script_flush(false).await.unwrap();
    assert_eq!(
        store.extend(&key, "intruder", TTL).await.unwrap(),
        OwnerCheck::NotOwner
    );
    raw.script_flush(false).await.unwrap();
    assert_eq!(
        store.extend(&key, "owner-1", TTL * 3).await.unwrap(),
        OwnerCheck::Applied
    );
    assert!(pttl(&raw, &key).await > 20_000);
    raw.script_flush(false).await.unwrap();
    assert_eq!(
        store.delete(&key, "owner-1").await.unwrap(),
        OwnerCheck::Applied
    );
    assert!(!store.exists(&key).await.unwrap());
}

/// Fencing tokens on.
fn fenced(config: &mut verrou_redis::RedisConfig) {
    config.fencing_tokens = true;
}

/// The commands the server counted for eight operations of a store configured by
/// `configure` (take, busy take, check, two extensions, two releases, force release), its
/// scripts warmed up first as in any long-running store.
async fn commands_of_eight_operations(
    configure: impl FnOnce(&mut verrou_redis::RedisConfig),
) -> Vec<(String, u64)> {
    // A private server: the command counts are ours alone.
    let server = RedisServer::start().expect("a private redis-server");
    let (store, raw) = (
        connect(&server.url(), configure).await,
        raw_client(&server.url()).await,
    );
    let key = unique_key("round-trips");
    assert!(granted(
        store.save(&key, "owner-1", Some(TTL)).await.unwrap()
    ));
    store.extend(&key, "owner-1", TTL).await.unwrap();
    store.delete(&key, "owner-1").await.unwrap();
    store.force_delete(&key).await.unwrap();
    reset_command_calls(&raw).await;

    assert!(granted(
        store.save(&key, "owner-1", Some(TTL)).await.unwrap()
    ));
    assert!(!granted(store.save(&key, "owner-2", None).await.unwrap()));
    assert!(store.exists(&key).await.unwrap());
    store.extend(&key, "owner-1", TTL).await.unwrap();
    store.extend(&key, "owner-2", TTL).await.unwrap();
    store.delete(&key, "owner-2").await.unwrap();
    store.delete(&key, "owner-1").await.unwrap();
    store.force_delete(&key).await.unwrap();

    let mut calls = command_calls(&raw).await;
    calls.sort();
    calls
}

fn counts(expected: &[(&str, u64)]) -> Vec<(String, u64)> {
    expected
        .iter()
        .map(|(name, count)| (name.to_string(), *count))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_is_one_command() {
    let calls = commands_of_eight_operations(|_| {}).await;
    // Sent by the store: set 2 (the takes: `SET NX PX GET`), evalsha 5 (release, extend,
    // force release), get 1 (the check). Counted too, run by the scripts on the server:
    // get 4 (the key for its owner: extensions and releases), pexpire 1, zcard 2 and del 2
    // (release, force release: nobody waits, so nothing is published). No EVAL, no SCRIPT
    // LOAD, no second command for any operation.
    let expected = [
        ("del", 2),
        ("evalsha", 5),
        ("get", 5),
        ("pexpire", 1),
        ("set", 2),
        ("zcard", 2),
    ];
    assert_eq!(calls, counts(&expected), "8 operations, 8 commands");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_is_one_command_with_fencing_tokens() {
    let calls = commands_of_eight_operations(fenced).await;
    // Sent by the store: evalsha 7 (take, release, extend, force release), get 1 (the
    // check). Counted too, run by the scripts on the server: time 2, get 4 (the counter, and the key
    // for its owner) and zcard 2 (the key's waiting line: empty) by both takes, then set 2
    // (the key, and the counter, behind the clock), incr 1 and get 1 (the token) by the take
    // that got the key (the other found the key held and wrote nothing); get 4 and
    // pexpire 1 (release, extend), zcard 2 and del 2 (release, force release). Nobody waits,
    // so nothing is published. No EVAL, no SCRIPT LOAD, no second command for any operation.
    let expected = [
        ("del", 2),
        ("evalsha", 7),
        ("get", 10),
        ("incr", 1),
        ("pexpire", 1),
        ("set", 2),
        ("time", 2),
        ("zcard", 4),
    ];
    assert_eq!(calls, counts(&expected), "8 operations, 8 commands");
}

/// A waiter's take in line and its leaving the line are one command each: a take that keeps
/// the waiter's place on a held key, the same take again (the place renewed), and a leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_line_operation_is_one_command() {
    // A private server: the command counts are ours alone.
    let server = RedisServer::start().expect("a private redis-server");
    let (store, raw) = (
        connect(&server.url(), |_| {}).await,
        raw_client(&server.url()).await,
    );
    let place = Place {
        waiter: "waiter",
        lease: Duration::from_secs(60),
    };
    let key = unique_key("line-round-trips");
    assert!(granted(
        store.save(&key, "holder", Some(TTL)).await.unwrap()
    ));
    // The scripts warmed up, as in any long-running store.
    store
        .save_in_line(&key, "waiter-owner", Some(TTL), place)
        .await
        .unwrap();
    store.leave_line(&key, "waiter").await.unwrap();
    reset_command_calls(&raw).await;

    for _ in 0..2 {
        let taken = store
            .save_in_line(&key, "waiter-owner", Some(TTL), place)
            .await;
        assert!(!granted(taken.unwrap()), "the holder has the key");
    }
    store.leave_line(&key, "waiter").await.unwrap();

    let mut calls = command_calls(&raw).await;
    calls.sort();
    // Sent by the store: evalsha 3. Counted too, run by the scripts on the server. Each take:
    // time 1 (the clock), get 1 (the key: held; the fencing counter is read only when
    // fencing tokens are on), zcard (the line: 1 when empty, 2 when it holds the place,
    // then zrangebyscore 1 for the lapsed places), zadd 1 (the deadline), zscore 1 (a place
    // already? the first take adds its arrival after the last one: zrange 1 and zadd 1),
    // zrange 1 and pexpire 2 (the line keys expire with their last place). The leave: time
    // 1, zcard 2 and zrangebyscore 1 (the lapsed places), zrange 1 (the front: the leaver),
    // zrem 2 (its place), zrange 1 and del 1 (the line, empty, is deleted), get 1 (the key:
    // held, so nothing is handed over).
    let expected = [
        ("del", 1),
        ("evalsha", 3),
        ("get", 3),
        ("pexpire", 4),
        ("time", 3),
        ("zadd", 3),
        ("zcard", 5),
        ("zrange", 5),
        ("zrangebyscore", 2),
        ("zrem", 2),
        ("zscore", 2),
    ];
    assert_eq!(calls, counts(&expected), "3 operations, 3 commands");
}

/// Without fencing tokens, a take that finds the key held by its own owner (a take re-sent
/// after a lost answer) is a renewal too: the TTL starts again (the take script, sent only
/// then), and the grant carries no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_by_the_owner_holding_the_key_renews_it_without_fencing_tokens() {
    let url = redis_url();
    let (store, raw) = (connect(&url, |_| {}).await, raw_client(&url).await);
    let key = unique_key("renewal-unfenced");
    let first = store
        .save(&key, "owner-1", Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(
        matches!(&first, Acquisition::Granted(grant) if grant.fencing_token.is_none()),
        "{first:?}"
    );
    let again = store.save(&key, "owner-1", Some(TTL)).await.unwrap();
    assert!(
        matches!(&again, Acquisition::Renewed(grant) if grant.fencing_token.is_none()),
        "{again:?}"
    );
    assert!(pttl(&raw, &key).await > 2_000, "the TTL started again");
    assert_eq!(
        store.save(&key, "owner-2", Some(TTL)).await.unwrap(),
        Acquisition::Busy
    );
    store.delete(&key, "owner-1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_stores_never_let_two_holders_overlap() {
    let url = redis_url();
    let stores = [
        connect(&url, |_| {}).await,
        connect(&url, |config| config.pool_size = 4).await,
    ];
    let factories: Vec<_> = stores.into_iter().map(LockFactory::new).collect();
    let key = unique_key("contention");
    let holders = Arc::new(AtomicUsize::new(0));
    let turns = Arc::new(AtomicUsize::new(0));

    let tasks: Vec<_> = (0..32)
        .map(|task| {
            let factory = factories[task % factories.len()].clone();
            let (key, holders, turns) = (key.clone(), holders.clone(), turns.clone());
            tokio::spawn(async move {
                for _ in 0..10 {
                    let lock = factory.create_lock_with_ttl(&key, "30s").unwrap();
                    let retry = Retry::new().delay(2).timeout("60s");
                    assert!(lock.acquire_with(retry).await.unwrap(), "gave up waiting");
                    let before = holders.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(before, 0, "two holders at once");
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    holders.fetch_sub(1, Ordering::SeqCst);
                    turns.fetch_add(1, Ordering::SeqCst);
                    lock.release().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a contending task panicked");
    }
    assert_eq!(turns.load(Ordering::SeqCst), 320);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_the_callers_client_or_pool_leaves_it_open() {
    let url = redis_url();
    let config = verrou_redis::RedisConfig::new(&url);
    let key = unique_key("callers-connection");

    let client = config.builder().unwrap().build().unwrap();
    client.init().await.unwrap();
    let pool = config.builder().unwrap().build_pool(2).unwrap();
    pool.init().await.unwrap();

    serve_then_leave_open(&client, &pool, &key).await;
}

/// A store on `client`, then one on `pool`, each takes and releases `key` and is dropped;
/// the client and the pool stay connected and usable.
async fn serve_then_leave_open(client: &Client, pool: &Pool, key: &str) {
    for store in [
        RedisStore::from_client(client.clone(), RedisOptions::default()).unwrap(),
        RedisStore::from_pool(pool.clone(), RedisOptions::default()).unwrap(),
    ] {
        assert!(granted(
            store.save(key, "owner-1", Some(TTL)).await.unwrap()
        ));
        assert_eq!(
            store.delete(key, "owner-1").await.unwrap(),
            OwnerCheck::Applied
        );
        drop(store);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(client.is_connected() && pool.is_connected());
    let _: () = client.ping(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_connects_a_client_or_pool_given_unconnected_and_leaves_it_open() {
    let url = redis_url();
    let config = verrou_redis::RedisConfig::new(&url);
    let key = unique_key("callers-unconnected");

    let client = config.builder().unwrap().build().unwrap();
    let pool = config.builder().unwrap().build_pool(2).unwrap();
    serve_then_leave_open(&client, &pool, &key).await;
    let _: () = pool.ping(None).await.unwrap();
}

/// A take that finds the key held by its own owner (what a take re-sent after a lost answer
/// finds) is a renewal: the TTL starts again, the token is new and greater, and nothing else
/// changes; another owner's take is still busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_by_the_owner_holding_the_key_renews_it_with_a_new_token() {
    let url = redis_url();
    let (store, raw) = (connect(&url, fenced).await, raw_client(&url).await);
    let key = unique_key("renewal");
    let token = |outcome: Acquisition| match outcome {
        Acquisition::Granted(grant) | Acquisition::Renewed(grant) => {
            grant.fencing_token.expect("a fencing token")
        }
        Acquisition::Busy => panic!("busy"),
        other => panic!("unexpected {other:?}"),
    };

    let first = store.save(&key, "owner-1", Some(TTL)).await.unwrap();
    assert!(granted(first.clone()), "{first:?}");
    let _: bool = raw.pexpire(&key, 2_000, None).await.unwrap();

    let renewed = store.save(&key, "owner-1", Some(TTL * 2)).await.unwrap();
    assert!(matches!(renewed, Acquisition::Renewed(_)), "{renewed:?}");
    assert!(
        token(renewed.clone()) > token(first),
        "a new, greater token"
    );
    let left = pttl(&raw, &key).await;
    assert!(
        (19_000..=20_000).contains(&left),
        "PTTL {left} ms after renewing for 20 s"
    );
    let value: Option<String> = raw.get(&key).await.unwrap();
    assert_eq!(value.as_deref(), Some("owner-1"));

    assert_eq!(
        store.save(&key, "owner-2", Some(TTL)).await.unwrap(),
        Acquisition::Busy
    );
    let again = store.save(&key, "owner-1", None).await.unwrap();
    assert!(matches!(again, Acquisition::Renewed(_)), "{again:?}");
    assert!(token(again) > token(renewed));
    assert_eq!(pttl(&raw, &key).await, -1, "renewed without TTL: PERSIST");
    store.force_delete(&key).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_come_from_a_counter_in_the_lock_keys_hash_slot() {
    // A private server: the only counters are ours.
    let server = RedisServer::start().expect("a private redis-server");
    let (store, raw) = (
        connect(&server.url(), fenced).await,
        raw_client(&server.url()).await,
    );
    let key = "{user:42}:profile";
    let mut tokens = Vec::new();
    for _ in 0..3 {
        match store.save(key, "owner-1", Some(TTL)).await.unwrap() {
            Acquisition::Granted(grant) => tokens.push(grant.fencing_token.expect("a token")),
            Acquisition::Busy => panic!("the key was released"),
            _ => panic!("unexpected outcome"),
        }
        store.delete(key, "owner-1").await.unwrap();
    }
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "{tokens:?}"
    );

    let counters: Vec<String> = raw
        .custom(
            CustomCommand::new_static("KEYS", ClusterHash::Random, false),
            vec!["verrou:fence:*"],
        )
        .await
        .unwrap();
    assert_eq!(counters.len(), 1, "{counters:?}");
    let counter = &counters[0];
    assert_eq!(
        redis_keyslot(counter.as_bytes()),
        redis_keyslot(key.as_bytes()),
        "{counter} is in the slot of {key}"
    );
    let value: u64 = raw.get(counter).await.unwrap();
    assert_eq!(Some(&value), tokens.last());
    assert_eq!(
        raw.ttl::<i64, _>(counter).await.unwrap(),
        -1,
        "counters never expire"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_or_extension_of_the_longest_duration_works_and_longer_is_refused() {
    let url = redis_url();
    let (store, raw) = (connect(&url, |_| {}).await, raw_client(&url).await);
    let factory = LockFactory::new(connect(&url, |_| {}).await);
    let longest = i64::try_from(MAX_DURATION.as_millis()).unwrap();
    let about_longest = (longest - 60_000)..=longest;

    let key = unique_key("longest-ttl");
    let lock = factory.create_lock_with_ttl(&key, MAX_DURATION).unwrap();
    assert!(lock.acquire_immediately().await.unwrap());
    let left = pttl(&raw, &key).await;
    assert!(about_longest.contains(&left), "PTTL {left} ms");
    lock.extend_by(Duration::from_secs(1)).await.unwrap();
    assert!(pttl(&raw, &key).await <= 1_000);
    lock.extend_by(MAX_DURATION).await.unwrap();
    let left = pttl(&raw, &key).await;
    assert!(
        about_longest.contains(&left),
        "PTTL {left} ms after extend_by"
    );
    lock.release().await.unwrap();

    // Called directly, the store keeps the same rule as core: positive, at most
    // MAX_DURATION, and nothing is written otherwise.
    let key = unique_key("too-long-ttl");
    for ttl in [
        Duration::MAX,
        MAX_DURATION + Duration::from_nanos(1),
        Duration::ZERO,
    ] {
        assert!(
            matches!(
                store.save(&key, "owner-1", Some(ttl)).await,
                Err(Error::InvalidDuration { .. })
            ),
            "take for {ttl:?}"
        );
        let exists: i64 = raw.exists(&key).await.unwrap();
        assert_eq!(exists, 0, "a refused take for {ttl:?} set the key");
    }
    assert!(granted(
        store.save(&key, "owner-1", Some(TTL)).await.unwrap()
    ));
    for ttl in [
        Duration::MAX,
        MAX_DURATION + Duration::from_nanos(1),
        Duration::ZERO,
    ] {
        assert!(
            matches!(
                store.extend(&key, "owner-1", ttl).await,
                Err(Error::InvalidDuration { .. })
            ),
            "extend for {ttl:?}"
        );
        let left = pttl(&raw, &key).await;
        assert!(
            (9_000..=10_000).contains(&left),
            "PTTL {left} ms after {ttl:?}"
        );
    }
    store.delete(&key, "owner-1").await.unwrap();
}

#[test]
fn a_store_made_outside_a_runtime_takes_and_wakes_inside_one() {
    let url = redis_url();
    let config = verrou_redis::fred::prelude::Config::from_url(&url).unwrap();
    let client = verrou_redis::fred::prelude::Builder::from_config(config)
        .build()
        .unwrap();
    // No Tokio runtime here: the store (and its release subscriber) is only built.
    let store = RedisStore::from_client(client.clone(), RedisOptions::default()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let key = unique_key("outside-runtime");
        let factory = LockFactory::new(store)
            .with_retry(Retry::new().delay("1h"))
            .unwrap();
        let (holder, waiter) = (
            factory.create_lock(&key).unwrap(),
            factory.create_lock(&key).unwrap(),
        );
        assert!(holder.acquire_immediately().await.unwrap());
        let waiting = tokio::spawn(async move { waiter.acquire().await.unwrap() });
        tokio::time::sleep(Duration::from_millis(300)).await;
        holder.release().await.unwrap();
        let woken = tokio::time::timeout(Duration::from_secs(2), waiting).await;
        assert!(woken.expect("woken by the release").unwrap());
        client.quit().await.unwrap();
    });
}

/// A lock key that something else set to another type is held by someone else: a take is
/// busy (with and without fencing tokens), and the key is locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_key_of_another_type_is_busy() {
    let url = redis_url();
    let raw = raw_client(&url).await;
    for fencing_tokens in [false, true] {
        let store = connect(&url, |config| config.fencing_tokens = fencing_tokens).await;
        let key = unique_key("another-type");
        let rpush = CustomCommand::new_static("RPUSH", ClusterHash::FirstKey, false);
        let _: i64 = raw.custom(rpush, vec![key.as_str(), "item"]).await.unwrap();
        assert_eq!(
            store.save(&key, "owner", Some(TTL)).await.unwrap(),
            Acquisition::Busy
        );
        assert!(store.exists(&key).await.unwrap());
        let _: i64 = raw.del(&key).await.unwrap();
    }
}
