//! What locks tell the outside: tracing spans and events (always), and metrics through the
//! [`metrics`](https://docs.rs/metrics) facade (cargo feature `metrics`, off by default).
//!
//! Names, labels and spans are listed in the crate docs (`# Telemetry`).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tracing::{Instrument, Span};

use crate::{Error, Result};

/// What a lock asks of its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Take,
    Release,
    ForceRelease,
    Check,
    Extend,
}

impl Operation {
    /// Every operation, in declaration order (the index of each is its discriminant).
    const ALL: [Operation; 5] = [
        Operation::Take,
        Operation::Release,
        Operation::ForceRelease,
        Operation::Check,
        Operation::Extend,
    ];

    /// The operation's name in metrics and errors.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Operation::Take => "take",
            Operation::Release => "release",
            Operation::ForceRelease => "force_release",
            Operation::Check => "check",
            Operation::Extend => "extend",
        }
    }
}

/// How an `acquire` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Acquired,
    GaveUp,
    Failed,
}

impl Outcome {
    /// Every outcome, in declaration order (the index of each is its discriminant).
    const ALL: [Outcome; 3] = [Outcome::Acquired, Outcome::GaveUp, Outcome::Failed];

    pub(crate) fn of(result: &Result<bool>) -> Self {
        match result {
            Ok(true) => Outcome::Acquired,
            Ok(false) => Outcome::GaveUp,
            Err(_) => Outcome::Failed,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Acquired => "acquired",
            Outcome::GaveUp => "gave_up",
            Outcome::Failed => "failed",
        }
    }
}

/// The telemetry of one store: its name, as metrics and errors show it, and the keys of its
/// metrics, built once with the name rather than at every call (a key owns its list of
/// labels, the store's name among them: building it cost each metric call allocations).
#[derive(Debug, Clone)]
pub(crate) struct Telemetry {
    store: Arc<str>,
    keys: Arc<Keys>,
}

/// The key (name and labels) of every metric a store records; see the crate docs
/// (`# Telemetry`) for what each counts.
#[derive(Debug)]
struct Keys {
    /// `verrou_acquisitions_total`, by [`Outcome`].
    acquisitions: [metric::Key; Outcome::ALL.len()],
    /// `verrou_acquire_wait_seconds`, by [`Outcome`].
    acquire_waits: [metric::Key; Outcome::ALL.len()],
    /// `verrou_failed_takes_total`.
    failed_takes: metric::Key,
    /// `verrou_hold_seconds` of holds released, and of holds their release found expired.
    held_until_released: metric::Key,
    held_until_expired: metric::Key,
    /// `verrou_renewals_total` of extensions applied, refused and failed.
    renewed: metric::Key,
    renewal_refused: metric::Key,
    renewal_failed: metric::Key,
    /// `verrou_locks_lost_total`.
    locks_lost: metric::Key,
    /// `verrou_store_errors_total`, by [`Operation`].
    store_errors: [metric::Key; Operation::ALL.len()],
    /// `verrou_waiters`.
    waiters: metric::Key,
}

impl Keys {
    /// The keys of the metrics of the store named `store`.
    fn new(store: &str) -> Self {
        let key = |name, label| metric::key(name, store, label);
        Self {
            acquisitions: Outcome::ALL.map(|outcome| {
                key(
                    "verrou_acquisitions_total",
                    Some(("outcome", outcome.as_str())),
                )
            }),
            acquire_waits: Outcome::ALL.map(|outcome| {
                key(
                    "verrou_acquire_wait_seconds",
                    Some(("outcome", outcome.as_str())),
                )
            }),
            failed_takes: key("verrou_failed_takes_total", None),
            held_until_released: key("verrou_hold_seconds", Some(("end", "released"))),
            held_until_expired: key("verrou_hold_seconds", Some(("end", "expired"))),
            renewed: key("verrou_renewals_total", Some(("outcome", "renewed"))),
            renewal_refused: key("verrou_renewals_total", Some(("outcome", "refused"))),
            renewal_failed: key("verrou_renewals_total", Some(("outcome", "failed"))),
            locks_lost: key("verrou_locks_lost_total", None),
            store_errors: Operation::ALL.map(|operation| {
                key(
                    "verrou_store_errors_total",
                    Some(("operation", operation.as_str())),
                )
            }),
            waiters: key("verrou_waiters", None),
        }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::named("default")
    }
}

impl Telemetry {
    pub(crate) fn named(store: &str) -> Self {
        Self {
            store: Arc::from(store),
            keys: Arc::new(Keys::new(store)),
        }
    }

    /// The store's name.
    pub(crate) fn store(&self) -> &str {
        &self.store
    }

    /// Runs `call`, a call of `operation` on the store for `key`, in a trace-level span; a
    /// failure is counted and told which store, operation and key it was about.
    pub(crate) async fn store_call<T>(
        &self,
        operation: Operation,
        key: &str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        call.instrument(self.store_span(operation, key))
            .await
            .map_err(|error| self.failed(operation, key, error))
    }

    /// Like [`store_call`](Self::store_call), for a call answered at once (an
    /// [`ImmediateStore`](crate::ImmediateStore)'s).
    pub(crate) fn store_call_now<T>(
        &self,
        operation: Operation,
        key: &str,
        call: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.store_span(operation, key)
            .in_scope(call)
            .map_err(|error| self.failed(operation, key, error))
    }

    /// The trace-level span of a call of `operation` on the store for `key`.
    fn store_span(&self, operation: Operation, key: &str) -> Span {
        tracing::trace_span!("verrou.store", store = %self.store, operation = operation.as_str(), key)
    }

    /// A store call of `operation` for `key` failed with `error`: counted, and told which
    /// store, operation and key it was about.
    fn failed(&self, operation: Operation, key: &str, error: Error) -> Error {
        metric::count(&self.keys.store_errors[operation as usize]);
        error.in_store(&self.store, operation.as_str(), key)
    }

    /// A take was answered "busy".
    pub(crate) fn take_refused(&self) {
        metric::count(&self.keys.failed_takes);
    }

    /// A hold that began `since` ended: released, or found expired by its release. (The
    /// clock is read only when metrics are recorded.)
    pub(crate) fn hold_ended(&self, released: bool, since: Instant) {
        if metric::ENABLED {
            let keys = &self.keys;
            let end = if released {
                &keys.held_until_released
            } else {
                &keys.held_until_expired
            };
            metric::record(end, since.elapsed());
        }
    }

    /// An extension ended: applied (`Some(true)`), refused (`Some(false)`) or failed.
    pub(crate) fn renewal(&self, applied: Option<bool>) {
        let keys = &self.keys;
        metric::count(match applied {
            Some(true) => &keys.renewed,
            Some(false) => &keys.renewal_refused,
            None => &keys.renewal_failed,
        });
    }

    /// A loss signal fired.
    pub(crate) fn lost(&self) {
        metric::count(&self.keys.locks_lost);
    }

    /// An `acquire` starts; it counts as waiting until the returned value is dropped, and
    /// is timed only when metrics are recorded (no clock read on the hot path otherwise).
    pub(crate) fn waiting(&self) -> Waiting<'_> {
        metric::change(&self.keys.waiters, 1.0);
        Waiting {
            telemetry: self,
            started: metric::ENABLED.then(Instant::now),
        }
    }
}

/// An `acquire` under way, counted in `verrou_waiters` while it lives.
pub(crate) struct Waiting<'t> {
    telemetry: &'t Telemetry,
    started: Option<Instant>,
}

impl Waiting<'_> {
    /// The `acquire` ended with `outcome`.
    pub(crate) fn ended(&self, outcome: Outcome) {
        let keys = &self.telemetry.keys;
        metric::count(&keys.acquisitions[outcome as usize]);
        if let Some(started) = self.started {
            metric::record(&keys.acquire_waits[outcome as usize], started.elapsed());
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        metric::change(&self.telemetry.keys.waiters, -1.0);
    }
}

impl Error {
    /// This error, told which store, operation and key it was about (a store error only).
    fn in_store(self, store: &str, operation: &'static str, key: &str) -> Self {
        match self {
            Error::Storage {
                store: None,
                operation: None,
                key: None,
                source,
            } => Error::Storage {
                store: Some(store.to_owned()),
                operation: Some(operation),
                key: Some(crate::key::shortened(key)),
                source,
            },
            other => other,
        }
    }
}

/// The metrics themselves, through the `metrics` facade, recorded by whichever recorder is
/// current at each call (a local one, else the global one, else none).
#[cfg(feature = "metrics")]
mod metric {
    use std::time::Duration;

    use metrics::{Label, Level, Metadata};

    /// Whether metrics are recorded at all.
    pub(super) const ENABLED: bool = true;

    /// A metric's name and labels.
    pub(super) type Key = metrics::Key;

    /// What the `metrics` macros would say of these metrics' call site.
    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    /// The key of metric `name` of the store named `store`, with one more `label` if given.
    pub(super) fn key(
        name: &'static str,
        store: &str,
        label: Option<(&'static str, &'static str)>,
    ) -> Key {
        let store = Label::new("store", store.to_owned());
        let labels = std::iter::once(store).chain(label.map(|(key, value)| Label::new(key, value)));
        Key::from_parts(name, labels.collect::<Vec<_>>())
    }

    /// Adds one to counter `key`.
    pub(super) fn count(key: &Key) {
        metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA).increment(1));
    }

    /// Records `value`, in seconds, in histogram `key`.
    pub(super) fn record(key: &Key, value: Duration) {
        metrics::with_recorder(|recorder| {
            recorder
                .register_histogram(key, &METADATA)
                .record(value.as_secs_f64());
        });
    }

    /// Adds `change` to gauge `key`.
    pub(super) fn change(key: &Key, change: f64) {
        metrics::with_recorder(|recorder| {
            recorder.register_gauge(key, &METADATA).increment(change);
        });
    }
}

/// Without the `metrics` feature, nothing is recorded.
#[cfg(not(feature = "metrics"))]
mod metric {
    use std::time::Duration;

    /// Whether metrics are recorded at all.
    pub(super) const ENABLED: bool = false;

    /// Nothing: no metric is recorded.
    pub(super) type Key = ();

    pub(super) fn key(_: &'static str, _: &str, _: Option<(&'static str, &'static str)>) -> Key {}

    pub(super) fn count(_: &Key) {}

    pub(super) fn record(_: &Key, _: Duration) {}

    pub(super) fn change(_: &Key, _: f64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` lists every variant at the index of its discriminant, which indexes the keys: a
    /// new variant stops these matches compiling until it is given its index, and then the
    /// test until `ALL` (and the keys) have room for it.
    #[test]
    fn all_lists_every_operation_and_outcome_at_its_index() {
        let operation_index = |operation| match operation {
            Operation::Take => 0,
            Operation::Release => 1,
            Operation::ForceRelease => 2,
            Operation::Check => 3,
            Operation::Extend => 4,
        };
        let outcome_index = |outcome| match outcome {
            Outcome::Acquired => 0,
            Outcome::GaveUp => 1,
            Outcome::Failed => 2,
        };
        assert_eq!(Operation::ALL.len(), 5);
        assert_eq!(Outcome::ALL.len(), 3);
        for (index, operation) in Operation::ALL.into_iter().enumerate() {
            assert_eq!(
                (operation as usize, operation_index(operation)),
                (index, index)
            );
        }
        for (index, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!((outcome as usize, outcome_index(outcome)), (index, index));
        }
    }
}
