//! The connection pool a [`PostgresConfig`] describes, and how its failures are reported.

use deadpool_postgres::tokio_postgres::{Config, NoTls};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use verrou_core::{BoxError, Error, Result};

use crate::config::{redact_password, PostgresConfig};

/// The driver's configuration for `config`'s URL, with its connect timeout.
pub(crate) fn driver_config(config: &PostgresConfig) -> Result<Config> {
    let mut pg_config: Config = config.url.parse().map_err(|error| {
        Error::InvalidConfig(format!(
            "invalid PostgreSQL url {}: {error}",
            redact_password(&config.url)
        ))
    })?;
    pg_config.connect_timeout(config.connect_timeout);
    Ok(pg_config)
}

/// A pool of plain (no TLS) connections to `pg_config`, as `config` describes.
///
/// The pool hands out the connection returned last: at low concurrency one connection (and
/// one server process, its caches warm) serves one statement after the other, instead of
/// every idle connection in turn, which measurably lengthens each round trip.
pub(crate) fn build_pool(config: &PostgresConfig, pg_config: Config) -> Result<Pool> {
    if config.pool_size == 0 {
        return Err(Error::InvalidConfig(
            "pool_size must be at least 1".to_owned(),
        ));
    }
    let manager = Manager::from_config(
        pg_config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .queue_mode(deadpool_postgres::QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(config.connect_timeout))
        .wait_timeout(config.pool_timeout)
        .build()
        .map_err(|error| Error::InvalidConfig(format!("could not build the pool: {error}")))
}

/// The cause to report for a pool failure. A connection failure keeps only the driver's
/// error: deadpool's wrapper repeats it both in its message and as its source, which error
/// reporters would print twice.
pub(crate) fn pool_failure(error: PoolError) -> BoxError {
    match error {
        PoolError::Backend(error) => error.into(),
        other => other.into(),
    }
}
