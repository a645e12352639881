//! [`LockFactory`]: makes locks on one store.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::duration::{IntoTtl, Ttl};
use crate::lock::{Lock, LockContext};
use crate::owner::new_owner_token;
use crate::retry::{Retry, RetryPolicy};
use crate::serialized::IntoSerializedLock;
use crate::store::LockStore;
use crate::telemetry::Telemetry;
use crate::Result;

/// TTL of a lock created without one, as in the Node.js library.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// Makes [`Lock`]s on one store, with one retry policy. Cloning is cheap and shares the store.
///
/// Locks that wait for the same key are served in arrival order when the store keeps waiting
/// lines (all the stores of this project do), whatever factory or process they come from.
///
/// ```
/// # async fn example(store: impl verrou_core::LockStore) -> verrou_core::Result<()> {
/// use verrou_core::{LockFactory, Retry, Ttl};
///
/// let factory = LockFactory::new(store).with_retry(Retry::new().timeout("5s"))?;
/// let thirty_seconds = factory.create_lock("report")?;
/// let five_minutes = factory.create_lock_with_ttl("export", "5m")?;
/// let until_released = factory.create_lock_with_ttl("migration", Ttl::Never)?;
/// # let _ = (thirty_seconds, five_minutes, until_released); Ok(()) }
/// ```
#[derive(Clone)]
pub struct LockFactory {
    context: LockContext,
}

impl LockFactory {
    /// A factory on `store`, with the default retry policy (unlimited attempts, 250 ms
    /// delay, no timeout).
    pub fn new(store: impl LockStore) -> Self {
        Self::from_shared(Arc::new(store))
    }

    /// A factory on a store that is already shared.
    pub fn from_shared(store: Arc<dyn LockStore>) -> Self {
        Self {
            context: LockContext {
                store,
                retry: RetryPolicy::default(),
                telemetry: Telemetry::default(),
            },
        }
    }

    /// This factory with the retry options that `retry` sets; its locks use them unless a
    /// call overrides them.
    pub fn with_retry(mut self, retry: Retry) -> Result<Self> {
        self.context.retry = self.context.retry.overridden_by(&retry)?;
        Ok(self)
    }

    /// This factory under `name`: the `store` label of its metrics and the store named in
    /// its errors ([`Error::Storage`](crate::Error::Storage)). The
    /// [`Verrou`](https://docs.rs/verrou) manager names each factory after its store;
    /// otherwise it is `default`.
    pub fn with_name(mut self, name: &str) -> Self {
        self.context.telemetry = Telemetry::named(name);
        self
    }

    /// The name given with [`with_name`](Self::with_name) (`default` otherwise).
    pub fn name(&self) -> &str {
        self.context.telemetry.store()
    }

    /// The store this factory's locks live in.
    pub fn store(&self) -> &Arc<dyn LockStore> {
        &self.context.store
    }

    /// A new lock on `key` that expires [`DEFAULT_TTL`] (30 s) after it is acquired, with a
    /// fresh owner token. An empty key is [`Error::InvalidKey`](crate::Error::InvalidKey).
    pub fn create_lock(&self, key: impl Into<String>) -> Result<Lock> {
        self.create_lock_with_ttl(key, DEFAULT_TTL)
    }

    /// A new lock on `key` with its own TTL: `"10s"`, `"1h30m"`, a [`Duration`], a number of
    /// milliseconds, or [`Ttl::Never`].
    pub fn create_lock_with_ttl(&self, key: impl Into<String>, ttl: impl IntoTtl) -> Result<Lock> {
        let key = key.into();
        crate::key::validate(&key, self.context.store.as_ref())?;
        let ttl: Ttl = ttl.into_ttl()?;
        Ok(Lock::new(key, new_owner_token(), ttl, &self.context))
    }

    /// A lock serialized by [`Lock::serialize`] (here or in another process, in Rust or in
    /// the Node.js library), with its owner and expiry, ready to be released or extended.
    ///
    /// ```
    /// # async fn example(factory: verrou_core::LockFactory, json_from_queue: String) -> verrou_core::Result<()> {
    /// let lock = factory.restore_lock(&json_from_queue)?;
    /// lock.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn restore_lock(&self, serialized: impl IntoSerializedLock) -> Result<Lock> {
        Lock::restored(serialized.into_serialized_lock()?, &self.context)
    }
}

impl fmt::Debug for LockFactory {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("LockFactory")
            .field("retry", &self.context.retry)
            .finish_non_exhaustive()
    }
}
