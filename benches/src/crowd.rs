//! A crowd in line: waiters of one store instance queue on a held key; once it is released,
//! each takes it in turn and gives it back at once. A crowd of 1,000 beside a crowd of 8 in
//! the same run: the ratio of their time per grant shows whether a hand-over costs more the
//! more waiters there are.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use verrou::{LockFactory, Retry};

use crate::backends::{Backend, TTL};
use crate::stats::{median, new_histogram, record, Percentiles};

/// The crowds measured; the first is the baseline of the others.
pub(crate) const CROWDS: [usize; 2] = [8, 1_000];

/// The waiters' retry delay: each asks again this often (which keeps its place), so a long
/// line asks the store `crowd / delay` times a second besides the hand-overs.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// How long the waiters are given to join the line before the key is released.
const JOIN_PAUSE: Duration = Duration::from_secs(1);

/// One crowd's measurement.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CrowdResult {
    pub(crate) store: &'static str,
    pub(crate) waiters: usize,
    /// From the first release to the last acquisition, per grant (median of the rounds).
    pub(crate) per_grant_us: f64,
    /// From a release to the acquisition it let in, all rounds together.
    pub(crate) handoff: Percentiles,
    /// `per_grant_us` over that of the first crowd of [`CROWDS`].
    pub(crate) ratio: f64,
    /// The most holders ever inside at once (by this process's clock).
    pub(crate) most_inside: usize,
}

/// Measures every crowd of [`CROWDS`] on `backend`, `rounds` times each (crowds interleaved).
pub(crate) async fn measure(backend: &Backend, rounds: usize) -> Vec<CrowdResult> {
    let factory = LockFactory::from_shared(backend.new_store().await)
        .with_retry(
            Retry::new()
                .delay(RETRY_DELAY)
                .timeout(Duration::from_secs(120)),
        )
        .expect("valid retry options");
    // The store instance's first wait opens its connections (a subscriber, a listener):
    // not measured.
    run(&factory, "bench:crowd:warm-up", CROWDS[0]).await;
    let mut per_grant = vec![Vec::new(); CROWDS.len()];
    let mut handoffs = vec![new_histogram(); CROWDS.len()];
    let mut most_inside = vec![0; CROWDS.len()];
    for round in 0..rounds.max(1) {
        for (index, &waiters) in CROWDS.iter().enumerate() {
            let run = run(&factory, &format!("bench:crowd:{waiters}:{round}"), waiters).await;
            per_grant[index].push(run.per_grant.as_secs_f64() * 1e6);
            handoffs[index]
                .add(&run.handoffs)
                .expect("same histogram bounds");
            most_inside[index] = most_inside[index].max(run.most_inside);
        }
    }
    let per_grant: Vec<f64> = per_grant.into_iter().map(median).collect();
    CROWDS
        .iter()
        .enumerate()
        .map(|(index, &waiters)| CrowdResult {
            store: backend.name,
            waiters,
            per_grant_us: per_grant[index],
            handoff: Percentiles::of(&handoffs[index]),
            ratio: per_grant[index] / per_grant[0],
            most_inside: most_inside[index],
        })
        .collect()
}

/// What one crowd's run measured.
struct Run {
    per_grant: Duration,
    handoffs: Histogram<u64>,
    most_inside: usize,
}

/// What the waiters of a run share: who is inside, and when the key was last released.
struct Shared {
    inside: AtomicUsize,
    most: AtomicUsize,
    released_at: Mutex<Instant>,
}

/// Holds `key`, lets `waiters` tasks queue on it, releases it and waits until each of
/// them has had it once.
async fn run(factory: &LockFactory, key: &str, waiters: usize) -> Run {
    let holder = factory
        .create_lock_with_ttl(key, TTL)
        .expect("valid key and TTL");
    assert!(
        holder.acquire_immediately().await.expect("store reachable"),
        "a fresh key is free"
    );
    let shared = Arc::new(Shared {
        inside: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        released_at: Mutex::new(Instant::now()),
    });
    let tasks: Vec<_> = (0..waiters)
        .map(|_| {
            let lock = factory
                .create_lock_with_ttl(key, TTL)
                .expect("valid key and TTL");
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                assert!(
                    lock.acquire().await.expect("store reachable"),
                    "every waiter gets its turn within the timeout"
                );
                let acquired_at = Instant::now();
                let inside = shared.inside.fetch_add(1, Ordering::SeqCst) + 1;
                shared.most.fetch_max(inside, Ordering::SeqCst);
                let released_at = *shared.released_at.lock().expect("not poisoned");
                shared.inside.fetch_sub(1, Ordering::SeqCst);
                *shared.released_at.lock().expect("not poisoned") = Instant::now();
                lock.release().await.expect("released by its owner");
                acquired_at.saturating_duration_since(released_at)
            })
        })
        .collect();
    tokio::time::sleep(JOIN_PAUSE).await;
    let started = Instant::now();
    *shared.released_at.lock().expect("not poisoned") = started;
    holder.release().await.expect("released by its owner");
    let mut handoffs = new_histogram();
    for task in tasks {
        record(&mut handoffs, task.await.expect("waiter panicked"));
    }
    let waiters = u32::try_from(waiters).unwrap_or(u32::MAX).max(1);
    Run {
        per_grant: started.elapsed() / waiters,
        handoffs,
        most_inside: shared.most.load(Ordering::SeqCst),
    }
}
