//! Replica acknowledgement (`min_replicas`, `replica_timeout`): a take or an extension is
//! reported done only once enough replicas have it; one they do not acknowledge in time is
//! an error naming how many did, leaves no grant behind, and the store works again when the
//! replicas are back. On a private master and its replica.

mod support;

use std::error::Error as _;
use std::time::{Duration, Instant};

use support::{connect, raw_client, unique_key};
use verrou_core::{Error, LockFactory};
use verrou_redis::fred::prelude::{Client, ClientLike, KeysInterface, Value};
use verrou_redis::fred::types::{ClusterHash, CustomCommand};
use verrou_redis::{NotReplicated, RedisConfig, RedisStore};
use verrou_testkit::RedisServer;

const REPLICA_TIMEOUT: Duration = Duration::from_millis(300);

/// Scheduling slack on a loaded machine.
const SLACK: Duration = Duration::from_millis(700);

/// `command` on `client`, as text.
async fn call(client: &Client, command: &'static str, args: Vec<String>) -> String {
    let reply: Value = client
        .custom(
            CustomCommand::new_static(command, ClusterHash::FirstKey, false),
            args,
        )
        .await
        .unwrap_or_else(|error| panic!("{command}: {error}"));
    reply.as_string().unwrap_or_default()
}

/// Makes `replica` a replica of `master` and waits until it acknowledges writes promptly:
/// after a full sync, the master streams nothing to it (`REPLCONF GETACK` included) until
/// its first acknowledgement, which it sends within a second, so `WAIT` counts it only once
/// it did.
async fn replicate(master: &Client, replica: &RedisServer, master_port: u16) {
    let replica_client = raw_client(&replica.url()).await;
    call(
        &replica_client,
        "REPLICAOF",
        vec!["127.0.0.1".into(), master_port.to_string()],
    )
    .await;
    let started = Instant::now();
    let mut in_a_row = 0;
    while in_a_row < 3 {
        let _: () = master
            .set("replication-probe", "x", None, None, false)
            .await
            .expect("SET");
        let acknowledged = call(master, "WAIT", vec!["1".into(), "50".into()]).await;
        in_a_row = if acknowledged == "1" { in_a_row + 1 } else { 0 };
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the replica never synced"
        );
    }
}

/// A store on `url` waiting for `min_replicas` replicas.
async fn store(url: &str, min_replicas: usize) -> RedisStore {
    connect(url, |config| {
        config.min_replicas = min_replicas;
        config.replica_timeout = REPLICA_TIMEOUT;
        config.command_timeout = Duration::from_secs(2);
    })
    .await
}

/// The `NotReplicated` behind `error`, if it is one.
fn not_replicated(error: &Error) -> Option<&NotReplicated> {
    error.source()?.downcast_ref::<NotReplicated>()
}

/// Whether `key` is gone from the server within `limit`.
async fn gone_within(raw: &Client, key: &str, limit: Duration) -> bool {
    let started = Instant::now();
    loop {
        let exists: i64 = raw.exists(key).await.expect("EXISTS");
        if exists == 0 {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_and_extensions_wait_for_the_replica_and_fail_without_it() {
    let master = RedisServer::start().expect("a private redis-server");
    let mut replica = RedisServer::start().expect("a private redis-server");
    let raw = raw_client(&master.url()).await;
    replicate(&raw, &replica, master.port()).await;
    let locks = LockFactory::new(store(&master.url(), 1).await);

    // With the replica: granted, extended, released, as without acknowledgement.
    let held = locks
        .create_lock_with_ttl(unique_key("ack-held"), "30s")
        .unwrap();
    assert!(held.acquire_immediately().await.unwrap());
    held.extend().await.unwrap();
    let replica_raw = raw_client(&replica.url()).await;
    let copied: i64 = replica_raw.exists(held.key()).await.unwrap();
    assert_eq!(copied, 1, "a reported grant is on the replica");

    // Without it: the take fails within the replica timeout, saying none acknowledged it,
    // and leaves no grant behind (the lock gives it back).
    replica.stop();
    let lock = locks
        .create_lock_with_ttl(unique_key("ack-short"), "30s")
        .unwrap();
    let started = Instant::now();
    let error = lock
        .acquire_immediately()
        .await
        .expect_err("a grant no replica acknowledged must not be reported");
    let took = started.elapsed();
    let cause = not_replicated(&error).unwrap_or_else(|| panic!("{error:?}"));
    assert_eq!((cause.acknowledged(), cause.required()), (0, 1), "{cause}");
    assert!(
        took >= REPLICA_TIMEOUT && took < REPLICA_TIMEOUT + SLACK,
        "the take failed after {took:?}"
    );
    println!("a take no replica acknowledged failed after {took:?}: {cause}");
    assert!(
        gone_within(&raw, lock.key(), SLACK).await,
        "the unacknowledged grant was left behind"
    );
    assert_eq!(lock.remaining_time(), None, "not held");

    // An extension no replica acknowledged is an error too; the lock may still be held.
    let error = held
        .extend_by("60s")
        .await
        .expect_err("an unacknowledged extension");
    assert!(not_replicated(&error).is_some(), "{error:?}");
    let ttl: i64 = raw.pttl(held.key()).await.unwrap();
    assert!(ttl > 0, "the lock is still held on the master");

    // The replica is back: everything works again.
    replica.restart().expect("the replica restarts");
    replicate(&raw, &replica, master.port()).await;
    assert!(
        lock.acquire_immediately().await.unwrap(),
        "free, and granted again"
    );
    lock.extend().await.unwrap();
    lock.release().await.unwrap();
    held.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_replicas_than_there_are_is_never_acknowledged() {
    let master = RedisServer::start().expect("a private redis-server");
    let replica = RedisServer::start().expect("a private redis-server");
    let raw = raw_client(&master.url()).await;
    replicate(&raw, &replica, master.port()).await;
    let locks = LockFactory::new(store(&master.url(), 2).await);
    let lock = locks
        .create_lock_with_ttl(unique_key("ack-two"), "30s")
        .unwrap();
    let error = lock
        .acquire_immediately()
        .await
        .expect_err("one replica of two");
    let cause = not_replicated(&error).unwrap_or_else(|| panic!("{error:?}"));
    assert_eq!(
        (cause.acknowledged(), cause.required()),
        (1, 2),
        "{cause}: {:?}",
        cause.source()
    );
    assert!(gone_within(&raw, lock.key(), SLACK).await, "left behind");
    // A busy answer writes nothing, and needs no acknowledgement.
    let plain = LockFactory::new(store(&master.url(), 0).await);
    let holder = plain.create_lock(lock.key()).unwrap();
    assert!(holder.acquire_immediately().await.unwrap());
    assert!(
        !lock.acquire_immediately().await.unwrap(),
        "busy, not an error"
    );
    holder.release().await.unwrap();
}

#[tokio::test]
async fn a_replica_timeout_that_cannot_work_is_an_invalid_config() {
    for (timeout, problem) in [
        (Duration::ZERO, "longer than zero"),
        (Duration::from_secs(5), "shorter than `command_timeout`"),
    ] {
        let mut config = RedisConfig::new("redis://127.0.0.1:1");
        config.min_replicas = 1;
        config.replica_timeout = timeout;
        match RedisStore::connect(config).await {
            Err(Error::InvalidConfig(message)) => {
                assert!(message.contains(problem), "{message}");
            }
            other => panic!("{timeout:?}: expected InvalidConfig, got {other:?}"),
        }
    }
    // Without replica acknowledgement the timeout is unused.
    let mut config = RedisConfig::new("redis://127.0.0.1:1");
    config.replica_timeout = Duration::ZERO;
    assert!(config.builder().is_ok());
}
