//! The store conformance suite: every behaviour a [`LockStore`] must show, as async
//! functions that take a constructor of fresh stores.
//!
//! Run it with [`conformance_tests!`](crate::conformance_tests) from a test file of your store
//! crate (see the [crate docs](crate#writing-a-store)); the macro writes one `#[test]` per
//! case. Each case uses its own random keys, so cases may share a server and run in parallel.
//! Cases use TTLs of a few hundred milliseconds and real time: run them against a store on
//! the same machine or a near one.

mod faults;
mod history;

pub use faults::*;
pub use history::{History, Hold, OpenHold, Verdict};

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio::time::sleep;

use crate::{
    Acquisition, Boards, Error, Family, LockFactory, LockStore, OwnerCheck, Place, Result, Retry,
    SerializedLock, Share, Ttl,
};

/// Writes one `#[test]` per conformance case, each running on its own Tokio runtime with
/// stores made by `$new_store`, an `async fn() -> Arc<dyn LockStore>`. Put it in a test file
/// of its own.
#[macro_export]
macro_rules! conformance_tests {
    ($new_store:path) => {
        $crate::conformance_tests!(@cases $new_store;
            acquire_takes_a_free_key,
            acquire_immediately_refuses_a_held_key,
            keys_are_independent,
            holder_cannot_reacquire_its_held_lock,
            release_frees_the_key,
            release_by_another_owner_is_not_owned,
            release_of_a_never_locked_key_is_not_owned,
            release_twice_is_not_owned,
            release_after_expiry_is_not_owned,
            release_after_takeover_is_not_owned_and_keeps_new_owner,
            extend_keeps_the_lock_past_its_ttl,
            extend_by_sets_a_new_expiry,
            extend_by_another_owner_is_not_owned,
            extend_after_expiry_is_not_owned,
            extend_after_takeover_is_not_owned_and_keeps_new_owner,
            extend_without_ttl_is_invalid_argument,
            expired_lock_can_be_taken,
            lock_without_ttl_never_expires,
            is_locked_is_false_for_a_free_key,
            is_locked_is_false_after_expiry,
            force_release_frees_any_owner,
            force_release_of_a_free_key_succeeds,
            acquire_waits_for_release,
            acquire_waits_for_expiry,
            acquire_gives_up_after_attempts,
            acquire_timeout_is_a_deadline,
            run_executes_and_releases,
            run_returns_none_when_not_acquired,
            run_releases_when_work_returns_an_error,
            run_releases_when_work_panics,
            run_reports_a_lost_lock,
            dropped_run_releases_the_lock,
            restored_lock_releases_across_stores,
            restored_lock_keeps_owner_and_expiry,
            restored_lock_extends_across_stores,
            unusual_keys_work,
            separate_stores_exclude_each_other,
            remaining_time_tracks_the_ttl,
            fencing_tokens_strictly_increase,
            fencing_token_survives_extend_and_serialization,
            paused_holder_loses_to_a_higher_token,
            guard_releases_explicitly_and_on_drop,
            a_dropped_guard_never_releases_the_next_hold,
            an_extension_after_its_guard_was_dropped_keeps_nothing,
            auto_extend_holds_the_lock_through_long_work,
            loss_fires_when_renewal_is_refused,
            run_auto_extend_reports_a_lost_lock,
            durations_past_the_maximum_are_refused_before_the_store,
            oversized_and_empty_keys_are_invalid,
            serialized_lock_round_trips_exactly,
            serialized_lock_with_missing_fields_is_refused,
            attempts_are_store_calls,
            wakeups_without_release_never_shorten_the_policy,
            run_with_gives_up_at_the_deadline,
            run_immediately_releases_after_an_error,
            auto_extend_renews_at_the_store,
            extend_of_an_expired_lock_takes_nothing_back,
        );
    };
    (@cases $new_store:path; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::run_case($crate::conformance::$case($new_store));
            }
        )*
    };
}

/// Runs one case on a fresh multi-threaded Tokio runtime, failing it after 60 seconds.
///
/// # Panics
///
/// When the case fails or hangs: that is how it reports to the test harness.
pub fn run_case(case: impl Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime for the conformance case");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), case)
            .await
            .expect("conformance case did not finish within 60 s");
    });
}

const SHORT_TTL: Duration = Duration::from_millis(300);
const PAST_SHORT_TTL: Duration = Duration::from_millis(600);

fn unique_key(name: &str) -> String {
    format!(
        "verrou-conformance:{name}:{}",
        &crate::owner::new_owner_token()[..12]
    )
}

async fn factory<F, Fut>(new_store: &F) -> LockFactory
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn LockStore>>,
{
    LockFactory::from_shared(new_store().await)
}

fn assert_not_owned<T: std::fmt::Debug>(result: Result<T>, what: &str) {
    match result {
        Err(Error::NotOwned { .. }) => {}
        other => panic!("{what}: expected Error::NotOwned, got {other:?}"),
    }
}

macro_rules! case {
    ($(#[$doc:meta])* $name:ident($new_store:ident) $body:block) => {
        $(#[$doc])*
        pub async fn $name<F, Fut>($new_store: F)
        where
            F: Fn() -> Fut,
            Fut: ::std::future::Future<Output = ::std::sync::Arc<dyn $crate::LockStore>>,
        $body
    };
}

mod edges;
mod lines;
mod shares;
pub use edges::*;
pub use lines::*;
pub use shares::*;

/// A retry delay no case waits out: a waiter that gets the key in time was woken.
const NEVER: &str = "1h";

/// How long a case gives a woken waiter to get the key (on a loaded machine).
const PROMPTLY: Duration = Duration::from_secs(3);

/// A factory on a new store instance (another process, as it were) that waits at most 30 s,
/// `delay` apart.
async fn factory_with_delay<F, Fut>(new_store: &F, delay: &str) -> LockFactory
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn LockStore>>,
{
    LockFactory::from_shared(new_store().await)
        .with_retry(Retry::new().delay(delay).timeout("30s"))
        .unwrap()
}

/// Starts `waiter`'s `acquire`, lets it join the line, releases `holder`, and checks that
/// the waiter gets the key promptly (`why` it should), then releases it.
async fn woken_by_release(waiter: crate::Lock, holder: &crate::Lock, why: &str) {
    let waiting = tokio::spawn(async move { (waiter.acquire().await.unwrap(), waiter) });
    sleep(Duration::from_millis(100)).await;
    holder.release().await.unwrap();
    let (acquired, waiter) = tokio::time::timeout(PROMPTLY, waiting)
        .await
        .unwrap_or_else(|_| panic!("not woken by the release: {why}"))
        .unwrap();
    assert!(acquired);
    waiter.release().await.unwrap();
}

case! {
    /// A free key is acquired; the store then reports it locked.
    acquire_takes_a_free_key(new_store) {
        let lock = factory(&new_store).await.create_lock(unique_key("free")).unwrap();
        assert!(lock.acquire().await.unwrap(), "a free key must be acquired");
        assert!(lock.is_locked().await.unwrap());
        lock.release().await.unwrap();
    }
}

case! {
    /// `acquire_immediately` on a key someone holds returns `false` at once.
    acquire_immediately_refuses_a_held_key(new_store) {
        // With a 10 s retry delay, any waiting at all would show.
        let factory = factory(&new_store).await.with_retry(Retry::new().delay("10s")).unwrap();
        let key = unique_key("held");
        let holder = factory.create_lock(&key).unwrap();
        assert!(holder.acquire_immediately().await.unwrap());
        let other = factory.create_lock(&key).unwrap();
        let started = Instant::now();
        assert!(!other.acquire_immediately().await.unwrap());
        assert!(started.elapsed() < Duration::from_secs(5), "must not wait");
        holder.release().await.unwrap();
        assert!(other.acquire_immediately().await.unwrap(), "free again after release");
        other.release().await.unwrap();
    }
}

case! {
    /// Holding one key does not block another.
    keys_are_independent(new_store) {
        let factory = factory(&new_store).await;
        let first = factory.create_lock(unique_key("a")).unwrap();
        let second = factory.create_lock(unique_key("b")).unwrap();
        assert!(first.acquire_immediately().await.unwrap());
        assert!(second.acquire_immediately().await.unwrap());
        first.release().await.unwrap();
        second.release().await.unwrap();
    }
}

case! {
    /// Locks are not reentrant: the holder itself cannot take its held lock again.
    holder_cannot_reacquire_its_held_lock(new_store) {
        let lock = factory(&new_store).await.create_lock(unique_key("reentrant")).unwrap();
        assert!(lock.acquire_immediately().await.unwrap());
        assert!(!lock.acquire_immediately().await.unwrap());
        lock.release().await.unwrap();
    }
}

case! {
    /// After release the key is free and anyone can take it.
    release_frees_the_key(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("release");
        let lock = factory.create_lock(&key).unwrap();
        assert!(lock.acquire().await.unwrap());
        lock.release().await.unwrap();
        assert!(!lock.is_locked().await.unwrap());
        let next = factory.create_lock(&key).unwrap();
        assert!(next.acquire_immediately().await.unwrap());
        next.release().await.unwrap();
    }
}

case! {
    /// Only the owner releases: another owner gets `NotOwned` and the lock stays.
    release_by_another_owner_is_not_owned(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("stranger");
        let holder = factory.create_lock(&key).unwrap();
        assert!(holder.acquire().await.unwrap());
        let stranger = factory.create_lock(&key).unwrap();
        assert_not_owned(stranger.release().await, "release by a stranger");
        assert!(holder.is_locked().await.unwrap(), "the holder keeps the lock");
        holder.release().await.unwrap();
    }
}

case! {
    /// Releasing a key that was never locked is `NotOwned`.
    release_of_a_never_locked_key_is_not_owned(new_store) {
        let lock = factory(&new_store).await.create_lock(unique_key("never")).unwrap();
        assert_not_owned(lock.release().await, "release of a never-locked key");
    }
}

case! {
    /// A second release is `NotOwned`.
    release_twice_is_not_owned(new_store) {
        let lock = factory(&new_store).await.create_lock(unique_key("twice")).unwrap();
        assert!(lock.acquire().await.unwrap());
        lock.release().await.unwrap();
        assert_not_owned(lock.release().await, "second release");
    }
}

case! {
    /// A holder whose lock expired (and nobody took it) cannot release it.
    release_after_expiry_is_not_owned(new_store) {
        let factory = factory(&new_store).await;
        let lock = factory.create_lock_with_ttl(unique_key("expired"), SHORT_TTL).unwrap();
        assert!(lock.acquire().await.unwrap());
        sleep(PAST_SHORT_TTL).await;
        assert_not_owned(lock.release().await, "release after expiry");
    }
}

case! {
    /// An expired holder can never free the next owner's lock.
    release_after_takeover_is_not_owned_and_keeps_new_owner(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("takeover");
        let old = factory.create_lock_with_ttl(&key, SHORT_TTL).unwrap();
        assert!(old.acquire().await.unwrap());
        sleep(PAST_SHORT_TTL).await;
        let new = factory.create_lock_with_ttl(&key, "10s").unwrap();
        assert!(new.acquire_immediately().await.unwrap(), "expired lock must be taken");
        assert_not_owned(old.release().await, "release by the expired holder");
        assert!(new.is_locked().await.unwrap(), "the new owner keeps the lock");
        let third = factory.create_lock(&key).unwrap();
        assert!(!third.acquire_immediately().await.unwrap());
        new.release().await.unwrap();
    }
}

case! {
    /// Extending pushes the expiry: the lock outlives its original TTL.
    extend_keeps_the_lock_past_its_ttl(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("extend");
        let lock = factory.create_lock_with_ttl(&key, SHORT_TTL).unwrap();
        assert!(lock.acquire().await.unwrap());
        for _ in 0..3 {
            sleep(SHORT_TTL / 2).await;
            lock.extend().await.unwrap();
        }
        assert!(lock.is_locked().await.unwrap(), "extended lock must still be held");
        let other = factory.create_lock(&key).unwrap();
        assert!(!other.acquire_immediately().await.unwrap());
        lock.release().await.unwrap();
    }
}

case! {
    /// `extend_by` sets expiry to now + the given duration.
    extend_by_sets_a_new_expiry(new_store) {
        let factory = factory(&new_store).await;
        let lock = factory.create_lock_with_ttl(unique_key("extend-by"), SHORT_TTL).unwrap();
        assert!(lock.acquire().await.unwrap());
        lock.extend_by("5s").await.unwrap();
        let remaining = lock.remaining_time().unwrap();
        assert!(remaining > Duration::from_secs(4), "remaining {remaining:?}");
        sleep(PAST_SHORT_TTL).await;
        assert!(lock.is_locked().await.unwrap(), "held past the original TTL");
        assert!(!lock.is_expired());
        lock.release().await.unwrap();
    }
}

case! {
    /// Only the owner extends.
    extend_by_another_owner_is_not_owned(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("extend-stranger");
        let holder = factory.create_lock_with_ttl(&key, SHORT_TTL).unwrap();
        assert!(holder.acquire().await.unwrap());
        let stranger = factory.create_lock_with_ttl(&key, "10s").unwrap();
        assert_not_owned(stranger.extend().await, "extend by a stranger");
        sleep(PAST_SHORT_TTL).await;
        assert!(!holder.is_locked().await.unwrap(), "the stranger must not have extended it");
    }
}

case! {
    /// A holder cannot extend a lock that has expired, even if nobody took it.
    extend_after_expiry_is_not_owned(new_store) {
        let factory = factory(&new_store).await;
        let lock = factory.create_lock_with_ttl(unique_key("extend-expired"), SHORT_TTL).unwrap();
        assert!(lock.acquire().await.unwrap());
        sleep(PAST_SHORT_TTL).await;
        assert_not_owned(lock.extend().await, "extend after expiry");
        assert!(!lock.is_locked().await.unwrap(), "extend must not revive the lock");
    }
}

case! {
    /// An expired holder cannot extend the next owner's lock.
    extend_after_takeover_is_not_owned_and_keeps_new_owner(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("extend-takeover");
        let old = factory.create_lock_with_ttl(&key, SHORT_TTL).unwrap();
        assert!(old.acquire().await.unwrap());
        sleep(PAST_SHORT_TTL).await;
        let new = factory.create_lock_with_ttl(&key, SHORT_TTL).unwrap();
        assert!(new.acquire_immediately().await.unwrap());
        assert_not_owned(old.extend_by("10s").await, "extend by the expired holder");
        sleep(PAST_SHORT_TTL).await;
        assert!(!new.is_locked().await.unwrap(), "the new lock expires on its own TTL");
    }
}

case! {
    /// A lock without TTL has nothing to extend by: `InvalidArgument`, and no store call.
    extend_without_ttl_is_invalid_argument(new_store) {
        let factory = factory(&new_store).await;
        let lock = factory.create_lock_with_ttl(unique_key("no-ttl-extend"), Ttl::Never).unwrap();
        assert!(lock.acquire().await.unwrap());
        match lock.extend().await {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        lock.extend_by("1s").await.unwrap();
        lock.release().await.unwrap();
    }
}

case! {
    /// Once its TTL has run out, a lock can be taken by another owner.
    expired_lock_can_be_taken(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("expiry");
        let old = factory.create_lock_with_ttl(&key, SHORT_TTL).unwrap();
        assert!(old.acquire().await.unwrap());
        let new = factory.create_lock(&key).unwrap();
        assert!(!new.acquire_immediately().await.unwrap(), "still held before the TTL");
        sleep(PAST_SHORT_TTL).await;
        assert!(new.acquire_immediately().await.unwrap(), "free after the TTL");
        new.release().await.unwrap();
    }
}

case! {
    /// A lock without TTL stays until released.
    lock_without_ttl_never_expires(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("forever");
        let lock = factory.create_lock_with_ttl(&key, Ttl::Never).unwrap();
        assert!(lock.acquire().await.unwrap());
        sleep(PAST_SHORT_TTL).await;
        assert!(lock.is_locked().await.unwrap());
        assert!(!lock.is_expired());
        assert_eq!(lock.remaining_time(), None);
        assert!(!factory.create_lock(&key).unwrap().acquire_immediately().await.unwrap());
        lock.release().await.unwrap();
        assert!(!lock.is_locked().await.unwrap());
    }
}

case! {
    /// A key nobody took is not locked.
    is_locked_is_false_for_a_free_key(new_store) {
        let lock = factory(&new_store).await.create_lock(unique_key("unlocked")).unwrap();
        assert!(!lock.is_locked().await.unwrap());
    }
}

case! {
    /// An expired lock is not locked.
    is_locked_is_false_after_expiry(new_store) {
        let lock = factory(&new_store).await.create_lock_with_ttl(unique_key("lapsed"), SHORT_TTL).unwrap();
        assert!(lock.acquire().await.unwrap());
        assert!(lock.is_locked().await.unwrap());
        sleep(PAST_SHORT_TTL).await;
        assert!(!lock.is_locked().await.unwrap());
        assert!(lock.is_expired());
    }
}

case! {
    /// `force_release` frees a lock whoever holds it.
    force_release_frees_any_owner(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("force");
        let holder = factory.create_lock(&key).unwrap();
        assert!(holder.acquire().await.unwrap());
        let admin = factory.create_lock(&key).unwrap();
        admin.force_release().await.unwrap();
        assert!(!holder.is_locked().await.unwrap());
        assert_not_owned(holder.release().await, "release after a force release");
    }
}

case! {
    /// Force-releasing a free key is not an error.
    force_release_of_a_free_key_succeeds(new_store) {
        let lock = factory(&new_store).await.create_lock(unique_key("force-free")).unwrap();
        lock.force_release().await.unwrap();
    }
}

case! {
    /// `acquire` waits while the lock is held and gets it once the holder releases.
    acquire_waits_for_release(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("wait-release");
        let holder = factory.create_lock(&key).unwrap();
        assert!(holder.acquire().await.unwrap());
        let releaser = tokio::spawn(async move {
            sleep(Duration::from_millis(200)).await;
            holder.release().await.unwrap();
        });
        let waiter = factory.create_lock(&key).unwrap();
        let started = Instant::now();
        let acquired = waiter.acquire_with(Retry::new().delay(20).timeout("10s")).await.unwrap();
        assert!(acquired);
        assert!(started.elapsed() >= Duration::from_millis(150), "acquired before the release");
        releaser.await.unwrap();
        waiter.release().await.unwrap();
    }
}

case! {
    /// `acquire` waits while the lock is held and gets it once it expires.
    acquire_waits_for_expiry(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("wait-expiry");
        let holder = factory.create_lock_with_ttl(&key, SHORT_TTL).unwrap();
        assert!(holder.acquire().await.unwrap());
        let waiter = factory.create_lock(&key).unwrap();
        let acquired = waiter.acquire_with(Retry::new().delay(20).timeout("10s")).await.unwrap();
        assert!(acquired);
        waiter.release().await.unwrap();
    }
}

case! {
    /// With `attempts(3)`, `acquire` asks the store exactly three times, then returns `false`.
    acquire_gives_up_after_attempts(new_store) {
        let counting = Arc::new(CountingStore::new(new_store().await));
        let factory = LockFactory::from_shared(counting.clone());
        let key = unique_key("attempts");
        let holder = factory.create_lock(&key).unwrap();
        assert!(holder.acquire().await.unwrap());
        let waiter = factory.create_lock(&key).unwrap();
        counting.saves.store(0, Ordering::SeqCst);
        let acquired = waiter.acquire_with(Retry::new().attempts(3).delay(10)).await.unwrap();
        assert!(!acquired);
        assert_eq!(counting.saves.load(Ordering::SeqCst), 3);
        holder.release().await.unwrap();
    }
}

case! {
    /// A timeout is a deadline: with timeout 300 ms and delay 10 s, `acquire` gives up after
    /// about 300 ms, not after a delay.
    acquire_timeout_is_a_deadline(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("deadline");
        let holder = factory.create_lock(&key).unwrap();
        assert!(holder.acquire().await.unwrap());
        let waiter = factory.create_lock(&key).unwrap();
        let started = Instant::now();
        let acquired = waiter.acquire_with(Retry::new().timeout(300).delay("10s")).await.unwrap();
        let waited = started.elapsed();
        assert!(!acquired);
        assert!(waited >= Duration::from_millis(300), "gave up early: {waited:?}");
        assert!(waited < Duration::from_secs(5), "waited for the delay past the deadline: {waited:?}");
        holder.release().await.unwrap();
    }
}

case! {
    /// `run` acquires, runs the work, returns its value and releases.
    run_executes_and_releases(new_store) {
        let factory = factory(&new_store).await;
        let lock = factory.create_lock(unique_key("run")).unwrap();
        let checker = lock.clone();
        let value = lock
            .run(|| async move { checker.is_locked().await.unwrap() })
            .await
            .unwrap();
        assert_eq!(value, Some(true), "the work runs while the lock is held");
        assert!(!lock.is_locked().await.unwrap(), "released after the work");
    }
}

case! {
    /// `run_immediately` on a held lock does not run the work and says so.
    run_returns_none_when_not_acquired(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("run-busy");
        let holder = factory.create_lock(&key).unwrap();
        assert!(holder.acquire().await.unwrap());
        let other = factory.create_lock(&key).unwrap();
        let ran = AtomicUsize::new(0);
        let outcome = other.run_immediately(|| async { ran.fetch_add(1, Ordering::SeqCst) }).await.unwrap();
        assert_eq!(outcome, None);
        let outcome = other
            .run_with(Retry::new().attempts(2).delay(10), || async { ran.fetch_add(1, Ordering::SeqCst) })
            .await
            .unwrap();
        assert_eq!(outcome, None);
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the work must not run");
        holder.release().await.unwrap();
    }
}

case! {
    /// When the work returns an error, `run` hands it back and still releases.
    run_releases_when_work_returns_an_error(new_store) {
        let lock = factory(&new_store).await.create_lock(unique_key("run-error")).unwrap();
        let outcome = lock.run(|| async { Err::<(), _>("card declined") }).await.unwrap();
        assert_eq!(outcome, Some(Err("card declined")));
        assert!(!lock.is_locked().await.unwrap());
    }
}

case! {
    /// When the work panics, `run` releases, then the panic goes on.
    run_releases_when_work_panics(new_store) {
        let lock = factory(&new_store).await.create_lock(unique_key("run-panic")).unwrap();
        let outcome = AssertUnwindSafe(lock.run(|| async { panic!("work failed") }))
            .catch_unwind()
            .await;
        assert!(outcome.is_err(), "the panic must resume");
        assert!(!lock.is_locked().await.unwrap(), "released before the panic resumed");
    }
}

case! {
    /// When the lock expired and was taken during the work, `run` reports `LockLost`.
    run_reports_a_lost_lock(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("run-lost");
        let lock = factory.create_lock_with_ttl(&key, SHORT_TTL).unwrap();
        let intruder = factory.create_lock(&key).unwrap();
        let outcome = lock
            .run(|| async {
                sleep(PAST_SHORT_TTL).await;
                assert!(intruder.acquire_immediately().await.unwrap());
            })
            .await;
        match outcome {
            Err(Error::LockLost { key: lost }) => assert_eq!(lost, key),
            other => panic!("expected LockLost, got {other:?}"),
        }
        assert!(intruder.is_locked().await.unwrap(), "the intruder's lock is untouched");
        intruder.release().await.unwrap();
    }
}

case! {
    /// Dropping a `run` future while the work runs releases the lock in the background.
    dropped_run_releases_the_lock(new_store) {
        let lock = factory(&new_store).await.create_lock(unique_key("run-drop")).unwrap();
        let cancelled = tokio::time::timeout(
            Duration::from_millis(200),
            lock.run(std::future::pending::<()>),
        )
        .await;
        assert!(cancelled.is_err(), "the work never finishes");
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock.is_locked().await.unwrap() {
            assert!(Instant::now() < deadline, "lock still held after the run was dropped");
            sleep(Duration::from_millis(10)).await;
        }
    }
}

case! {
    /// A lock serialized in one process and restored through another store instance can be
    /// released there.
    restored_lock_releases_across_stores(new_store) {
        let here = factory(&new_store).await;
        let there = factory(&new_store).await;
        let lock = here.create_lock(unique_key("restore")).unwrap();
        assert!(lock.acquire().await.unwrap());
        let json = lock.serialize().to_string();
        let restored = there.restore_lock(&json).unwrap();
        assert_eq!(restored.owner(), lock.owner());
        restored.release().await.unwrap();
        assert!(!lock.is_locked().await.unwrap());
        assert_not_owned(lock.release().await, "release after the restored lock released");
    }
}

case! {
    /// A restored lock keeps key, owner, TTL and expiry.
    restored_lock_keeps_owner_and_expiry(new_store) {
        let factory = factory(&new_store).await;
        let lock = factory.create_lock_with_ttl(unique_key("restore-expiry"), "10s").unwrap();
        assert!(lock.acquire().await.unwrap());
        let serialized: SerializedLock = lock.serialize();
        assert_eq!(serialized.ttl, Some(10_000));
        let restored = factory.restore_lock(serialized).unwrap();
        assert_eq!(restored.key(), lock.key());
        assert_eq!(restored.owner(), lock.owner());
        assert_eq!(restored.ttl(), lock.ttl());
        let remaining = restored.remaining_time().unwrap();
        assert!(remaining > Duration::from_secs(9) && remaining <= Duration::from_secs(10), "{remaining:?}");
        assert!(!restored.is_expired());
        restored.release().await.unwrap();
    }
}

case! {
    /// A restored lock can extend the lock it took over.
    restored_lock_extends_across_stores(new_store) {
        let here = factory(&new_store).await;
        let there = factory(&new_store).await;
        let lock = here.create_lock_with_ttl(unique_key("restore-extend"), SHORT_TTL).unwrap();
        assert!(lock.acquire().await.unwrap());
        let restored = there.restore_lock(lock.serialize()).unwrap();
        restored.extend_by("10s").await.unwrap();
        sleep(PAST_SHORT_TTL).await;
        assert!(lock.is_locked().await.unwrap(), "extended by the restored lock");
        lock.release().await.unwrap();
    }
}

case! {
    /// Keys with spaces, quotes, braces, Unicode, long keys and keys that look like SQL or
    /// patterns are plain names.
    unusual_keys_work(new_store) {
        let factory = factory(&new_store).await;
        let suffix = unique_key("");
        for name in [
            "with space", "quote'\"", "{hash}tag", "ключ-🔒", "*", "a%b_c", "'; DROP TABLE verrou; --",
            &"x".repeat(200),
        ] {
            let key = format!("{name}{suffix}");
            let lock = factory.create_lock(&key).unwrap();
            assert!(lock.acquire_immediately().await.unwrap(), "{key:?}");
            assert!(!factory.create_lock(&key).unwrap().acquire_immediately().await.unwrap());
            lock.release().await.unwrap();
        }
    }
}

case! {
    /// Many tasks on two store instances (as two processes would have) contend for one key:
    /// never two holders at once, and everyone gets a turn.
    separate_stores_exclude_each_other(new_store) {
        let stores = [factory(&new_store).await, factory(&new_store).await];
        let key = unique_key("contention");
        let holders = Arc::new(AtomicUsize::new(0));
        let turns = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for worker in 0..8 {
            let factory = stores[worker % 2].clone();
            let (key, holders, turns) = (key.clone(), holders.clone(), turns.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    let lock = factory.create_lock(&key).unwrap();
                    assert!(lock.acquire_with(Retry::new().delay(5).timeout("30s")).await.unwrap());
                    assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders at once");
                    sleep(Duration::from_millis(2)).await;
                    holders.fetch_sub(1, Ordering::SeqCst);
                    turns.fetch_add(1, Ordering::SeqCst);
                    lock.release().await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(turns.load(Ordering::SeqCst), 40);
    }
}

case! {
    /// `remaining_time` and `is_expired` follow the TTL on the local monotonic clock.
    remaining_time_tracks_the_ttl(new_store) {
        let factory = factory(&new_store).await;
        let long = factory.create_lock_with_ttl(unique_key("remaining-long"), "20s").unwrap();
        assert!(long.acquire().await.unwrap());
        let remaining = long.remaining_time().unwrap();
        assert!(remaining <= Duration::from_secs(20) && remaining > Duration::from_secs(10), "{remaining:?}");
        long.release().await.unwrap();
        assert_eq!(long.remaining_time(), None, "not held after release");
        let lock = factory.create_lock_with_ttl(unique_key("remaining"), SHORT_TTL).unwrap();
        assert_eq!(lock.remaining_time(), None, "not held yet");
        assert!(!lock.is_expired());
        assert!(lock.acquire().await.unwrap());
        assert!(lock.remaining_time().unwrap() <= SHORT_TTL);
        sleep(PAST_SHORT_TTL).await;
        assert_eq!(lock.remaining_time(), Some(Duration::ZERO));
        assert!(lock.is_expired());
    }
}

case! {
    /// Every grant of a key carries a fencing token greater than all before it: across
    /// owners, releases, expiries, force releases and store instances. (A store that says
    /// it issues no tokens issues none.)
    fencing_tokens_strictly_increase(new_store) {
        let fenced = new_store().await.issues_fencing_tokens();
        let stores = [factory(&new_store).await, factory(&new_store).await];
        let key = unique_key("fencing");
        let mut last = 0;
        let mut check = |lock: &crate::Lock, step: usize| {
            let Some(token) = lock.fencing_token() else {
                assert!(!fenced, "grant {step} carries no fencing token");
                return;
            };
            assert!(fenced, "grant {step} carries a token from a store that says it issues none");
            assert!(token > last, "grant {step}: token {token} after {last}");
            last = token;
        };
        for step in 0..1_000 {
            let lock = stores[step % 2].create_lock(&key).unwrap();
            assert!(lock.acquire_immediately().await.unwrap());
            check(&lock, step);
            if step % 100 == 0 {
                lock.force_release().await.unwrap();
            } else {
                lock.release().await.unwrap();
            }
        }
        for step in 0..3 {
            let lock = stores[step % 2].create_lock_with_ttl(&key, 100).unwrap();
            assert!(lock.acquire_immediately().await.unwrap());
            check(&lock, 1_000 + step);
            sleep(Duration::from_millis(250)).await;
        }
    }
}

case! {
    /// Extending keeps the grant's token, and a restored lock carries it.
    fencing_token_survives_extend_and_serialization(new_store) {
        let fenced = new_store().await.issues_fencing_tokens();
        let factory = factory(&new_store).await;
        let lock = factory.create_lock(unique_key("fencing-kept")).unwrap();
        assert_eq!(lock.fencing_token(), None, "no token before acquiring");
        assert!(lock.acquire().await.unwrap());
        let token = lock.fencing_token();
        assert_eq!(token.is_some(), fenced);
        lock.extend().await.unwrap();
        assert_eq!(lock.fencing_token(), token);
        let restored = factory.restore_lock(lock.serialize().to_string()).unwrap();
        assert_eq!(restored.fencing_token(), token);
        restored.release().await.unwrap();
        assert_eq!(restored.fencing_token(), None, "no token once released");
    }
}

case! {
    /// A holder paused past its TTL: another owner acquires with a higher token, the paused
    /// holder's release and extend are refused, and its loss signal has fired.
    paused_holder_loses_to_a_higher_token(new_store) {
        let fenced = new_store().await.issues_fencing_tokens();
        let factory = factory(&new_store).await;
        let key = unique_key("paused");
        let paused = factory.create_lock_with_ttl(&key, SHORT_TTL).unwrap();
        let guard = paused.acquire_guard().await.unwrap().expect("free key");
        let loss = guard.loss();
        sleep(PAST_SHORT_TTL).await;
        assert!(loss.is_lost(), "the loss signal fires once the TTL ran out");
        let next = factory.create_lock(&key).unwrap();
        assert!(next.acquire_immediately().await.unwrap());
        if fenced {
            assert!(next.fencing_token() > guard.fencing_token(), "the new grant's token is higher");
        }
        assert_not_owned(guard.extend().await, "extend by the paused holder");
        assert_not_owned(guard.release().await, "release by the paused holder");
        assert!(next.is_locked().await.unwrap());
        next.release().await.unwrap();
    }
}

case! {
    /// A guard releases when told to, and in the background when dropped.
    guard_releases_explicitly_and_on_drop(new_store) {
        let factory = factory(&new_store).await;
        let lock = factory.create_lock(unique_key("guard")).unwrap();
        let guard = lock.acquire_guard_immediately().await.unwrap().expect("free key");
        assert_eq!(guard.fencing_token().is_some(), new_store().await.issues_fencing_tokens());
        assert!(lock.acquire_guard_with(Retry::new().attempts(1)).await.unwrap().is_none());
        guard.release().await.unwrap();
        assert!(!lock.is_locked().await.unwrap());
        let guard = lock.acquire_guard().await.unwrap().expect("free again");
        drop(guard);
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock.is_locked().await.unwrap() {
            assert!(Instant::now() < deadline, "dropped guard did not release");
            sleep(Duration::from_millis(10)).await;
        }
    }
}

case! {
    /// A dropped guard releases in the background, yet never the hold its lock takes right
    /// after (same owner): the lock holds nothing from the drop on, and its next take
    /// releases first. That take gets the key, and the other owner stays out.
    a_dropped_guard_never_releases_the_next_hold(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("guard-next-hold");
        let lock = factory.create_lock_with_ttl(&key, "30s").unwrap();
        let other = factory.create_lock_with_ttl(&key, "30s").unwrap();
        for round in 0..10 {
            let guard = lock.acquire_guard_immediately().await.unwrap().expect("free key");
            drop(guard);
            assert!(
                lock.acquire_immediately().await.unwrap(),
                "round {round}: the guard was dropped, the key is the lock's to take again"
            );
            // Time for a release the guard left behind to run.
            sleep(Duration::from_millis(50)).await;
            assert!(
                !other.acquire_immediately().await.unwrap(),
                "round {round}: the dropped guard's release removed the lock's next hold"
            );
            lock.release().await.unwrap();
        }
    }
}

case! {
    /// An extension that lands after its guard was dropped (a renewal on its way when the
    /// guard went) does not bring the hold back: the key is given back all the same.
    an_extension_after_its_guard_was_dropped_keeps_nothing(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("guard-extend");
        let lock = factory.create_lock_with_ttl(&key, "30s").unwrap();
        let other = factory.create_lock_with_ttl(&key, "30s").unwrap();
        let guard = lock.acquire_guard_immediately().await.unwrap().expect("free key");
        drop(guard);
        // Applied if it came before the give-back, not owned if after: either way...
        match lock.extend().await {
            Ok(()) | Err(Error::NotOwned { .. }) => {}
            Err(error) => panic!("extend: {error}"),
        }
        // ... the key is given back.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !other.acquire_immediately().await.unwrap() {
            assert!(Instant::now() < deadline, "the dropped guard's hold was kept by the extension");
            sleep(Duration::from_millis(20)).await;
        }
        assert!(!lock.is_expired() && lock.remaining_time().is_none(), "the lock holds nothing");
        other.release().await.unwrap();
    }
}

case! {
    /// With automatic extension, work that runs three TTLs keeps the lock all along, the lock
    /// is free right after, and renewals stop.
    auto_extend_holds_the_lock_through_long_work(new_store) {
        let counting = Arc::new(CountingStore::new(new_store().await));
        let factory = LockFactory::from_shared(counting.clone());
        let contender_factory = crate::LockFactory::from_shared(new_store().await);
        let key = unique_key("auto-extend");
        // Renewals every third of a second: late ones on a loaded machine still land in time.
        let ttl = Duration::from_secs(1);
        let lock = factory.create_lock_with_ttl(&key, ttl).unwrap();
        let contender = contender_factory.create_lock(&key).unwrap();
        let outcome = lock
            .run_auto_extend(|loss| async move {
                let until = Instant::now() + ttl * 3;
                while Instant::now() < until {
                    assert!(!contender.acquire_immediately().await.unwrap(), "another owner got in");
                    assert!(!loss.is_lost());
                    sleep(Duration::from_millis(20)).await;
                }
                "done"
            })
            .await
            .unwrap();
        assert_eq!(outcome, Some("done"));
        assert!(counting.extends.load(Ordering::SeqCst) >= 4, "the lock was renewed");
        assert!(!lock.is_locked().await.unwrap(), "released right after the work");
        let renewals = counting.extends.load(Ordering::SeqCst);
        sleep(ttl * 2).await;
        assert_eq!(counting.extends.load(Ordering::SeqCst), renewals, "renewal stopped");
    }
}

case! {
    /// When someone else takes the lock from under an auto-extended guard, the renewal is
    /// refused, the loss signal fires, and the lock is not taken back.
    loss_fires_when_renewal_is_refused(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("refused");
        let lock = factory.create_lock_with_ttl(&key, SHORT_TTL).unwrap();
        let mut guard = lock.acquire_guard().await.unwrap().expect("free key");
        guard.auto_extend();
        let loss = guard.loss();
        let intruder = factory.create_lock(&key).unwrap();
        intruder.force_release().await.unwrap();
        assert!(intruder.acquire_immediately().await.unwrap());
        tokio::time::timeout(Duration::from_secs(10), loss.lost()).await.expect("loss signal fired");
        intruder.release().await.unwrap();
        sleep(SHORT_TTL).await;
        assert!(!lock.is_locked().await.unwrap(), "the lost guard must not take the lock back");
        drop(guard);
    }
}

case! {
    /// `run_auto_extend` reports a lock lost during the work as `LockLost`.
    run_auto_extend_reports_a_lost_lock(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("run-auto-lost");
        let lock = factory.create_lock_with_ttl(&key, SHORT_TTL).unwrap();
        let intruder = factory.create_lock(&key).unwrap();
        let outcome = lock
            .run_auto_extend(|loss| async {
                let loss = loss;
                intruder.force_release().await.unwrap();
                assert!(intruder.acquire_immediately().await.unwrap());
                loss.lost().await;
            })
            .await;
        match outcome {
            Err(Error::LockLost { key: lost }) => assert_eq!(lost, key),
            other => panic!("expected LockLost, got {other:?}"),
        }
        assert!(intruder.is_locked().await.unwrap(), "the intruder keeps the lock");
        intruder.release().await.unwrap();
    }
}

/// A store wrapper that counts the calls reaching the store it wraps: a probe for tests
/// (failed attempts, renewals).
pub struct CountingStore {
    inner: Arc<dyn LockStore>,
    /// Takes (`save` and `save_in_line` calls).
    pub saves: AtomicUsize,
    /// Takes answered [`Acquisition::Busy`].
    pub busy: AtomicUsize,
    /// Takes in a line answered [`Acquisition::Busy`] when the waiter's previous take was
    /// too: asks in vain. (The first busy answer of a wait only joins the line.)
    pub in_vain: AtomicUsize,
    /// `extend` calls.
    pub extends: AtomicUsize,
    /// `leave_line` and `leave_share_line` calls the store answered without error.
    pub leaves: AtomicUsize,
    /// The waiters whose last take was answered busy.
    queued: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl CountingStore {
    /// Wraps `inner`, with every count at zero.
    pub fn new(inner: Arc<dyn LockStore>) -> Self {
        Self {
            inner,
            saves: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            in_vain: AtomicUsize::new(0),
            extends: AtomicUsize::new(0),
            leaves: AtomicUsize::new(0),
            queued: std::sync::Mutex::default(),
        }
    }
}

#[async_trait]
impl LockStore for CountingStore {
    fn validate_key(&self, key: &str) -> Result<()> {
        self.inner.validate_key(key)
    }

    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition> {
        self.counted(None, self.inner.save(key, owner, ttl)).await
    }

    async fn save_in_line(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        place: Place<'_>,
    ) -> Result<Acquisition> {
        self.counted(
            Some(place.waiter),
            self.inner.save_in_line(key, owner, ttl, place),
        )
        .await
    }

    async fn leave_line(&self, key: &str, waiter: &str) -> Result<()> {
        self.counted_leave(self.inner.leave_line(key, waiter)).await
    }

    fn issues_fencing_tokens(&self) -> bool {
        self.inner.issues_fencing_tokens()
    }

    fn boards(&self) -> Option<&Boards> {
        self.inner.boards()
    }

    async fn save_share(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
        share: Share,
        place: Option<Place<'_>>,
    ) -> Result<Acquisition> {
        let waiter = place.map(|place| place.waiter);
        self.counted(waiter, self.inner.save_share(key, owner, ttl, share, place))
            .await
    }

    async fn delete_share(&self, key: &str, owner: &str, share: Share) -> Result<OwnerCheck> {
        self.inner.delete_share(key, owner, share).await
    }

    async fn extend_share(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        share: Share,
    ) -> Result<OwnerCheck> {
        self.extends.fetch_add(1, Ordering::SeqCst);
        self.inner.extend_share(key, owner, ttl, share).await
    }

    async fn force_delete_shares(&self, key: &str, family: Family) -> Result<()> {
        self.inner.force_delete_shares(key, family).await
    }

    async fn count_shares(&self, key: &str, share: Share) -> Result<u32> {
        self.inner.count_shares(key, share).await
    }

    async fn leave_share_line(&self, key: &str, family: Family, waiter: &str) -> Result<()> {
        self.counted_leave(self.inner.leave_share_line(key, family, waiter))
            .await
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        self.inner.delete(key, owner).await
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        self.inner.force_delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key).await
    }

    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck> {
        self.extends.fetch_add(1, Ordering::SeqCst);
        self.inner.extend(key, owner, ttl).await
    }
}

impl CountingStore {
    /// Counts a take (by `waiter`, if in a line) and, if it found the key busy, a busy
    /// answer, and an ask in vain if the waiter's previous take was busy too.
    async fn counted(
        &self,
        waiter: Option<&str>,
        take: impl Future<Output = Result<Acquisition>>,
    ) -> Result<Acquisition> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        let outcome = take.await;
        let busy = matches!(outcome, Ok(Acquisition::Busy));
        if busy {
            self.busy.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(waiter) = waiter {
            let mut queued = self
                .queued
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let was_queued = if busy {
                !queued.insert(waiter.to_owned())
            } else {
                queued.remove(waiter);
                false
            };
            if busy && was_queued {
                self.in_vain.fetch_add(1, Ordering::SeqCst);
            }
        }
        outcome
    }

    /// Counts a leave of a line, once the store answered it without error.
    async fn counted_leave(&self, leave: impl Future<Output = Result<()>>) -> Result<()> {
        leave.await?;
        self.leaves.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Waits until a waiter of this store has left a line (at most [`PROMPTLY`]): a lock
    /// whose wait ended without the key leaves its place at once, in the background.
    pub(crate) async fn left_a_line(&self, why: &str) {
        let started = Instant::now();
        while self.leaves.load(Ordering::SeqCst) == 0 {
            assert!(
                started.elapsed() < PROMPTLY,
                "no waiter left the line: {why}"
            );
            sleep(Duration::from_millis(10)).await;
        }
    }
}
