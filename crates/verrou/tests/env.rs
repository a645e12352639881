//! Environment variables over a configuration file (`VERROU_STORES__NAME__FIELD`). A test
//! binary of its own: the variables are the process's.

use verrou::Verrou;

#[tokio::test]
async fn variables_override_and_extend_the_configuration_file() {
    let dir = std::env::temp_dir().join(format!("verrou-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("locks.toml");
    std::fs::write(
        &path,
        r#"
        default = "main"
        retry = { attempts = 1 }
        [stores.main]
        driver = "memory"
        "#,
    )
    .unwrap();
    std::env::set_var("VERROU_STORES__EXTRA__DRIVER", "memory");
    std::env::set_var("VERROU_DEFAULT", "extra");
    std::env::set_var("VERROU_RETRY__ATTEMPTS", "3");
    let verrou = Verrou::from_config_file(&path).await.unwrap();
    assert_eq!(verrou.store_names().collect::<Vec<_>>(), ["extra", "main"]);
    assert_eq!(verrou.default_store_name(), "extra");

    std::env::set_var("VERROU_STORES__MAIN__DRIVER__X", "oops");
    let error = Verrou::from_config_file(&path).await.unwrap_err();
    assert!(
        error.to_string().contains("VERROU_STORES__MAIN__DRIVER__X"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
