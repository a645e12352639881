//! Waiters learn of an expiry when it happens: nothing announces one, so the store watches
//! the deadlines of the keys that have waiters (the conformance suite holds every store to
//! one look again past the deadline; this one to the deadline itself).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use verrou_core::conformance::CountingStore;
use verrou_core::{LockFactory, LockStore, Retry, HANDOVER_WINDOW, RECHECK_EVERY};
use verrou_memory::MemoryStore;

/// How late past its due time a waiter may get the key on a loaded machine (far below the
/// one-second look again of the stores whose servers announce releases).
const SLACK: Duration = Duration::from_millis(250);

/// How long the holders that never give the key back hold it.
const TTL: Duration = Duration::from_millis(300);

/// A factory whose locks wait with an hour between attempts: a waiter that gets a key in
/// time was woken.
fn patient(store: &MemoryStore) -> LockFactory {
    LockFactory::new(store.clone())
        .with_retry(Retry::new().delay("1h").timeout("20s"))
        .expect("a valid retry policy")
}

/// A lock of key `k` in `store` that waits an hour between attempts.
fn patient_lock(store: &MemoryStore) -> verrou_core::Lock {
    patient(store).create_lock("k").expect("valid key")
}

/// Starts `waiter`'s `acquire` and returns when it got the key (released at once).
fn start_waiting(waiter: verrou_core::Lock) -> tokio::task::JoinHandle<Instant> {
    tokio::spawn(async move {
        assert!(waiter.acquire().await.expect("acquire"), "gave up");
        let at = Instant::now();
        waiter.release().await.expect("release");
        at
    })
}

/// The lock of key `k` held for `ttl` from now in `store`, and when it expires.
async fn hold(store: &MemoryStore, ttl: Duration) -> (verrou_core::Lock, Instant) {
    let holder = LockFactory::new(store.clone())
        .create_lock_with_ttl("k", ttl)
        .expect("valid key");
    let expires = Instant::now() + ttl;
    assert!(holder.acquire().await.expect("acquire"));
    (holder, expires)
}

/// Asserts that `got` is at or after `due` and at most [`SLACK`] past it.
fn on_time(got: Instant, due: Instant, what: &str) {
    assert!(got >= due, "{what}: got the key {:?} early", due - got);
    let late = got - due;
    assert!(late <= SLACK, "{what}: got the key {late:?} late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_gets_an_expired_key_as_it_expires() {
    let store = MemoryStore::new();
    let (_holder, expires) = hold(&store, TTL).await;
    let got = start_waiting(patient_lock(&store)).await.expect("waiter");
    on_time(got, expires, "behind a holder that never released");
}

/// An extension moves the hand-over to the new deadline: the watch looks again at the old
/// one, finds the key held, and waits for the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_moves_the_hand_over_to_the_new_deadline() {
    let store = MemoryStore::new();
    let (holder, _) = hold(&store, TTL).await;
    let waiting = start_waiting(patient_lock(&store));
    tokio::time::sleep(TTL / 2).await;
    let extended_for = Duration::from_millis(500);
    let expires = Instant::now() + extended_for;
    holder.extend_by(extended_for).await.expect("extend");
    let got = waiting.await.expect("waiter");
    on_time(got, expires, "behind a holder that extended");
}

/// The same for the only permit of a semaphore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_gets_an_expired_permit_as_it_expires() {
    let store = MemoryStore::new();
    let holder = LockFactory::new(store.clone())
        .create_semaphore_with_ttl("k", 1, TTL)
        .expect("valid key");
    let expires = Instant::now() + TTL;
    assert!(holder.acquire().await.expect("acquire"));
    let waiter = patient(&store).create_semaphore("k", 1).expect("valid key");
    let got = start_waiting(waiter).await.expect("waiter");
    on_time(got, expires, "behind a permit");
}

/// A store kept across Tokio runtimes (as a `static` shared by `#[tokio::test]`s is): the
/// watch of a key started on a runtime that shut down is started again by the next waiter,
/// on its runtime. The first runtime's waiter, gone with it, still has the front place: it is
/// handed the key at the expiry and, as it never comes, passed after a hand-over window.
#[test]
fn a_store_that_outlives_its_runtime_still_hands_over_at_expiry() {
    let runtime = || tokio::runtime::Runtime::new().expect("a Tokio runtime");
    let store = MemoryStore::new();
    let first = runtime();
    let (_holder, expires) = first.block_on(async {
        let held = hold(&store, Duration::from_millis(600)).await;
        drop(start_waiting(patient_lock(&store)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        held
    });
    drop(first);
    let got = runtime()
        .block_on(async { start_waiting(patient_lock(&store)).await })
        .expect("waiter");
    on_time(
        got,
        expires + HANDOVER_WINDOW,
        "on the next runtime, behind a front gone with the first",
    );
}

/// A semaphore whose permits are all held and do not expire: the watch of its key does not
/// wake the waiter (who would ask in vain) at each look, only when a permit frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_semaphore_does_not_wake_its_waiter_in_vain() {
    let store = MemoryStore::new();
    let holder = LockFactory::new(store.clone())
        .create_semaphore_with_ttl("k", 1, "30s")
        .expect("valid key");
    assert!(holder.acquire().await.expect("acquire"));
    let counting = Arc::new(CountingStore::new(Arc::new(store.clone())));
    let waiter = LockFactory::from_shared(Arc::clone(&counting) as Arc<dyn LockStore>)
        .with_retry(Retry::new().delay("1h").timeout("20s"))
        .expect("a valid retry policy")
        .create_semaphore("k", 1)
        .expect("valid key");
    let waiting = tokio::spawn(async move { waiter.acquire().await.expect("acquire") });
    tokio::time::sleep(RECHECK_EVERY * 2 + HANDOVER_WINDOW).await;
    let in_vain = counting.in_vain.load(Ordering::SeqCst);
    assert!(in_vain <= 1, "the waiter asked {in_vain} times in vain");
    holder.release().await.expect("release");
    assert!(
        waiting.await.expect("waiter"),
        "the release let the waiter in"
    );
}
