//! The contract between a [`Lock`](crate::Lock) and the place its state lives.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::Result;

/// What [`LockStore::save`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Acquisition {
    /// The key was free or expired; it now belongs to the caller.
    Granted(Grant),
    /// The caller's owner already held the key, and the take started its TTL again. This is
    /// what a take re-sent by the client library (its first answer lost on a dropped
    /// connection) gets, so that the re-sent take says what the first one did. The lock
    /// adopts it if it did not know it held the key, and stays not reentrant otherwise.
    /// Stores whose client never re-sends may answer [`Busy`](Self::Busy) instead.
    Renewed(Grant),
    /// Someone holds the key and their lock has not expired.
    Busy,
}

/// What a store says about a fresh grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Grant {
    /// The fencing token of this grant: strictly greater than every token the store issued
    /// before for the same key (across owners, releases, expiries and takeovers).
    pub fencing_token: Option<u64>,
}

impl Grant {
    /// A grant without fencing token, for stores that cannot issue one.
    pub fn new() -> Self {
        Self::default()
    }

    /// A grant with its fencing token.
    pub fn with_fencing_token(fencing_token: u64) -> Self {
        Self {
            fencing_token: Some(fencing_token),
        }
    }
}

/// What an owner-checked operation ([`LockStore::delete`], [`LockStore::extend`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnerCheck {
    /// The caller held the unexpired lock and the operation was applied.
    Applied,
    /// A release was applied, and the store knows that others are waiting for the key. The
    /// releasing factory then lets them have it before it asks for the key again, so that a
    /// holder that releases and at once re-acquires does not starve them. Stores that
    /// cannot tell answer [`Applied`](Self::Applied).
    AppliedWithWaiters,
    /// The caller does not hold the lock (free, expired, or someone else's): nothing changed.
    NotOwner,
}

/// Where locks live. One method, one atomic store operation, one round trip.
///
/// Implementations must make each method atomic on the store's side (a Lua script, a single
/// SQL statement, one critical section) and decide expiry with the store's own clock. The
/// conformance suite ([`conformance`](crate::conformance), feature `test-suite`) checks every
/// rule below; run it against your store.
///
/// Keys reach the store already validated (non-empty, no NUL character, at most
/// [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes, and accepted by [`validate_key`](Self::validate_key)).
/// TTLs are positive and at most [`MAX_DURATION`](crate::MAX_DURATION).
#[async_trait]
pub trait LockStore: Send + Sync + 'static {
    /// Checks a key against this store's own rules (a shorter length limit, names reserved
    /// for the store's internal state), without a round trip; a key it refuses is
    /// [`Error::InvalidKey`](crate::Error::InvalidKey) naming the rule. Called when a lock is
    /// created or restored, before any store operation. The provided implementation accepts
    /// every key.
    fn validate_key(&self, key: &str) -> Result<()> {
        let _ = key;
        Ok(())
    }

    /// Takes `key` for `owner` if it is free or expired, for `ttl` (`None`: until released).
    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition>;

    /// Deletes `key` if `owner` holds it and it has not expired, and wakes the tasks waiting
    /// for it in [`wait_for_release`](Self::wait_for_release) (if the store can).
    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck>;

    /// Deletes `key` whoever holds it. Deleting a free key succeeds.
    async fn force_delete(&self, key: &str) -> Result<()>;

    /// Whether someone holds `key` and their lock has not expired.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// Makes `key` expire `ttl` from now if `owner` holds it and it has not expired.
    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck>;

    /// Waits until `key` may have been released, or at most `max_wait`. A waiting
    /// [`Lock::acquire`](crate::Lock::acquire) calls this between attempts.
    ///
    /// The provided implementation sleeps `max_wait` (plain polling). A store that can hear
    /// releases returns early when one happens; returning early without a release is allowed.
    async fn wait_for_release(&self, key: &str, max_wait: Duration) {
        let _ = key;
        tokio::time::sleep(max_wait).await;
    }
}

#[async_trait]
impl<S: LockStore + ?Sized> LockStore for Arc<S> {
    fn validate_key(&self, key: &str) -> Result<()> {
        (**self).validate_key(key)
    }

    async fn save(&self, key: &str, owner: &str, ttl: Option<Duration>) -> Result<Acquisition> {
        (**self).save(key, owner, ttl).await
    }

    async fn delete(&self, key: &str, owner: &str) -> Result<OwnerCheck> {
        (**self).delete(key, owner).await
    }

    async fn force_delete(&self, key: &str) -> Result<()> {
        (**self).force_delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        (**self).exists(key).await
    }

    async fn extend(&self, key: &str, owner: &str, ttl: Duration) -> Result<OwnerCheck> {
        (**self).extend(key, owner, ttl).await
    }

    async fn wait_for_release(&self, key: &str, max_wait: Duration) {
        (**self).wait_for_release(key, max_wait).await
    }
}
