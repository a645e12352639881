//! [`LossSignal`]: tells the work that its lock is known lost.

use tokio_util::sync::CancellationToken;

/// Fires once the lock of a [`LockGuard`](crate::LockGuard) is known lost, or about to be
/// with no way to keep it: a renewal was refused because someone else owns the lock, or the
/// lock could not be renewed (store unreachable, or no automatic extension) and its local
/// TTL is within a safety margin (a tenth of the TTL, at most a second) of running out. Once
/// fired it stays fired.
///
/// Await [`lost`](Self::lost) (for example in `tokio::select!` against the work) or poll
/// [`is_lost`](Self::is_lost) before each side effect. Cloning is cheap; clones fire together.
///
/// ```
/// # async fn example(guard: verrou_core::LockGuard) {
/// let loss = guard.loss();
/// tokio::select! {
///     _ = loss.lost() => eprintln!("lock lost: stop writing"),
///     _ = long_job() => {}
/// }
/// # }
/// # async fn long_job() {}
/// ```
#[derive(Debug, Clone, Default)]
pub struct LossSignal {
    token: CancellationToken,
}

impl LossSignal {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Completes when the lock is known lost (at once if it already is).
    pub async fn lost(&self) {
        self.token.cancelled().await;
    }

    /// Whether the lock is known lost.
    pub fn is_lost(&self) -> bool {
        self.token.is_cancelled()
    }

    pub(crate) fn fire(&self) {
        self.token.cancel();
    }
}
