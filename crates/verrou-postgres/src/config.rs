//! How a [`PostgresStore`](crate::PostgresStore) is set up: [`PostgresOptions`] for a pool
//! you already have, [`PostgresConfig`] to let the store build its own pool.

use std::fmt;
use std::time::Duration;

/// Default table name, the one the Node.js library uses.
const DEFAULT_TABLE: &str = "verrou";

/// Default server: a local PostgreSQL with its stock superuser and database.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Default time between sweeps of expired rows.
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Default bound on one lock operation.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Options of a store built on an existing pool with
/// [`PostgresStore::from_pool`](crate::PostgresStore::from_pool).
///
/// ```
/// use verrou_postgres::PostgresOptions;
///
/// let options = PostgresOptions {
///     table: "app.locks".into(),
///     ..PostgresOptions::default()
/// };
/// assert!(options.create_table);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The lock table, `table` or `schema.table` (letters, digits, underscores; quoted, so
    /// case is kept; at most 51 bytes for the table, 63 for the schema). Default `verrou`.
    pub table: String,
    /// Create the table, and the sequence beside it that numbers grants
    /// (`<table>_fencing_seq`, for fencing tokens), if they do not exist. Default `true`.
    pub create_table: bool,
    /// How often the store deletes expired rows that nobody took over (locks of crashed
    /// holders); `None` never sweeps. Default 60 s.
    pub sweep_interval: Option<Duration>,
    /// Longest time one lock operation may take, from asking the pool for a connection to
    /// the server's answer. Past it the operation fails with
    /// [`Error::Storage`](verrou_core::Error::Storage) and its connection is closed (its
    /// state is unknown), so a network partition or a hung server costs this long, not
    /// the minutes TCP takes to give up. It is a client-side bound: the server is not
    /// told, and an operation that timed out may still have been applied. Must be
    /// positive. Default 5 s.
    pub command_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            table: DEFAULT_TABLE.into(),
            create_table: true,
            sweep_interval: Some(DEFAULT_SWEEP_INTERVAL),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }
}

/// Everything [`PostgresStore::connect`](crate::PostgresStore::connect) needs to build its
/// own connection pool. With the `serde` feature it reads from configuration files, where
/// durations are `"5s"`-style strings or milliseconds and unknown fields are errors.
///
/// ```
/// use std::time::Duration;
/// use verrou_postgres::PostgresConfig;
///
/// let config = PostgresConfig {
///     pool_size: 4,
///     connect_timeout: Duration::from_secs(2),
///     ..PostgresConfig::new("postgres://app@db.internal/app")
/// };
/// assert_eq!(config.table, "verrou");
/// ```
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct PostgresConfig {
    /// Connection string, as a URL (`postgres://user:password@host:port/db`) or
    /// `key=value` pairs. No TLS: for TLS build a pool with your connector and use
    /// [`PostgresStore::from_pool`](crate::PostgresStore::from_pool).
    ///
    /// It may name a primary and its standbys,
    /// `postgres://app@db1:5432,db2:5432/app?target_session_attrs=read-write`, and must then
    /// ask for the server that takes writes as shown (else [`Error::InvalidConfig`]): new
    /// connections go to that one, so the store follows a failover. The hosts are tried in
    /// turn, starting with the one that gave the last connection.
    /// Default `postgres://postgres@127.0.0.1:5432/postgres`.
    ///
    /// [`Error::InvalidConfig`]: verrou_core::Error::InvalidConfig
    pub url: String,
    /// See [`PostgresOptions::table`]. Default `verrou`.
    pub table: String,
    /// See [`PostgresOptions::create_table`]. Default `true`.
    pub create_table: bool,
    /// Most connections the pool opens. Default 10.
    pub pool_size: usize,
    /// Longest wait for a new connection to be established, per host the URL names: TCP,
    /// handshake, authentication, and the check that it takes writes. When the URL names
    /// several hosts, each gets at most [`command_timeout`](Self::command_timeout) divided
    /// by their number, so that one operation can try them all. Replaces any
    /// `connect_timeout` in the URL. Default 5 s.
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "verrou_core::config::duration")
    )]
    pub connect_timeout: Duration,
    /// Longest wait for a free connection when all `pool_size` are busy; `None` waits as
    /// long as it takes. Default 10 s.
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "verrou_core::config::optional_duration")
    )]
    pub pool_timeout: Option<Duration>,
    /// See [`PostgresOptions::sweep_interval`]. Default 60 s.
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "verrou_core::config::optional_duration")
    )]
    pub sweep_interval: Option<Duration>,
    /// See [`PostgresOptions::command_timeout`]. Default 5 s.
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "verrou_core::config::duration")
    )]
    pub command_timeout: Duration,
    /// Keep one more connection, outside the pool, that `LISTEN`s for releases, so that
    /// a waiting `acquire` wakes as soon as the lock it waits for is released (by this
    /// process or another), instead of at its next retry. Turn it off behind a
    /// transaction-pooling proxy (PgBouncer in transaction mode), which breaks `LISTEN` and
    /// session-level advisory locks; waiters then poll at their retry delay. Default
    /// `true`.
    pub listen: bool,
}

impl PostgresConfig {
    /// The default configuration for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
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
}

impl Default for PostgresConfig {
    fn default() -> Self {
        let options = PostgresOptions::default();
        Self {
            url: DEFAULT_URL.into(),
            table: options.table,
            create_table: options.create_table,
            pool_size: 10,
            connect_timeout: Duration::from_secs(5),
            pool_timeout: Some(Duration::from_secs(10)),
            sweep_interval: options.sweep_interval,
            command_timeout: options.command_timeout,
            listen: true,
        }
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
        assert_eq!(config.pool_size, 10);
    }
}
