//! The fault group of the conformance suite: what a store must do when the network between
//! it and its server misbehaves.
//!
//! A store's test file runs it with [`fault_tests!`](crate::fault_tests), giving a
//! constructor of [`FaultyStore`]s: a store whose connections go through a fault injector
//! (the testkit's `FaultProxy`), plus a second store on the same server that talks to it
//! directly, to observe what the server holds.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::sleep;

use super::history::{millis, History};
use super::unique_key;
use crate::{Error, LockFactory, LockStore, Result, Retry, Share};

/// Network faults a test can inject between a store and its server. Each call replaces the
/// previous fault; [`heal`](Self::heal) ends them all.
pub trait FaultInjector: Send + Sync {
    /// Forwards everything again, at once, in both directions.
    fn heal(&self);
    /// Delays everything sent to the server by `to_server` and everything sent back by
    /// `to_client` (order is kept); connections stay up.
    fn set_latency(&self, to_server: Duration, to_client: Duration);
    /// Keeps connections open and accepts new ones, but forwards nothing in either
    /// direction until healed (what was sent meanwhile is delivered then, as TCP would
    /// after a partition).
    fn blackhole(&self);
    /// Closes every open connection at once (both sides see a reset or an end of stream);
    /// new connections are accepted.
    fn cut(&self);
    /// Closes every open connection, and every new one as soon as it is made, until
    /// healed: the server looks down.
    fn refuse(&self);
}

/// What a case of the fault group works on.
pub struct FaultyStore {
    /// The store under test: its connections go through `faults`.
    pub store: Arc<dyn LockStore>,
    /// A store on the same server and table, connected directly (no faults): the observer.
    pub direct: Arc<dyn LockStore>,
    /// The injector between `store` and its server.
    pub faults: Arc<dyn FaultInjector>,
    /// The store's command timeout: the longest any operation of `store` may take.
    pub command_timeout: Duration,
}

/// Scheduling slack on top of a command timeout: a loaded two-core machine running three
/// stores' tests at once can be that late.
const SLACK: Duration = Duration::from_millis(1500);

/// The longest a store may take to work again once the network heals.
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);

/// Writes one `#[test]` per fault case of semaphores and read-write locks, with stores made
/// by `$new_faulty_store` (as for [`fault_tests!`](crate::fault_tests)), for stores that keep
/// them.
#[macro_export]
macro_rules! share_fault_tests {
    ($new_faulty_store:path) => {
        $crate::fault_tests!(@cases $new_faulty_store;
            dropped_share_takes_are_given_back,
            blackholed_share_operations_fail_within_the_command_timeout,
        );
    };
}

/// Writes one `#[test]` per fault case, each on its own Tokio runtime with stores made by
/// `$new_faulty_store`, an `async fn() -> FaultyStore` that starts a new fault injector for
/// every call. Put it in a test file of its own.
#[macro_export]
macro_rules! fault_tests {
    ($new_faulty_store:path) => {
        $crate::fault_tests!(@cases $new_faulty_store;
            blackholed_operations_fail_within_the_command_timeout,
            cut_connections_are_reestablished,
            refused_connections_fail_fast_then_recover,
            dropped_acquire_on_the_wire_is_given_back,
            futures_dropped_at_any_point_leave_no_orphan,
            a_grant_arriving_after_its_ttl_is_not_acquired,
            slow_network_keeps_every_promise,
            contenders_under_faults_keep_a_clean_history,
            a_waiter_cut_off_in_line_does_not_hold_up_the_others,
        );
    };
    (@cases $new_faulty_store:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::run_case($crate::conformance::$case($new_faulty_store));
            }
        )*
    };
}

macro_rules! fault_case {
    ($(#[$doc:meta])* $name:ident($new_faulty:ident) $body:block) => {
        $(#[$doc])*
        pub async fn $name<F, Fut>($new_faulty: F)
        where
            F: Fn() -> Fut,
            Fut: Future<Output = FaultyStore>,
        $body
    };
}

/// Whether `store` reports `key` free within `limit`, asking every 20 ms (failed calls
/// count as "not yet").
async fn freed_within(store: &dyn LockStore, key: &str, limit: Duration) -> bool {
    let started = Instant::now();
    loop {
        if matches!(store.exists(key).await, Ok(false)) {
            return true;
        }
        if started.elapsed() >= limit {
            return false;
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// How long after now `store` answers again (an `exists` that succeeds), asking every
/// 20 ms; panics past [`RECOVERY_LIMIT`].
async fn recovery_time(store: &dyn LockStore, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        if store.exists("verrou-faults:probe").await.is_ok() {
            let took = started.elapsed();
            println!(
                "{what}: the store answered again {:.0} ms later",
                millis(took)
            );
            return took;
        }
        assert!(
            started.elapsed() < RECOVERY_LIMIT,
            "{what}: the store did not answer again within {RECOVERY_LIMIT:?}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `operation`, which must fail with [`Error::Storage`] within the command timeout
/// (plus [`SLACK`]); reports what it did otherwise.
async fn fails_in_time<T: std::fmt::Debug>(
    faulty: &FaultyStore,
    what: &str,
    operation: impl Future<Output = Result<T>>,
) {
    let limit = faulty.command_timeout + SLACK;
    let started = Instant::now();
    let outcome = tokio::time::timeout(limit * 2, operation).await;
    let took = started.elapsed();
    match outcome {
        Ok(Err(Error::Storage { .. })) if took <= limit => {}
        Ok(other) => {
            panic!("{what}: expected Error::Storage within {limit:?}, got {other:?} after {took:?}")
        }
        Err(_) => panic!("{what}: still running after {:?}", limit * 2),
    }
}

/// Takes and releases `lock` once, so that its store is connected (a store may connect in
/// the background) and its take and release are prepared (a statement, a script) before a
/// case injects latency that only the operation under test should meet.
async fn warm_up(lock: &crate::Lock) {
    assert!(
        lock.acquire_immediately().await.unwrap(),
        "warming up on a free key"
    );
    lock.release().await.unwrap();
}

fn quick_factory(store: &Arc<dyn LockStore>) -> LockFactory {
    LockFactory::from_shared(Arc::clone(store))
        .with_retry(Retry::new().delay(50))
        .expect("a valid retry policy")
}

fault_case! {
    /// With the connection blackholed, every operation fails with `Error::Storage` within
    /// the command timeout (none hangs); once healed, the same store works again on its own,
    /// and a take that failed on the way leaves no grant behind.
    blackholed_operations_fail_within_the_command_timeout(new_faulty) {
        let faulty = new_faulty().await;
        let factory = quick_factory(&faulty.store);
        let key = unique_key("blackhole");
        let lock = factory.create_lock(&key).unwrap();
        assert!(lock.acquire_immediately().await.unwrap(), "healthy at first");
        let other = factory.create_lock(unique_key("blackhole-other")).unwrap();
        faulty.faults.blackhole();
        fails_in_time(&faulty, "acquire_immediately", other.acquire_immediately()).await;
        fails_in_time(&faulty, "acquire with retries", other.acquire_with(Retry::new().timeout("10s"))).await;
        fails_in_time(&faulty, "extend", lock.extend()).await;
        fails_in_time(&faulty, "is_locked", lock.is_locked()).await;
        fails_in_time(&faulty, "release", lock.release()).await;
        fails_in_time(&faulty, "force_release", other.force_release()).await;
        faulty.faults.heal();
        recovery_time(faulty.store.as_ref(), "after a blackhole").await;
        // The release sent into the blackhole may have arrived after all: either way the
        // lock is ours to release or already free.
        match lock.release().await {
            Ok(()) | Err(Error::NotOwned { .. }) => {}
            Err(error) => panic!("release after healing: {error}"),
        }
        assert!(freed_within(faulty.direct.as_ref(), lock.key(), SLACK).await, "released");
        assert!(
            freed_within(faulty.direct.as_ref(), other.key(), faulty.command_timeout + SLACK).await,
            "a take that failed in the blackhole left a grant nobody owns"
        );
    }
}

fault_case! {
    /// When every connection is cut, calls fail (never hang) until the store has
    /// reconnected on its own; a lock held across the cut can still be released.
    cut_connections_are_reestablished(new_faulty) {
        let faulty = new_faulty().await;
        let factory = quick_factory(&faulty.store);
        let lock = factory.create_lock(unique_key("cut")).unwrap();
        assert!(lock.acquire_immediately().await.unwrap());
        faulty.faults.cut();
        let limit = faulty.command_timeout + SLACK;
        let started = Instant::now();
        let outcome = tokio::time::timeout(limit * 2, lock.is_locked()).await;
        assert!(started.elapsed() <= limit, "a call after the cut took {:?}: {outcome:?}", started.elapsed());
        recovery_time(faulty.store.as_ref(), "after a cut").await;
        assert!(lock.is_locked().await.unwrap(), "the server still holds the lock");
        lock.release().await.unwrap();
        assert!(freed_within(faulty.direct.as_ref(), lock.key(), SLACK).await);
    }
}

fault_case! {
    /// With the server unreachable (connections cut and new ones refused), every call fails
    /// within the command timeout; when it is reachable again, the store recovers.
    refused_connections_fail_fast_then_recover(new_faulty) {
        let faulty = new_faulty().await;
        let factory = quick_factory(&faulty.store);
        let lock = factory.create_lock(unique_key("refused")).unwrap();
        faulty.faults.refuse();
        fails_in_time(&faulty, "acquire_immediately", lock.acquire_immediately()).await;
        fails_in_time(&faulty, "is_locked", lock.is_locked()).await;
        fails_in_time(&faulty, "acquire with retries", lock.acquire_with(Retry::new().timeout("10s"))).await;
        faulty.faults.heal();
        recovery_time(faulty.store.as_ref(), "after refused connections").await;
        assert!(lock.acquire_immediately().await.unwrap());
        lock.release().await.unwrap();
        assert!(
            freed_within(faulty.direct.as_ref(), lock.key(), faulty.command_timeout + SLACK).await,
            "a take that failed while refused left a grant nobody owns"
        );
    }
}

fault_case! {
    /// An `acquire` dropped while its take is on the wire (applied on the server, answer on
    /// its way back) does not leave the key held for the TTL: the grant is given back
    /// within about a round trip.
    dropped_acquire_on_the_wire_is_given_back(new_faulty) {
        let faulty = new_faulty().await;
        let factory = quick_factory(&faulty.store);
        let key = unique_key("dropped-take");
        let lock = factory.create_lock_with_ttl(&key, "30s").unwrap();
        warm_up(&lock).await;
        let back = faulty.command_timeout / 2;
        faulty.faults.set_latency(Duration::ZERO, back);
        let dropped = tokio::time::timeout(back / 2, lock.acquire()).await;
        assert!(dropped.is_err(), "the answer cannot be back yet: {dropped:?}");
        // The take went out at once: the server holds the key for 30 s.
        let started = Instant::now();
        let mut seen_held = false;
        while !seen_held && started.elapsed() < back {
            seen_held = faulty.direct.exists(&key).await.unwrap();
        }
        assert!(seen_held, "the dropped take never reached the server; the test proves nothing");
        faulty.faults.heal();
        assert!(
            freed_within(faulty.direct.as_ref(), &key, faulty.command_timeout + SLACK).await,
            "the grant of a dropped acquire was left to its 30 s TTL"
        );
        assert!(lock.acquire_immediately().await.unwrap(), "the lock works after a drop");
        lock.release().await.unwrap();
    }
}

fault_case! {
    /// `acquire`, `acquire_guard`, `run` and `run_auto_extend` futures dropped at any point
    /// (before, during and after the take's round trip, and during the work) never leave a
    /// grant nobody owns for longer than a command timeout.
    futures_dropped_at_any_point_leave_no_orphan(new_faulty) {
        let faulty = new_faulty().await;
        let factory = quick_factory(&faulty.store);
        let key = unique_key("dropped-anywhere");
        let one_way = Duration::from_millis(40);
        faulty.faults.set_latency(one_way, one_way);
        for step in 0..12u32 {
            let after = one_way * step / 4;
            let lock = factory.create_lock_with_ttl(&key, "30s").unwrap();
            let dropped = match step % 4 {
                0 => tokio::time::timeout(after, async { lock.acquire().await.map(|_| ()) }).await,
                1 => tokio::time::timeout(after, async { lock.acquire_guard().await.map(|_| ()) }).await,
                2 => tokio::time::timeout(after, async {
                    lock.run(|| sleep(Duration::from_secs(60))).await.map(|_| ())
                }).await,
                _ => tokio::time::timeout(after, async {
                    lock.run_auto_extend(|_| sleep(Duration::from_secs(60))).await.map(|_| ())
                }).await,
            };
            // Whatever got through (an acquire that finished holds the lock, knowingly).
            if let Ok(Ok(())) = dropped {
                if step % 4 == 0 {
                    let _ = lock.release().await;
                }
            }
            assert!(
                freed_within(faulty.direct.as_ref(), &key, faulty.command_timeout + SLACK).await,
                "step {step}: a future dropped after {after:?} left the key held"
            );
        }
    }
}

fault_case! {
    /// A grant whose answer arrives after the lock's TTL has run out (round trip longer than
    /// the TTL) is not reported as acquired, and a competitor gets the key.
    a_grant_arriving_after_its_ttl_is_not_acquired(new_faulty) {
        let faulty = new_faulty().await;
        let factory = quick_factory(&faulty.store);
        let key = unique_key("late-grant");
        // A take is at least one round trip (two one-way delays), and may be a few (a
        // statement prepared on a fresh connection): the TTL runs out on the way, while the
        // whole take stays well within the command timeout.
        let one_way = faulty.command_timeout / 8;
        let ttl = one_way * 3 / 2;
        let lock = factory.create_lock_with_ttl(&key, ttl).unwrap();
        // Connected and warm first (a store may still be connecting in the background, and
        // a first take may prepare its statement or load its script): only the take below
        // should meet the latency.
        warm_up(&factory.create_lock(unique_key("late-grant-warm-up")).unwrap()).await;
        faulty.faults.set_latency(one_way, one_way);
        let acquired = lock.acquire_immediately().await;
        assert!(
            matches!(acquired, Ok(false)),
            "a grant that came back {:?} after a TTL of {ttl:?} was reported as {acquired:?}",
            one_way * 2
        );
        assert_eq!(lock.remaining_time(), None, "not held");
        faulty.faults.heal();
        let competitor = quick_factory(&faulty.direct).create_lock(&key).unwrap();
        assert!(
            competitor.acquire_with(Retry::new().timeout(ttl + SLACK)).await.unwrap(),
            "the competitor must get the key"
        );
        competitor.release().await.unwrap();
    }
}

fault_case! {
    /// On a slow network (latency each way, well within the command timeout) the lock works:
    /// acquire, extend, serialize and release, with fencing tokens still increasing.
    slow_network_keeps_every_promise(new_faulty) {
        let faulty = new_faulty().await;
        let factory = quick_factory(&faulty.store);
        let key = unique_key("slow");
        let one_way = (faulty.command_timeout / 10).max(Duration::from_millis(20));
        faulty.faults.set_latency(one_way, one_way);
        let mut last_token = 0;
        for _ in 0..3 {
            let lock = factory.create_lock_with_ttl(&key, "10s").unwrap();
            assert!(lock.acquire().await.unwrap());
            let token = lock.fencing_token().unwrap_or(last_token + 1);
            assert!(token > last_token, "token {token} after {last_token}");
            last_token = token;
            lock.extend().await.unwrap();
            let restored = factory.restore_lock(lock.serialize()).unwrap();
            restored.release().await.unwrap();
            assert!(matches!(lock.release().await, Err(Error::NotOwned { .. })));
        }
        faulty.faults.heal();
    }
}

fault_case! {
    /// Contenders on the faulty store and on a direct one fight over two keys while the
    /// network between the faulty store and its server is slowed, cut and blackholed, and
    /// futures are dropped at random: the history shows no overlap and no fencing token
    /// going back, and no grant is left that nobody owns.
    contenders_under_faults_keep_a_clean_history(new_faulty) {
        let faulty = new_faulty().await;
        let history = Arc::new(History::new());
        let keys = [unique_key("chaos-a"), unique_key("chaos-b")];
        let run_for = Duration::from_secs(4);
        let stop_at = Instant::now() + run_for;
        let mut contenders = Vec::new();
        for index in 0..5 {
            let store = if index < 3 { &faulty.store } else { &faulty.direct };
            let factory = quick_factory(store);
            let name = format!("{}-{index}", if index < 3 { "faulty" } else { "direct" });
            let keys = keys.clone();
            let history = Arc::clone(&history);
            contenders.push(tokio::spawn(contend(factory, name, keys, history, stop_at)));
        }
        let chaos = {
            let faults = Arc::clone(&faulty.faults);
            tokio::spawn(async move {
                let mut round = 0u32;
                while Instant::now() < stop_at {
                    match round % 5 {
                        0 => faults.set_latency(
                            Duration::from_millis(rand::random_range(0..60)),
                            Duration::from_millis(rand::random_range(0..60)),
                        ),
                        1 => faults.cut(),
                        2 => faults.blackhole(),
                        _ => faults.heal(),
                    }
                    round += 1;
                    sleep(Duration::from_millis(rand::random_range(150..400))).await;
                }
                faults.heal();
            })
        };
        chaos.await.expect("the chaos task");
        for contender in contenders {
            contender.await.expect("a contender");
        }
        let holds = history.assert_clean();
        println!("{holds} holds checked: no overlap, no token regression");
        assert!(holds > 0, "nobody ever got a lock: the case proves nothing");
        for key in &keys {
            assert!(
                freed_within(faulty.direct.as_ref(), key, faulty.command_timeout + SLACK).await,
                "{key} is held though every contender let go: a grant nobody owns"
            );
        }
    }
}

/// One contender of the chaos case: until `stop_at`, takes one of `keys` (a third of the
/// time dropping the attempt at a random moment), holds it a few milliseconds, records the
/// hold, and releases it (retrying until the store answers).
async fn contend(
    factory: LockFactory,
    name: String,
    keys: [String; 2],
    history: Arc<History>,
    stop_at: Instant,
) {
    while Instant::now() < stop_at {
        let key = &keys[rand::random_range(0..keys.len())];
        let lock = factory
            .create_lock_with_ttl(key, "30s")
            .expect("a valid lock");
        let attempt = lock.acquire_with(Retry::new().timeout("1s"));
        let acquired = if rand::random_ratio(1, 3) {
            let patience = Duration::from_millis(rand::random_range(0..150));
            tokio::time::timeout(patience, attempt)
                .await
                .unwrap_or(Ok(false))
        } else {
            attempt.await
        };
        match acquired {
            Ok(true) => {
                let hold = history.granted(&lock, name.as_str());
                sleep(Duration::from_millis(rand::random_range(0..20))).await;
                history.released(hold);
                let started = Instant::now();
                while let Err(Error::Storage { .. }) = lock.release().await {
                    assert!(
                        started.elapsed() < RECOVERY_LIMIT,
                        "{name} could not release"
                    );
                    sleep(Duration::from_millis(50)).await;
                }
            }
            Ok(false) => {}
            Err(_) => sleep(Duration::from_millis(20)).await,
        }
    }
}

fault_case! {
    /// A waiter whose connection is blackholed while it is in line (a partitioned or frozen
    /// process) is handed the key by a release and cannot take it: the waiter behind it,
    /// on a healthy connection, gets the key within a hand-over window and one retry delay
    /// of the release.
    a_waiter_cut_off_in_line_does_not_hold_up_the_others(new_faulty) {
        let faulty = new_faulty().await;
        let key = unique_key("cut-off-waiter");
        let delay = Duration::from_millis(200);
        let direct = LockFactory::from_shared(Arc::clone(&faulty.direct))
            .with_retry(Retry::new().delay(delay).timeout("30s"))
            .unwrap();
        let holder = direct.create_lock(&key).unwrap();
        assert!(holder.acquire_immediately().await.unwrap());
        let cut_off = LockFactory::from_shared(Arc::clone(&faulty.store))
            .with_retry(Retry::new().delay(delay).timeout("30s"))
            .unwrap()
            .create_lock(&key)
            .unwrap();
        let stuck = tokio::spawn(async move { cut_off.acquire().await });
        sleep(Duration::from_millis(150)).await;
        let next = direct.create_lock(&key).unwrap();
        let waiting = tokio::spawn(async move {
            let acquired = next.acquire().await.unwrap();
            (acquired, Instant::now(), next)
        });
        sleep(Duration::from_millis(150)).await;
        faulty.faults.blackhole();
        let released = Instant::now();
        holder.release().await.unwrap();
        let (acquired, at, next) = waiting.await.unwrap();
        assert!(acquired);
        let late = at.duration_since(released);
        let limit = crate::HANDOVER_WINDOW + delay + SLACK;
        assert!(late <= limit, "the healthy waiter got the key {late:?} after the release (limit {limit:?})");
        next.release().await.unwrap();
        stuck.abort();
        faulty.faults.heal();
    }
}

/// A permit of 2, a reader and a writer, on three keys, made by `factory` with a 30 s TTL.
fn one_of_each_share(factory: &LockFactory, name: &str) -> Vec<(crate::Lock, Share)> {
    let permit = factory
        .create_semaphore_with_ttl(unique_key(&format!("{name}-permit")), 2, "30s")
        .unwrap();
    let rw = |side: &str| {
        factory
            .create_rw_lock_with_ttl(unique_key(&format!("{name}-{side}")), "30s")
            .unwrap()
    };
    vec![
        (permit, Share::Permit { limit: 2 }),
        (rw("read").read().unwrap(), Share::Read),
        (rw("write").write().unwrap(), Share::Write),
    ]
}

/// Whether `store` counts no holder of `share` of `key` within `limit`.
async fn shares_freed_within(
    store: &dyn LockStore,
    key: &str,
    share: Share,
    limit: Duration,
) -> bool {
    let started = Instant::now();
    loop {
        if matches!(store.count_shares(key, share).await, Ok(0)) {
            return true;
        }
        if started.elapsed() >= limit {
            return false;
        }
        sleep(Duration::from_millis(20)).await;
    }
}

fault_case! {
    /// A permit, read or write take whose `acquire` is dropped while its answer is on the
    /// wire is given back once the answer arrives, as a lock's is.
    dropped_share_takes_are_given_back(new_faulty) {
        let faulty = new_faulty().await;
        let factory = quick_factory(&faulty.store);
        let back = faulty.command_timeout / 2;
        for (handle, share) in one_of_each_share(&factory, "dropped-share") {
            // Connected and warm first (see the late-grant case): only this take should
            // meet the latency.
            warm_up(&handle).await;
            faulty.faults.set_latency(Duration::ZERO, back);
            let dropped = tokio::time::timeout(back / 2, handle.acquire()).await;
            assert!(dropped.is_err(), "{share:?}: the answer cannot be back yet");
            let started = Instant::now();
            let mut seen_held = false;
            while !seen_held && started.elapsed() < back {
                seen_held = faulty.direct.count_shares(handle.key(), share).await.unwrap() > 0;
            }
            assert!(seen_held, "{share:?}: the dropped take never reached the server");
            faulty.faults.heal();
            let limit = faulty.command_timeout + SLACK;
            assert!(
                shares_freed_within(faulty.direct.as_ref(), handle.key(), share, limit).await,
                "{share:?}: the grant of a dropped acquire was left to its 30 s TTL"
            );
            assert!(handle.acquire_immediately().await.unwrap(), "{share:?} works after a drop");
            handle.release().await.unwrap();
        }
    }
}

fault_case! {
    /// With the connection blackholed, every share operation fails with `Error::Storage`
    /// within the command timeout; once healed, the store works again and takes that failed
    /// on the way leave nothing held.
    blackholed_share_operations_fail_within_the_command_timeout(new_faulty) {
        let faulty = new_faulty().await;
        let factory = quick_factory(&faulty.store);
        for (handle, share) in one_of_each_share(&factory, "blackholed-share") {
            assert!(handle.acquire_immediately().await.unwrap(), "{share:?}: healthy at first");
            faulty.faults.blackhole();
            fails_in_time(&faulty, "extend", handle.extend()).await;
            fails_in_time(&faulty, "holders", handle.holders()).await;
            fails_in_time(&faulty, "release", handle.release()).await;
            fails_in_time(&faulty, "acquire", handle.acquire_with(Retry::new().timeout("10s"))).await;
            fails_in_time(&faulty, "force_release", handle.force_release()).await;
            faulty.faults.heal();
            recovery_time(faulty.store.as_ref(), "after a blackhole").await;
            match handle.release().await {
                Ok(()) | Err(Error::NotOwned { .. }) => {}
                Err(error) => panic!("{share:?}: release after healing: {error}"),
            }
            let limit = faulty.command_timeout + SLACK;
            assert!(
                shares_freed_within(faulty.direct.as_ref(), handle.key(), share, limit).await,
                "{share:?}: something taken in the blackhole stayed held"
            );
        }
    }
}
