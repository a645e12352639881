//! [`LockFactory`]: makes locks on one store.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::duration::{IntoTtl, Ttl};
use crate::lock::{KeyAndOwner, Lock, LockContext, LockKind};
use crate::retry::{Retry, RetryPolicy};
use crate::serialized::IntoSerializedLock;
use crate::store::{LockStore, Share};
use crate::telemetry::Telemetry;
use crate::{Error, Result};

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
    context: Arc<LockContext>,
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
            context: Arc::new(LockContext {
                store,
                retry: RetryPolicy::default(),
                telemetry: Telemetry::default(),
            }),
        }
    }

    /// This factory with the retry options that `retry` sets; its locks use them unless a
    /// call overrides them.
    pub fn with_retry(mut self, retry: Retry) -> Result<Self> {
        let retry = self.context.retry.overridden_by(&retry)?;
        Arc::make_mut(&mut self.context).retry = retry;
        Ok(self)
    }

    /// This factory under `name`: the `store` label of its metrics and the store named in
    /// its errors ([`Error::Storage`](crate::Error::Storage)). The
    /// [`Verrou`](https://docs.rs/verrou) manager names each factory after its store;
    /// otherwise it is `default`.
    pub fn with_name(mut self, name: &str) -> Self {
        Arc::make_mut(&mut self.context).telemetry = Telemetry::named(name);
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
    pub fn create_lock(&self, key: impl AsRef<str>) -> Result<Lock> {
        self.create_lock_with_ttl(key, DEFAULT_TTL)
    }

    /// A new lock on `key` with its own TTL: `"10s"`, `"1h30m"`, a [`Duration`], a number of
    /// milliseconds, or [`Ttl::Never`].
    pub fn create_lock_with_ttl(&self, key: impl AsRef<str>, ttl: impl IntoTtl) -> Result<Lock> {
        self.create(key.as_ref(), LockKind::Exclusive, ttl)
    }

    /// A permit of the semaphore `key`, which lets at most `limit` holders in at once, each
    /// with its own owner and expiry ([`DEFAULT_TTL`]). The permit has the whole surface of
    /// a lock (acquire, release, extend, run, guards, fencing tokens, serialize), plus
    /// [`Lock::available`] and [`Lock::holders`]. Make one per holder. A semaphore is kept
    /// apart from a plain lock or read-write lock of the same key.
    ///
    /// ```
    /// # async fn example(factory: verrou_core::LockFactory) -> verrou_core::Result<()> {
    /// let permit = factory.create_semaphore("payment-provider", 5)?;
    /// if let Some(sent) = permit.run(|| async { /* call the provider */ }).await? {
    ///     let _ = sent;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn create_semaphore(&self, key: impl AsRef<str>, limit: u32) -> Result<Lock> {
        self.create_semaphore_with_ttl(key, limit, DEFAULT_TTL)
    }

    /// Like [`create_semaphore`](Self::create_semaphore), with the permit's own TTL.
    pub fn create_semaphore_with_ttl(
        &self,
        key: impl AsRef<str>,
        limit: u32,
        ttl: impl IntoTtl,
    ) -> Result<Lock> {
        if limit == 0 {
            return Err(Error::InvalidArgument(
                "a semaphore's limit must be at least 1".to_owned(),
            ));
        }
        let kind = LockKind::Shared(Share::Permit { limit });
        self.create(key.as_ref(), kind, ttl)
    }

    /// The read-write lock `key`: many readers or one writer, each hold expiring after
    /// [`DEFAULT_TTL`]. A waiting writer holds back readers that come after it.
    ///
    /// ```
    /// # async fn example(factory: verrou_core::LockFactory) -> verrou_core::Result<()> {
    /// let cache = factory.create_rw_lock("cache:prices")?;
    /// let reader = cache.read()?;
    /// if let Some(price) = reader.run(|| async { 42 }).await? {
    ///     let _ = price;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn create_rw_lock(&self, key: impl AsRef<str>) -> Result<RwLock> {
        self.create_rw_lock_with_ttl(key, DEFAULT_TTL)
    }

    /// Like [`create_rw_lock`](Self::create_rw_lock), with the holds' own TTL.
    pub fn create_rw_lock_with_ttl(
        &self,
        key: impl AsRef<str>,
        ttl: impl IntoTtl,
    ) -> Result<RwLock> {
        let key = key.as_ref();
        crate::key::validate(key, self.context.store.as_ref())?;
        Ok(RwLock {
            factory: self.clone(),
            key: key.to_owned(),
            ttl: ttl.into_ttl()?,
        })
    }

    /// A lock of `kind` on `key`, with a fresh owner token.
    fn create(&self, key: &str, kind: LockKind, ttl: impl IntoTtl) -> Result<Lock> {
        crate::key::validate(key, self.context.store.as_ref())?;
        let ttl: Ttl = ttl.into_ttl()?;
        let key_and_owner = KeyAndOwner::with_new_owner(key);
        Ok(Lock::new(key_and_owner, kind, ttl, &self.context))
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

/// A read-write lock: hands out read and write handles on its key. Cheap to clone.
#[derive(Clone)]
pub struct RwLock {
    factory: LockFactory,
    key: String,
    ttl: Ttl,
}

impl RwLock {
    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// A new reader (its own owner token): shares the key with other readers, never with a
    /// writer. It has the whole surface of a [`Lock`].
    pub fn read(&self) -> Result<Lock> {
        self.handle(Share::Read)
    }

    /// A new writer (its own owner token): has the key alone. It has the whole surface of a
    /// [`Lock`].
    pub fn write(&self) -> Result<Lock> {
        self.handle(Share::Write)
    }

    fn handle(&self, share: Share) -> Result<Lock> {
        self.factory
            .create(&self.key, LockKind::Shared(share), self.ttl)
    }
}

impl fmt::Debug for RwLock {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("RwLock")
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
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
