//! Handoff: eight workers cycle on one key (acquire, hold 1 ms, release). How soon does a
//! waiter get the lock after a release, how often do waiters ask the store in vain, is every
//! worker served, and does anyone ever get a lock someone else holds?

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use verrou::{Acquisition, LockFactory, LockStore, OwnerCheck, Result, Retry};
use verrou_core::conformance::CountingStore;

use crate::backends::{Backend, TTL};
use crate::stats::{new_histogram, record, Percentiles};

/// How waiters learn of a release.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) enum Mode {
    /// The workers spread over this many store instances (1: the tasks of one process; 8:
    /// eight processes), each with its factory: they queue in the store's line, and a
    /// release wakes the front waiter.
    Line(usize),
    /// A factory and store instance per worker, with no line and no notifications: pure
    /// polling at the given retry delay.
    Poll(Duration),
}

impl Mode {
    fn label(self) -> String {
        match self {
            Mode::Line(1) => "line, 1 store instance".into(),
            Mode::Line(instances) => format!("line, {instances} store instances"),
            Mode::Poll(delay) => format!("polling every {} ms", delay.as_millis()),
        }
    }

    fn retry_delay(self) -> Duration {
        match self {
            Mode::Poll(delay) => delay,
            _ => verrou::DEFAULT_RETRY_DELAY,
        }
    }
}

/// What one handoff run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HandoffResult {
    pub(crate) store: &'static str,
    pub(crate) mode: String,
    pub(crate) workers: usize,
    pub(crate) acquisitions_per_second: f64,
    /// Acquisitions right after another worker's release (none when one worker starves the
    /// others).
    pub(crate) handoffs: u64,
    pub(crate) handoff: Percentiles,
    /// Takes answered busy for a waiter already in line (or, with polling, after its first
    /// attempt): asks in vain.
    pub(crate) asks_in_vain_per_second_per_waiter: f64,
    /// Every busy answer, the one that joins a line included, per acquisition.
    pub(crate) busy_answers_per_grant: f64,
    pub(crate) min_acquisitions_per_worker: u64,
    pub(crate) max_acquisitions_per_worker: u64,
    pub(crate) double_grants: u64,
}

const WORKERS: usize = 8;
const HOLD: Duration = Duration::from_millis(1);

/// How long the workers run before the measurement starts: long enough for every store
/// instance to open its connections (a pool's, a subscriber's) and load its scripts, which
/// a long-running process has done before its first hand-over.
const WARM_UP: Duration = Duration::from_millis(500);

/// Runs the handoff scenario for `seconds` in `mode`, after a [`WARM_UP`] that is not
/// measured (though a double grant during it still counts).
pub(crate) async fn measure(
    backend: &Backend,
    mode: Mode,
    seconds: f64,
    round: usize,
) -> HandoffResult {
    let key = format!("bench:handoff:{round}:{}", mode.label().replace(' ', "-"));
    let instances = match mode {
        Mode::Line(instances) => instances.clamp(1, WORKERS),
        Mode::Poll(_) => WORKERS,
    };
    let mut factories = Vec::new();
    let mut probes = Vec::new();
    for _ in 0..instances {
        let store = match mode {
            Mode::Line(_) => backend.new_store().await,
            Mode::Poll(_) => Arc::new(PollOnly(backend.new_store().await)),
        };
        let probe = Arc::new(CountingStore::new(store));
        probes.push(Arc::clone(&probe));
        let factory = LockFactory::from_shared(probe)
            .with_retry(Retry::new().delay(mode.retry_delay()))
            .expect("valid retry options");
        factories.push(factory);
    }
    let factories: Vec<LockFactory> = (0..WORKERS)
        .map(|worker| factories[worker % instances].clone())
        .collect();

    let shared_state = Arc::new(Shared::default());
    let measured_from = Instant::now() + WARM_UP;
    let deadline = measured_from + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = factories
        .into_iter()
        .enumerate()
        .map(|(worker, factory)| {
            tokio::spawn(work(
                worker,
                factory,
                key.clone(),
                (measured_from, deadline),
                Arc::clone(&shared_state),
            ))
        })
        .collect();
    let count = |counter: fn(&CountingStore) -> &AtomicUsize| -> usize {
        probes
            .iter()
            .map(|probe| counter(probe).load(Ordering::SeqCst))
            .sum()
    };
    tokio::time::sleep_until(measured_from.into()).await;
    let (in_vain_before, busy_before) = (count(|probe| &probe.in_vain), count(|probe| &probe.busy));
    let mut per_worker = Vec::new();
    let mut handoffs = new_histogram();
    for worker in workers {
        let (acquisitions, histogram) = worker.await.expect("worker panicked");
        per_worker.push(acquisitions);
        handoffs.add(&histogram).expect("same histogram bounds");
    }
    let elapsed = measured_from.elapsed().as_secs_f64();
    let in_vain = count(|probe| &probe.in_vain) - in_vain_before;
    let busy = count(|probe| &probe.busy) - busy_before;
    HandoffResult {
        store: backend.name,
        mode: mode.label(),
        workers: WORKERS,
        acquisitions_per_second: per_worker.iter().sum::<u64>() as f64 / elapsed,
        handoffs: handoffs.len(),
        handoff: Percentiles::of(&handoffs),
        asks_in_vain_per_second_per_waiter: in_vain as f64 / elapsed / (WORKERS - 1) as f64,
        busy_answers_per_grant: busy as f64 / per_worker.iter().sum::<u64>().max(1) as f64,
        min_acquisitions_per_worker: per_worker.iter().copied().min().unwrap_or(0),
        max_acquisitions_per_worker: per_worker.iter().copied().max().unwrap_or(0),
        double_grants: shared_state.double_grants.load(Ordering::SeqCst),
    }
}

/// What the workers share: the overlap checker and the last release.
#[derive(Default)]
struct Shared {
    holders: AtomicUsize,
    double_grants: AtomicU64,
    last_release: Mutex<Option<(usize, Instant)>>,
}

/// Worker `worker`'s cycles until `deadline`; the acquisitions counted and the handoffs
/// recorded are those from `measured_from` on.
async fn work(
    worker: usize,
    factory: LockFactory,
    key: String,
    (measured_from, deadline): (Instant, Instant),
    shared: Arc<Shared>,
) -> (u64, hdrhistogram::Histogram<u64>) {
    let mut acquisitions = 0;
    let mut handoffs = new_histogram();
    while Instant::now() < deadline {
        let lock = factory
            .create_lock_with_ttl(key.as_str(), TTL)
            .expect("valid key");
        let retry = Retry::new().timeout(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        );
        if !lock.acquire_with(retry).await.expect("store reachable") {
            break;
        }
        let acquired_at = Instant::now();
        if shared.holders.fetch_add(1, Ordering::SeqCst) != 0 {
            shared.double_grants.fetch_add(1, Ordering::SeqCst);
        }
        let measured = acquired_at >= measured_from;
        if let Some((previous, released_at)) = *shared.last_release.lock().expect("not poisoned") {
            if previous != worker && measured {
                record(
                    &mut handoffs,
                    acquired_at.saturating_duration_since(released_at),
                );
            }
        }
        acquisitions += u64::from(measured);
        tokio::time::sleep(HOLD).await;
        shared.holders.fetch_sub(1, Ordering::SeqCst);
        *shared.last_release.lock().expect("not poisoned") = Some((worker, Instant::now()));
        lock.release().await.expect("released by its owner");
    }
    (acquisitions, handoffs)
}

/// A store whose release notifications are ignored: waiters poll at their retry delay.
struct PollOnly(Arc<dyn LockStore>);

#[async_trait]
impl LockStore for PollOnly {
    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition> {
        self.0.save(key, owner, ttl).await
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        self.0.delete(key, owner).await
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        self.0.force_delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.0.exists(key).await
    }

    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck> {
        self.0.extend(key, owner, ttl).await
    }
}
