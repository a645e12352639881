//! The waiting line on a real Redis server: waiters of separate stores (separate
//! connections, as separate processes would have) take turns in arrival order, one ask per
//! release; nobody overtakes them; a place left behind holds the line up for a hand-over
//! window at most; and the line's keys go away with their last place.

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{connect, raw_client, unique_key};
use verrou_core::conformance::CountingStore;
use verrou_core::{
    Acquisition, Error, LockFactory, LockStore, OwnerCheck, Place, Retry, HANDOVER_WINDOW,
};
use verrou_redis::fred::prelude::{Client, KeysInterface};
use verrou_redis::fred::types::scan::Scanner;
use verrou_redis::RedisStore;
use verrou_testkit::redis_url;

/// A retry delay no test waits out: a waiter that gets the key was woken.
const HOUR: Duration = Duration::from_secs(3600);
/// Generous for a woken waiter (about a round trip), far below [`HOUR`].
const PROMPT: Duration = Duration::from_secs(2);
/// Long enough for a waiter to have asked the store and subscribed.
const SETTLE: Duration = Duration::from_millis(300);

/// A place that outlasts any test, for a waiter that never asks again.
fn ghost(waiter: &str) -> Place<'_> {
    Place {
        waiter,
        lease: Duration::from_secs(60),
    }
}

/// A factory on `store` whose waiters ask again only when woken, or after `delay`.
fn factory(store: Arc<dyn LockStore>, delay: Duration) -> LockFactory {
    LockFactory::from_shared(store)
        .with_retry(Retry::new().delay(delay))
        .expect("valid retry options")
}

/// Takes `key` for `owner` on `store`, which must succeed.
async fn hold(store: &RedisStore, key: &str, owner: &str) {
    let taken = store.save(key, owner, Some(HOUR)).await.unwrap();
    assert!(matches!(taken, Acquisition::Granted(_)), "{taken:?}");
}

/// The take of `key` by the waiter `waiter` (owner `waiter-owner`, TTL an hour), in its
/// line: the store's answer.
async fn waiter_takes(store: &RedisStore, key: &str) -> Acquisition {
    store
        .save_in_line(key, "waiter-owner", Some(HOUR), ghost("waiter"))
        .await
        .unwrap()
}

/// The Redis keys of `key`'s line on the server of `raw`.
async fn line_keys(raw: &Client, key: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    let mut found = Vec::new();
    for pattern in ["verrou:line:*", "verrou:deadline:*"] {
        let mut pages = raw.scan(format!("{pattern}:{key}"), Some(1000), None);
        while let Some(mut page) = pages.try_next().await.unwrap() {
            found.extend(
                page.take_results()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|name| name.into_string()),
            );
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_waiters_on_eight_stores_take_turns_in_arrival_order_without_asking_in_vain() {
    const WAITERS: usize = 8;
    const ROUNDS: usize = 5;
    const HOLD: Duration = Duration::from_millis(20);
    let url = redis_url();
    let key = unique_key("line-turns");
    let holder = connect(&url, |_| {}).await;
    hold(&holder, &key, "holder").await;

    let served = Arc::new(Mutex::new(Vec::new()));
    let mut probes = Vec::new();
    let mut tasks = Vec::new();
    for arrival in 0..WAITERS {
        let probe = Arc::new(CountingStore::new(Arc::new(connect(&url, |_| {}).await)));
        probes.push(Arc::clone(&probe));
        let lock = factory(probe, HOUR)
            .create_lock_with_ttl(&key, "60s")
            .unwrap();
        let served = Arc::clone(&served);
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                assert!(lock.acquire().await.unwrap());
                served.lock().unwrap().push((arrival, Instant::now()));
                // Long enough that the waiter who released before joins the line again
                // before this one releases, even on a busy machine.
                tokio::time::sleep(HOLD).await;
                lock.release().await.unwrap();
            }
        }));
        // Arrivals 50 ms apart, so the order of arrival is known.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let released = Instant::now();
    holder.delete(&key, "holder").await.unwrap();
    for task in tasks {
        tokio::time::timeout(PROMPT * 10, task)
            .await
            .expect("every release wakes the next waiter")
            .unwrap();
    }

    let served = served.lock().unwrap().clone();
    let order: Vec<usize> = served.iter().map(|(arrival, _)| *arrival).collect();
    let expected: Vec<usize> = (0..WAITERS * ROUNDS).map(|turn| turn % WAITERS).collect();
    assert_eq!(order, expected, "turns in arrival order, round after round");
    let in_vain: usize = probes
        .iter()
        .map(|probe| probe.in_vain.load(Ordering::SeqCst))
        .sum();
    let takes: usize = probes
        .iter()
        .map(|probe| probe.saves.load(Ordering::SeqCst))
        .sum();
    let turns = served.len();
    let took = served
        .last()
        .map_or(Duration::ZERO, |(_, at)| *at - released);
    println!(
        "{turns} turns in {took:?} ({:?} per hand-over), {takes} takes, {in_vain} asked in vain",
        took / u32::try_from(turns).unwrap()
    );
    // Each turn costs the take that joins the line and the take that gets the key.
    assert!(
        in_vain <= 1,
        "{in_vain} takes asked in vain for {turns} turns"
    );
    assert!(takes <= 2 * turns + 1, "{takes} takes for {turns} turns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_the_hand_over_window_a_free_key_is_the_front_waiters_alone() {
    let url = redis_url();
    let key = unique_key("line-overtake");
    let (store, newcomer_store) = (connect(&url, |_| {}).await, connect(&url, |_| {}).await);
    hold(&store, &key, "holder").await;
    // A waiter in line that never asks again: the release hands it the key.
    let busy = store
        .save_in_line(&key, "ghost-owner", Some(HOUR), ghost("ghost"))
        .await
        .unwrap();
    assert_eq!(busy, Acquisition::Busy);
    let newcomer = factory(Arc::new(newcomer_store), Duration::from_millis(10))
        .create_lock_with_ttl(&key, "10s")
        .unwrap();

    let released = Instant::now();
    store.delete(&key, "holder").await.unwrap();
    // Each answer that came within the window must be a refusal (on a machine too slow to
    // answer within it, there is nothing to check).
    let within = || released.elapsed() < HANDOVER_WINDOW;
    let releaser = store.save(&key, "holder", Some(HOUR)).await.unwrap();
    assert!(
        releaser == Acquisition::Busy || !within(),
        "the releaser took the key back"
    );
    let plain = newcomer.acquire_immediately().await.unwrap();
    assert!(
        !plain || !within(),
        "a plain take overtook the front waiter"
    );
    let waited = newcomer
        .acquire_with(Retry::new().timeout(HANDOVER_WINDOW / 2))
        .await
        .unwrap();
    assert!(
        !waited || !within(),
        "a waiting newcomer overtook the front waiter"
    );

    // Once the window is over, the front waiter is presumed gone and the key is free.
    tokio::time::sleep(HANDOVER_WINDOW).await;
    if releaser == Acquisition::Busy && !plain && !waited {
        assert!(newcomer.acquire_immediately().await.unwrap());
    }
    store.force_delete(&key).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_place_left_behind_delays_the_next_waiter_by_a_window_and_a_retry_delay() {
    let url = redis_url();
    let key = unique_key("line-left-behind");
    let holder = connect(&url, |_| {}).await;
    hold(&holder, &key, "holder").await;
    // A process that joined the line and was killed: its store is gone without leaving.
    let killed = connect(&url, |_| {}).await;
    let busy = killed
        .save_in_line(&key, "killed-owner", Some(HOUR), ghost("killed"))
        .await
        .unwrap();
    assert_eq!(busy, Acquisition::Busy);
    drop(killed);

    let delay = Duration::from_millis(300);
    let waiters = factory(Arc::new(connect(&url, |_| {}).await), delay);
    let lock = waiters.create_lock_with_ttl(&key, "10s").unwrap();
    let waiter = tokio::spawn(async move {
        assert!(lock.acquire().await.unwrap());
        (Instant::now(), lock)
    });
    tokio::time::sleep(SETTLE).await;
    let released = Instant::now();
    holder.delete(&key, "holder").await.unwrap();
    let (acquired, lock) = tokio::time::timeout(PROMPT + delay, waiter)
        .await
        .expect("the waiter behind a dead one gets the key")
        .unwrap();
    let delayed = acquired - released;
    println!("the waiter behind a dead one got the key {delayed:?} after the release");
    // Scheduling slack on a loaded machine: a round trip or two.
    assert!(
        delayed <= HANDOVER_WINDOW + delay + Duration::from_millis(150),
        "delayed {delayed:?}"
    );
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_handed_the_key_that_leaves_wakes_the_next() {
    let url = redis_url();
    let key = unique_key("line-leave-handed");
    let holder = connect(&url, |_| {}).await;
    hold(&holder, &key, "holder").await;
    let busy = holder
        .save_in_line(&key, "leaver-owner", Some(HOUR), ghost("leaver"))
        .await
        .unwrap();
    assert_eq!(busy, Acquisition::Busy);
    let lock = factory(Arc::new(connect(&url, |_| {}).await), HOUR)
        .create_lock_with_ttl(&key, "10s")
        .unwrap();
    let waiter = tokio::spawn(async move {
        assert!(lock.acquire().await.unwrap());
        lock
    });
    tokio::time::sleep(SETTLE).await;
    // The release hands the key to the leaver, which gives up instead of taking it.
    holder.delete(&key, "holder").await.unwrap();
    holder.leave_line(&key, "leaver").await.unwrap();
    let lock = tokio::time::timeout(PROMPT, waiter)
        .await
        .expect("leaving the front of the line handed the key over to the next")
        .unwrap();
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_keys_expire_with_the_last_place_and_go_with_the_last_waiter() {
    let url = redis_url();
    let (store, raw) = (connect(&url, |_| {}).await, raw_client(&url).await);
    let key = unique_key("line-expiry");
    hold(&store, &key, "holder").await;
    assert!(
        line_keys(&raw, &key).await.is_empty(),
        "a take alone makes no line"
    );

    let lease = Duration::from_millis(400);
    let place = Place {
        waiter: "short",
        lease,
    };
    let busy = store
        .save_in_line(&key, "short-owner", Some(HOUR), place)
        .await;
    assert_eq!(busy.unwrap(), Acquisition::Busy);
    let names = line_keys(&raw, &key).await;
    assert_eq!(names.len(), 2, "{names:?}");
    for name in &names {
        let ttl: i64 = raw.pttl(name).await.unwrap();
        assert!(ttl > 0 && ttl <= 401, "{name}: {ttl} ms");
    }
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert!(
        line_keys(&raw, &key).await.is_empty(),
        "the lapsed line stayed"
    );

    // A waiter that gets the key takes its place away, and the line with it.
    let busy = waiter_takes(&store, &key).await;
    assert_eq!(busy, Acquisition::Busy);
    assert_eq!(line_keys(&raw, &key).await.len(), 2);
    store.delete(&key, "holder").await.unwrap();
    let taken = waiter_takes(&store, &key).await;
    assert!(matches!(taken, Acquisition::Granted(_)), "{taken:?}");
    assert!(
        line_keys(&raw, &key).await.is_empty(),
        "the empty line stayed"
    );
    store.delete(&key, "waiter-owner").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_key_changed_by_hand_fails_the_take_and_changes_nothing() {
    let url = redis_url();
    let (store, raw) = (connect(&url, |_| {}).await, raw_client(&url).await);
    let key = unique_key("line-by-hand");
    hold(&store, &key, "holder").await;
    let busy = waiter_takes(&store, &key).await;
    assert_eq!(busy, Acquisition::Busy);
    let line = line_keys(&raw, &key).await.remove(1);
    assert!(line.starts_with("verrou:line:"), "{line}");
    let _: () = raw.set(&line, "oops", None, None, false).await.unwrap();
    store.delete(&key, "holder").await.unwrap_err();
    assert!(
        store.exists(&key).await.unwrap(),
        "a failed release deleted the key"
    );
    let _: () = raw.del(&line).await.unwrap();
    store.delete(&key, "holder").await.unwrap();

    let _: () = raw.set(&line, "oops", None, None, false).await.unwrap();
    let error = store
        .save_in_line(&key, "newcomer", Some(HOUR), ghost("newcomer"))
        .await
        .unwrap_err();
    let cause = std::error::Error::source(&error).map(ToString::to_string);
    assert!(cause.unwrap_or_default().contains(&line), "{error:?}");
    assert!(
        !store.exists(&key).await.unwrap(),
        "a failed take took the key"
    );
    let _: () = raw.del(&line).await.unwrap();
}

/// A release with a waiter in line reserves the key for that waiter for the hand-over window:
/// a take from outside the line — the store's own, or the Node.js library's `SET NX PX` —
/// is busy meanwhile; the waiter takes the key; and if it never comes, the key is free for
/// anyone once the window is over (a Node.js process is locked out no longer than that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_reserves_the_key_for_the_front_waiter_for_the_window() {
    use verrou_redis::fred::types::{Expiration, SetOptions};
    let url = redis_url();
    let (store, raw) = (connect(&url, |_| {}).await, raw_client(&url).await);
    let node_take = |key: String| {
        let raw = raw.clone();
        async move {
            let taken: Option<String> = raw
                .set(
                    &key,
                    "node-owner",
                    Some(Expiration::PX(30_000)),
                    Some(SetOptions::NX),
                    false,
                )
                .await
                .unwrap();
            taken.is_some()
        }
    };
    for waiter_comes in [true, false] {
        let key = unique_key("reserved");
        hold(&store, &key, "holder").await;
        let busy = waiter_takes(&store, &key).await;
        assert_eq!(busy, Acquisition::Busy);
        store.delete(&key, "holder").await.unwrap();
        assert!(
            !node_take(key.clone()).await,
            "a Node.js take got a reserved key"
        );
        let newcomer = store.save(&key, "newcomer", Some(HOUR)).await.unwrap();
        assert_eq!(
            newcomer,
            Acquisition::Busy,
            "a plain take got a reserved key"
        );
        assert!(
            !store.exists(&key).await.unwrap(),
            "a reserved key is held by nobody"
        );
        let left: i64 = raw.pttl(&key).await.unwrap();
        let window = i64::try_from(HANDOVER_WINDOW.as_millis()).unwrap();
        assert!(left > 0 && left <= window + 1, "reserved for {left} ms");
        if waiter_comes {
            let taken = waiter_takes(&store, &key).await;
            assert!(matches!(taken, Acquisition::Granted(_)), "{taken:?}");
            let left: i64 = raw.pttl(&key).await.unwrap();
            assert!(
                left > 3_000_000,
                "the waiter's TTL replaced the window: {left} ms"
            );
            store.delete(&key, "waiter-owner").await.unwrap();
            assert!(!store.exists(&key).await.unwrap());
        } else {
            tokio::time::sleep(HANDOVER_WINDOW + Duration::from_millis(50)).await;
            assert!(
                node_take(key.clone()).await,
                "the window is over: a Node.js take gets the key"
            );
            let _: i64 = raw.del(&key).await.unwrap();
        }
    }
}

/// What a reserved key holds is no owner: a take, a release or an extension for it (a lock
/// restored with that owner, by anyone who heard the waiter's id) is refused, and the key
/// stays reserved for the waiter, which then takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_takes_releases_or_extends_a_key_as_its_reservation() {
    let url = redis_url();
    let (store, raw) = (connect(&url, |_| {}).await, raw_client(&url).await);
    let key = unique_key("reservation-as-owner");
    hold(&store, &key, "holder").await;
    assert_eq!(waiter_takes(&store, &key).await, Acquisition::Busy);
    store.delete(&key, "holder").await.unwrap();
    let reservation: String = raw.get(&key).await.unwrap();
    assert_eq!(reservation, "verrou:handover:waiter");
    let taken = store.save(&key, &reservation, Some(HOUR)).await;
    assert!(matches!(taken, Err(Error::InvalidArgument(_))), "{taken:?}");
    let in_line = store
        .save_in_line(&key, &reservation, Some(HOUR), ghost("other"))
        .await;
    assert!(
        matches!(in_line, Err(Error::InvalidArgument(_))),
        "{in_line:?}"
    );
    let extended = store.extend(&key, &reservation, HOUR).await.unwrap();
    assert_eq!(extended, OwnerCheck::NotOwner);
    assert_eq!(
        store.delete(&key, &reservation).await.unwrap(),
        OwnerCheck::NotOwner
    );
    let left: i64 = raw.pttl(&key).await.unwrap();
    let window = i64::try_from(HANDOVER_WINDOW.as_millis()).unwrap();
    assert!(left > 0 && left <= window + 1, "reserved for {left} ms");
    let taken = waiter_takes(&store, &key).await;
    assert!(matches!(taken, Acquisition::Granted(_)), "{taken:?}");
    store.delete(&key, "waiter-owner").await.unwrap();
}

/// A waiter handed the key that leaves the line (it gave up) passes the reservation on to
/// the next waiter, or frees the key if nobody is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_waiter_that_leaves_passes_the_key_on() {
    let url = redis_url();
    let store = connect(&url, |_| {}).await;
    let key = unique_key("reserved-leaves");
    hold(&store, &key, "holder").await;
    for waiter in ["first", "second"] {
        let busy = store
            .save_in_line(&key, waiter, Some(HOUR), ghost(waiter))
            .await
            .unwrap();
        assert_eq!(busy, Acquisition::Busy);
    }
    store.delete(&key, "holder").await.unwrap();
    store.leave_line(&key, "first").await.unwrap();
    let first = store
        .save_in_line(&key, "first", Some(HOUR), ghost("first"))
        .await
        .unwrap();
    assert_eq!(
        first,
        Acquisition::Busy,
        "the key went on to the second waiter"
    );
    store.leave_line(&key, "first").await.unwrap();
    store.leave_line(&key, "second").await.unwrap();
    let taken = store.save(&key, "newcomer", Some(HOUR)).await.unwrap();
    assert!(
        matches!(taken, Acquisition::Granted(_)),
        "nobody left: the key is free: {taken:?}"
    );
    store.delete(&key, "newcomer").await.unwrap();
}
