//! The semaphore and read-write lock groups of the conformance suite: what a store that
//! keeps shares ([`LockStore::save_share`] and the rest) must do. Stores made by one
//! constructor stand for separate processes.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::sleep;

use super::lines::gone_in_a_row_delay_the_next_by_a_window_each;
use super::{factory_with_delay, unique_key, woken_by_release, History, NEVER, PROMPTLY};
use crate::{Error, LockFactory, LockKind, Share};

/// Writes one `#[test]` per semaphore case, with stores made by `$new_store` (as for
/// [`conformance_tests!`](crate::conformance_tests)).
#[macro_export]
macro_rules! semaphore_tests {
    ($new_store:path) => {
        $crate::conformance_tests!(@cases $new_store;
            permits_never_exceed_the_limit,
            a_full_semaphore_refuses_and_counts,
            a_released_permit_goes_to_a_waiter,
            freed_permits_go_to_every_waiter_that_fits,
            expired_permits_free_themselves,
            permits_are_owner_checked,
            mixed_limits_never_exceed_the_largest,
            permit_tokens_increase_and_survive_serialization,
            force_release_frees_every_permit,
            auto_extend_keeps_a_permit,
            a_semaphore_is_not_the_lock_of_its_key,
            permit_waiters_gone_in_a_row_delay_the_next_by_a_window_each,
            a_permit_taken_again_by_its_holder_is_one_permit,
        );
    };
}

/// Writes one `#[test]` per read-write lock case, with stores made by `$new_store`.
#[macro_export]
macro_rules! rw_lock_tests {
    ($new_store:path) => {
        $crate::conformance_tests!(@cases $new_store;
            readers_share_and_a_writer_excludes,
            never_a_reader_beside_a_writer,
            a_waiting_writer_holds_back_new_readers,
            readers_behind_a_writer_go_in_together,
            fencing_tokens_are_shared_by_readers_and_writers,
            expired_readers_and_writers_free_the_key,
            a_restored_reader_releases_in_another_store,
            force_release_frees_readers_and_writer,
            writers_gone_in_a_row_delay_the_next_by_a_window_each,
            a_read_taken_again_by_its_holder_is_one_read,
        );
    };
}

/// How many holders are inside a critical section at once, and the most there ever were:
/// a probe for tests of semaphores and read-write locks (in one process).
#[derive(Debug, Default)]
pub struct Occupancy {
    inside: AtomicUsize,
    most: AtomicUsize,
}

impl Occupancy {
    /// A holder comes in; how many are inside now.
    pub fn enter(&self) -> usize {
        let inside = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(inside, Ordering::SeqCst);
        inside
    }

    /// A holder goes out.
    pub fn leave(&self) {
        self.inside.fetch_sub(1, Ordering::SeqCst);
    }

    /// How many are inside now.
    pub fn inside(&self) -> usize {
        self.inside.load(Ordering::SeqCst)
    }

    /// The most that were ever inside at once.
    pub fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

case! {
    /// Six workers on six store instances cycle through a semaphore of 3 permits: never more
    /// than 3 inside, and 3 do get in together.
    permits_never_exceed_the_limit(new_store) {
        let key = unique_key("semaphore-limit");
        let occupancy = Arc::new(Occupancy::default());
        let history = Arc::new(History::new());
        let mut workers = Vec::new();
        for worker in 0..6 {
            let permit = factory_with_delay(&new_store, "20ms").await.create_semaphore(&key, 3).unwrap();
            let (occupancy, history) = (Arc::clone(&occupancy), Arc::clone(&history));
            workers.push(tokio::spawn(async move {
                for _ in 0..5 {
                    let asked_at = Instant::now();
                    assert!(permit.acquire().await.unwrap());
                    let hold = history.granted_since(asked_at, &permit, format!("worker {worker}"));
                    let inside = occupancy.enter();
                    assert!(inside <= 3, "{inside} holders inside a semaphore of 3");
                    sleep(Duration::from_millis(20)).await;
                    occupancy.leave();
                    history.released(hold);
                    permit.release().await.unwrap();
                }
            }));
        }
        for worker in workers {
            worker.await.unwrap();
        }
        assert_eq!(history.assert_clean(), 30);
        assert_eq!(occupancy.most(), 3, "the permits were never all used at once");
    }
}

case! {
    /// Once its permits are taken, a semaphore refuses `acquire_immediately`; `holders` and
    /// `available` count the permits; `available` is for semaphores only.
    a_full_semaphore_refuses_and_counts(new_store) {
        let factory = LockFactory::from_shared(new_store().await);
        let key = unique_key("semaphore-full");
        let first = factory.create_semaphore(&key, 2).unwrap();
        let second = factory.create_semaphore(&key, 2).unwrap();
        let third = factory.create_semaphore(&key, 2).unwrap();
        assert_eq!(first.kind(), LockKind::Shared(Share::Permit { limit: 2 }));
        assert_eq!(first.available().await.unwrap(), 2);
        assert!(first.acquire_immediately().await.unwrap());
        assert!(second.acquire_immediately().await.unwrap());
        assert!(!third.acquire_immediately().await.unwrap(), "a third permit of 2");
        assert_eq!(third.holders().await.unwrap(), 2);
        assert_eq!(third.available().await.unwrap(), 0);
        assert!(third.is_locked().await.unwrap());
        first.release().await.unwrap();
        assert_eq!(third.available().await.unwrap(), 1);
        assert!(third.acquire_immediately().await.unwrap());
        second.release().await.unwrap();
        third.release().await.unwrap();
        assert!(!third.is_locked().await.unwrap());
        let lock = factory.create_lock(&key).unwrap();
        assert!(matches!(lock.available().await, Err(Error::InvalidArgument(_))));
        assert!(matches!(factory.create_semaphore(&key, 0), Err(Error::InvalidArgument(_))));
    }
}

case! {
    /// A waiter on a full semaphore (another store instance, an hour-long retry delay) gets
    /// the permit a release frees, promptly.
    a_released_permit_goes_to_a_waiter(new_store) {
        let key = unique_key("semaphore-wake");
        let holder = LockFactory::from_shared(new_store().await).create_semaphore(&key, 1).unwrap();
        assert!(holder.acquire().await.unwrap());
        let waiter = factory_with_delay(&new_store, NEVER).await.create_semaphore(&key, 1).unwrap();
        woken_by_release(waiter, &holder, "a permit was freed").await;
    }
}

case! {
    /// Three holders fill a semaphore of 3 and three waiters (hour-long retry delay) line
    /// up; the holders release one after the other and all three waiters get in promptly.
    freed_permits_go_to_every_waiter_that_fits(new_store) {
        let key = unique_key("semaphore-chain");
        let factory = LockFactory::from_shared(new_store().await);
        let mut holders = Vec::new();
        for _ in 0..3 {
            let permit = factory.create_semaphore(&key, 3).unwrap();
            assert!(permit.acquire_immediately().await.unwrap());
            holders.push(permit);
        }
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let permit = factory_with_delay(&new_store, NEVER).await.create_semaphore(&key, 3).unwrap();
            waiting.push(tokio::spawn(async move { (permit.acquire().await.unwrap(), permit) }));
            sleep(Duration::from_millis(30)).await;
        }
        for holder in holders {
            holder.release().await.unwrap();
        }
        for waiter in waiting {
            let (acquired, permit) = tokio::time::timeout(PROMPTLY, waiter).await.expect("every waiter gets a freed permit").unwrap();
            assert!(acquired);
            permit.release().await.unwrap();
        }
    }
}

case! {
    /// A permit's expiry (by the store's clock) frees it for others.
    expired_permits_free_themselves(new_store) {
        let factory = LockFactory::from_shared(new_store().await);
        let key = unique_key("semaphore-expiry");
        let crashed = factory.create_semaphore_with_ttl(&key, 1, "200ms").unwrap();
        assert!(crashed.acquire().await.unwrap());
        let next = factory.create_semaphore(&key, 1).unwrap();
        assert!(!next.acquire_immediately().await.unwrap());
        sleep(Duration::from_millis(350)).await;
        assert!(next.acquire_immediately().await.unwrap(), "the expired permit still counts");
        assert!(matches!(crashed.release().await, Err(Error::NotOwned { .. })));
        next.release().await.unwrap();
    }
}

case! {
    /// Releasing or extending a permit one does not hold is `NotOwned` and changes nothing;
    /// extending one's own moves its expiry.
    permits_are_owner_checked(new_store) {
        let factory = LockFactory::from_shared(new_store().await);
        let key = unique_key("semaphore-owner");
        let holder = factory.create_semaphore_with_ttl(&key, 2, "300ms").unwrap();
        let stranger = factory.create_semaphore(&key, 2).unwrap();
        assert!(holder.acquire().await.unwrap());
        assert!(matches!(stranger.release().await, Err(Error::NotOwned { .. })));
        assert!(matches!(stranger.extend().await, Err(Error::NotOwned { .. })));
        assert_eq!(holder.holders().await.unwrap(), 1);
        holder.extend_by("2s").await.unwrap();
        sleep(Duration::from_millis(450)).await;
        assert_eq!(holder.holders().await.unwrap(), 1, "extended past its TTL");
        holder.release().await.unwrap();
        assert!(matches!(holder.release().await, Err(Error::NotOwned { .. })));
    }
}

case! {
    /// Holders that disagree on the limit: a take counts against its own limit. Two permits
    /// taken with limit 2 refuse a taker with limit 1 and admit one with limit 3, and then
    /// nobody else with limit 3.
    mixed_limits_never_exceed_the_largest(new_store) {
        let factory = LockFactory::from_shared(new_store().await);
        let key = unique_key("semaphore-mixed");
        let held: Vec<_> = (0..2).map(|_| factory.create_semaphore(&key, 2).unwrap()).collect();
        for permit in &held {
            assert!(permit.acquire_immediately().await.unwrap());
        }
        let strict = factory.create_semaphore(&key, 1).unwrap();
        assert!(!strict.acquire_immediately().await.unwrap(), "limit 1 with 2 held");
        let generous = factory.create_semaphore(&key, 3).unwrap();
        assert!(generous.acquire_immediately().await.unwrap(), "limit 3 with 2 held");
        let more = factory.create_semaphore(&key, 3).unwrap();
        assert!(!more.acquire_immediately().await.unwrap(), "limit 3 with 3 held");
        for permit in held.iter().chain([&generous]) {
            permit.release().await.unwrap();
        }
    }
}

case! {
    /// Every permit grant has a fencing token above the ones before (across holders), kept
    /// by serialization; a restored permit releases from another store instance.
    permit_tokens_increase_and_survive_serialization(new_store) {
        let factory = LockFactory::from_shared(new_store().await);
        let elsewhere = LockFactory::from_shared(new_store().await);
        let key = unique_key("semaphore-tokens");
        let mut last = 0;
        for _ in 0..3 {
            let permit = factory.create_semaphore(&key, 2).unwrap();
            assert!(permit.acquire().await.unwrap());
            let token = permit.fencing_token().expect("permits carry fencing tokens");
            assert!(token > last, "token {token} after {last}");
            last = token;
            let json = permit.serialize().to_string();
            assert!(json.contains(r#""kind":"permit""#) && json.contains(r#""limit":2"#), "{json}");
            let restored = elsewhere.restore_lock(json.as_str()).unwrap();
            assert_eq!(restored.fencing_token(), Some(token));
            assert_eq!(restored.kind(), permit.kind());
            restored.release().await.unwrap();
        }
        assert_eq!(factory.create_semaphore(&key, 2).unwrap().holders().await.unwrap(), 0);
    }
}

case! {
    /// `force_release` frees the whole semaphore, whoever holds its permits.
    force_release_frees_every_permit(new_store) {
        let factory = LockFactory::from_shared(new_store().await);
        let key = unique_key("semaphore-force");
        for _ in 0..3 {
            assert!(factory.create_semaphore(&key, 3).unwrap().acquire().await.unwrap());
        }
        let admin = factory.create_semaphore(&key, 3).unwrap();
        assert_eq!(admin.holders().await.unwrap(), 3);
        admin.force_release().await.unwrap();
        assert_eq!(admin.holders().await.unwrap(), 0);
    }
}

case! {
    /// `run_auto_extend` keeps a permit through work longer than its TTL.
    auto_extend_keeps_a_permit(new_store) {
        let factory = LockFactory::from_shared(new_store().await);
        let key = unique_key("semaphore-auto-extend");
        let permit = factory.create_semaphore_with_ttl(&key, 1, "300ms").unwrap();
        let other = factory.create_semaphore(&key, 1).unwrap();
        let outcome = permit
            .run_auto_extend(|loss| async move {
                sleep(Duration::from_millis(900)).await;
                loss.is_lost()
            })
            .await
            .unwrap();
        assert_eq!(outcome, Some(false), "the permit was lost");
        assert!(other.acquire_immediately().await.unwrap(), "released after the work");
        other.release().await.unwrap();
    }
}

case! {
    /// A semaphore, a read-write lock and a plain lock of one key are three things: holding
    /// one does not hold the others.
    a_semaphore_is_not_the_lock_of_its_key(new_store) {
        let factory = LockFactory::from_shared(new_store().await);
        let key = unique_key("families");
        let lock = factory.create_lock(&key).unwrap();
        let permit = factory.create_semaphore(&key, 1).unwrap();
        let writer = factory.create_rw_lock(&key).unwrap().write().unwrap();
        assert!(lock.acquire_immediately().await.unwrap());
        assert!(permit.acquire_immediately().await.unwrap());
        assert!(writer.acquire_immediately().await.unwrap());
        for held in [&lock, &permit, &writer] {
            held.release().await.unwrap();
        }
    }
}

case! {
    /// Two readers hold the key together; a writer is refused while they do, and readers
    /// while it does.
    readers_share_and_a_writer_excludes(new_store) {
        let factory = LockFactory::from_shared(new_store().await);
        let rw = factory.create_rw_lock(unique_key("rw-basics")).unwrap();
        let (first, second, writer) = (rw.read().unwrap(), rw.read().unwrap(), rw.write().unwrap());
        assert!(first.acquire_immediately().await.unwrap());
        assert!(second.acquire_immediately().await.unwrap(), "readers share");
        assert_eq!(first.holders().await.unwrap(), 2);
        assert!(!writer.acquire_immediately().await.unwrap(), "a writer beside readers");
        first.release().await.unwrap();
        second.release().await.unwrap();
        assert!(writer.acquire_immediately().await.unwrap());
        assert_eq!(writer.holders().await.unwrap(), 1);
        let late = rw.read().unwrap();
        assert!(!late.acquire_immediately().await.unwrap(), "a reader beside the writer");
        writer.release().await.unwrap();
        assert!(matches!(writer.release().await, Err(Error::NotOwned { .. })));
    }
}

case! {
    /// Four readers and two writers on six store instances cycle on one key: never a reader
    /// beside a writer, never two writers, and readers do overlap.
    never_a_reader_beside_a_writer(new_store) {
        let key = unique_key("rw-mix");
        let readers_in = Arc::new(Occupancy::default());
        let writers_in = Arc::new(Occupancy::default());
        let history = Arc::new(History::new());
        let mut workers = Vec::new();
        for worker in 0..6 {
            let rw = factory_with_delay(&new_store, "20ms").await.create_rw_lock(&key).unwrap();
            let write = worker < 2;
            let handle = if write { rw.write().unwrap() } else { rw.read().unwrap() };
            let (mine, theirs) = if write {
                (Arc::clone(&writers_in), Arc::clone(&readers_in))
            } else {
                (Arc::clone(&readers_in), Arc::clone(&writers_in))
            };
            let history = Arc::clone(&history);
            workers.push(tokio::spawn(async move {
                for _ in 0..6 {
                    let asked_at = Instant::now();
                    assert!(handle.acquire().await.unwrap());
                    let hold = history.granted_since(asked_at, &handle, format!("worker {worker}"));
                    let inside = mine.enter();
                    assert!(!write || inside == 1, "two writers inside");
                    assert_eq!(theirs.inside(), 0, "a reader beside a writer");
                    sleep(Duration::from_millis(15)).await;
                    mine.leave();
                    history.released(hold);
                    handle.release().await.unwrap();
                }
            }));
        }
        for worker in workers {
            worker.await.unwrap();
        }
        assert!(readers_in.most() > 1, "readers never shared the key");
        assert_eq!(history.assert_clean(), 36);
    }
}

case! {
    /// While a writer waits, a new reader is refused even though only readers hold the key
    /// (no writer starvation); the last reader's release lets the writer in, promptly.
    a_waiting_writer_holds_back_new_readers(new_store) {
        let key = unique_key("rw-writer-first");
        let rw = LockFactory::from_shared(new_store().await).create_rw_lock(&key).unwrap();
        let reader = rw.read().unwrap();
        assert!(reader.acquire().await.unwrap());
        let writer = factory_with_delay(&new_store, NEVER).await.create_rw_lock(&key).unwrap().write().unwrap();
        let waiting = tokio::spawn(async move { (writer.acquire().await.unwrap(), writer) });
        sleep(Duration::from_millis(100)).await;
        let newcomer = rw.read().unwrap();
        assert!(!newcomer.acquire_immediately().await.unwrap(), "a reader overtook the waiting writer");
        reader.release().await.unwrap();
        let (acquired, writer) = tokio::time::timeout(PROMPTLY, waiting).await.expect("the writer is woken").unwrap();
        assert!(acquired);
        writer.release().await.unwrap();
    }
}

case! {
    /// Readers waiting behind a writer all get in, promptly, when it releases.
    readers_behind_a_writer_go_in_together(new_store) {
        let key = unique_key("rw-readers-follow");
        let writer = LockFactory::from_shared(new_store().await).create_rw_lock(&key).unwrap().write().unwrap();
        assert!(writer.acquire().await.unwrap());
        let inside = Arc::new(AtomicU32::new(0));
        let mut readers = Vec::new();
        for _ in 0..3 {
            let reader = factory_with_delay(&new_store, NEVER).await.create_rw_lock(&key).unwrap().read().unwrap();
            let inside = Arc::clone(&inside);
            readers.push(tokio::spawn(async move {
                assert!(reader.acquire().await.unwrap());
                inside.fetch_add(1, Ordering::SeqCst);
                reader
            }));
            sleep(Duration::from_millis(30)).await;
        }
        let released = Instant::now();
        writer.release().await.unwrap();
        let mut held = Vec::new();
        for reader in readers {
            held.push(tokio::time::timeout(PROMPTLY, reader).await.expect("every reader is let in").unwrap());
        }
        assert_eq!(inside.load(Ordering::SeqCst), 3);
        assert!(released.elapsed() < PROMPTLY);
        for reader in held {
            reader.release().await.unwrap();
        }
    }
}

case! {
    /// Readers and writers of a key draw fencing tokens from one sequence: a writer after a
    /// reader has a greater token, and so on.
    fencing_tokens_are_shared_by_readers_and_writers(new_store) {
        let rw = LockFactory::from_shared(new_store().await).create_rw_lock(unique_key("rw-tokens")).unwrap();
        let mut last = 0;
        for write in [true, false, false, true] {
            let handle = if write { rw.write().unwrap() } else { rw.read().unwrap() };
            assert!(handle.acquire().await.unwrap());
            let token = handle.fencing_token().expect("read-write holds carry fencing tokens");
            assert!(token > last, "token {token} after {last}");
            last = token;
            handle.release().await.unwrap();
        }
    }
}

case! {
    /// Readers and writers expire by the store's clock and then free the key.
    expired_readers_and_writers_free_the_key(new_store) {
        let factory = LockFactory::from_shared(new_store().await);
        let rw = factory.create_rw_lock_with_ttl(unique_key("rw-expiry"), "200ms").unwrap();
        let reader = rw.read().unwrap();
        assert!(reader.acquire().await.unwrap());
        let writer = rw.write().unwrap();
        assert!(!writer.acquire_immediately().await.unwrap());
        sleep(Duration::from_millis(350)).await;
        assert!(writer.acquire_immediately().await.unwrap(), "the expired reader still counts");
        sleep(Duration::from_millis(350)).await;
        assert!(reader.acquire_immediately().await.unwrap(), "the expired writer still counts");
        assert!(matches!(writer.release().await, Err(Error::NotOwned { .. })));
        reader.release().await.unwrap();
    }
}

case! {
    /// A reader serialized in one store instance is restored and released in another.
    a_restored_reader_releases_in_another_store(new_store) {
        let key = unique_key("rw-restore");
        let rw = LockFactory::from_shared(new_store().await).create_rw_lock(&key).unwrap();
        let reader = rw.read().unwrap();
        assert!(reader.acquire().await.unwrap());
        let json = reader.serialize().to_string();
        assert!(json.contains(r#""kind":"read""#), "{json}");
        let restored = LockFactory::from_shared(new_store().await).restore_lock(json.as_str()).unwrap();
        restored.release().await.unwrap();
        let writer = rw.write().unwrap();
        assert!(writer.acquire_immediately().await.unwrap(), "the restored reader was released");
        writer.release().await.unwrap();
    }
}

case! {
    /// `force_release` frees the key of every reader and the writer.
    force_release_frees_readers_and_writer(new_store) {
        let rw = LockFactory::from_shared(new_store().await).create_rw_lock(unique_key("rw-force")).unwrap();
        for _ in 0..2 {
            assert!(rw.read().unwrap().acquire().await.unwrap());
        }
        let writer = rw.write().unwrap();
        writer.force_release().await.unwrap();
        assert!(writer.acquire_immediately().await.unwrap());
        writer.force_release().await.unwrap();
        assert_eq!(writer.holders().await.unwrap(), 0);
    }
}

case! {
    /// Three waiters for a permit that are gone, one behind the other, delay the waiter
    /// behind them by at most a hand-over window and one retry delay each, as for locks: a
    /// take refused only because of the line hands the permit to the front waiter.
    permit_waiters_gone_in_a_row_delay_the_next_by_a_window_each(new_store) {
        gone_in_a_row_delay_the_next_by_a_window_each(&new_store, Some(Share::Permit { limit: 1 })).await;
    }
}

case! {
    /// Three waiting writers that are gone, one behind the other, delay the writer behind
    /// them by at most a hand-over window and one retry delay each.
    writers_gone_in_a_row_delay_the_next_by_a_window_each(new_store) {
        gone_in_a_row_delay_the_next_by_a_window_each(&new_store, Some(Share::Write)).await;
    }
}

case! {
    /// A permit taken again by its holder (a second `acquire`, or a take re-sent after a lost
    /// answer) is the same permit: not granted twice, counted once, and freed by one release.
    a_permit_taken_again_by_its_holder_is_one_permit(new_store) {
        let factory = LockFactory::from_shared(new_store().await);
        let key = unique_key("semaphore-again");
        let permit = factory.create_semaphore(&key, 3).unwrap();
        assert!(permit.acquire_immediately().await.unwrap());
        assert!(!permit.acquire_immediately().await.unwrap(), "a permit is not reentrant");
        assert_eq!(permit.holders().await.unwrap(), 1);
        permit.release().await.unwrap();
        assert_eq!(permit.holders().await.unwrap(), 0, "one release frees the permit");
    }
}

case! {
    /// A read taken again by its holder is the same read: one release lets a writer in.
    a_read_taken_again_by_its_holder_is_one_read(new_store) {
        let factory = LockFactory::from_shared(new_store().await);
        let key = unique_key("rw-again");
        let rw_lock = factory.create_rw_lock(&key).unwrap();
        let reader = rw_lock.read().unwrap();
        assert!(reader.acquire_immediately().await.unwrap());
        assert!(!reader.acquire_immediately().await.unwrap(), "a read is not reentrant");
        assert_eq!(reader.holders().await.unwrap(), 1);
        reader.release().await.unwrap();
        let writer = rw_lock.write().unwrap();
        assert!(writer.acquire_immediately().await.unwrap(), "no read is left behind");
        writer.release().await.unwrap();
    }
}
