//! How a [`PostgresStore`](crate::PostgresStore) is set up: [`PostgresOptions`] for a pool
//! you already have, [`PostgresConfig`] to let the store build its own pool.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use verrou_core::{Error, Result};

use crate::identifier::TableName;
use crate::pool::driver_config;

/// Default [`PostgresConfig::url`]: a local PostgreSQL with its stock superuser and
/// database.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Default lock table ([`PostgresConfig::table`], [`PostgresOptions::table`]): the one the
/// Node.js library uses.
pub const DEFAULT_TABLE: &str = "verrou";
/// Default [`PostgresConfig::create_table`] and [`PostgresOptions::create_table`].
pub const DEFAULT_CREATE_TABLE: bool = true;
/// Default [`PostgresConfig::pool_size`].
pub const DEFAULT_POOL_SIZE: usize = 10;
/// Default [`PostgresConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`PostgresConfig::pool_timeout`].
pub const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time between sweeps of expired rows ([`PostgresConfig::sweep_interval`],
/// [`PostgresOptions::sweep_interval`]).
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Default bound on one lock operation ([`PostgresConfig::command_timeout`],
/// [`PostgresOptions::command_timeout`]).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`PostgresConfig::listen`].
pub const DEFAULT_LISTEN: bool = true;

/// Options of a store built on an existing pool with
/// [`PostgresStore::from_pool`](crate::PostgresStore::from_pool).
///
/// ```
/// use verrou_postgres::PostgresOptions;
///
/// let mut options = PostgresOptions::default();
/// options.table = "app.locks".into();
/// assert!(options.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// The lock table, `table` or `schema.table` (letters, digits, underscores; quoted, so
    /// case is kept; at most 51 bytes for the table, 63 for the schema). Default
    /// [`DEFAULT_TABLE`].
    pub table: String,
    /// Create the table, the sequence beside it that numbers grants
    /// (`<table>_fencing_seq`, for fencing tokens), its waiting line (`<table>_waiters`),
    /// its hand-over function (`<table>_hand_over`) and its shares table (`<table>_shares`)
    /// if they do not exist, and replace a hand-over function another version of verrou
    /// made. When `false`, either is [`Error::InvalidConfig`](verrou_core::Error::InvalidConfig) at
    /// startup, whose message gives the statements to run. Default `true`.
    pub create_table: bool,
    /// How often the store deletes expired rows that nobody took over (locks of crashed
    /// holders) and lapsed places in line (waiters that died); `None` never sweeps. Above
    /// zero. Default 60 s.
    pub sweep_interval: Option<Duration>,
    /// Longest time one lock operation may take, from asking the pool for a connection to
    /// the server's answer. Past it the operation fails with
    /// [`Error::Storage`] and its connection is closed (its
    /// state is unknown), so a network partition or a hung server costs this long, not
    /// the minutes TCP takes to give up. It is a client-side bound: the server is not
    /// told, and an operation that timed out may still have been applied. Above zero.
    /// Default 5 s.
    pub command_timeout: Duration,
}

impl PostgresOptions {
    /// Checks the options: a valid table name, timeouts above zero. Fails with
    /// [`Error::InvalidConfig`] naming the field;
    /// [`PostgresStore::from_pool`](crate::PostgresStore::from_pool) calls it.
    pub fn validate(&self) -> Result<()> {
        TableName::parse(&self.table)?;
        positive("command_timeout", Some(self.command_timeout))?;
        positive("sweep_interval", self.sweep_interval)
    }
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            table: DEFAULT_TABLE.into(),
            create_table: DEFAULT_CREATE_TABLE,
            sweep_interval: Some(DEFAULT_SWEEP_INTERVAL),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }
}

/// `Err(InvalidConfig)` naming `field` if `duration` is zero.
fn positive(field: &str, duration: Option<Duration>) -> Result<()> {
    if duration.is_some_and(|duration| duration.is_zero()) {
        return Err(Error::InvalidConfig(format!(
            "PostgreSQL `{field}` must be longer than zero"
        )));
    }
    Ok(())
}

/// Everything [`PostgresStore::connect`](crate::PostgresStore::connect) needs to build its
/// own connection pool.
///
/// With the `serde` feature it reads from configuration files: `url` is required, every
/// other field has its default, durations are `"5s"`-style strings or milliseconds, and
/// unknown fields are errors.
///
/// ```
/// use std::time::Duration;
/// use verrou_postgres::PostgresConfig;
///
/// let mut config = PostgresConfig::new("postgres://app@db.internal/app?sslmode=verify-full");
/// config.pool_size = 4;
/// config.connect_timeout = Duration::from_secs(2);
/// assert_eq!(config.table, "verrou");
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(deny_unknown_fields)
)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// Connection string, as a URL (`postgres://user:password@host:port/db?sslmode=...`) or
    /// `key=value` pairs, as `tokio-postgres` reads them, with libpq's five `sslmode`s
    /// (`disable`, `prefer` when none is given, `require`, `verify-ca`, `verify-full`; all
    /// but the first two need the `tls` feature). The pool's connections and the
    /// listener's use the same TLS. [`DEFAULT_URL`] in [`PostgresConfig::default`];
    /// required in configuration files.
    ///
    /// It may name a primary and its standbys,
    /// `postgres://app@db1:5432,db2:5432/app?target_session_attrs=read-write`, and must then
    /// ask for the server that takes writes as shown (else [`Error::InvalidConfig`]): new
    /// connections go to that one, so the store follows a failover. The hosts are tried in
    /// turn, starting with the one that gave the last connection.
    pub url: String,
    /// See [`PostgresOptions::table`]. Default [`DEFAULT_TABLE`].
    #[cfg_attr(feature = "serde", serde(default = "default_table"))]
    pub table: String,
    /// See [`PostgresOptions::create_table`]. Default `true`.
    #[cfg_attr(feature = "serde", serde(default = "default_create_table"))]
    pub create_table: bool,
    /// Most connections the pool opens; at least 1. Default [`DEFAULT_POOL_SIZE`].
    #[cfg_attr(feature = "serde", serde(default = "default_pool_size"))]
    pub pool_size: usize,
    /// Longest wait for a new connection to be established, per host the URL names: TCP,
    /// TLS handshake, authentication, and the check that it takes writes. When the URL
    /// names several hosts, each gets at most [`command_timeout`](Self::command_timeout)
    /// divided by their number, so that one operation can try them all. Replaces any
    /// `connect_timeout` in the URL. Above zero. Default 5 s.
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "default_connect_timeout",
            deserialize_with = "verrou_core::config::duration"
        )
    )]
    pub connect_timeout: Duration,
    /// Longest wait for a free connection when all `pool_size` are busy; `None` waits as
    /// long as it takes. Above zero when set. Default 10 s.
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "default_pool_timeout",
            deserialize_with = "verrou_core::config::optional_duration"
        )
    )]
    pub pool_timeout: Option<Duration>,
    /// See [`PostgresOptions::sweep_interval`]. Default 60 s.
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "default_sweep_interval",
            deserialize_with = "verrou_core::config::optional_duration"
        )
    )]
    pub sweep_interval: Option<Duration>,
    /// See [`PostgresOptions::command_timeout`]. Default 5 s.
    #[cfg_attr(
        feature = "serde",
        serde(
            default = "default_command_timeout",
            deserialize_with = "verrou_core::config::duration"
        )
    )]
    pub command_timeout: Duration,
    /// Keep one more connection, outside the pool, that `LISTEN`s for hand-overs, so that
    /// a waiting `acquire` wakes as soon as a release (by this process or another) hands it
    /// the lock, instead of at its next retry. Turn it off behind a transaction-pooling
    /// proxy (PgBouncer in transaction mode), which breaks `LISTEN`; waiters then keep their
    /// places in line and poll at their retry delay. Default `true`.
    #[cfg_attr(feature = "serde", serde(default = "default_listen"))]
    pub listen: bool,
    /// A PEM file of certificate authorities to check the server's certificate against
    /// (feature `tls`; libpq's `sslrootcert`, which the URL may not give). With
    /// `sslmode=verify-full` they are trusted besides the system's root certificates; with
    /// `verify-ca`, which needs it, and with `prefer` and `require`, they are the only
    /// ones, and the server's certificate must come from one of them. Refused with
    /// `sslmode=disable`. Default none.
    #[cfg_attr(feature = "serde", serde(default))]
    pub ssl_root_cert: Option<PathBuf>,
}

#[cfg(feature = "serde")]
fn default_table() -> String {
    DEFAULT_TABLE.to_owned()
}

#[cfg(feature = "serde")]
fn default_create_table() -> bool {
    DEFAULT_CREATE_TABLE
}

#[cfg(feature = "serde")]
fn default_pool_size() -> usize {
    DEFAULT_POOL_SIZE
}

#[cfg(feature = "serde")]
fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

#[cfg(feature = "serde")]
fn default_pool_timeout() -> Option<Duration> {
    Some(DEFAULT_POOL_TIMEOUT)
}

#[cfg(feature = "serde")]
fn default_sweep_interval() -> Option<Duration> {
    Some(DEFAULT_SWEEP_INTERVAL)
}

#[cfg(feature = "serde")]
fn default_command_timeout() -> Duration {
    DEFAULT_COMMAND_TIMEOUT
}

#[cfg(feature = "serde")]
fn default_listen() -> bool {
    DEFAULT_LISTEN
}

impl PostgresConfig {
    /// The defaults, with the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        let options = PostgresOptions::default();
        Self {
            url: url.into(),
            table: options.table,
            create_table: options.create_table,
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_timeout: Some(DEFAULT_POOL_TIMEOUT),
            sweep_interval: options.sweep_interval,
            command_timeout: options.command_timeout,
            listen: DEFAULT_LISTEN,
            ssl_root_cert: None,
        }
    }

    /// The options that are not about the pool.
    pub fn options(&self) -> PostgresOptions {
        PostgresOptions {
            table: self.table.clone(),
            create_table: self.create_table,
            sweep_interval: self.sweep_interval,
            command_timeout: self.command_timeout,
        }
    }

    /// Checks the configuration without connecting: the URL (its `sslmode`, and
    /// `target_session_attrs=read-write` when it names several hosts), the table name, a
    /// pool of at least one connection, timeouts above zero. Fails with
    /// [`Error::InvalidConfig`] naming the field, and never showing the password;
    /// [`PostgresStore::connect`](crate::PostgresStore::connect) calls it. The
    /// [`ssl_root_cert`](Self::ssl_root_cert) file is read by `connect`.
    pub fn validate(&self) -> Result<()> {
        self.options().validate()?;
        if self.pool_size == 0 {
            return Err(Error::InvalidConfig(
                "PostgreSQL `pool_size` must be at least 1".to_owned(),
            ));
        }
        positive("connect_timeout", Some(self.connect_timeout))?;
        positive("pool_timeout", self.pool_timeout)?;
        driver_config(self).map(drop)
    }
}

impl Default for PostgresConfig {
    /// The defaults, with the server at [`DEFAULT_URL`].
    fn default() -> Self {
        Self::new(DEFAULT_URL)
    }
}

/// Shows the URL without its password.
impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_password(&self.url))
            .field("table", &self.table)
            .field("create_table", &self.create_table)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_timeout", &self.pool_timeout)
            .field("sweep_interval", &self.sweep_interval)
            .field("command_timeout", &self.command_timeout)
            .field("listen", &self.listen)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .finish()
    }
}

/// A connection string with any password hidden, for logs and `Debug`: the password of a
/// URL's user info, a URL query that mentions a password, or a whole `key=value` string
/// that does.
pub(crate) fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains("password") {
            "<key=value connection string with a password>".to_owned()
        } else {
            url.to_owned()
        };
    };
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = before_query
        .split_once('/')
        .map_or((before_query, ""), |(authority, path)| (authority, path));
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let mut redacted = format!("{scheme}://{authority}");
    if before_query.contains('/') {
        redacted = format!("{redacted}/{path}");
    }
    if rest.contains('?') {
        let query = if query.contains("password") {
            "***"
        } else {
            query
        };
        redacted = format!("{redacted}?{query}");
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_password("postgres://app:s3cr@t@db:5432/app?sslmode=disable"),
            "postgres://app:***@db:5432/app?sslmode=disable"
        );
        assert_eq!(
            redact_password("postgres://app@db/app"),
            "postgres://app@db/app"
        );
        assert_eq!(
            redact_password("host=db user=app password='s3 cret' dbname=app"),
            "<key=value connection string with a password>"
        );
        assert_eq!(
            redact_password("postgres://db?user=app&password=s3cret"),
            "postgres://db?***"
        );
        assert_eq!(redact_password("postgres://db"), "postgres://db");
        let config = PostgresConfig::new("postgresql://u:hunter2@h/d");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn defaults_match_the_options() {
        let config = PostgresConfig::default();
        assert_eq!(config.options(), PostgresOptions::default());
        assert_eq!(config.url, DEFAULT_URL);
        assert_eq!(config.pool_size, DEFAULT_POOL_SIZE);
        assert!(config.validate().is_ok());
    }
}
