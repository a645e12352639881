//! [`VerrouConfig`]: the stores of a [`Verrou`](crate::Verrou), read from JSON or TOML.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::{Error, LockStore, Result, Retry};

/// A manager's configuration: named stores, the default one, and retry options.
///
/// ```json
/// {
///   "default": "redis",
///   "stores": {
///     "redis": { "driver": "redis", "url": "redis://127.0.0.1:6379" },
///     "local": { "driver": "memory" }
///   },
///   "retry": { "delay": "100ms", "timeout": "10s", "attempts": 50 }
/// }
/// ```
///
/// The same in TOML:
///
/// ```toml
/// default = "redis"
/// retry = { delay = "100ms", timeout = "10s" }
///
/// [stores.redis]
/// driver = "redis"
/// url = "redis://127.0.0.1:6379"
///
/// [stores.local]
/// driver = "memory"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerrouConfig {
    /// The default store's name (optional when there is exactly one store).
    #[serde(default)]
    pub default: Option<String>,
    /// The stores, by name.
    pub stores: BTreeMap<String, StoreConfig>,
    /// Retry options for every store.
    #[serde(default)]
    pub retry: RetryConfig,
}

impl VerrouConfig {
    /// Reads a configuration from JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_value(json_value(text)?)
    }

    /// Reads a configuration from TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::from_value(toml_value(text)?)
    }

    /// Reads a configuration file, JSON or TOML by its extension.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        file_value(path)
            .and_then(Self::from_value)
            .map_err(|error| in_file(path, error))
    }

    /// Reads a configuration file, then lets environment variables override it:
    /// `VERROU_STORES__REDIS__URL` sets `stores.redis.url`, `VERROU_RETRY__TIMEOUT` sets
    /// `retry.timeout`, `VERROU_DEFAULT` sets `default` (after `VERROU_`, `__` separates the
    /// levels, and names are lowercased: figment's convention). A variable may add a store
    /// (`VERROU_STORES__LOCAL__DRIVER=memory`). What
    /// [`Verrou::from_config_file`](crate::Verrou::from_config_file) reads.
    pub fn from_file_and_env(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut value = file_value(path).map_err(|error| in_file(path, error))?;
        crate::env::apply(&mut value, std::env::vars())?;
        Self::from_value(value).map_err(|error| in_file(path, error))
    }

    /// A configuration from environment variables alone, named as for
    /// [`from_file_and_env`](Self::from_file_and_env).
    pub fn from_env() -> Result<Self> {
        let mut value = serde_json::Value::Object(serde_json::Map::new());
        crate::env::apply(&mut value, std::env::vars())?;
        Self::from_value(value)
    }

    fn from_value(value: serde_json::Value) -> Result<Self> {
        serde_json::from_value(value).map_err(|error| Error::InvalidConfig(error.to_string()))
    }
}

fn json_value(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|error| Error::InvalidConfig(error.to_string()))
}

fn toml_value(text: &str) -> Result<serde_json::Value> {
    toml::from_str(text).map_err(|error| Error::InvalidConfig(error.to_string()))
}

/// The file at `path`, read as JSON or TOML by its extension.
fn file_value(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| Error::InvalidConfig(format!("cannot read it: {error}")))?;
    match path.extension().and_then(|extension| extension.to_str()) {
        Some("json") => json_value(&text),
        Some("toml") => toml_value(&text),
        _ => Err(Error::InvalidConfig(
            "the file name must end in .json or .toml".into(),
        )),
    }
}

/// `error`, said to be about the file at `path`.
fn in_file(path: &Path, error: Error) -> Error {
    match error {
        Error::InvalidConfig(reason) => {
            Error::InvalidConfig(format!("{}: {reason}", path.display()))
        }
        other => other,
    }
}

/// Retry options in a configuration; durations as `"250ms"`, `"5s"` or milliseconds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all before `acquire` gives up (default unlimited).
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Pause between attempts (default 250 ms).
    #[serde(default, deserialize_with = "verrou_core::config::optional_duration")]
    pub delay: Option<Duration>,
    /// Deadline for `acquire` (default none).
    #[serde(default, deserialize_with = "verrou_core::config::optional_duration")]
    pub timeout: Option<Duration>,
}

impl RetryConfig {
    pub(crate) fn to_retry(&self) -> Retry {
        let mut retry = Retry::new();
        if let Some(attempts) = self.attempts {
            retry = retry.attempts(attempts);
        }
        if let Some(delay) = self.delay {
            retry = retry.delay(delay);
        }
        if let Some(timeout) = self.timeout {
            retry = retry.timeout(timeout);
        }
        retry
    }
}

/// One store of a configuration, chosen by its `driver` field.
///
/// Every driver name is always understood; one whose cargo feature is off fails at build
/// time with [`Error::FeatureDisabled`] naming the feature.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "driver", rename_all = "lowercase")]
#[non_exhaustive]
pub enum StoreConfig {
    /// `{"driver": "memory"}`: the in-process memory store.
    #[cfg(feature = "memory")]
    Memory(MemoryConfig),
    /// The memory driver, whose feature is off.
    #[cfg(not(feature = "memory"))]
    Memory(DisabledDriver),
    /// `{"driver": "redis", "url": ...}`: see [`verrou_redis::RedisConfig`].
    #[cfg(feature = "redis")]
    Redis(verrou_redis::RedisConfig),
    /// The Redis driver, whose feature is off.
    #[cfg(not(feature = "redis"))]
    Redis(DisabledDriver),
    /// `{"driver": "postgres", "url": ...}`: see [`verrou_postgres::PostgresConfig`].
    #[cfg(feature = "postgres")]
    Postgres(verrou_postgres::PostgresConfig),
    /// The PostgreSQL driver, whose feature is off.
    #[cfg(not(feature = "postgres"))]
    Postgres(DisabledDriver),
}

impl StoreConfig {
    /// Builds the store (connecting to its server if it has one).
    pub(crate) async fn build(self, name: &str) -> Result<Arc<dyn LockStore>> {
        let store: Arc<dyn LockStore> = match self {
            #[cfg(feature = "memory")]
            StoreConfig::Memory(MemoryConfig {}) => Arc::new(verrou_memory::MemoryStore::new()),
            #[cfg(feature = "redis")]
            StoreConfig::Redis(config) => {
                Arc::new(verrou_redis::RedisStore::connect(config).await?)
            }
            #[cfg(feature = "postgres")]
            StoreConfig::Postgres(config) => {
                Arc::new(verrou_postgres::PostgresStore::connect(config).await?)
            }
            #[allow(unreachable_patterns)]
            disabled => return Err(disabled.feature_error(name)),
        };
        Ok(store)
    }

    fn feature_error(&self, name: &str) -> Error {
        let (driver, feature) = match self {
            StoreConfig::Memory(_) => ("memory", "memory"),
            StoreConfig::Redis(_) => ("redis", "redis"),
            StoreConfig::Postgres(_) => ("postgres", "postgres"),
        };
        Error::FeatureDisabled {
            store: name.into(),
            driver: driver.into(),
            feature,
        }
    }
}

/// Options of the memory driver: none.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {}

/// The options of a driver whose cargo feature is off: accepted as they are, never used.
#[derive(Debug, Clone, Default)]
pub struct DisabledDriver {}

impl<'de> Deserialize<'de> for DisabledDriver {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| DisabledDriver {})
    }
}
