//! Semaphores and read-write locks on a real Redis server, beyond the conformance groups:
//! many stores hammering one semaphore and one read-write lock; the holder sets and lines
//! expiring and going away once their holders and waiters are gone; and a share key of the
//! wrong type refused with an error that names it, changing nothing; and the README's ACL
//! rules for them.

mod acl_support;
mod support;

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use acl_support::{acl_user, LOCK_RULES};
use futures_util::TryStreamExt;
use support::{connect, raw_client, unique_key};
use verrou_core::conformance::Occupancy;
use verrou_core::{Acquisition, Error, Family, LockFactory, LockStore, Retry, Share};
use verrou_redis::fred::prelude::{Client, KeysInterface};
use verrou_redis::fred::types::scan::Scanner;
use verrou_redis::RedisStore;
use verrou_testkit::{redis_url, RedisServer};

/// Long enough that nothing a test holds expires on its own.
const HOUR: Duration = Duration::from_secs(3600);

/// The store's names (`verrou:KIND:{N}:KEY`, every family) of `key` on the server of `raw`.
async fn names_of(raw: &Client, key: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut pages = raw.scan(format!("verrou:*:{key}"), Some(1000), None);
    while let Some(mut page) = pages.try_next().await.unwrap() {
        found.extend(
            page.take_results()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|name| name.into_string()),
        );
    }
    found.sort();
    found
}

/// The one name of `kind` (`permits`, `readers`, `line:semaphore`...) of `key` on the server.
async fn name_of(raw: &Client, kind: &str, key: &str) -> Option<String> {
    names_of(raw, key)
        .await
        .into_iter()
        .find(|name| name.starts_with(&format!("verrou:{kind}:{{")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_stores_never_let_four_into_a_semaphore_of_three_nor_a_reader_beside_a_writer() {
    const STORES: usize = 8;
    const ROUNDS: usize = 8;
    let url = redis_url();
    let semaphore = unique_key("hammer-semaphore");
    let rw_lock = unique_key("hammer-rw");
    let permits = Arc::new(Occupancy::default());
    let readers = Arc::new(Occupancy::default());
    let writers = Arc::new(Occupancy::default());
    let mut workers = Vec::new();
    for store in 0..STORES {
        let factory = LockFactory::new(connect(&url, |_| {}).await)
            .with_retry(Retry::new().delay("20ms").timeout("60s"))
            .unwrap();
        let permit = factory
            .create_semaphore_with_ttl(&semaphore, 3, "30s")
            .unwrap();
        let permits = Arc::clone(&permits);
        workers.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                assert!(permit.acquire().await.unwrap());
                let inside = permits.enter();
                assert!(inside <= 3, "{inside} holders inside a semaphore of 3");
                tokio::time::sleep(Duration::from_millis(5)).await;
                permits.leave();
                permit.release().await.unwrap();
            }
        }));
        let rw = factory.create_rw_lock_with_ttl(&rw_lock, "30s").unwrap();
        let write = store < 2;
        let handle = if write { rw.write() } else { rw.read() }.unwrap();
        let (mine, theirs) = if write {
            (Arc::clone(&writers), Arc::clone(&readers))
        } else {
            (Arc::clone(&readers), Arc::clone(&writers))
        };
        workers.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                assert!(handle.acquire().await.unwrap());
                let inside = mine.enter();
                assert!(!write || inside == 1, "two writers inside");
                assert_eq!(theirs.inside(), 0, "a reader beside a writer");
                tokio::time::sleep(Duration::from_millis(5)).await;
                mine.leave();
                handle.release().await.unwrap();
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(permits.most(), 3, "the permits were never all used");
    assert!(readers.most() > 1, "readers never shared");
    let raw = raw_client(&url).await;
    for key in [&semaphore, &rw_lock] {
        assert_eq!(
            names_of(&raw, key).await,
            Vec::<String>::new(),
            "left behind"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holder_sets_expire_with_their_last_holder_and_go_with_it() {
    let url = redis_url();
    let raw = raw_client(&url).await;
    let store = connect(&url, |_| {}).await;
    let key = unique_key("share-expiry");
    let permit = Share::Permit { limit: 3 };
    let ttl = Duration::from_millis(300);
    for owner in ["a", "b"] {
        let taken = store.save_share(&key, owner, Some(ttl), permit, None).await;
        assert!(matches!(taken, Ok(Acquisition::Granted(_))), "{taken:?}");
    }
    let permits = name_of(&raw, "permits", &key)
        .await
        .expect("the permits set");
    let pttl: i64 = raw.pttl(&permits).await.unwrap();
    assert!(
        pttl > 0 && pttl <= 301,
        "expires with its last holder: {pttl} ms"
    );
    // A holder without TTL keeps the set; giving it back makes the set expire again.
    store
        .save_share(&key, "forever", None, permit, None)
        .await
        .unwrap();
    assert_eq!(
        raw.pttl::<i64, _>(&permits).await.unwrap(),
        -1,
        "no TTL while one holds without"
    );
    store.delete_share(&key, "forever", permit).await.unwrap();
    let pttl: i64 = raw.pttl(&permits).await.unwrap();
    assert!(
        pttl > 0 && pttl <= 301,
        "expires again once it is given back: {pttl} ms"
    );
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(
        names_of(&raw, &key).await,
        Vec::<String>::new(),
        "expired, with no call"
    );

    // Readers and the writer: the sets go with their last holder, released or expired.
    store
        .save_share(&key, "reader", None, Share::Read, None)
        .await
        .unwrap();
    assert!(name_of(&raw, "readers", &key).await.is_some());
    store
        .delete_share(&key, "reader", Share::Read)
        .await
        .unwrap();
    store
        .save_share(&key, "writer", Some(ttl), Share::Write, None)
        .await
        .unwrap();
    assert!(name_of(&raw, "writer", &key).await.is_some());
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(
        names_of(&raw, &key).await,
        Vec::<String>::new(),
        "released, or expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_of_share_waiters_goes_with_its_last_waiter() {
    let url = redis_url();
    let raw = raw_client(&url).await;
    let holder = connect(&url, |_| {}).await;
    let key = unique_key("share-line");
    let writer = holder
        .save_share(&key, "writer", Some(HOUR), Share::Write, None)
        .await
        .unwrap();
    assert!(matches!(writer, Acquisition::Granted(_)));
    let factory = LockFactory::new(connect(&url, |_| {}).await)
        .with_retry(Retry::new().delay("1h").timeout("10s"))
        .unwrap();
    let reader = factory.create_rw_lock(&key).unwrap().read().unwrap();
    let waiting = tokio::spawn(async move { (reader.acquire().await.unwrap(), reader) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        name_of(&raw, "line:rwlock", &key).await.is_some(),
        "the reader waits in line"
    );
    assert_eq!(
        name_of(&raw, "line", &key).await,
        None,
        "not in the locks' line"
    );
    holder
        .delete_share(&key, "writer", Share::Write)
        .await
        .unwrap();
    let (acquired, reader) = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("the reader is handed the key")
        .unwrap();
    assert!(acquired);
    assert_eq!(
        name_of(&raw, "line:rwlock", &key).await,
        None,
        "the line went with it"
    );
    reader.release().await.unwrap();
    assert_eq!(names_of(&raw, &key).await, Vec::<String>::new());
}

/// Whether `result` is the error of a script that found `name` of the wrong type.
fn names_the_key<T: std::fmt::Debug>(result: verrou_core::Result<T>, name: &str) -> bool {
    match result {
        Err(error @ Error::Storage { .. }) => {
            let cause = error.source().map(ToString::to_string).unwrap_or_default();
            cause.contains(name) && cause.contains("changed by hand")
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_key_of_the_wrong_type_is_a_clear_error_and_changes_nothing() {
    let url = redis_url();
    let raw = raw_client(&url).await;
    let store = connect(&url, |_| {}).await;
    let key = unique_key("share-wrong-type");
    let permit = Share::Permit { limit: 2 };
    // Learn the names, then leave them empty.
    store
        .save_share(&key, "a", Some(HOUR), permit, None)
        .await
        .unwrap();
    store
        .save_share(&key, "r", Some(HOUR), Share::Read, None)
        .await
        .unwrap();
    let permits = name_of(&raw, "permits", &key).await.unwrap();
    let readers = name_of(&raw, "readers", &key).await.unwrap();
    store
        .force_delete_shares(&key, Family::Semaphore)
        .await
        .unwrap();
    store
        .force_delete_shares(&key, Family::RwLock)
        .await
        .unwrap();
    let counter = permits.split_once("}:").map(|(start, _)| start).unwrap();
    let counter = format!("{}}}", counter.replace("verrou:permits:", "verrou:fence:"));
    let token_before: String = raw.get(&counter).await.unwrap();

    for name in [&permits, &readers] {
        raw.set::<(), _, _>(name, "by hand", None, None, false)
            .await
            .unwrap();
    }
    assert!(names_the_key(
        store.save_share(&key, "b", Some(HOUR), permit, None).await,
        &permits
    ));
    assert!(names_the_key(
        store.delete_share(&key, "a", permit).await,
        &permits
    ));
    assert!(names_the_key(
        store.extend_share(&key, "a", HOUR, permit).await,
        &permits
    ));
    assert!(names_the_key(
        store.count_shares(&key, permit).await,
        &permits
    ));
    assert!(names_the_key(
        store.force_delete_shares(&key, Family::Semaphore).await,
        &permits
    ));
    // A writer reads the readers' set: refused before it writes its own.
    let write = store
        .save_share(&key, "w", Some(HOUR), Share::Write, None)
        .await;
    assert!(names_the_key(write, &readers));
    assert_eq!(
        name_of(&raw, "writer", &key).await,
        None,
        "the writer set was written"
    );
    for name in [&permits, &readers] {
        let value: String = raw.get(name).await.unwrap();
        assert_eq!(value, "by hand", "{name} was changed");
    }
    let token_after: String = raw.get(&counter).await.unwrap();
    assert_eq!(token_after, token_before, "a refused take issued a token");
    // Deleting the key by hand repairs it.
    raw.del::<(), _>(vec![permits.as_str(), readers.as_str()])
        .await
        .unwrap();
    let taken = store
        .save_share(&key, "b", Some(HOUR), permit, None)
        .await
        .unwrap();
    assert!(matches!(taken, Acquisition::Granted(_)), "{taken:?}");
    store
        .force_delete_shares(&key, Family::Semaphore)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_take_received_twice_is_a_renewal_not_a_second_permit() {
    let url = redis_url();
    let store: RedisStore = connect(&url, |_| {}).await;
    let key = unique_key("share-renewal");
    let permit = Share::Permit { limit: 2 };
    let first = store
        .save_share(&key, "me", Some(HOUR), permit, None)
        .await
        .unwrap();
    let Acquisition::Granted(first) = first else {
        panic!("{first:?}")
    };
    let again = store
        .save_share(&key, "me", Some(HOUR), permit, None)
        .await
        .unwrap();
    let Acquisition::Renewed(again) = again else {
        panic!("{again:?}")
    };
    assert!(again.fencing_token > first.fencing_token);
    assert_eq!(
        store.count_shares(&key, permit).await.unwrap(),
        1,
        "one holder, once"
    );
    store
        .force_delete_shares(&key, Family::Semaphore)
        .await
        .unwrap();
    assert_eq!(store.name(), "the Redis store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acl_rules_the_readme_lists_are_enough_for_shares() {
    let server = RedisServer::start().expect("a private redis-server");
    let admin = raw_client(&server.url()).await;
    // The locks' rules, then those the README adds for semaphores and read-write locks.
    let rules: Vec<&str> = LOCK_RULES
        .iter()
        .copied()
        .chain([
            "~verrou:permits:*",
            "~verrou:readers:*",
            "~verrou:writer:*",
            "+zcount",
            "+persist",
        ])
        .collect();
    acl_user(&admin, "sharer", &rules).await;
    let url = format!("redis://sharer:pw@127.0.0.1:{}", server.port());
    let prefixed = |config: &mut verrou_redis::RedisConfig| config.key_prefix = "locks:".into();
    let holder = LockFactory::new(connect(&url, prefixed).await);
    let patient = LockFactory::new(connect(&url, prefixed).await)
        .with_retry(Retry::new().delay("1h").timeout("10s"))
        .unwrap();
    let key = unique_key("share-acl");
    let permit = holder.create_semaphore(&key, 1).unwrap();
    assert!(permit.acquire_immediately().await.unwrap());
    let writer = holder
        .create_rw_lock_with_ttl(&key, "60s")
        .unwrap()
        .write()
        .unwrap();
    assert!(writer.acquire_immediately().await.unwrap());
    writer.extend().await.unwrap();
    assert_eq!(writer.holders().await.unwrap(), 1);
    let waiting_permit = patient.create_semaphore(&key, 1).unwrap();
    let reader = patient.create_rw_lock(&key).unwrap().read().unwrap();
    let waiters = tokio::spawn(async move {
        let (permit, read) = tokio::join!(waiting_permit.acquire(), reader.acquire());
        (permit.unwrap() && read.unwrap(), waiting_permit, reader)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    permit.release().await.unwrap();
    writer.release().await.unwrap();
    let (acquired, waiting_permit, reader) = tokio::time::timeout(Duration::from_secs(3), waiters)
        .await
        .expect("both waiters are handed their key")
        .unwrap();
    assert!(acquired);
    waiting_permit.force_release().await.unwrap();
    reader.force_release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sharers_waiting_in_a_row_follow_each_other_in_once_subscribed() {
    let url = redis_url();
    let holder = LockFactory::new(connect(&url, |_| {}).await);
    let key = unique_key("share-follow");
    let writer = holder.create_rw_lock(&key).unwrap().write().unwrap();
    let full: Vec<_> = (0..2)
        .map(|_| holder.create_semaphore(&key, 2).unwrap())
        .collect();
    assert!(writer.acquire_immediately().await.unwrap());
    for permit in &full {
        assert!(permit.acquire_immediately().await.unwrap());
    }
    // Three readers and two permits wait, each in a store of its own that only a hand-over
    // wakes (an hour-long retry delay).
    let mut waiting = Vec::new();
    for index in 0..5 {
        let factory = LockFactory::new(connect(&url, |_| {}).await)
            .with_retry(Retry::new().delay("1h").timeout("20s"))
            .unwrap();
        let handle = if index < 3 {
            factory.create_rw_lock(&key).unwrap().read().unwrap()
        } else {
            factory.create_semaphore(&key, 2).unwrap()
        };
        waiting.push(tokio::spawn(async move {
            (handle.acquire().await.unwrap(), handle)
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every subscription is made: only the hand-overs of grants with room left let the
    // second and third in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    writer.release().await.unwrap();
    full[0].force_release().await.unwrap();
    // All in together: none of them gives anything back before the last is in.
    let mut inside = Vec::new();
    for waiter in waiting {
        let (acquired, handle) = tokio::time::timeout(Duration::from_secs(3), waiter)
            .await
            .expect("each sharer is handed the key by the one before it")
            .unwrap();
        assert!(acquired);
        inside.push(handle);
    }
    for handle in inside {
        handle.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_holder_beside_a_live_one_neither_counts_nor_answers() {
    let url = redis_url();
    let store = connect(&url, |_| {}).await;
    let key = unique_key("share-expired-beside");
    let permit = Share::Permit { limit: 2 };
    let short = Some(Duration::from_millis(200));
    store
        .save_share(&key, "short", short, permit, None)
        .await
        .unwrap();
    store
        .save_share(&key, "long", Some(HOUR), permit, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.count_shares(&key, permit).await.unwrap(), 1);
    let extended = store
        .extend_share(&key, "short", HOUR, permit)
        .await
        .unwrap();
    assert_eq!(
        extended,
        verrou_core::OwnerCheck::NotOwner,
        "an expired permit was extended"
    );
    let released = store.delete_share(&key, "short", permit).await.unwrap();
    assert_eq!(
        released,
        verrou_core::OwnerCheck::NotOwner,
        "an expired permit was given back"
    );
    let taken = store
        .save_share(&key, "next", Some(HOUR), permit, None)
        .await
        .unwrap();
    assert!(
        matches!(taken, Acquisition::Granted(_)),
        "the expired permit still counts: {taken:?}"
    );
    store
        .force_delete_shares(&key, Family::Semaphore)
        .await
        .unwrap();
}

/// A semaphore's line that lost its deadline set (evicted under `maxmemory`, which picks
/// keys one at a time) still works: a take with room finds the front waiter not handed
/// the key yet and hands it over, where a script error used to fail every such take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_without_its_deadline_set_still_hands_over() {
    let url = redis_url();
    let (store, raw) = (connect(&url, |_| {}).await, raw_client(&url).await);
    let key = unique_key("lost-deadlines");
    let take = |owner: &'static str, limit: u32, waiter: Option<&'static str>| {
        let (store, key) = (&store, &key);
        async move {
            let place = waiter.map(|waiter| verrou_core::Place {
                waiter,
                lease: HOUR,
            });
            let share = Share::Permit { limit };
            store.save_share(key, owner, Some(HOUR), share, place).await
        }
    };
    assert!(matches!(
        take("a", 1, None).await.unwrap(),
        Acquisition::Granted(_)
    ));
    // A waiter whose own limit is full.
    assert_eq!(take("w", 1, Some("w")).await.unwrap(), Acquisition::Busy);
    let deadlines = name_of(&raw, "deadline:semaphore", &key)
        .await
        .expect("the line's deadline set");
    let _: i64 = raw.del(&deadlines).await.unwrap();
    // Room for a permit of 2, but the waiter is ahead: busy, and the key is handed to it.
    let taken = take("c", 2, None).await;
    assert_eq!(taken.unwrap(), Acquisition::Busy);
    assert!(matches!(
        take("w", 2, Some("w")).await.unwrap(),
        Acquisition::Granted(_)
    ));
}
