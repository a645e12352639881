//! The connection pool a [`PostgresConfig`] describes, and how its failures are reported.

use std::sync::Arc;

use deadpool_postgres::tokio_postgres::config::TargetSessionAttrs;
use deadpool_postgres::tokio_postgres::Config;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use verrou_core::{BoxError, Error, Result};

use crate::config::{redact_password, PostgresConfig};
use crate::connector::PoolConnect;
use crate::hosts::Hosts;
use crate::tls::{take_sslmode, MakeTls, SslMode};

/// The driver's configuration for `config`'s URL, with its connect timeout (which replaces
/// any the URL gives), and the `sslmode` the URL names (which the driver is told only in
/// part: see `tls.rs`). A URL naming several hosts must ask for the one that takes writes
/// (`target_session_attrs=read-write`): the others are standbys, where every lock operation
/// fails, and a connection the pool opened to one would stay in the pool.
pub(crate) fn driver_config(config: &PostgresConfig) -> Result<(Config, SslMode)> {
    let invalid = |why: String| {
        Error::InvalidConfig(format!(
            "invalid PostgreSQL `url` {}: {why}",
            redact_password(&config.url)
        ))
    };
    let ssl = take_sslmode(&config.url).map_err(invalid)?;
    let mut pg_config: Config = ssl
        .rest
        .parse()
        .map_err(|error| invalid(format!("{error}")))?;
    let hosts = pg_config
        .get_hosts()
        .len()
        .max(pg_config.get_hostaddrs().len());
    if hosts > 1 && pg_config.get_target_session_attrs() != TargetSessionAttrs::ReadWrite {
        return Err(invalid(format!(
            "it names {hosts} hosts, so it needs target_session_attrs=read-write: only the \
             primary takes the store's writes"
        )));
    }
    pg_config
        .connect_timeout(config.connect_timeout)
        .ssl_mode(ssl.mode.driver());
    Ok((pg_config, ssl.mode))
}

/// A pool of connections to `hosts` (whose whole configuration is `pg_config`) opened with
/// `tls`, as `config` (already validated) describes. Opening a connection may take as long
/// as trying every host takes.
///
/// The pool hands out the connection returned last: at low concurrency one connection (and
/// one server process, its caches warm) serves one statement after the other, instead of
/// every idle connection in turn, which measurably lengthens each round trip.
pub(crate) fn build_pool(
    config: &PostgresConfig,
    pg_config: Config,
    hosts: &Hosts,
    tls: Arc<MakeTls>,
) -> Result<Pool> {
    let manager = Manager::from_connect(
        pg_config,
        PoolConnect {
            hosts: hosts.clone(),
            tls,
        },
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size)
        .queue_mode(deadpool_postgres::QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(hosts.budget()))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use deadpool_postgres::tokio_postgres::config::{Host, SslMode as DriverSslMode};

    use super::*;

    #[test]
    fn several_hosts_must_ask_for_the_primary() {
        let url = "postgres://app:s3cret@db1:5433,db2:5434/app";
        let mut config = PostgresConfig::new(format!(
            "{url}?target_session_attrs=read-write&connect_timeout=9"
        ));
        config.connect_timeout = Duration::from_secs(2);
        let (pg_config, _) = driver_config(&config).expect("a primary and its standby");
        assert_eq!(
            pg_config.get_hosts(),
            [Host::Tcp("db1".into()), Host::Tcp("db2".into())]
        );
        assert_eq!(pg_config.get_ports(), [5433, 5434]);
        assert_eq!(
            pg_config.get_connect_timeout(),
            Some(&Duration::from_secs(2)),
            "the configured timeout replaces the url's"
        );
        for url in [url.to_owned(), format!("{url}?target_session_attrs=any")] {
            match driver_config(&PostgresConfig::new(url)) {
                Err(Error::InvalidConfig(message)) => {
                    assert!(
                        message.contains("target_session_attrs=read-write"),
                        "{message}"
                    );
                    assert!(!message.contains("s3cret"), "{message}");
                }
                other => panic!("expected InvalidConfig, got {other:?}"),
            }
        }
        assert!(driver_config(&PostgresConfig::new(
            "host=db1,db2 target_session_attrs=read-write"
        ))
        .is_ok());
        assert!(driver_config(&PostgresConfig::new("postgres://app@db1/app")).is_ok());
    }

    #[test]
    fn the_sslmode_is_taken_from_the_url_and_the_driver_told_whether_tls_is_required() {
        let config = PostgresConfig::new(
            "postgres://app:s3cret@db/app?sslmode=verify-full&application_name=locks",
        );
        let (pg_config, mode) = driver_config(&config).expect("a valid url");
        assert_eq!(mode, SslMode::VerifyFull);
        assert_eq!(pg_config.get_ssl_mode(), DriverSslMode::Require);
        assert_eq!(pg_config.get_application_name(), Some("locks"));
        let (pg_config, mode) =
            driver_config(&PostgresConfig::new("host=db user=app")).expect("a valid url");
        assert_eq!(mode, SslMode::Prefer);
        assert_eq!(pg_config.get_ssl_mode(), DriverSslMode::Prefer);
        match driver_config(&PostgresConfig::new(
            "postgres://app:s3cret@db/app?sslmode=verify",
        )) {
            Err(Error::InvalidConfig(message)) => {
                assert!(message.contains("`url`"), "{message}");
                assert!(message.contains("unknown sslmode"), "{message}");
                assert!(!message.contains("s3cret"), "{message}");
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn pooled_connections_open_set_up_for_the_stores_statements() {
        let config = PostgresConfig::new(verrou_testkit::postgres_url());
        let (pg_config, mode) = driver_config(&config).expect("a valid url");
        let hosts = Hosts::new(&pg_config, config.connect_timeout, config.command_timeout);
        let tls = Arc::new(crate::tls::make_tls(mode, None).expect("no TLS"));
        let pool = build_pool(&config, pg_config, &hosts, tls).expect("a pool");
        let connection = pool.get().await.expect("a connection");
        for (setting, wanted) in [("enable_seqscan", "off"), ("jit", "off")] {
            let row = connection
                .query_one(&format!("SHOW {setting}"), &[])
                .await
                .expect("the setting");
            assert_eq!(row.get::<_, &str>(0), wanted, "{setting}");
        }
    }
}
