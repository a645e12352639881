//! The longest key the store accepts: what the primary-key index can hold, and no more than
//! a `varchar(n)` key column allows. Keys over the limit are refused when the lock is
//! created, before any round trip, instead of failing on the server.

mod common;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use common::{client, store, unique};
use verrou_core::{Error, LockFactory, LockStore};
use verrou_postgres::{PostgresStore, MAX_KEY_LEN};

/// `len` random printable ASCII bytes (from a randomly keyed SipHash): nothing for
/// PostgreSQL's compression to shrink, so the primary-key index has to hold every byte.
fn incompressible_key(len: usize) -> String {
    let keyed = RandomState::new();
    (0..len)
        .map(|index| {
            let mut hasher = keyed.build_hasher();
            hasher.write_usize(index);
            let printable = b'!' + u8::try_from(hasher.finish() % 94).expect("below 94");
            char::from(printable)
        })
        .collect()
}

/// The reason of an [`Error::InvalidKey`], or a panic saying what came instead.
fn invalid_key_reason<T: std::fmt::Debug>(result: verrou_core::Result<T>) -> String {
    match result {
        Err(Error::InvalidKey { reason, .. }) => reason,
        other => panic!("expected Error::InvalidKey, got {other:?}"),
    }
}

/// The whole life of a lock on `key`: acquire, is-locked, extend, release.
async fn lock_cycle(factory: &LockFactory, key: &str) {
    let lock = factory
        .create_lock_with_ttl(key, "30s")
        .expect("a key within the limit is accepted");
    assert!(lock.acquire_immediately().await.expect("acquire"));
    assert!(lock.is_locked().await.expect("is locked"));
    lock.extend_by("45s").await.expect("extend");
    lock.release().await.expect("release");
    assert!(!lock.is_locked().await.expect("is locked"));
}

#[tokio::test]
async fn a_random_key_of_exactly_the_limit_works_and_one_byte_more_is_invalid_key() {
    let factory = LockFactory::new(store(&unique("key_limit")).await);

    let key = incompressible_key(MAX_KEY_LEN);
    lock_cycle(&factory, &key).await;

    let too_long = incompressible_key(MAX_KEY_LEN + 1);
    let reason = invalid_key_reason(factory.create_lock(too_long.as_str()));
    assert!(reason.contains(&format!("{MAX_KEY_LEN} bytes")), "{reason}");
    let reason = invalid_key_reason(factory.store().validate_key(&too_long));
    assert!(reason.contains(&format!("{MAX_KEY_LEN} bytes")), "{reason}");
}

/// A multi-byte key is measured in bytes, as the index stores it.
#[tokio::test]
async fn the_limit_counts_bytes_not_characters() {
    let factory = LockFactory::new(store(&unique("key_bytes")).await);
    let at_limit = "é".repeat(MAX_KEY_LEN / 2);
    lock_cycle(&factory, &at_limit).await;
    let over = format!("{at_limit}x");
    let reason = invalid_key_reason(factory.create_lock(over));
    assert!(reason.contains(&format!("{MAX_KEY_LEN} bytes")), "{reason}");
}

/// The key that once came back as a server error ("index row size exceeds btree maximum")
/// is refused before it reaches the server, and the limit leaves room below what the index
/// holds: the server itself refuses such a key.
#[tokio::test]
async fn a_key_the_index_can_not_hold_is_refused_before_any_round_trip() {
    let table = unique("key_too_long");
    let store = store(&table).await;
    let key = incompressible_key(3000);

    let direct = client(&verrou_testkit::postgres_url()).await;
    let server_error = direct
        .execute(
            &format!("INSERT INTO \"{table}\" (key, owner) VALUES ($1, 'me')"),
            &[&key],
        )
        .await
        .expect_err("the primary-key index can not hold 3000 incompressible bytes");
    assert!(
        server_error.to_string().contains("index row size") || {
            let db = server_error.as_db_error().map(|db| db.message().to_owned());
            db.is_some_and(|message| message.contains("index row size"))
        },
        "{server_error:?}"
    );

    let factory = LockFactory::new(store);
    let reason = invalid_key_reason(factory.create_lock(key.as_str()));
    assert!(reason.contains(&format!("{MAX_KEY_LEN} bytes")), "{reason}");
}

/// A table laid out by the Node.js library has a `varchar(255)` key: the store reads the
/// length when it starts and refuses longer keys, counted in characters as PostgreSQL does.
#[tokio::test]
async fn a_varchar_key_column_limits_keys_to_its_length_in_characters() {
    let table = unique("node_key_limit");
    let direct = client(&verrou_testkit::postgres_url()).await;
    direct
        .batch_execute(&format!(
            "CREATE TABLE \"{table}\" (key varchar(255) PRIMARY KEY, \
             owner varchar(255) NOT NULL, expiration bigint)"
        ))
        .await
        .expect("a table like the Node.js library's");
    let store: PostgresStore = store(&table).await;
    let factory = LockFactory::new(store);

    let at_limit = "é".repeat(255);
    lock_cycle(&factory, &at_limit).await;

    let over = "é".repeat(256);
    let reason = invalid_key_reason(factory.create_lock(over.as_str()));
    assert!(reason.contains("255 characters"), "{reason}");
    assert!(
        reason.contains(&table),
        "the reason names the table: {reason}"
    );
    let reason = invalid_key_reason(factory.store().validate_key(&over));
    assert!(reason.contains("255 characters"), "{reason}");
}

/// A restored lock is checked against the same limit as a new one.
#[tokio::test]
async fn a_restored_lock_with_a_key_over_the_limit_is_invalid_key() {
    let factory = LockFactory::new(store(&unique("key_restore")).await);
    let restore = |key: &str| {
        factory.restore_lock(format!(
            r#"{{"key":"{key}","owner":"someone","ttl":30000,"expirationTime":null}}"#
        ))
    };
    restore(&"k".repeat(MAX_KEY_LEN)).expect("a key of the limit is restored");
    let reason = invalid_key_reason(restore(&"k".repeat(MAX_KEY_LEN + 1)));
    assert!(reason.contains(&format!("{MAX_KEY_LEN} bytes")), "{reason}");
}
