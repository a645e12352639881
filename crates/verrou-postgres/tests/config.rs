//! The configuration's rules: defaults, what `validate` refuses (and that `connect` and
//! `from_pool` refuse it before connecting), and reading `PostgresConfig` from
//! configuration files (feature `serde`).

mod common;

use std::time::Duration;

use common::invalid_config;
use verrou_postgres::deadpool_postgres::{Config as PoolConfig, Runtime};
use verrou_postgres::tokio_postgres::NoTls;
use verrou_postgres::{
    PostgresConfig, PostgresOptions, PostgresStore, DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_CREATE_TABLE, DEFAULT_LISTEN, DEFAULT_POOL_SIZE,
    DEFAULT_POOL_TIMEOUT, DEFAULT_SWEEP_INTERVAL, DEFAULT_TABLE, DEFAULT_URL,
};

/// Nothing listens there: a store that tried to connect would fail with `Error::Storage`.
const NOWHERE: &str = "postgres://app:s3cret@127.0.0.1:1/app";

#[test]
fn the_defaults_are_the_published_constants() {
    let config = PostgresConfig::default();
    assert_eq!(config.url, DEFAULT_URL);
    assert_eq!(config.table, DEFAULT_TABLE);
    assert_eq!(config.create_table, DEFAULT_CREATE_TABLE);
    assert_eq!(config.pool_size, DEFAULT_POOL_SIZE);
    assert_eq!(config.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(config.pool_timeout, Some(DEFAULT_POOL_TIMEOUT));
    assert_eq!(config.sweep_interval, Some(DEFAULT_SWEEP_INTERVAL));
    assert_eq!(config.command_timeout, DEFAULT_COMMAND_TIMEOUT);
    assert_eq!(config.listen, DEFAULT_LISTEN);
    assert_eq!(config.ssl_root_cert, None);
    assert_eq!(PostgresConfig::new(DEFAULT_URL), config);
    assert_eq!(config.options(), PostgresOptions::default());
    assert!(config.validate().is_ok());
}

/// Each way of breaking a configuration, and the field its message must name.
fn broken_configs() -> Vec<(&'static str, PostgresConfig)> {
    let broken = |field, change: fn(&mut PostgresConfig)| {
        let mut config = PostgresConfig::new(NOWHERE);
        change(&mut config);
        (field, config)
    };
    vec![
        broken("`connect_timeout`", |c| c.connect_timeout = Duration::ZERO),
        broken("`command_timeout`", |c| c.command_timeout = Duration::ZERO),
        broken("`pool_timeout`", |c| c.pool_timeout = Some(Duration::ZERO)),
        broken("`sweep_interval`", |c| {
            c.sweep_interval = Some(Duration::ZERO)
        }),
        broken("`pool_size`", |c| c.pool_size = 0),
        broken("table name", |c| c.table = "no spaces".into()),
        broken("`url`", |c| c.url = "postgres://h:notaport/db".into()),
        broken("`url`", |c| {
            c.url = format!("{NOWHERE}?sslmode=verify");
        }),
        broken("`url`", |c| {
            c.url = format!("{NOWHERE}?sslmode=verify-full&sslrootcert=/ca.pem");
        }),
        broken("`url`", |c| {
            c.url = "postgres://app:s3cret@db1,db2/app".into();
        }),
    ]
}

#[test]
fn validate_refuses_each_broken_field_by_name() {
    for (field, config) in broken_configs() {
        let message = invalid_config(config.validate());
        assert!(message.contains(field), "{field}: {message}");
        assert!(!message.contains("s3cret"), "{message}");
    }
    let mut unbounded = PostgresConfig::new(NOWHERE);
    unbounded.pool_timeout = None;
    unbounded.sweep_interval = None;
    assert!(unbounded.validate().is_ok(), "None is no timeout, not zero");
}

#[tokio::test]
async fn connect_refuses_a_broken_configuration_before_connecting() {
    for (field, config) in broken_configs() {
        let message = invalid_config(PostgresStore::connect(config).await);
        assert!(message.contains(field), "{field}: {message}");
    }
}

#[tokio::test]
async fn from_pool_refuses_broken_options_before_connecting() {
    let pool = PoolConfig {
        url: Some(NOWHERE.into()),
        ..PoolConfig::default()
    }
    .create_pool(Some(Runtime::Tokio1), NoTls)
    .expect("a pool (it connects on first use)");
    let broken = |field, change: fn(&mut PostgresOptions)| {
        let mut options = PostgresOptions::default();
        change(&mut options);
        (field, options)
    };
    for (field, options) in [
        broken("`command_timeout`", |o| o.command_timeout = Duration::ZERO),
        broken("`sweep_interval`", |o| {
            o.sweep_interval = Some(Duration::ZERO)
        }),
        broken("table name", |o| o.table = String::new()),
    ] {
        let message = invalid_config(options.validate());
        assert!(message.contains(field), "{field}: {message}");
        let message = invalid_config(PostgresStore::from_pool(pool.clone(), options).await);
        assert!(message.contains(field), "{field}: {message}");
    }
}

/// Reading configuration files.
#[cfg(feature = "serde")]
mod files {
    use super::*;

    fn read(json: &str) -> Result<PostgresConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn every_field_is_read_and_durations_take_both_forms() {
        let config = read(
            r#"{
                "url": "postgres://app@db/app?sslmode=verify-full",
                "table": "app.locks",
                "create_table": false,
                "pool_size": 4,
                "connect_timeout": "2s",
                "pool_timeout": 1500,
                "sweep_interval": null,
                "command_timeout": "750ms",
                "listen": false,
                "ssl_root_cert": "/etc/ssl/db-ca.pem"
            }"#,
        )
        .expect("a full configuration");
        let mut expected = PostgresConfig::new("postgres://app@db/app?sslmode=verify-full");
        expected.table = "app.locks".into();
        expected.create_table = false;
        expected.pool_size = 4;
        expected.connect_timeout = Duration::from_secs(2);
        expected.pool_timeout = Some(Duration::from_millis(1500));
        expected.sweep_interval = None;
        expected.command_timeout = Duration::from_millis(750);
        expected.listen = false;
        expected.ssl_root_cert = Some("/etc/ssl/db-ca.pem".into());
        assert_eq!(config, expected);
    }

    #[test]
    fn missing_fields_take_their_defaults_but_the_url() {
        let config = read(r#"{"url": "postgres://app@db/app"}"#).expect("a minimal configuration");
        assert_eq!(config, PostgresConfig::new("postgres://app@db/app"));
        for json in ["{}", r#"{"table": "locks"}"#] {
            let error = read(json).expect_err("a configuration without a url");
            assert!(
                error.to_string().contains("missing field `url`"),
                "{json}: {error}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let error = read(r#"{"url": "postgres://app@db/app", "tabel": "locks"}"#)
            .expect_err("a misspelt field");
        assert!(
            error.to_string().contains("unknown field `tabel`"),
            "{error}"
        );
    }

    #[test]
    fn bad_durations_are_rejected() {
        for field in [
            r#""connect_timeout": "soon""#,
            r#""connect_timeout": null"#,
            r#""pool_timeout": "-5s""#,
            r#""sweep_interval": 0"#,
            r#""pool_timeout": "0s""#,
            r#""command_timeout": null"#,
            r#""command_timeout": 0"#,
        ] {
            let json = format!(r#"{{"url": "postgres://app@db/app", {field}}}"#);
            assert!(read(&json).is_err(), "{json} should be rejected");
        }
    }
}
