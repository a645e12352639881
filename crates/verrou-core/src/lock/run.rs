//! Running work under the lock: acquire, run, release whatever happens.

use std::future::Future;
use std::panic::{resume_unwind, AssertUnwindSafe};

use futures_util::FutureExt;

use super::Lock;
use crate::guard::LockGuard;
use crate::loss::LossSignal;
use crate::retry::Retry;
use crate::{Error, Result};

impl Lock {
    /// Acquires the lock (retrying by the factory's policy), runs `work`, and releases the
    /// lock, whether `work` returns or panics (the panic resumes after the release).
    ///
    /// `Ok(None)` if the lock could not be acquired (`work` did not run), `Ok(Some(value))`
    /// with what `work` returned. If the lock was lost before `work` finished (it expired and
    /// possibly went to someone else) the section was not exclusive: that is
    /// [`Error::LockLost`]. Dropping the returned future after the lock was acquired releases
    /// the lock in the background (on the current Tokio runtime).
    ///
    /// ```
    /// # async fn example(lock: verrou_core::Lock) -> verrou_core::Result<()> {
    /// match lock.run(|| async { 42 }).await? {
    ///     Some(answer) => assert_eq!(answer, 42),
    ///     None => println!("someone else is on it"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn run<F, Fut, T>(&self, work: F) -> Result<Option<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        if !self.acquire().await? {
            return Ok(None);
        }
        self.run_held(work).await.map(Some)
    }

    /// Like [`run`](Self::run), with some retry options overridden for this call.
    pub async fn run_with<F, Fut, T>(&self, retry: Retry, work: F) -> Result<Option<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        if !self.acquire_with(retry).await? {
            return Ok(None);
        }
        self.run_held(work).await.map(Some)
    }

    /// Like [`run`](Self::run), but tries to acquire only once: `Ok(None)` at once if the
    /// lock is held.
    pub async fn run_immediately<F, Fut, T>(&self, work: F) -> Result<Option<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        if !self.acquire_immediately().await? {
            return Ok(None);
        }
        self.run_held(work).await.map(Some)
    }

    /// Like [`run`](Self::run), renewing the lock while the work runs (every third of its
    /// TTL), so work longer than the TTL keeps the lock. The work gets the [`LossSignal`]
    /// that fires if the lock is lost anyway (renewal refused, or the store unreachable until
    /// the lock's time ran out); `run_auto_extend` then returns [`Error::LockLost`].
    ///
    /// ```
    /// # async fn example(lock: verrou_core::Lock) -> verrou_core::Result<()> {
    /// let rows = lock
    ///     .run_auto_extend(|loss| async move {
    ///         let mut rows = 0;
    ///         while rows < 1_000 && !loss.is_lost() {
    ///             rows += 1; // ... one write, fenced ...
    ///         }
    ///         rows
    ///     })
    ///     .await?;
    /// # let _ = rows; Ok(()) }
    /// ```
    pub async fn run_auto_extend<F, Fut, T>(&self, work: F) -> Result<Option<T>>
    where
        F: FnOnce(LossSignal) -> Fut,
        Fut: Future<Output = T>,
    {
        let Some(mut guard) = self.acquire_guard().await? else {
            return Ok(None);
        };
        guard.auto_extend();
        let loss = guard.loss();
        guard_run(guard, || work(loss)).await.map(Some)
    }

    /// Acquires the lock (retrying by the factory's policy) and returns a [`LockGuard`] that
    /// releases it when dropped, or `None` when the policy gave up.
    pub async fn acquire_guard(&self) -> Result<Option<LockGuard>> {
        Ok(self.acquire().await?.then(|| LockGuard::new(self.clone())))
    }

    /// Like [`acquire_guard`](Self::acquire_guard), with some retry options overridden.
    pub async fn acquire_guard_with(&self, retry: Retry) -> Result<Option<LockGuard>> {
        Ok(self
            .acquire_with(retry)
            .await?
            .then(|| LockGuard::new(self.clone())))
    }

    /// Like [`acquire_guard`](Self::acquire_guard), trying only once.
    pub async fn acquire_guard_immediately(&self) -> Result<Option<LockGuard>> {
        Ok(self
            .acquire_immediately()
            .await?
            .then(|| LockGuard::new(self.clone())))
    }

    async fn run_held<F, Fut, T>(&self, work: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        guard_run(LockGuard::new(self.clone()), work).await
    }
}

/// Runs `work` while `guard` holds the lock, then releases it, whether the work returns or
/// panics (the panic resumes after the release). A lock lost on the way is
/// [`Error::LockLost`]. If this future is dropped, the guard releases in the background.
async fn guard_run<F, Fut, T>(guard: LockGuard, work: F) -> Result<T>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    let outcome = AssertUnwindSafe(async move { work().await })
        .catch_unwind()
        .await;
    let lost_during_work = guard.is_lost();
    let key = guard.lock().key().to_owned();
    let released = guard.release().await;
    let value = match outcome {
        Ok(value) => value,
        Err(panic) => resume_unwind(panic),
    };
    match released {
        Ok(()) if !lost_during_work => Ok(value),
        Ok(()) | Err(Error::NotOwned { .. }) => Err(Error::LockLost { key }),
        Err(other) => Err(other),
    }
}
