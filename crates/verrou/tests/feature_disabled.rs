//! A configuration naming a driver whose cargo feature is off fails with an error that names
//! the feature. Runs in builds without the `redis` and `postgres` features
//! (`./scripts/test.sh` runs `cargo test -p verrou --no-default-features --features memory`
//! for it); with them on, there is nothing to check here.
#![cfg(not(any(feature = "redis", feature = "postgres")))]

use verrou::{Error, Verrou, VerrouConfig};

#[tokio::test]
async fn drivers_whose_feature_is_off_are_named_in_the_error() {
    for (driver, extra) in [
        ("redis", r#", "url": "redis://127.0.0.1""#),
        ("postgres", ""),
    ] {
        let config = VerrouConfig::from_json(&format!(
            r#"{{"stores": {{"locks": {{"driver": "{driver}"{extra}}}}}}}"#
        ))
        .unwrap();
        match Verrou::from_config(config).await {
            Err(error @ Error::FeatureDisabled { .. }) => {
                let message = error.to_string();
                assert!(
                    message.contains(&format!("feature `{driver}`")),
                    "{message}"
                );
                assert!(message.contains("`locks`"), "{message}");
            }
            other => panic!("expected FeatureDisabled for {driver}, got {other:?}"),
        }
    }
}
