//! The waiting-line group of the conformance suite: what a store that keeps waiting lines
//! (see [`crate::waiting`]) must do. A store whose waiters simply poll does not run it.
//!
//! Stores made by one constructor stand for separate processes: the line must serve waiters
//! in arrival order whichever store instance they use.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::time::sleep;

use super::{factory_with_delay, unique_key, woken_by_release, CountingStore, NEVER, PROMPTLY};
use crate::{
    Acquisition, LockFactory, LockStore, Place, Retry, Share, HANDOVER_WINDOW, RECHECK_EVERY,
};

/// Writes one `#[test]` per waiting-line case, each on its own Tokio runtime with stores
/// made by `$new_store` (as for [`conformance_tests!`](crate::conformance_tests)).
#[macro_export]
macro_rules! line_tests {
    ($new_store:path) => {
        $crate::conformance_tests!(@cases $new_store;
            waiters_are_served_in_arrival_order,
            no_take_overtakes_a_waiter,
            a_release_wakes_the_front_waiter_alone,
            a_release_wakes_the_front_waiter_alone_within_one_process,
            a_place_lapses_with_its_lease,
            a_woken_waiter_that_is_gone_delays_the_next_by_a_window,
            waiters_gone_in_a_row_delay_the_next_by_a_window_each,
            a_waiter_that_gives_up_leaves_the_line,
            a_dropped_waiting_acquire_leaves_the_line,
            a_lock_that_gave_up_keeps_its_next_place,
            a_front_that_leaves_after_its_window_passes_the_key_on,
            a_holder_whose_ttl_runs_out_lets_its_waiter_in,
            an_expired_permit_lets_its_waiter_in,
            an_expired_writer_lets_its_waiting_reader_in,
            a_front_gone_behind_an_expired_holder_is_passed_after_a_window,
            a_front_gone_behind_an_expired_permit_is_passed_after_a_window,
            a_front_gone_behind_an_expired_writer_is_passed_after_a_window,
        );
    };
}

/// A place that outlasts any case.
fn place(waiter: &str) -> Place<'_> {
    Place {
        waiter,
        lease: Duration::from_secs(60),
    }
}

case! {
    /// Four waiters on four store instances, arriving 50 ms apart while the key is held,
    /// get it in arrival order, each woken by the release before it (their retry delay is an
    /// hour).
    waiters_are_served_in_arrival_order(new_store) {
        let key = unique_key("arrival");
        let holder = LockFactory::from_shared(new_store().await).create_lock(&key).unwrap();
        assert!(holder.acquire().await.unwrap());
        let served = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for arrival in 0..4 {
            let lock = factory_with_delay(&new_store, NEVER).await.create_lock(&key).unwrap();
            let served = Arc::clone(&served);
            waiters.push(tokio::spawn(async move {
                assert!(lock.acquire().await.unwrap(), "waiter {arrival} gave up");
                served.lock().unwrap().push(arrival);
                sleep(Duration::from_millis(5)).await;
                lock.release().await.unwrap();
            }));
            sleep(Duration::from_millis(50)).await;
        }
        holder.release().await.unwrap();
        for waiter in waiters {
            tokio::time::timeout(PROMPTLY * 4, waiter)
                .await
                .expect("every waiter is woken in turn")
                .unwrap();
        }
        assert_eq!(*served.lock().unwrap(), [0, 1, 2, 3]);
    }
}

case! {
    /// Once a waiter is in line and the key is released, neither a plain take nor a take in
    /// line by a newcomer (from another store instance) gets it; the waiter does. Meanwhile
    /// nobody holds the key (a store that reserves it for the waiter does not count that).
    no_take_overtakes_a_waiter(new_store) {
        let key = unique_key("overtake");
        let (store, newcomer) = (new_store().await, new_store().await);
        let ttl = Some(Duration::from_secs(30));
        assert!(matches!(store.save(&key, "holder", ttl).await.unwrap(), Acquisition::Granted(_)));
        let busy = store.save_in_line(&key, "waiter-owner", ttl, place("waiter")).await.unwrap();
        assert_eq!(busy, Acquisition::Busy);
        store.delete(&key, "holder").await.unwrap();
        assert!(!newcomer.exists(&key).await.unwrap(), "a key handed over is held by nobody yet");
        assert_eq!(newcomer.save(&key, "newcomer", ttl).await.unwrap(), Acquisition::Busy, "a plain take overtook");
        let in_line = newcomer.save_in_line(&key, "newcomer", ttl, place("newcomer")).await.unwrap();
        assert_eq!(in_line, Acquisition::Busy, "a newcomer in line overtook");
        let front = store.save_in_line(&key, "waiter-owner", ttl, place("waiter")).await.unwrap();
        assert!(matches!(front, Acquisition::Granted(_)), "the front waiter takes: {front:?}");
        store.delete(&key, "waiter-owner").await.unwrap();
        let next = newcomer.save_in_line(&key, "newcomer", ttl, place("newcomer")).await.unwrap();
        assert!(matches!(next, Acquisition::Granted(_)), "then the next: {next:?}");
        newcomer.delete(&key, "newcomer").await.unwrap();
    }
}

case! {
    /// Four waiters on four store instances with an hour-long retry delay: each release
    /// hands the key to the next, and no waiter ever asks in vain after joining the line.
    a_release_wakes_the_front_waiter_alone(new_store) {
        waiters_take_turns_woken_alone(&new_store, Instances::OnePerWaiter).await;
    }
}

case! {
    /// The same with the four waiters on one store instance (one process): its release
    /// wakes the waiter it names, not every waiter of the key in the process.
    a_release_wakes_the_front_waiter_alone_within_one_process(new_store) {
        waiters_take_turns_woken_alone(&new_store, Instances::Shared).await;
    }
}

/// The asks in vain allowed in [`waiters_take_turns_woken_alone`]'s 20 turns: a wake can
/// race with a waiter's own take, and a hand-over can reach a waiter twice — from its own
/// process's release at once, and from the store's announcement later (Redis: the message on
/// the key's channel, which the releasing process hears too) — and on a loaded machine the
/// late one can come after the waiter has had its turn and is back in line (seen: 3 in a CI
/// run). A release that woke every waiter of the key would cost about two a turn, some 40.
const STRAY_ASKS: usize = 6;

/// Which store instances the waiters of [`waiters_take_turns_woken_alone`] use.
enum Instances {
    /// Each its own, as waiters in separate processes.
    OnePerWaiter,
    /// One for all, as waiters in one process.
    Shared,
}

/// Four waiters with an hour-long retry delay take five turns each behind a holder: each
/// release hands the key to the next waiter, which alone asks (at most [`STRAY_ASKS`] asks in
/// vain in all), all 20 turns within [`PROMPTLY`].
async fn waiters_take_turns_woken_alone<F, Fut>(new_store: &F, instances: Instances)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn LockStore>>,
{
    let key = unique_key("front-alone");
    let holder = LockFactory::from_shared(new_store().await)
        .create_lock(&key)
        .unwrap();
    assert!(holder.acquire().await.unwrap());
    let shared = match instances {
        Instances::OnePerWaiter => None,
        Instances::Shared => Some(Arc::new(CountingStore::new(new_store().await))),
    };
    let mut probes: Vec<Arc<CountingStore>> = shared.iter().cloned().collect();
    let mut waiters = Vec::new();
    for _ in 0..4 {
        let probe = match &shared {
            Some(shared) => Arc::clone(shared),
            None => {
                let own = Arc::new(CountingStore::new(new_store().await));
                probes.push(Arc::clone(&own));
                own
            }
        };
        let factory = LockFactory::from_shared(probe)
            .with_retry(Retry::new().delay(NEVER).timeout("30s"))
            .unwrap();
        let lock = factory.create_lock(&key).unwrap();
        waiters.push(tokio::spawn(async move {
            for _ in 0..5 {
                assert!(lock.acquire().await.unwrap());
                sleep(Duration::from_millis(2)).await;
                lock.release().await.unwrap();
            }
        }));
    }
    sleep(Duration::from_millis(100)).await;
    holder.release().await.unwrap();
    // Woken by the releases, 20 turns take a few milliseconds each; woken only by the
    // store's look at waited-for keys every `RECHECK_EVERY`, about half of that each.
    for waiter in waiters {
        tokio::time::timeout(PROMPTLY, waiter)
            .await
            .expect("the waiters take turns, each woken by the release before")
            .unwrap();
    }
    let in_vain: usize = probes
        .iter()
        .map(|probe| probe.in_vain.load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    assert!(
        in_vain <= STRAY_ASKS,
        "{in_vain} asks in vain for 20 turns (at most {STRAY_ASKS})"
    );
}

case! {
    /// A place lasts its lease: a waiter that stops asking (a crashed process) no longer
    /// holds up the line once its lease is over.
    a_place_lapses_with_its_lease(new_store) {
        let key = unique_key("lapse");
        let store = new_store().await;
        let ttl = Some(Duration::from_secs(30));
        assert!(matches!(store.save(&key, "holder", ttl).await.unwrap(), Acquisition::Granted(_)));
        let short = Place { waiter: "crashed", lease: Duration::from_millis(300) };
        store.save_in_line(&key, "crashed-owner", ttl, short).await.unwrap();
        store.force_delete(&key).await.unwrap();
        // Hand-over cut the crashed waiter's place to the window at most.
        sleep(HANDOVER_WINDOW + Duration::from_millis(100)).await;
        let other = new_store().await;
        let taken = other.save(&key, "next", ttl).await.unwrap();
        assert!(matches!(taken, Acquisition::Granted(_)), "the lapsed place still blocks: {taken:?}");
        other.delete(&key, "next").await.unwrap();
        // Without a hand-over, the lease alone ends it.
        assert!(matches!(store.save(&key, "holder", ttl).await.unwrap(), Acquisition::Granted(_)));
        store.save_in_line(&key, "crashed-owner", ttl, short).await.unwrap();
        sleep(Duration::from_millis(400)).await;
        store.delete(&key, "holder").await.unwrap();
        let taken = other.save(&key, "next", ttl).await.unwrap();
        assert!(matches!(taken, Acquisition::Granted(_)), "a lapsed place blocks: {taken:?}");
        other.delete(&key, "next").await.unwrap();
    }
}

/// How long after the release of a held key with the waiters `gone` in line (their
/// processes died: they never ask again) the waiter behind them, on another store instance
/// and asking every `delay`, gets the key; `None` if it gave up (after 20 s). Every take is
/// of `share` (`None`: the lock of the key).
async fn delay_behind_gone_waiters<F, Fut>(
    new_store: &F,
    gone: &[&str],
    delay: Duration,
    share: Option<Share>,
) -> Option<Duration>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn LockStore>>,
{
    let key = unique_key("gone");
    let store = new_store().await;
    let taken = take(&*store, &key, "holder", share, None).await;
    assert!(matches!(taken, Acquisition::Granted(_)), "{taken:?}");
    for waiter in gone {
        take(&*store, &key, "gone-owner", share, Some(place(waiter))).await;
    }
    let factory = LockFactory::from_shared(new_store().await)
        .with_retry(Retry::new().delay(delay).timeout("20s"))
        .unwrap();
    let next = match share {
        None => factory.create_lock(&key),
        Some(Share::Permit { limit }) => factory.create_semaphore(&key, limit),
        Some(Share::Read) => factory.create_rw_lock(&key).and_then(|rw| rw.read()),
        Some(_) => factory.create_rw_lock(&key).and_then(|rw| rw.write()),
    }
    .unwrap();
    let waiting = tokio::spawn(async move {
        let acquired = next.acquire().await.unwrap();
        (acquired, Instant::now(), next)
    });
    sleep(Duration::from_millis(100)).await;
    let released = Instant::now();
    match share {
        None => store.delete(&key, "holder").await.unwrap(),
        Some(share) => store.delete_share(&key, "holder", share).await.unwrap(),
    };
    let (acquired, at, next) = waiting.await.unwrap();
    if acquired {
        next.release().await.unwrap();
    }
    acquired.then(|| at.duration_since(released))
}

/// Three waiters of `share` (`None`: the lock) in line that are gone, one behind the other,
/// delay the waiter behind them by at most a hand-over window and one retry delay each.
pub(super) async fn gone_in_a_row_delay_the_next_by_a_window_each<F, Fut>(
    new_store: &F,
    share: Option<Share>,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn LockStore>>,
{
    let delay = Duration::from_millis(200);
    let late =
        delay_behind_gone_waiters(new_store, &["gone-1", "gone-2", "gone-3"], delay, share).await;
    let limit = (HANDOVER_WINDOW + delay) * 3 + Duration::from_millis(400);
    assert!(
        late.is_some_and(|late| late <= limit),
        "the next waiter got the key {late:?} after the release (limit {limit:?})"
    );
}

/// A take of `share` of `key` (`None`: its lock) for `owner`, in line with `place` if given.
async fn take(
    store: &dyn LockStore,
    key: &str,
    owner: &str,
    share: Option<Share>,
    place: Option<Place<'_>>,
) -> Acquisition {
    let ttl = Some(Duration::from_secs(30));
    match (share, place) {
        (None, None) => store.save(key, owner, ttl).await,
        (None, Some(place)) => store.save_in_line(key, owner, ttl, place).await,
        (Some(share), place) => store.save_share(key, owner, ttl, share, place).await,
    }
    .unwrap()
}

case! {
    /// A waiter in line that is gone (its process died: it never asks again) delays the
    /// waiter behind it by at most a hand-over window and one retry delay after the release.
    a_woken_waiter_that_is_gone_delays_the_next_by_a_window(new_store) {
        let delay = Duration::from_millis(200);
        let late = delay_behind_gone_waiters(&new_store, &["gone"], delay, None).await;
        let limit = HANDOVER_WINDOW + delay + Duration::from_millis(400);
        assert!(late.is_some_and(|late| late <= limit), "the next waiter got the key {late:?} after the release (limit {limit:?})");
    }
}

case! {
    /// Three waiters in line that are gone, one behind the other, delay the waiter behind
    /// them by at most a hand-over window and one retry delay each: a take refused only
    /// because of the line hands the free key to the front waiter, as a release does, so
    /// that a gone front is passed after its window, not its whole lease (a minute here).
    waiters_gone_in_a_row_delay_the_next_by_a_window_each(new_store) {
        gone_in_a_row_delay_the_next_by_a_window_each(&new_store, None).await;
    }
}

case! {
    /// A waiter that gives up (its timeout) leaves the line at once: the waiter behind it is
    /// woken by the next release, not by its hour-long retry delay.
    a_waiter_that_gives_up_leaves_the_line(new_store) {
        let key = unique_key("give-up");
        let holder = LockFactory::from_shared(new_store().await).create_lock(&key).unwrap();
        assert!(holder.acquire().await.unwrap());
        let probe = Arc::new(CountingStore::new(new_store().await));
        let impatient = LockFactory::from_shared(Arc::clone(&probe) as Arc<dyn LockStore>)
            .create_lock(&key)
            .unwrap();
        let gave_up = tokio::spawn(async move {
            impatient.acquire_with(Retry::new().delay(NEVER).timeout("300ms")).await.unwrap()
        });
        sleep(Duration::from_millis(50)).await;
        assert!(!gave_up.await.unwrap(), "the impatient waiter gave up");
        probe.left_a_line("the impatient waiter gave up").await;
        let patient = factory_with_delay(&new_store, NEVER).await.create_lock(&key).unwrap();
        woken_by_release(patient, &holder, "the waiter ahead gave up").await;
    }
}

case! {
    /// A waiting `acquire` whose future is dropped (a `select!`, a cancelled task) leaves
    /// the line at once too.
    a_dropped_waiting_acquire_leaves_the_line(new_store) {
        let key = unique_key("dropped-waiter");
        let holder = LockFactory::from_shared(new_store().await).create_lock(&key).unwrap();
        assert!(holder.acquire().await.unwrap());
        let probe = Arc::new(CountingStore::new(new_store().await));
        let dropped = LockFactory::from_shared(Arc::clone(&probe) as Arc<dyn LockStore>)
            .with_retry(Retry::new().delay(NEVER))
            .unwrap()
            .create_lock(&key)
            .unwrap();
        let cancelled = tokio::time::timeout(Duration::from_millis(200), dropped.acquire()).await;
        assert!(cancelled.is_err(), "the key is held: the acquire was still waiting");
        probe.left_a_line("the waiting acquire was dropped").await;
        let patient = factory_with_delay(&new_store, NEVER).await.create_lock(&key).unwrap();
        woken_by_release(patient, &holder, "the waiter ahead was dropped").await;
    }
}

case! {
    /// A lock whose wait gave up and that at once waits again keeps its new place: leaving
    /// the old one (in the background) never removes the new one, so the next release still
    /// wakes it (five rounds, each a fresh race).
    a_lock_that_gave_up_keeps_its_next_place(new_store) {
        let key = unique_key("gave-up-again");
        let holder = LockFactory::from_shared(new_store().await).create_lock(&key).unwrap();
        let again = LockFactory::from_shared(new_store().await).create_lock(&key).unwrap();
        for round in 0..5 {
            assert!(holder.acquire().await.unwrap());
            let gave_up = again.acquire_with(Retry::new().delay(NEVER).timeout("50ms")).await.unwrap();
            assert!(!gave_up, "round {round}: the key is held");
            let waiting = {
                let again = again.clone();
                tokio::spawn(async move { again.acquire_with(Retry::new().delay(NEVER).timeout("30s")).await.unwrap() })
            };
            sleep(Duration::from_millis(100)).await;
            holder.release().await.unwrap();
            let acquired = tokio::time::timeout(PROMPTLY, waiting)
                .await
                .unwrap_or_else(|_| panic!("round {round}: the new place was lost, the release woke nobody"))
                .unwrap();
            assert!(acquired);
            again.release().await.unwrap();
        }
    }
}

case! {
    /// A waiter handed the key that leaves the line only after its window (a late give-up:
    /// its take failed or timed out, its runtime was starved) leaves a free key and nothing
    /// announced: the waiter behind it still gets the key within the store's next look at
    /// its watched keys, not at its hour-long retry.
    a_front_that_leaves_after_its_window_passes_the_key_on(new_store) {
        let key = unique_key("late-leave");
        let store = new_store().await;
        let taken = take(&*store, &key, "holder", None, None).await;
        assert!(matches!(taken, Acquisition::Granted(_)), "{taken:?}");
        let front = take(&*store, &key, "front-owner", None, Some(place("front"))).await;
        assert_eq!(front, Acquisition::Busy);
        let next = factory_with_delay(&new_store, NEVER).await.create_lock(&key).unwrap();
        let waiting = tokio::spawn(async move { (next.acquire().await.unwrap(), next) });
        sleep(Duration::from_millis(100)).await;
        store.delete(&key, "holder").await.unwrap();
        sleep(HANDOVER_WINDOW + Duration::from_millis(50)).await;
        store.leave_line(&key, "front").await.unwrap();
        let (acquired, next) = tokio::time::timeout(RECHECK_EVERY + PROMPTLY, waiting)
            .await
            .expect("the waiter behind the front that left got the key")
            .unwrap();
        assert!(acquired);
        next.release().await.unwrap();
    }
}

/// How long the holders that never give back the key of the expiry cases hold it.
const SHORT_TTL: Duration = Duration::from_millis(300);

/// What holds the key in an expiry case, and what waits for it.
#[derive(Debug, Clone, Copy)]
enum Held {
    /// A lock, a lock waiting.
    Lock,
    /// A semaphore's only permit, a permit waiting.
    Permit,
    /// A read-write lock's writer, a reader waiting (behind a writer, when one is gone).
    Writer,
}

impl Held {
    /// The holder of `key`, with a TTL of [`SHORT_TTL`].
    fn holder(self, factory: &LockFactory, key: &str) -> crate::Result<crate::Lock> {
        match self {
            Held::Lock => factory.create_lock_with_ttl(key, SHORT_TTL),
            Held::Permit => factory.create_semaphore_with_ttl(key, 1, SHORT_TTL),
            Held::Writer => factory.create_rw_lock_with_ttl(key, SHORT_TTL)?.write(),
        }
    }

    /// A waiter for `key`.
    fn waiter(self, factory: &LockFactory, key: &str) -> crate::Result<crate::Lock> {
        match self {
            Held::Lock => factory.create_lock(key),
            Held::Permit => factory.create_semaphore(key, 1),
            Held::Writer => factory.create_rw_lock(key)?.read(),
        }
    }

    /// What a gone front waiter waits for (`None`: the lock).
    fn gone_front_share(self) -> Option<Share> {
        match self {
            Held::Lock => None,
            Held::Permit => Some(Share::Permit { limit: 1 }),
            Held::Writer => Some(Share::Write),
        }
    }
}

/// A holder of a new key that never gives it back (`held`, TTL [`SHORT_TTL`]: its process
/// died, or its `release` was skipped), a front waiter that is gone too if `gone_front` (a
/// place that outlasts the case), and a waiter behind them whose retry delay is an hour. No
/// release announces an expiry: the store must notice it and let the waiter in after it,
/// within one look again ([`RECHECK_EVERY`]), plus a hand-over window and another look
/// behind a gone front (the store hands the expired key to it as a release would, and passes
/// it when its window ends), with room for a loaded machine.
async fn behind_expired_holder<F, Fut>(new_store: &F, held: Held, gone_front: bool)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn LockStore>>,
{
    let key = unique_key("expiry");
    let holder = held
        .holder(&LockFactory::from_shared(new_store().await), &key)
        .unwrap();
    let expires = Instant::now() + SHORT_TTL;
    assert!(holder.acquire().await.unwrap());
    let mut bound = SHORT_TTL + RECHECK_EVERY + PROMPTLY;
    if gone_front {
        let store = new_store().await;
        let share = held.gone_front_share();
        let gone = take(&*store, &key, "gone-owner", share, Some(place("gone"))).await;
        assert_eq!(gone, Acquisition::Busy);
        bound += HANDOVER_WINDOW + RECHECK_EVERY;
    }
    let waiter = held
        .waiter(&factory_with_delay(new_store, NEVER).await, &key)
        .unwrap();
    let waiting = tokio::spawn(async move { (waiter.acquire().await.unwrap(), waiter) });
    let (acquired, waiter) = tokio::time::timeout(bound, waiting)
        .await
        .unwrap_or_else(|_| panic!("{held:?}: the waiter was not let in after the expiry"))
        .unwrap();
    assert!(acquired);
    assert!(
        Instant::now() >= expires,
        "{held:?}: let in before the expiry"
    );
    waiter.release().await.unwrap();
}

case! {
    /// A lock whose holder never releases (its process died, its `release` skipped) holds
    /// up a waiter whose retry delay is an hour until its TTL runs out, and by at most one
    /// look again ([`RECHECK_EVERY`]) past that: nothing announces an expiry, the store must
    /// notice it.
    a_holder_whose_ttl_runs_out_lets_its_waiter_in(new_store) {
        behind_expired_holder(&new_store, Held::Lock, false).await;
    }
}

case! {
    /// The same for the only permit of a semaphore.
    an_expired_permit_lets_its_waiter_in(new_store) {
        behind_expired_holder(&new_store, Held::Permit, false).await;
    }
}

case! {
    /// The same for a reader behind the writer of a read-write lock.
    an_expired_writer_lets_its_waiting_reader_in(new_store) {
        behind_expired_holder(&new_store, Held::Writer, false).await;
    }
}

case! {
    /// A double failure: a lock's holder never releases and its front waiter is gone too.
    /// The waiter behind them (retry delay an hour) gets the key within the expiry, a
    /// hand-over window and two looks again: the store hands the expired key to the gone
    /// front as a release would, and passes it when its window ends.
    a_front_gone_behind_an_expired_holder_is_passed_after_a_window(new_store) {
        behind_expired_holder(&new_store, Held::Lock, true).await;
    }
}

case! {
    /// The same for the only permit of a semaphore.
    a_front_gone_behind_an_expired_permit_is_passed_after_a_window(new_store) {
        behind_expired_holder(&new_store, Held::Permit, true).await;
    }
}

case! {
    /// The same for a writer gone at the front of a read-write lock, a reader behind it.
    a_front_gone_behind_an_expired_writer_is_passed_after_a_window(new_store) {
        behind_expired_holder(&new_store, Held::Writer, true).await;
    }
}
