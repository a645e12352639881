//! Cases at the edges of the input space and of the contract: durations and keys at their
//! limits, the serialized form round-tripping exactly, what counts as an attempt, and second,
//! independent proofs of the promises that matter most.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::sleep;

use super::{factory, unique_key, CountingStore, SHORT_TTL};
use crate::{Error, LockFactory, Retry, SerializedLock, Ttl, MAX_DURATION, MAX_KEY_LEN};

fn assert_invalid_duration<T: std::fmt::Debug>(result: crate::Result<T>, what: &str) {
    match result {
        Err(Error::InvalidDuration { .. }) => {}
        other => panic!("{what}: expected Error::InvalidDuration, got {other:?}"),
    }
}

case! {
    /// Durations past [`MAX_DURATION`] — as a TTL, an extension, a retry delay or timeout —
    /// are `InvalidDuration` before any store call, and change nothing; `MAX_DURATION`
    /// itself works end to end.
    durations_past_the_maximum_are_refused_before_the_store(new_store) {
        let counting = Arc::new(CountingStore::new(new_store().await));
        let factory = LockFactory::from_shared(counting.clone());
        let key = unique_key("huge");
        assert_invalid_duration(factory.create_lock_with_ttl(&key, Duration::MAX), "TTL Duration::MAX");
        assert_invalid_duration(factory.create_lock_with_ttl(&key, u64::MAX), "TTL u64::MAX ms");
        assert_invalid_duration(factory.create_lock_with_ttl(&key, i64::MAX), "TTL i64::MAX ms");
        assert_invalid_duration(factory.create_lock_with_ttl(&key, Ttl::After(Duration::MAX)), "Ttl::After(MAX)");
        assert_invalid_duration(
            factory.clone().with_retry(Retry::new().delay(Duration::MAX)),
            "retry delay",
        );
        let lock = factory.create_lock_with_ttl(&key, MAX_DURATION).unwrap();
        assert_invalid_duration(
            lock.acquire_with(Retry::new().timeout(Duration::MAX)).await,
            "retry timeout",
        );
        assert_eq!(counting.saves.load(Ordering::SeqCst), 0, "refused before the store");
        assert!(!lock.is_locked().await.unwrap());

        assert!(lock.acquire().await.unwrap(), "a TTL of MAX_DURATION works");
        let remaining = lock.remaining_time().unwrap();
        assert!(remaining > MAX_DURATION - Duration::from_secs(60), "{remaining:?}");
        let before = lock.serialize();
        assert_invalid_duration(lock.extend_by(Duration::MAX).await, "extend_by Duration::MAX");
        assert_eq!(counting.extends.load(Ordering::SeqCst), 0, "refused before the store");
        assert_eq!(lock.serialize(), before, "a refused extension changes nothing");
        lock.extend_by(MAX_DURATION).await.unwrap();
        assert!(lock.is_locked().await.unwrap());
        lock.release().await.unwrap();
        assert!(!lock.is_locked().await.unwrap());
    }
}

case! {
    /// Keys of [`MAX_KEY_LEN`] + 1 bytes are `InvalidKey` naming the limit, when created and
    /// when restored; empty keys and keys with NUL too.
    oversized_and_empty_keys_are_invalid(new_store) {
        let factory = factory(&new_store).await;
        let oversized = "k".repeat(MAX_KEY_LEN + 1);
        for key in [oversized.as_str(), "", "nul\0inside"] {
            match factory.create_lock(key) {
                Err(Error::InvalidKey { key: shown, reason }) => {
                    assert!(shown.len() < 200, "the error shows a shortened key");
                    if key.len() > MAX_KEY_LEN {
                        assert!(reason.contains(&MAX_KEY_LEN.to_string()), "{reason}");
                    }
                }
                other => panic!("key of {} bytes: expected InvalidKey, got {other:?}", key.len()),
            }
            let serialized = SerializedLock {
                key: key.to_owned(),
                owner: "f00d".into(),
                ttl: Some(1000),
                expiration_time: None,
                fencing_token: None,
                kind: None,
                limit: None,
            };
            assert!(
                matches!(factory.restore_lock(serialized), Err(Error::InvalidKey { .. })),
                "restoring a key of {} bytes", key.len()
            );
        }
    }
}

case! {
    /// Serializing, restoring and serializing again gives the same bytes, hand-over after
    /// hand-over, and the restored lock keeps the expiry and the fencing token. A TTL under
    /// a millisecond is written as 1 ms, which restores.
    serialized_lock_round_trips_exactly(new_store) {
        let factory = factory(&new_store).await;
        let lock = factory.create_lock_with_ttl(unique_key("round-trip"), "20s").unwrap();
        assert!(lock.acquire().await.unwrap());
        let first = lock.serialize().to_string();
        let mut json = first.clone();
        // Pauses that end at every phase of the millisecond: a conversion that rounds
        // would shift the expiry on some of them.
        for hand_over in 0..40u64 {
            let there = factory.restore_lock(&json).unwrap();
            sleep(Duration::from_micros(100 + hand_over * 37)).await;
            json = there.serialize().to_string();
        }
        assert_eq!(json, first, "forty hand-overs changed the serialized lock");
        let restored = factory.restore_lock(&json).unwrap();
        assert_eq!(restored.fencing_token(), lock.fencing_token());
        restored.release().await.unwrap();

        let tiny = factory.create_lock_with_ttl(unique_key("tiny"), Duration::from_micros(500)).unwrap();
        assert_eq!(tiny.serialize().ttl, Some(1));
        assert_eq!(factory.restore_lock(tiny.serialize()).unwrap().ttl(), Ttl::After(Duration::from_millis(1)));

        let forever = factory.create_lock_with_ttl(unique_key("forever"), Ttl::Never).unwrap();
        assert!(forever.acquire().await.unwrap());
        let restored = factory.restore_lock(forever.serialize().to_string()).unwrap();
        assert_eq!(restored.fencing_token(), forever.fencing_token(), "a lock without TTL keeps its token");
        restored.release().await.unwrap();
    }
}

case! {
    /// A serialized lock missing `ttl` or `expirationTime` is `InvalidSerializedLock`: an
    /// expiry never disappears silently. An explicit `null` is fine.
    serialized_lock_with_missing_fields_is_refused(new_store) {
        let factory = factory(&new_store).await;
        for json in [
            r#"{"key":"k","owner":"o","expirationTime":1732600000000}"#,
            r#"{"key":"k","owner":"o","ttl":30000}"#,
            r#"{"key":"k","owner":"o","ttl":30000,"expirationTime":18446744073709551615}"#,
            r#"{"key":"k","owner":"o","ttl":18446744073709551615,"expirationTime":null}"#,
        ] {
            assert!(
                matches!(factory.restore_lock(json), Err(Error::InvalidSerializedLock { .. })),
                "{json} must be refused"
            );
        }
        assert!(factory.restore_lock(r#"{"key":"k","owner":"o","ttl":null,"expirationTime":null}"#).is_ok());
    }
}

case! {
    /// An attempt is a store call: 4 attempts 150 ms apart on a held key make exactly 4
    /// takes and last at least three delays, whatever notifications the store sends.
    attempts_are_store_calls(new_store) {
        let holder_factory = factory(&new_store).await;
        let counting = Arc::new(CountingStore::new(new_store().await));
        let factory = LockFactory::from_shared(counting.clone());
        let key = unique_key("attempts");
        let holder = holder_factory.create_lock(&key).unwrap();
        assert!(holder.acquire().await.unwrap());
        // Keys released and taken around it: notifications that are not this key's release.
        let other = holder_factory.create_lock(unique_key("attempts-noise")).unwrap();
        let noise = async {
            for _ in 0..10 {
                assert!(other.acquire().await.unwrap());
                other.release().await.unwrap();
                sleep(Duration::from_millis(30)).await;
            }
        };
        let waiter = factory.create_lock(&key).unwrap();
        let started = Instant::now();
        let (acquired, ()) = tokio::join!(
            waiter.acquire_with(Retry::new().attempts(4).delay(150)),
            noise,
        );
        let waited = started.elapsed();
        assert!(!acquired.unwrap());
        assert_eq!(counting.saves.load(Ordering::SeqCst), 4, "one take per attempt");
        assert!(waited >= Duration::from_millis(450), "gave up after {waited:?}, before three delays");
        holder.release().await.unwrap();
    }
}

case! {
    /// Wake-ups that are not releases (a store that wakes its waiters every 10 ms) never shorten the retry policy: 4 attempts 150 ms apart still last three
    /// delays.
    wakeups_without_release_never_shorten_the_policy(new_store) {
        let holder_factory = factory(&new_store).await;
        let restless = Arc::new(RestlessStore::new(new_store().await));
        let factory = LockFactory::from_shared(restless);
        let key = unique_key("restless");
        let holder = holder_factory.create_lock(&key).unwrap();
        assert!(holder.acquire().await.unwrap());
        let waiter = factory.create_lock(&key).unwrap();
        let started = Instant::now();
        let acquired = waiter.acquire_with(Retry::new().attempts(4).delay(150)).await.unwrap();
        let waited = started.elapsed();
        assert!(!acquired);
        assert!(waited >= Duration::from_millis(450), "gave up after {waited:?}, before three delays");
        holder.release().await.unwrap();
    }
}

/// A store that wakes its waiters every 10 ms whether or not anything was released; it
/// keeps no line of its own (its takes are plain ones).
struct RestlessStore {
    inner: Arc<dyn crate::LockStore>,
    boards: Arc<crate::Boards>,
}

/// A release feed that hears nothing.
struct Deaf;

impl crate::ReleaseFeed for Deaf {
    fn subscribe(&self, _key: &str) {}
    fn unsubscribe(&self, _key: &str) {}
}

impl RestlessStore {
    /// Wraps `inner`; the wakes go on while the store lives.
    fn new(inner: Arc<dyn crate::LockStore>) -> Self {
        let boards = Arc::new(crate::Boards::new(|_| Deaf));
        let restless = Arc::downgrade(&boards);
        tokio::spawn(async move {
            while let Some(boards) = restless.upgrade() {
                for (family, key) in boards.watched() {
                    boards.of(family).wake(&key, None);
                }
                drop(boards);
                sleep(Duration::from_millis(10)).await;
            }
        });
        Self { inner, boards }
    }
}

#[async_trait::async_trait]
impl crate::LockStore for RestlessStore {
    fn validate_key(&self, key: &str) -> crate::Result<()> {
        self.inner.validate_key(key)
    }

    async fn save(
        &self,
        key: &str,
        owner: &str,
        ttl: Option<Duration>,
    ) -> crate::Result<crate::Acquisition> {
        self.inner.save(key, owner, ttl).await
    }

    async fn delete(&self, key: &str, owner: &str) -> crate::Result<crate::OwnerCheck> {
        self.inner.delete(key, owner).await
    }

    async fn force_delete(&self, key: &str) -> crate::Result<()> {
        self.inner.force_delete(key).await
    }

    async fn exists(&self, key: &str) -> crate::Result<bool> {
        self.inner.exists(key).await
    }

    async fn extend(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> crate::Result<crate::OwnerCheck> {
        self.inner.extend(key, owner, ttl).await
    }

    fn boards(&self) -> Option<&crate::Boards> {
        Some(&self.boards)
    }
}

case! {
    /// The retry timeout is a deadline for `run_with` too (a second proof, independent of
    /// `acquire_timeout_is_a_deadline`): the work does not run, and the call returns long
    /// before the delay would have ended.
    run_with_gives_up_at_the_deadline(new_store) {
        let factory = factory(&new_store).await;
        let key = unique_key("run-deadline");
        let holder = factory.create_lock(&key).unwrap();
        assert!(holder.acquire().await.unwrap());
        let waiter = factory.create_lock(&key).unwrap();
        let started = Instant::now();
        let ran = waiter
            .run_with(Retry::new().timeout(250).delay("20s"), || async { "ran" })
            .await
            .unwrap();
        let waited = started.elapsed();
        assert_eq!(ran, None, "the work must not run without the lock");
        assert!(waited >= Duration::from_millis(250), "gave up early: {waited:?}");
        assert!(waited < Duration::from_secs(10), "waited for the delay: {waited:?}");
        holder.release().await.unwrap();
    }
}

case! {
    /// `run_immediately` releases when the work returns an `Err` (a second proof, seen from
    /// another store): the key is free for someone else at once.
    run_immediately_releases_after_an_error(new_store) {
        let here = factory(&new_store).await;
        let elsewhere = factory(&new_store).await;
        let key = unique_key("run-err");
        let lock = here.create_lock(&key).unwrap();
        let outcome = lock
            .run_immediately(|| async { Err::<(), &str>("card declined") })
            .await
            .unwrap();
        assert_eq!(outcome, Some(Err("card declined")));
        let next = elsewhere.create_lock(&key).unwrap();
        assert!(next.acquire_immediately().await.unwrap(), "the key is free after the error");
        next.release().await.unwrap();
    }
}

case! {
    /// Automatic extension renews (a second proof, counting renewals at the store): a guard
    /// kept three TTLs makes renewals, and a contender on another store never gets in.
    auto_extend_renews_at_the_store(new_store) {
        let counting = Arc::new(CountingStore::new(new_store().await));
        let factory = LockFactory::from_shared(counting.clone());
        let contender_factory = LockFactory::from_shared(new_store().await);
        let key = unique_key("renews");
        let ttl = Duration::from_secs(1);
        let lock = factory.create_lock_with_ttl(&key, ttl).unwrap();
        let mut guard = lock.acquire_guard().await.unwrap().expect("a free key");
        guard.auto_extend();
        let contender = contender_factory.create_lock(&key).unwrap();
        let until = Instant::now() + ttl * 3;
        while Instant::now() < until {
            assert!(!contender.acquire_immediately().await.unwrap(), "a renewed lock was taken");
            sleep(Duration::from_millis(100)).await;
        }
        assert!(counting.extends.load(Ordering::SeqCst) >= 3, "renewals reached the store");
        assert!(!guard.loss().is_lost());
        guard.release().await.unwrap();
        assert!(contender.acquire_immediately().await.unwrap());
        contender.release().await.unwrap();
    }
}

case! {
    /// Extending an expired lock with a huge but valid duration is `NotOwned` and takes
    /// nothing back; a short TTL still expires on the store's clock.
    extend_of_an_expired_lock_takes_nothing_back(new_store) {
        let factory = factory(&new_store).await;
        let lock = factory.create_lock_with_ttl(unique_key("late-extend"), SHORT_TTL).unwrap();
        assert!(lock.acquire().await.unwrap());
        sleep(SHORT_TTL * 2).await;
        assert!(matches!(lock.extend_by(MAX_DURATION).await, Err(Error::NotOwned { .. })));
        assert!(!lock.is_locked().await.unwrap());
    }
}
