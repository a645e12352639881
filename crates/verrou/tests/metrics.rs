//! The metrics a scripted scenario records, read back with `metrics-util`'s debugging
//! recorder: every count is the one the scenario makes.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshot};
use metrics_util::CompositeKey;
use metrics_util::MetricKind;
use support::Unreachable;
use verrou::{MemoryStore, Retry, Verrou};

mod support;

/// Every metric recorded, with its value.
type Metrics = Vec<(CompositeKey, DebugValue)>;

fn metrics_of(snapshot: Snapshot) -> Metrics {
    snapshot
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect()
}

/// The value of the metric `name` of `kind` whose labels include all of `labels`.
fn value<'m>(
    metrics: &'m Metrics,
    kind: MetricKind,
    name: &str,
    labels: &[(&str, &str)],
) -> &'m DebugValue {
    let mut found = metrics.iter().filter(|(key, _)| {
        key.kind() == kind
            && key.key().name() == name
            && labels.iter().all(|(label, wanted)| {
                key.key()
                    .labels()
                    .any(|have| have.key() == *label && have.value() == *wanted)
            })
    });
    match found.next() {
        Some((_, value)) => value,
        None => panic!("no {kind:?} {name} with {labels:?}"),
    }
}

fn counter(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> u64 {
    match value(metrics, MetricKind::Counter, name, labels) {
        DebugValue::Counter(count) => *count,
        other => panic!("{name} is {other:?}"),
    }
}

fn samples(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> usize {
    match value(metrics, MetricKind::Histogram, name, labels) {
        DebugValue::Histogram(samples) => samples.len(),
        other => panic!("{name} is {other:?}"),
    }
}

/// What `scenario` records, run with a recorder of its own.
fn recorded<F: std::future::Future<Output = ()>>(scenario: impl FnOnce() -> F) -> Metrics {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(scenario());
    });
    metrics_of(snapshotter.snapshot())
}

#[test]
fn a_scripted_scenario_is_counted_exactly() {
    let metrics = recorded(scenario);
    let store = ("store", "vault");
    assert_eq!(
        counter(
            &metrics,
            "verrou_acquisitions_total",
            &[store, ("outcome", "acquired")]
        ),
        3
    );
    assert_eq!(
        counter(
            &metrics,
            "verrou_acquisitions_total",
            &[store, ("outcome", "gave_up")]
        ),
        2
    );
    assert_eq!(
        samples(
            &metrics,
            "verrou_acquire_wait_seconds",
            &[store, ("outcome", "acquired")]
        ),
        3
    );
    // One failed take for acquire_immediately, two for the acquire with two attempts.
    assert_eq!(counter(&metrics, "verrou_failed_takes_total", &[store]), 3);
    assert_eq!(
        counter(
            &metrics,
            "verrou_renewals_total",
            &[store, ("outcome", "renewed")]
        ),
        1
    );
    // The released lock's extension, and the guard's after its lock was taken away.
    assert_eq!(
        counter(
            &metrics,
            "verrou_renewals_total",
            &[store, ("outcome", "refused")]
        ),
        2
    );
    assert_eq!(
        samples(
            &metrics,
            "verrou_hold_seconds",
            &[store, ("end", "released")]
        ),
        2
    );
    assert_eq!(counter(&metrics, "verrou_locks_lost_total", &[store]), 1);
    match value(&metrics, MetricKind::Gauge, "verrou_waiters", &[store]) {
        DebugValue::Gauge(waiting) => {
            assert_eq!(waiting.into_inner(), 0.0, "nobody waits at the end")
        }
        other => panic!("verrou_waiters is {other:?}"),
    }
}

async fn scenario() {
    let verrou = Verrou::builder()
        .store("vault", MemoryStore::new())
        .retry(Retry::new().delay(10))
        .build()
        .unwrap();
    // Acquired, renewed, released.
    let first = verrou.create_lock("card:1").unwrap();
    assert!(first.acquire().await.unwrap());
    first.extend().await.unwrap();
    // Busy: one immediate try, one acquire of two attempts.
    let second = verrou.create_lock("card:1").unwrap();
    assert!(!second.acquire_immediately().await.unwrap());
    assert!(!second.acquire_with(Retry::new().attempts(2)).await.unwrap());
    first.release().await.unwrap();
    // Acquired and released.
    assert!(second.acquire().await.unwrap());
    second.release().await.unwrap();
    // A renewal refused (the lock is not held).
    assert!(second.extend().await.is_err());
    // A guard whose lock is taken from under it: lost.
    let guarded = verrou
        .create_lock_with_ttl("card:2", Duration::from_secs(3))
        .unwrap();
    let guard = guarded.acquire_guard_immediately().await.unwrap().unwrap();
    guarded.force_release().await.unwrap();
    assert!(guard.extend().await.is_err());
    assert!(guard.loss().is_lost());
    drop(guard);
}

#[test]
fn failures_and_expired_holds_are_counted_under_their_own_labels() {
    let metrics = recorded(failures_and_expiry);
    let gone = ("store", "gone");
    for operation in ["take", "release", "force_release", "check", "extend"] {
        assert_eq!(
            counter(
                &metrics,
                "verrou_store_errors_total",
                &[gone, ("operation", operation)]
            ),
            1,
            "{operation}"
        );
    }
    let vault = ("store", "vault");
    let failed = ("outcome", "failed");
    for (name, labels) in [
        ("verrou_acquisitions_total", [gone, failed]),
        ("verrou_renewals_total", [gone, failed]),
        (
            "verrou_acquisitions_total",
            [vault, ("outcome", "acquired")],
        ),
    ] {
        assert_eq!(counter(&metrics, name, &labels), 1, "{name} {labels:?}");
    }
    for (name, labels) in [
        ("verrou_acquire_wait_seconds", [gone, failed]),
        ("verrou_hold_seconds", [vault, ("end", "expired")]),
    ] {
        assert_eq!(samples(&metrics, name, &labels), 1, "{name} {labels:?}");
    }
}

/// A hold that expires before its release, and one call of each operation on a store that
/// fails them all, the take last: a take that failed may have been applied, so the lock
/// gives the grant back in the background, which would count more failed releases.
async fn failures_and_expiry() {
    let verrou = Verrou::builder()
        .store("vault", MemoryStore::new())
        .store("gone", Unreachable)
        .default_store("vault")
        .build()
        .unwrap();
    let brief = verrou
        .create_lock_with_ttl("card:2", Duration::from_millis(20))
        .unwrap();
    assert!(brief.acquire_immediately().await.unwrap());
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(brief.release().await.is_err(), "expired: not released");
    let gone = verrou.store("gone").unwrap();
    let failing = gone.create_lock("card:1").unwrap();
    assert!(failing.release().await.is_err());
    assert!(failing.force_release().await.is_err());
    assert!(failing.is_locked().await.is_err());
    assert!(failing.extend().await.is_err());
    let taking = gone.create_lock("card:1").unwrap();
    assert!(taking.acquire_immediately().await.is_err());
}
