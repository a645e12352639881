//! How to reach Redis ([`RedisConfig`]) and how the store uses a connection ([`RedisOptions`]).

use std::fmt;
use std::time::Duration;

use fred::types::config::{Config, ReconnectPolicy};
use fred::types::Builder;
use verrou_core::Error;

use crate::url;

/// Default [`RedisConfig::url`]: a server on this machine.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// Default [`RedisConfig::pool_size`].
pub const DEFAULT_POOL_SIZE: usize = 1;
/// Default command timeout ([`RedisConfig::command_timeout`], [`RedisOptions::command_timeout`]).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`RedisConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default replica timeout ([`RedisConfig::replica_timeout`], [`RedisOptions::replica_timeout`]).
pub const DEFAULT_REPLICA_TIMEOUT: Duration = Duration::from_millis(500);

/// The shortest of [`reconnect_policy`]'s delays, and the first pause before a connection
/// task is started again (see [`crate::supervise`]).
pub(crate) const RECONNECT_MIN_DELAY_MS: u32 = 100;
/// The longest of [`reconnect_policy`]'s delays, and of the pauses between restarts of a
/// connection task.
pub(crate) const RECONNECT_MAX_DELAY_MS: u32 = 2_000;

/// Where the Redis server is and how to talk to it: what
/// [`RedisStore::connect`](crate::RedisStore::connect) needs.
///
/// With the `serde` feature it reads from configuration files; `url` is required, every other
/// field has a default, durations are strings such as `"5s"` or numbers of milliseconds, and
/// unknown fields are rejected.
///
/// ```
/// use std::time::Duration;
/// use verrou_redis::RedisConfig;
///
/// let mut config = RedisConfig::new("redis://127.0.0.1:6379/0");
/// config.key_prefix = "locks:".into();
/// config.command_timeout = Duration::from_secs(2);
/// ```
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(deny_unknown_fields)
)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The server: `redis://[user:password@]host[:port][/db]`, `rediss://` for TLS (feature
    /// `tls`), `redis-cluster://host:port?node=host:port` for a cluster,
    /// `redis-sentinel://host:port?sentinelServiceName=NAME&node=host:port` for the master
    /// that Redis Sentinel names (the store follows its failovers at once).
    pub url: String,
    /// Put before every lock key (`"locks:"` makes lock `a` the Redis key `locks:a`).
    /// Empty (the default): keys are used as they are, like the Node.js library.
    #[cfg_attr(feature = "serde", serde(default))]
    pub key_prefix: String,
    /// How many connections to open. Each operation uses one; they are shared round robin.
    #[cfg_attr(feature = "serde", serde(default = "default_pool_size"))]
    pub pool_size: usize,
    /// How long an operation may take, waiting for a lost connection to come back included,
    /// before it fails with [`Error::Storage`].
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "default_command_timeout",
            deserialize_with = "verrou_core::config::duration"
        )
    )]
    pub command_timeout: Duration,
    /// How long [`RedisStore::connect`](crate::RedisStore::connect) and each reconnection may
    /// take (TCP, TLS, `AUTH`, `SELECT`).
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "default_connect_timeout",
            deserialize_with = "verrou_core::config::duration"
        )
    )]
    pub connect_timeout: Duration,
    /// Replica acknowledgement: how many replicas must have a take or an extension before it
    /// is reported done (`WAIT`, in the same round trip), so that a failover to one of them
    /// keeps it. 0 (the default): none, replication is asynchronous. A grant or extension
    /// fewer replicas acknowledged within [`replica_timeout`](Self::replica_timeout) fails
    /// with [`Error::Storage`] (source: [`NotReplicated`](crate::NotReplicated)).
    #[cfg_attr(feature = "serde", serde(default))]
    pub min_replicas: usize,
    /// With [`min_replicas`](Self::min_replicas): how long the master waits for the replicas
    /// to acknowledge a take or an extension. Above zero, and below
    /// [`command_timeout`](Self::command_timeout). Default: 500 ms.
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "default_replica_timeout",
            deserialize_with = "verrou_core::config::duration"
        )
    )]
    pub replica_timeout: Duration,
    /// Whether plain locks' grants carry fencing tokens (see
    /// [`RedisOptions::fencing_tokens`]). Off by default: a take is then one `SET NX PX`.
    #[cfg_attr(feature = "serde", serde(default))]
    pub fencing_tokens: bool,
}

#[cfg(feature = "serde")]
fn default_pool_size() -> usize {
    DEFAULT_POOL_SIZE
}

#[cfg(feature = "serde")]
fn default_command_timeout() -> Duration {
    DEFAULT_COMMAND_TIMEOUT
}

#[cfg(feature = "serde")]
fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

#[cfg(feature = "serde")]
fn default_replica_timeout() -> Duration {
    DEFAULT_REPLICA_TIMEOUT
}

impl RedisConfig {
    /// The defaults, with the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: String::new(),
            pool_size: DEFAULT_POOL_SIZE,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            min_replicas: 0,
            replica_timeout: DEFAULT_REPLICA_TIMEOUT,
            fencing_tokens: false,
        }
    }

    /// A fred [`Builder`] for this server with the store's connection defaults: reconnection
    /// forever (100 ms doubling up to 2 s), [`connect_timeout`](Self::connect_timeout) on
    /// connecting, [`command_timeout`](Self::command_timeout) on every command.
    ///
    /// Use it to adjust fred settings this configuration does not cover, then build a pool
    /// and hand it to [`RedisStore::from_pool`](crate::RedisStore::from_pool).
    ///
    /// Fails with [`Error::InvalidConfig`] if the URL or a value is not acceptable; the
    /// message names the problem and never shows the password.
    pub fn builder(&self) -> Result<Builder, Error> {
        self.validate()?;
        url::check(&self.url).map_err(|reason| self.url_error(&reason))?;
        #[cfg(feature = "tls")]
        install_crypto_provider();
        let config =
            Config::from_url(&self.url).map_err(|error| self.url_error(error.details()))?;

        let mut builder = Builder::from_config(config);
        builder
            .set_policy(reconnect_policy())
            .with_connection_config(|connection| {
                connection.connection_timeout = self.connect_timeout;
                connection.internal_command_timeout = self.connect_timeout;
            })
            .with_performance_config(|performance| {
                performance.default_command_timeout = self.command_timeout;
            });
        Ok(builder)
    }

    /// The store options this configuration asks for.
    pub fn options(&self) -> RedisOptions {
        RedisOptions {
            key_prefix: self.key_prefix.clone(),
            command_timeout: self.command_timeout,
            min_replicas: self.min_replicas,
            replica_timeout: self.replica_timeout,
            fencing_tokens: self.fencing_tokens,
        }
    }

    /// The URL without its password, for messages.
    pub(crate) fn redacted_url(&self) -> String {
        url::redact(&self.url)
    }

    /// Checks every field ([`connect`](crate::RedisStore::connect) does, before any
    /// connection): [`Error::InvalidConfig`] names the first field that is not acceptable.
    pub fn validate(&self) -> Result<(), Error> {
        let problem = if self.pool_size == 0 {
            "Redis `pool_size` must be at least 1"
        } else if self.connect_timeout.is_zero() {
            "Redis `connect_timeout` must be longer than zero"
        } else {
            return self.options().validate();
        };
        Err(Error::InvalidConfig(problem.to_owned()))
    }

    fn url_error(&self, reason: &str) -> Error {
        Error::InvalidConfig(format!(
            "invalid Redis URL `{}`: {reason}",
            self.redacted_url()
        ))
    }
}

impl Default for RedisConfig {
    /// The defaults, with the server at [`DEFAULT_URL`].
    fn default() -> Self {
        Self::new(DEFAULT_URL)
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("min_replicas", &self.min_replicas)
            .field("replica_timeout", &self.replica_timeout)
            .field("fencing_tokens", &self.fencing_tokens)
            .finish()
    }
}

/// Reconnection after a lost connection: 100 ms, doubling up to 2 s, forever.
pub(crate) fn reconnect_policy() -> ReconnectPolicy {
    ReconnectPolicy::new_exponential(0, RECONNECT_MIN_DELAY_MS, RECONNECT_MAX_DELAY_MS, 2)
}

/// rustls needs a process-wide crypto provider when more than one is compiled in (another
/// crate may bring aws-lc-rs); pick ring unless the application chose one already.
#[cfg(feature = "tls")]
fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How a [`RedisStore`](crate::RedisStore) uses its connection, whoever built it.
///
/// ```
/// use std::time::Duration;
/// use verrou_redis::RedisOptions;
///
/// let mut options = RedisOptions::default();
/// options.key_prefix = "locks:".into();
/// options.command_timeout = Duration::from_secs(1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Put before every lock key. Empty (the default): keys are used as they are.
    pub key_prefix: String,
    /// How long an operation may take, waiting for a lost connection to come back included,
    /// before it fails with [`Error::Storage`]. Applied to each of the store's commands, so
    /// it holds even on a client built without a timeout. Default: 5 s. Zero is
    /// [`Error::InvalidConfig`], as everywhere.
    pub command_timeout: Duration,
    /// How many replicas must acknowledge a take or an extension before it is reported done
    /// (see [`RedisConfig::min_replicas`]). 0 (the default): none.
    pub min_replicas: usize,
    /// How long the master waits for [`min_replicas`](Self::min_replicas) to acknowledge.
    /// Default: 500 ms. With `min_replicas` set, it must be above zero and below the command
    /// timeout ([`Error::InvalidConfig`] otherwise).
    pub replica_timeout: Duration,
    /// Whether the grants of plain locks carry fencing tokens ([`Lock::fencing_token`](verrou_core::Lock::fencing_token)).
    /// On, a take is a script that also issues the token from the slot's counter (about
    /// twice the server time of a bare `SET NX PX`: measure with the benchmark's `redis` and
    /// `redis-fenced` rows). Off (the default), a take from outside the waiting line is one
    /// `SET key owner NX PX ttl GET`, as cheap as the bare command, and grants carry no
    /// token. Semaphore permits and read-write locks always carry tokens.
    pub fencing_tokens: bool,
}

impl RedisOptions {
    /// Checks the options ([`RedisStore::from_client`](crate::RedisStore::from_client) and
    /// [`from_pool`](crate::RedisStore::from_pool) do): [`Error::InvalidConfig`] names the
    /// first field that is not acceptable.
    pub fn validate(&self) -> Result<(), Error> {
        let problem = if self.command_timeout.is_zero() {
            "Redis `command_timeout` must be longer than zero"
        } else if self.min_replicas > 0 && self.replica_timeout.is_zero() {
            "Redis `replica_timeout` must be longer than zero when `min_replicas` is set"
        } else if self.min_replicas > 0 && self.replica_timeout >= self.command_timeout {
            "Redis `replica_timeout` must be shorter than `command_timeout` when `min_replicas` is set"
        } else {
            return Ok(());
        };
        Err(Error::InvalidConfig(problem.to_owned()))
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            key_prefix: String::new(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            min_replicas: 0,
            replica_timeout: DEFAULT_REPLICA_TIMEOUT,
            fencing_tokens: false,
        }
    }
}
