//! Deleting expired rows that nobody took over, and lapsed places in waiting lines.
//!
//! Most expired rows never need a sweep: taking a key reuses its expired row (the
//! `ON CONFLICT ... DO UPDATE` of `save`). What is left are the locks of holders that
//! crashed, never released or released too late (a release leaves an expired row alone),
//! and keys reserved for waiters that never came, on keys nobody asks for again (per-job or
//! per-request keys). Those are deleted by a
//! bounded sweep that a store starts in the background from `save` at most once per
//! interval: each batch is one statement deleting at most [`SWEEP_BATCH`] expired rows,
//! skipping rows that other statements hold, so it never blocks lock traffic, and batches
//! repeat only while they come back full. A lock operation never waits for a sweep, and
//! the sweep needs no index on `expiration` (a table created by the Node.js library has
//! none); its cost is one scan of the table per interval per process.
//!
//! Semaphores and read-write locks are rows of their own table, whose holders every
//! statement that writes the row trims of the expired ones; a row whose holders all expired
//! and that nobody touches again is swept the same way.
//!
//! Places in a line are removed when their waiter is served or leaves; what is left are
//! the places of waiters that died, lapsed after their lease. They are swept the same way,
//! right after the locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use verrou_core::Result;

use crate::run::Runner;
use crate::sql::{Statements, SWEEP_BATCH};

/// The most batches one sweep runs; whatever is left waits for the next interval.
const MAX_BATCHES: usize = 100;

/// Decides when the next sweep is due, shared by every clone of a store.
#[derive(Debug)]
pub(crate) struct Schedule {
    interval_ms: Option<u64>,
    started: Instant,
    /// Milliseconds after `started` when the next sweep is due.
    next_ms: AtomicU64,
}

impl Schedule {
    /// A schedule sweeping every `interval` (`None`: never), the first sweep due at once.
    pub(crate) fn new(interval: Option<Duration>) -> Self {
        Self {
            interval_ms: interval.map(|i| u64::try_from(i.as_millis()).unwrap_or(u64::MAX)),
            started: Instant::now(),
            next_ms: AtomicU64::new(0),
        }
    }

    /// Whether the caller should sweep now. True at most once per interval, however many
    /// callers ask at the same time.
    pub(crate) fn claim(&self) -> bool {
        let Some(interval_ms) = self.interval_ms else {
            return false;
        };
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let due_ms = self.next_ms.load(Ordering::Relaxed);
        now_ms >= due_ms
            && self
                .next_ms
                .compare_exchange(
                    due_ms,
                    now_ms.saturating_add(interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

/// Starts a sweep in the background if one is due and a Tokio runtime is running.
pub(crate) fn start_if_due(schedule: &Schedule, runner: &Runner, statements: &Arc<Statements>) {
    if !schedule.claim() {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(sweep(runner.clone(), Arc::clone(statements)));
    }
}

/// Deletes expired lock rows, then share rows whose holders all expired, then lapsed places.
async fn sweep(runner: Runner, statements: Arc<Statements>) {
    sweep_with(&runner, &statements.sweep, "expired PostgreSQL locks").await;
    sweep_with(
        &runner,
        &statements.shares.sweep,
        "expired semaphores and read-write locks",
    )
    .await;
    sweep_with(&runner, &statements.sweep_line, "lapsed places in line").await;
}

/// Runs the sweep statement `sql` batch by batch until a batch comes back short; `what` it
/// deletes goes into the log.
async fn sweep_with(runner: &Runner, sql: &str, what: &str) {
    let mut deleted = 0;
    for _ in 0..MAX_BATCHES {
        match sweep_batch(runner, sql).await {
            Ok(count) => {
                deleted += count;
                if count < SWEEP_BATCH.unsigned_abs() {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "verrou: sweeping {what} failed");
                break;
            }
        }
    }
    tracing::debug!(deleted, "verrou: swept {what}");
}

/// Runs one sweep statement; returns how many rows it deleted.
async fn sweep_batch(runner: &Runner, sql: &str) -> Result<u64> {
    let row = runner.query_opt(None, sql, &[&SWEEP_BATCH]).await?;
    let deleted: i64 = row
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(verrou_core::Error::storage)?
        .unwrap_or(0);
    Ok(deleted.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_once_per_interval() {
        let schedule = Schedule::new(Some(Duration::from_secs(3600)));
        assert!(schedule.claim());
        assert!(!schedule.claim());
    }

    #[test]
    fn never_claims_without_an_interval() {
        assert!(!Schedule::new(None).claim());
    }
}
