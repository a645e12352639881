//! Reading `RedisConfig` from JSON (feature `serde`), as the facade's config-driven manager
//! does.

use std::time::Duration;

use verrou_redis::{RedisConfig, RedisOptions, DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT};

fn parse(json: &str) -> Result<RedisConfig, serde_json::Error> {
    serde_json::from_str(json)
}

#[test]
fn only_the_url_is_required() {
    let config = parse(r#"{"url": "redis://cache:6379/2"}"#).unwrap();
    assert_eq!(config, RedisConfig::new("redis://cache:6379/2"));
    assert_eq!(config.key_prefix, "");
    assert_eq!(config.pool_size, 1);
    assert_eq!(config.command_timeout, DEFAULT_COMMAND_TIMEOUT);
    assert_eq!(config.connect_timeout, DEFAULT_CONNECT_TIMEOUT);

    let error = parse(r#"{"key_prefix": "locks:"}"#).unwrap_err();
    assert!(error.to_string().contains("missing field `url`"), "{error}");
}

#[test]
fn every_field_can_be_set_and_durations_take_text_or_milliseconds() {
    let config = parse(
        r#"{
            "url": "redis://:pw@cache:6379",
            "key_prefix": "locks:",
            "pool_size": 8,
            "command_timeout": "1500ms",
            "connect_timeout": 750
        }"#,
    )
    .unwrap();
    assert_eq!(config.key_prefix, "locks:");
    assert_eq!(config.pool_size, 8);
    assert_eq!(config.command_timeout, Duration::from_millis(1500));
    assert_eq!(config.connect_timeout, Duration::from_millis(750));
}

#[test]
fn unknown_fields_and_bad_values_are_rejected() {
    let error = parse(r#"{"url": "redis://cache", "comand_timeout": "1s"}"#).unwrap_err();
    assert!(
        error.to_string().contains("unknown field `comand_timeout`"),
        "{error}"
    );
    let error = parse(r#"{"url": "redis://cache", "command_timeout": "soon"}"#).unwrap_err();
    assert!(error.to_string().contains("soon"), "{error}");
    assert!(parse(r#"{"url": "redis://cache", "pool_size": -1}"#).is_err());
}

#[test]
fn debug_output_hides_the_password() {
    let config = parse(r#"{"url": "redis://user:s3cret@cache:6379"}"#).unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("redis://***@cache:6379"), "{shown}");
}

#[test]
fn replica_acknowledgement_is_off_by_default_and_reads_like_the_other_durations() {
    let config = parse(r#"{"url": "redis://cache"}"#).unwrap();
    assert_eq!(config.min_replicas, 0);
    assert_eq!(
        config.replica_timeout,
        verrou_redis::DEFAULT_REPLICA_TIMEOUT
    );
    let config =
        parse(r#"{"url": "redis://cache", "min_replicas": 2, "replica_timeout": "250ms"}"#)
            .unwrap();
    assert_eq!(config.min_replicas, 2);
    assert_eq!(config.replica_timeout, Duration::from_millis(250));
    assert_eq!(config.options().min_replicas, 2);
    assert_eq!(config.options().replica_timeout, Duration::from_millis(250));
    assert!(parse(r#"{"url": "redis://cache", "min_replicas": -1}"#).is_err());
    // `WAIT` with 0 would wait forever: refused as it is read.
    let error =
        parse(r#"{"url": "redis://cache", "min_replicas": 1, "replica_timeout": 0}"#).unwrap_err();
    assert!(error.to_string().contains("greater than zero"), "{error}");
}

#[test]
fn zero_timeouts_are_invalid_config_on_every_path() {
    let mut zero = RedisOptions::default();
    zero.command_timeout = Duration::ZERO;
    for result in [zero.validate(), {
        let mut config = verrou_redis::RedisConfig::new("redis://127.0.0.1:6379");
        config.command_timeout = std::time::Duration::ZERO;
        config.validate()
    }] {
        match result {
            Err(verrou_core::Error::InvalidConfig(reason)) => {
                assert!(reason.contains("command_timeout"), "{reason}");
            }
            other => panic!("expected InvalidConfig naming command_timeout, got {other:?}"),
        }
    }
    let client = verrou_redis::fred::prelude::Builder::default_centralized()
        .build()
        .unwrap();
    assert!(matches!(
        verrou_redis::RedisStore::from_client(client, zero),
        Err(verrou_core::Error::InvalidConfig(_))
    ));
}
