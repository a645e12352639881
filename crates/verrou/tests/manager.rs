//! The Verrou manager built from code and from configuration files.

use support::Unreachable;
use verrou::{Error, MemoryStore, Retry, Verrou, VerrouConfig};

mod support;

fn two_stores() -> Verrou {
    Verrou::builder()
        .store("first", MemoryStore::new())
        .store("second", MemoryStore::new())
        .default_store("first")
        .build()
        .unwrap()
}

#[tokio::test]
async fn create_lock_uses_the_default_store_and_store_picks_another() {
    let verrou = two_stores();
    assert_eq!(verrou.default_store_name(), "first");
    let on_default = verrou.create_lock("k").unwrap();
    assert!(on_default.acquire_immediately().await.unwrap());
    let on_first = verrou.store("first").unwrap().create_lock("k").unwrap();
    assert!(
        !on_first.acquire_immediately().await.unwrap(),
        "same store as the default"
    );
    let on_second = verrou.store("second").unwrap().create_lock("k").unwrap();
    assert!(
        on_second.acquire_immediately().await.unwrap(),
        "a separate store"
    );
    let restored = verrou.restore_lock(on_default.serialize()).unwrap();
    restored.release().await.unwrap();
    assert!(!on_default.is_locked().await.unwrap());
}

#[tokio::test]
async fn semaphores_and_rw_locks_come_from_the_default_store_or_a_named_one() {
    let verrou = two_stores();
    let permit = verrou.create_semaphore("pool", 1).unwrap();
    assert!(permit.acquire_immediately().await.unwrap());
    let same_store = verrou
        .store("first")
        .unwrap()
        .create_semaphore("pool", 1)
        .unwrap();
    assert!(!same_store.acquire_immediately().await.unwrap(), "full");
    let elsewhere = verrou
        .store("second")
        .unwrap()
        .create_semaphore("pool", 1)
        .unwrap();
    assert!(
        elsewhere.acquire_immediately().await.unwrap(),
        "a separate store"
    );
    let writer = verrou
        .create_rw_lock_with_ttl("cache", "5s")
        .unwrap()
        .write()
        .unwrap();
    assert!(writer.acquire_immediately().await.unwrap());
    let reader = verrou.create_rw_lock("cache").unwrap().read().unwrap();
    assert!(
        !reader.acquire_immediately().await.unwrap(),
        "the writer holds it"
    );
    let restored = verrou.restore_lock(permit.serialize()).unwrap();
    restored.release().await.unwrap();
    assert_eq!(same_store.holders().await.unwrap(), 0);
}

#[test]
fn unknown_store_names_the_store_and_the_known_ones() {
    let verrou = two_stores();
    match verrou.store("thrid") {
        Err(error @ Error::UnknownStore { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("thrid") && message.contains("first, second"),
                "{message}"
            );
        }
        other => panic!("expected UnknownStore, got {other:?}"),
    }
}

#[test]
fn builder_rejects_inconsistent_setups() {
    assert!(matches!(
        Verrou::builder().build(),
        Err(Error::InvalidConfig(_))
    ));
    let duplicate = Verrou::builder()
        .store("a", MemoryStore::new())
        .store("a", MemoryStore::new())
        .build();
    assert!(matches!(duplicate, Err(Error::InvalidConfig(message)) if message.contains("`a`")));
    let no_default = Verrou::builder()
        .store("a", MemoryStore::new())
        .store("b", MemoryStore::new())
        .build();
    assert!(matches!(no_default, Err(Error::InvalidConfig(_))));
    let unknown_default = Verrou::builder()
        .store("a", MemoryStore::new())
        .default_store("b")
        .build();
    assert!(matches!(unknown_default, Err(Error::UnknownStore { name, .. }) if name == "b"));
    let bad_retry = Verrou::builder()
        .store("a", MemoryStore::new())
        .retry(Retry::new().timeout("10 parsecs"))
        .build();
    assert!(matches!(bad_retry, Err(Error::InvalidDuration { .. })));
    let single = Verrou::builder()
        .store("only", MemoryStore::new())
        .build()
        .unwrap();
    assert_eq!(single.default_store_name(), "only");
}

#[tokio::test]
async fn config_from_json_and_toml_builds_the_same_manager() {
    let json = VerrouConfig::from_json(
        r#"{"default": "b", "stores": {"a": {"driver": "memory"}, "b": {"driver": "memory"}},
            "retry": {"attempts": 2, "delay": 10, "timeout": "30s"}}"#,
    )
    .unwrap();
    let toml = VerrouConfig::from_toml(
        r#"
        default = "b"
        retry = { attempts = 2, delay = 10, timeout = "30s" }
        [stores.a]
        driver = "memory"
        [stores.b]
        driver = "memory"
        "#,
    )
    .unwrap();
    for config in [json, toml] {
        let verrou = Verrou::from_config(config).await.unwrap();
        assert_eq!(verrou.store_names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(verrou.default_store_name(), "b");
        let holder = verrou.create_lock("k").unwrap();
        assert!(holder.acquire().await.unwrap());
        // The configured retry (2 attempts 10 ms apart) applies: a second acquire gives up
        // long before the 30 s timeout.
        let started = std::time::Instant::now();
        assert!(!verrou.create_lock("k").unwrap().acquire().await.unwrap());
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}

#[tokio::test]
async fn config_files_are_read_by_extension() {
    let dir = std::env::temp_dir().join(format!("verrou-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml_path = dir.join("locks.toml");
    std::fs::write(&toml_path, "[stores.main]\ndriver = \"memory\"\n").unwrap();
    let verrou = Verrou::from_config_file(&toml_path).await.unwrap();
    assert_eq!(verrou.default_store_name(), "main");
    let yaml_path = dir.join("locks.yaml");
    std::fs::write(&yaml_path, "stores: {}").unwrap();
    assert!(matches!(
        VerrouConfig::from_file(&yaml_path),
        Err(Error::InvalidConfig(_))
    ));
    let missing = VerrouConfig::from_file(dir.join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("missing.json"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bad_configurations_are_clear_errors() {
    let cases = [
        (r#"{"stores": {"a": {"driver": "mongodb"}}}"#, "mongodb"),
        (r#"{"stores": {"a": {}}}"#, "driver"),
        (
            r#"{"stores": {"a": {"driver": "memory", "size": 3}}}"#,
            "size",
        ),
        (r#"{"stores": {}, "colour": "blue"}"#, "colour"),
        (
            r#"{"stores": {"a": {"driver": "memory"}}, "retry": {"delay": "10 parsecs"}}"#,
            "10 parsecs",
        ),
        (
            r#"{"stores": {"a": {"driver": "memory"}}, "retry": {"timeout": 0}}"#,
            "0",
        ),
        ("not json", "expected"),
    ];
    for (text, expected) in cases {
        match VerrouConfig::from_json(text) {
            Err(Error::InvalidConfig(message)) => {
                assert!(message.contains(expected), "{text}: {message}");
            }
            other => panic!("{text}: expected InvalidConfig, got {other:?}"),
        }
    }
    let empty = VerrouConfig::from_json(r#"{"stores": {}}"#).unwrap();
    assert!(matches!(
        Verrou::from_config(empty).await,
        Err(Error::InvalidConfig(_))
    ));
    let unknown_default =
        VerrouConfig::from_json(r#"{"default": "x", "stores": {"a": {"driver": "memory"}}}"#)
            .unwrap();
    assert!(matches!(
        Verrou::from_config(unknown_default).await,
        Err(Error::UnknownStore { name, .. }) if name == "x"
    ));
}

#[tokio::test]
async fn store_errors_name_the_store_the_operation_and_the_key() {
    let verrou = Verrou::builder()
        .store("payments", Unreachable)
        .build()
        .unwrap();
    let lock = verrou.create_lock("card:42").unwrap();
    let cases = [
        (lock.acquire_immediately().await.map(|_| ()), "take"),
        (lock.release().await, "release"),
        (lock.force_release().await, "force release"),
        (lock.is_locked().await.map(|_| ()), "check"),
        (lock.extend().await, "extend"),
    ];
    for (result, operation) in cases {
        let error = result.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("lock store `payments` failed to {operation} lock `card:42`")
        );
        let source = std::error::Error::source(&error)
            .expect("the driver's error")
            .to_string();
        assert_eq!(source, "connection refused");
    }
}
