//! The longest TTL, `verrou_core::MAX_DURATION` (3650 days), works on the server, and the
//! store refuses longer ones as the core does, instead of shortening them.

mod common;

use std::time::Duration;

use common::{client, server_now_ms, store, unique};
use verrou_core::{Acquisition, Error, LockFactory, LockStore, OwnerCheck, MAX_DURATION};
use verrou_postgres::tokio_postgres::Client;

/// `MAX_DURATION` in milliseconds.
fn max_duration_ms() -> i64 {
    i64::try_from(MAX_DURATION.as_millis()).expect("3650 days of milliseconds fit")
}

/// How far in the future (by the server's clock, in milliseconds) the row of `key` expires.
async fn expires_in_ms(client: &Client, table: &str, key: &str) -> i64 {
    let expiration: i64 = client
        .query_one(
            &format!("SELECT expiration FROM \"{table}\" WHERE key = $1"),
            &[&key],
        )
        .await
        .expect("the lock's row")
        .get(0);
    expiration - server_now_ms(client).await
}

/// Asserts that `remaining` is `MAX_DURATION` give or take the few seconds the test took.
fn assert_about_max_duration(remaining: i64, what: &str) {
    let off = (remaining - max_duration_ms()).abs();
    assert!(
        off < 5_000,
        "{what}: expires in {remaining} ms, {off} ms off 3650 days"
    );
}

#[tokio::test]
async fn a_ttl_and_an_extension_of_exactly_max_duration_work() {
    let table = unique("max_ttl");
    let store = store(&table).await;
    let admin = client(&verrou_testkit::postgres_url()).await;

    // The store's own operations.
    let key = unique("key");
    let acquisition = store
        .save(&key, "me", Some(MAX_DURATION))
        .await
        .expect("save");
    assert!(
        matches!(acquisition, Acquisition::Granted(_)),
        "{acquisition:?}"
    );
    assert_about_max_duration(expires_in_ms(&admin, &table, &key).await, "save");
    assert!(store.exists(&key).await.expect("exists"));
    assert!(matches!(
        store.save(&key, "you", Some(MAX_DURATION)).await,
        Ok(Acquisition::Busy)
    ));

    let short = unique("short");
    let acquisition = store
        .save(&short, "me", Some(Duration::from_secs(10)))
        .await
        .expect("save");
    assert!(
        matches!(acquisition, Acquisition::Granted(_)),
        "{acquisition:?}"
    );
    assert_eq!(
        store
            .extend(&short, "me", MAX_DURATION)
            .await
            .expect("extend"),
        OwnerCheck::Applied
    );
    assert_about_max_duration(expires_in_ms(&admin, &table, &short).await, "extend");

    // The same through a lock.
    let factory = LockFactory::new(store);
    let lock = factory
        .create_lock_with_ttl(unique("lock"), MAX_DURATION)
        .expect("the longest TTL is valid");
    assert!(lock.acquire_immediately().await.expect("acquire"));
    assert_about_max_duration(
        expires_in_ms(&admin, &table, lock.key()).await,
        "lock acquire",
    );
    lock.extend_by("1s").await.expect("extend");
    lock.extend_by(MAX_DURATION).await.expect("extend");
    assert_about_max_duration(
        expires_in_ms(&admin, &table, lock.key()).await,
        "lock extend",
    );
    lock.release().await.expect("release");
}

/// A caller that skips the lock API and asks the store for a longer TTL gets the core's
/// error, and nothing changes on the server (the store used to shorten such a TTL silently).
#[tokio::test]
async fn a_ttl_over_max_duration_is_invalid_duration_and_changes_nothing() {
    let table = unique("over_max_ttl");
    let store = store(&table).await;
    let admin = client(&verrou_testkit::postgres_url()).await;
    let key = unique("key");

    for ttl in [MAX_DURATION + Duration::from_millis(1), Duration::MAX] {
        match store.save(&key, "me", Some(ttl)).await {
            Err(Error::InvalidDuration { reason, .. }) => {
                assert!(reason.contains("MAX_DURATION"), "{reason}");
            }
            other => panic!("save with {ttl:?}: expected InvalidDuration, got {other:?}"),
        }
    }
    assert!(
        !store.exists(&key).await.expect("exists"),
        "nothing was taken"
    );

    let acquisition = store
        .save(&key, "me", Some(Duration::from_secs(10)))
        .await
        .expect("save");
    assert!(
        matches!(acquisition, Acquisition::Granted(_)),
        "{acquisition:?}"
    );
    let before = expires_in_ms(&admin, &table, &key).await;
    match store
        .extend(&key, "me", MAX_DURATION + Duration::from_nanos(1))
        .await
    {
        Err(Error::InvalidDuration { reason, .. }) => {
            assert!(reason.contains("MAX_DURATION"), "{reason}");
        }
        other => panic!("expected InvalidDuration, got {other:?}"),
    }
    let after = expires_in_ms(&admin, &table, &key).await;
    assert!(
        after <= before && after > 0,
        "the lock kept its expiry ({before} ms, then {after} ms)"
    );
}
