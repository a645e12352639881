//! Commands whose connection drops after they were applied, before their answer came back:
//! fred writes them again on the new connection, and each operation says what the first
//! sending did (a take) or stays true (extend, release). The store runs behind a fault
//! proxy; a second store, connected directly, watches the server.

mod support;

use std::time::{Duration, Instant};

use support::{connect, raw_client, unique_key};
use verrou_core::conformance::FaultInjector;
use verrou_core::{Error, LockFactory};
use verrou_redis::fred::prelude::{Client, KeysInterface};
use verrou_testkit::{redis_url, FaultProxy};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the proxy holds the answers back: the connection is cut meanwhile.
const HELD_BACK: Duration = Duration::from_millis(800);

/// A factory on a store behind a new fault proxy, and a plain client connected directly.
/// The server has every script of the store cached (else the first sending of each is
/// answered `NOSCRIPT`, and sent again in full, costing a round trip more).
async fn stores() -> (FaultProxy, LockFactory, Client) {
    let url = redis_url();
    let (proxy, proxied) = FaultProxy::in_front_of(&url).expect("a fault proxy");
    let store = connect(&proxied, |config| config.command_timeout = COMMAND_TIMEOUT).await;
    let factory = LockFactory::new(store);
    let warm_up = factory
        .create_lock_with_ttl(unique_key("warm-up"), "30s")
        .unwrap();
    assert!(warm_up.acquire_immediately().await.unwrap());
    warm_up.extend().await.unwrap();
    warm_up.release().await.unwrap();
    (proxy, factory, raw_client(&url).await)
}

/// Whether `key` exists, as `direct` sees it.
async fn exists(direct: &Client, key: &str) -> bool {
    let count: i64 = direct.exists(key).await.expect("EXISTS");
    count > 0
}

/// Waits until `direct` sees `key` held (`held`) or free.
async fn until(direct: &Client, key: &str, held: bool) {
    let started = Instant::now();
    while exists(direct, key).await != held {
        assert!(
            started.elapsed() < HELD_BACK,
            "the command never reached the server"
        );
    }
}

/// A take applied on the server whose answer is lost with its connection is written again;
/// the second sending finds the key held by its own owner and renews it, so the lock gets
/// it: `acquire` succeeds, and the lock releases it.
///
/// With a single write attempt (as the store had before), the take failed with
/// `Error::Storage` and the grant was left to be given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_whose_answer_was_lost_is_sent_again_and_acquires() {
    let (proxy, factory, direct) = stores().await;
    let key = unique_key("resent-take");
    let lock = factory.create_lock_with_ttl(&key, "30s").unwrap();
    proxy.set_latency(Duration::ZERO, HELD_BACK);
    let acquiring = {
        let lock = lock.clone();
        tokio::spawn(async move { lock.acquire_immediately().await })
    };
    until(&direct, &key, true).await;
    proxy.cut();
    let acquired = acquiring.await.unwrap();
    assert!(
        matches!(acquired, Ok(true)),
        "the re-sent take: {acquired:?}"
    );
    assert!(lock.remaining_time().is_some(), "the lock holds the key");
    lock.release().await.unwrap();
    assert!(!exists(&direct, &key).await);
}

/// An extension written again extends again: still applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_whose_answer_was_lost_is_sent_again_and_applies() {
    let (proxy, factory, direct) = stores().await;
    let key = unique_key("resent-extend");
    let lock = factory.create_lock_with_ttl(&key, "30s").unwrap();
    assert!(lock.acquire_immediately().await.unwrap());
    proxy.set_latency(Duration::ZERO, HELD_BACK);
    let extending = {
        let lock = lock.clone();
        tokio::spawn(async move { lock.extend_by("60s").await })
    };
    // The extension cannot be seen from outside; give it time to arrive.
    tokio::time::sleep(HELD_BACK / 4).await;
    proxy.cut();
    extending.await.unwrap().unwrap();
    assert!(exists(&direct, &key).await);
    lock.release().await.unwrap();
}

/// A release applied on the server whose answer is lost with its connection is written
/// again, and the second sending finds the key no longer the owner's: the lock reports
/// `NotOwned` although its release did release it (as the store's documentation says).
/// (If the answer gets through before the cut after all, the round proves nothing and is
/// played again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_answer_was_lost_reports_not_owned_and_has_released() {
    let (proxy, factory, direct) = stores().await;
    for round in 0..5 {
        let key = unique_key("resent-release");
        let lock = factory.create_lock_with_ttl(&key, "30s").unwrap();
        assert!(lock.acquire_immediately().await.unwrap());
        proxy.set_latency(Duration::ZERO, HELD_BACK);
        let releasing = {
            let lock = lock.clone();
            tokio::spawn(async move { lock.release().await })
        };
        until(&direct, &key, false).await;
        proxy.cut();
        let released = releasing.await.unwrap();
        proxy.heal();
        assert!(!exists(&direct, &key).await, "released all the same");
        match released {
            Err(Error::NotOwned { .. }) => return,
            Ok(()) => println!("round {round}: the answer got through before the cut"),
            Err(error) => panic!("the re-sent release: {error:?}"),
        }
    }
    panic!("no answer was ever lost: the test proves nothing");
}
