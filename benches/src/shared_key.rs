//! One key, 64 tasks: a lock beside a semaphore of 8 permits. Each task acquires (waiting),
//! holds 1 ms and releases, again and again. How many acquisitions a second, how soon a
//! freed hold goes to a waiter, and were there ever more holders inside than allowed?

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use verrou::{Lock, LockFactory, Retry};

use crate::backends::{Backend, TTL};
use crate::stats::{new_histogram, record, Percentiles};

/// Tasks cycling on the key.
pub(crate) const TASKS: usize = 64;
const HOLD: Duration = Duration::from_millis(1);

/// What one run on a shared key measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SharedKeyResult {
    pub(crate) store: &'static str,
    /// `lock`, or `semaphore of N`.
    pub(crate) primitive: String,
    /// How many may hold the key at once.
    pub(crate) limit: usize,
    pub(crate) acquisitions_per_second: f64,
    /// From a release to the acquisition it let in.
    pub(crate) handoff: Percentiles,
    /// The most holders ever inside at once (by this process's clock).
    pub(crate) most_inside: usize,
}

/// Runs `TASKS` tasks on one key of `backend` for `seconds`: a lock, or a semaphore of
/// `limit` permits.
pub(crate) async fn measure(
    backend: &Backend,
    limit: Option<u32>,
    seconds: f64,
) -> SharedKeyResult {
    let factory = LockFactory::from_shared(backend.new_store().await);
    let primitive = limit.map_or("lock".to_owned(), |limit| format!("semaphore of {limit}"));
    let key = format!("bench:shared:{}", primitive.replace(' ', "-"));
    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (factory, key, shared) = (factory.clone(), key.clone(), Arc::clone(&shared));
            tokio::spawn(async move {
                let new_lock = || match limit {
                    Some(limit) => factory.create_semaphore_with_ttl(key.as_str(), limit, TTL),
                    None => factory.create_lock_with_ttl(key.as_str(), TTL),
                };
                cycle(new_lock, deadline, &shared).await
            })
        })
        .collect();
    let mut acquisitions = 0;
    let mut handoffs = new_histogram();
    for task in tasks {
        let (count, histogram) = task.await.expect("task panicked");
        acquisitions += count;
        handoffs.add(&histogram).expect("same histogram bounds");
    }
    SharedKeyResult {
        store: backend.name,
        primitive,
        limit: limit.map_or(1, |limit| usize::try_from(limit).unwrap_or(usize::MAX)),
        acquisitions_per_second: acquisitions as f64 / started.elapsed().as_secs_f64(),
        handoff: Percentiles::of(&handoffs),
        most_inside: shared.most.load(Ordering::SeqCst),
    }
}

/// What the tasks share: who is inside, and the releases not yet followed by an acquisition.
#[derive(Default)]
struct Shared {
    inside: AtomicUsize,
    most: AtomicUsize,
    releases: Mutex<VecDeque<Instant>>,
}

async fn cycle(
    new_lock: impl Fn() -> verrou::Result<Lock>,
    deadline: Instant,
    shared: &Shared,
) -> (u64, hdrhistogram::Histogram<u64>) {
    let mut acquisitions = 0;
    let mut handoffs = new_histogram();
    while Instant::now() < deadline {
        let lock = new_lock().expect("valid key");
        let left = deadline.saturating_duration_since(Instant::now());
        let retry = Retry::new().timeout(left.max(Duration::from_millis(1)));
        if !lock.acquire_with(retry).await.expect("store reachable") {
            break;
        }
        let acquired_at = Instant::now();
        let inside = shared.inside.fetch_add(1, Ordering::SeqCst) + 1;
        shared.most.fetch_max(inside, Ordering::SeqCst);
        let freed = shared.releases.lock().expect("not poisoned").pop_front();
        if let Some(released_at) = freed {
            record(
                &mut handoffs,
                acquired_at.saturating_duration_since(released_at),
            );
        }
        acquisitions += 1;
        tokio::time::sleep(HOLD).await;
        shared.inside.fetch_sub(1, Ordering::SeqCst);
        shared
            .releases
            .lock()
            .expect("not poisoned")
            .push_back(Instant::now());
        lock.release().await.expect("released by its owner");
    }
    (acquisitions, handoffs)
}
