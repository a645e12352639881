//! Reading `PostgresConfig` from configuration files (feature `serde`).
#![cfg(feature = "serde")]

use std::time::Duration;

use verrou_postgres::PostgresConfig;

fn read(json: &str) -> Result<PostgresConfig, serde_json::Error> {
    serde_json::from_str(json)
}

#[test]
fn every_field_is_read_and_durations_take_both_forms() {
    let config = read(
        r#"{
            "url": "postgres://app@db/app",
            "table": "app.locks",
            "create_table": false,
            "pool_size": 4,
            "connect_timeout": "2s",
            "pool_timeout": 1500,
            "sweep_interval": null,
            "command_timeout": "750ms",
            "listen": false
        }"#,
    )
    .expect("a full configuration");
    assert_eq!(
        config,
        PostgresConfig {
            url: "postgres://app@db/app".into(),
            table: "app.locks".into(),
            create_table: false,
            pool_size: 4,
            connect_timeout: Duration::from_secs(2),
            pool_timeout: Some(Duration::from_millis(1500)),
            sweep_interval: None,
            command_timeout: Duration::from_millis(750),
            listen: false,
        }
    );
}

#[test]
fn missing_fields_take_their_defaults() {
    let config = read(r#"{"url": "postgres://app@db/app"}"#).expect("a minimal configuration");
    assert_eq!(config, PostgresConfig::new("postgres://app@db/app"));
    assert_eq!(
        read("{}").expect("an empty configuration"),
        PostgresConfig::default()
    );
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
    for json in [
        r#"{"connect_timeout": "soon"}"#,
        r#"{"connect_timeout": null}"#,
        r#"{"pool_timeout": "-5s"}"#,
        r#"{"sweep_interval": 0}"#,
        r#"{"command_timeout": null}"#,
        r#"{"command_timeout": 0}"#,
    ] {
        assert!(read(json).is_err(), "{json} should be rejected");
    }
}
