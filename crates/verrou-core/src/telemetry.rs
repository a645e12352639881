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

/// The telemetry of one store: its name, as metrics and errors show it.
#[derive(Debug, Clone)]
pub(crate) struct Telemetry {
    store: Arc<str>,
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
        let labels = [("operation", operation.as_str())];
        metric::counter("verrou_store_errors_total", &self.store, &labels);
        error.in_store(&self.store, operation.as_str(), key)
    }

    /// A take was answered "busy".
    pub(crate) fn take_refused(&self) {
        metric::counter("verrou_failed_takes_total", &self.store, &[]);
    }

    /// A hold that began `since` ended: released, or found expired by its release. (The
    /// clock is read only when metrics are recorded.)
    pub(crate) fn hold_ended(&self, released: bool, since: Instant) {
        if metric::ENABLED {
            let end = if released { "released" } else { "expired" };
            let held = since.elapsed();
            metric::histogram("verrou_hold_seconds", &self.store, &[("end", end)], held);
        }
    }

    /// An extension ended: applied (`Some(true)`), refused (`Some(false)`) or failed.
    pub(crate) fn renewal(&self, applied: Option<bool>) {
        let outcome = match applied {
            Some(true) => "renewed",
            Some(false) => "refused",
            None => "failed",
        };
        metric::counter(
            "verrou_renewals_total",
            &self.store,
            &[("outcome", outcome)],
        );
    }

    /// A loss signal fired.
    pub(crate) fn lost(&self) {
        metric::counter("verrou_locks_lost_total", &self.store, &[]);
    }

    /// An `acquire` starts; it counts as waiting until the returned value is dropped, and
    /// is timed only when metrics are recorded (no clock read on the hot path otherwise).
    pub(crate) fn waiting(&self) -> Waiting<'_> {
        metric::gauge("verrou_waiters", &self.store, 1.0);
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
        let store = &self.telemetry.store;
        let labels = [("outcome", outcome.as_str())];
        metric::counter("verrou_acquisitions_total", store, &labels);
        if let Some(started) = self.started {
            let wait = started.elapsed();
            metric::histogram("verrou_acquire_wait_seconds", store, &labels, wait);
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        metric::gauge("verrou_waiters", &self.telemetry.store, -1.0);
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

/// The metrics themselves, through the `metrics` facade.
#[cfg(feature = "metrics")]
mod metric {
    use std::sync::Arc;
    use std::time::Duration;

    use metrics::Label;

    /// Whether metrics are recorded at all.
    pub(super) const ENABLED: bool = true;

    fn labels(store: &Arc<str>, extra: &[(&'static str, &'static str)]) -> Vec<Label> {
        let mut labels = Vec::with_capacity(1 + extra.len());
        labels.push(Label::new("store", Arc::clone(store)));
        labels.extend(extra.iter().map(|&(key, value)| Label::new(key, value)));
        labels
    }

    pub(super) fn counter(
        name: &'static str,
        store: &Arc<str>,
        extra: &[(&'static str, &'static str)],
    ) {
        metrics::counter!(name, labels(store, extra)).increment(1);
    }

    pub(super) fn histogram(
        name: &'static str,
        store: &Arc<str>,
        extra: &[(&'static str, &'static str)],
        value: Duration,
    ) {
        metrics::histogram!(name, labels(store, extra)).record(value.as_secs_f64());
    }

    pub(super) fn gauge(name: &'static str, store: &Arc<str>, change: f64) {
        metrics::gauge!(name, labels(store, &[])).increment(change);
    }
}

/// Without the `metrics` feature, nothing is recorded.
#[cfg(not(feature = "metrics"))]
mod metric {
    use std::sync::Arc;
    use std::time::Duration;

    /// Whether metrics are recorded at all.
    pub(super) const ENABLED: bool = false;

    pub(super) fn counter(_: &'static str, _: &Arc<str>, _: &[(&'static str, &'static str)]) {}

    pub(super) fn histogram(
        _: &'static str,
        _: &Arc<str>,
        _: &[(&'static str, &'static str)],
        _: Duration,
    ) {
    }

    pub(super) fn gauge(_: &'static str, _: &Arc<str>, _: f64) {}
}
