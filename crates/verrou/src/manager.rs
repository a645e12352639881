//! [`Verrou`]: named stores with a default, the reference's multi-store manager.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use crate::config::VerrouConfig;
use crate::{
    Error, IntoSerializedLock, IntoTtl, Lock, LockFactory, LockStore, Result, Retry, RwLock,
};

/// Several named lock stores and a default one, built once at startup and shared.
///
/// `create_lock` and `restore_lock` go to the default store; [`store`](Self::store) picks
/// another by name (the reference's `use(name)`). Cloning is cheap.
///
/// ```
/// # fn main() -> verrou::Result<()> {
/// use verrou::{MemoryStore, Verrou};
///
/// let verrou = Verrou::builder()
///     .store("local", MemoryStore::new())
///     .store("other", MemoryStore::new())
///     .default_store("local")
///     .build()?;
/// let on_default = verrou.create_lock("report")?;
/// let elsewhere = verrou.store("other")?.create_lock("report")?;
/// assert!(verrou.store("nope").is_err());
/// # let _ = (on_default, elsewhere); Ok(()) }
/// ```
#[derive(Clone)]
pub struct Verrou {
    default: Arc<str>,
    stores: Arc<BTreeMap<String, LockFactory>>,
}

impl Verrou {
    /// Starts building a manager from code.
    pub fn builder() -> VerrouBuilder {
        VerrouBuilder::default()
    }

    /// Builds the stores a configuration describes (connecting to servers as needed).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> verrou::Result<()> {
    /// use verrou::{Verrou, VerrouConfig};
    ///
    /// let config = VerrouConfig::from_json(r#"{
    ///     "default": "main",
    ///     "stores": { "main": { "driver": "memory" } },
    ///     "retry": { "delay": "50ms", "timeout": "5s" }
    /// }"#)?;
    /// let verrou = Verrou::from_config(config).await?;
    /// assert!(verrou.create_lock("job")?.acquire().await?);
    /// # Ok(()) }
    /// ```
    pub async fn from_config(config: VerrouConfig) -> Result<Self> {
        let retry = config.retry.to_retry();
        let mut builder = Self::builder();
        if let Some(default) = config.default {
            builder = builder.default_store(default);
        }
        for (name, store) in config.stores {
            let factory =
                LockFactory::from_shared(store.build(&name).await?).with_retry(retry.clone())?;
            builder = builder.factory(name, factory);
        }
        builder.build()
    }

    /// Reads a configuration file (`.json` or `.toml`), with environment variables over it
    /// (`VERROU_STORES__REDIS__URL=…`, see [`VerrouConfig::from_file_and_env`]), and builds
    /// its stores.
    pub async fn from_config_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_config(VerrouConfig::from_file_and_env(path)?).await
    }

    /// A new lock on the default store, expiring 30 s after it is acquired.
    pub fn create_lock(&self, key: impl AsRef<str>) -> Result<Lock> {
        self.default_store().create_lock(key)
    }

    /// A new lock on the default store with its own TTL.
    pub fn create_lock_with_ttl(&self, key: impl AsRef<str>, ttl: impl IntoTtl) -> Result<Lock> {
        self.default_store().create_lock_with_ttl(key, ttl)
    }

    /// A permit of the semaphore `key` (at most `limit` holders) on the default store; see
    /// [`LockFactory::create_semaphore`].
    pub fn create_semaphore(&self, key: impl AsRef<str>, limit: u32) -> Result<Lock> {
        self.default_store().create_semaphore(key, limit)
    }

    /// A permit of the semaphore `key` on the default store with its own TTL.
    pub fn create_semaphore_with_ttl(
        &self,
        key: impl AsRef<str>,
        limit: u32,
        ttl: impl IntoTtl,
    ) -> Result<Lock> {
        self.default_store()
            .create_semaphore_with_ttl(key, limit, ttl)
    }

    /// The read-write lock `key` on the default store; see [`LockFactory::create_rw_lock`].
    pub fn create_rw_lock(&self, key: impl AsRef<str>) -> Result<RwLock> {
        self.default_store().create_rw_lock(key)
    }

    /// The read-write lock `key` on the default store, its holds with their own TTL.
    pub fn create_rw_lock_with_ttl(
        &self,
        key: impl AsRef<str>,
        ttl: impl IntoTtl,
    ) -> Result<RwLock> {
        self.default_store().create_rw_lock_with_ttl(key, ttl)
    }

    /// A serialized lock restored on the default store.
    pub fn restore_lock(&self, serialized: impl IntoSerializedLock) -> Result<Lock> {
        self.default_store().restore_lock(serialized)
    }

    /// The store called `name` (the reference's `use(name)`), or [`Error::UnknownStore`].
    pub fn store(&self, name: &str) -> Result<&LockFactory> {
        self.stores.get(name).ok_or_else(|| Error::UnknownStore {
            name: name.to_owned(),
            known: self.store_names().collect::<Vec<_>>().join(", "),
        })
    }

    /// The default store.
    pub fn default_store(&self) -> &LockFactory {
        &self.stores[&*self.default]
    }

    /// The name of the default store.
    pub fn default_store_name(&self) -> &str {
        &self.default
    }

    /// The names of all stores, in alphabetical order.
    pub fn store_names(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }
}

impl fmt::Debug for Verrou {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Verrou")
            .field("default", &self.default)
            .field("stores", &self.store_names().collect::<Vec<_>>())
            .finish()
    }
}

/// Builds a [`Verrou`] from code: add named stores, pick the default, [`build`](Self::build).
#[derive(Default)]
pub struct VerrouBuilder {
    stores: Vec<(String, LockFactory)>,
    default: Option<String>,
    retry: Option<Retry>,
}

impl VerrouBuilder {
    /// Adds a store under `name`.
    pub fn store(self, name: impl Into<String>, store: impl LockStore) -> Self {
        self.factory(name, LockFactory::new(store))
    }

    /// Adds a store under `name`, with the factory's own retry policy.
    pub fn factory(mut self, name: impl Into<String>, factory: LockFactory) -> Self {
        self.stores.push((name.into(), factory));
        self
    }

    /// Names the default store (optional when there is exactly one store).
    pub fn default_store(mut self, name: impl Into<String>) -> Self {
        self.default = Some(name.into());
        self
    }

    /// Retry options for every store added with [`store`](Self::store) or
    /// [`factory`](Self::factory) (they override a factory's own where they are set).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The manager, or an error if there is no store, two stores share a name, or the
    /// default is missing or unknown.
    pub fn build(self) -> Result<Verrou> {
        let mut stores = BTreeMap::new();
        for (name, factory) in self.stores {
            if name.is_empty() {
                return Err(Error::InvalidConfig(
                    "a store name must not be empty".into(),
                ));
            }
            let factory = match &self.retry {
                Some(retry) => factory.with_retry(retry.clone())?,
                None => factory,
            }
            .with_name(&name);
            if stores.insert(name.clone(), factory).is_some() {
                return Err(Error::InvalidConfig(format!(
                    "two stores are named `{name}`"
                )));
            }
        }
        let default = match (self.default, stores.len()) {
            (_, 0) => return Err(Error::InvalidConfig("no store is configured".into())),
            (Some(default), _) => default,
            (None, 1) => stores.keys().next().cloned().unwrap_or_default(),
            (None, _) => {
                return Err(Error::InvalidConfig(
                    "several stores are configured: name the default one".into(),
                ))
            }
        };
        if !stores.contains_key(&default) {
            return Err(Error::UnknownStore {
                known: stores.keys().cloned().collect::<Vec<_>>().join(", "),
                name: default,
            });
        }
        Ok(Verrou {
            default: default.into(),
            stores: Arc::new(stores),
        })
    }
}
