//! The store a command works on, from `--url`, `$VERROU_URL` or `--config`: always one
//! store of a [`VerrouConfig`], built by the library.

use std::collections::BTreeMap;
use std::path::Path;

use verrou::postgres::PostgresConfig;
use verrou::redis::RedisConfig;
use verrou::{LockFactory, RetryConfig, StoreConfig, Verrou, VerrouConfig};

use crate::cli::StoreArgs;
use crate::exit::{Exit, Failure};

/// The environment variable that names the store when `--url` and `--config` are absent.
const URL_VAR: &str = "VERROU_URL";

/// Connects to the store the arguments name.
pub(crate) async fn open(args: &StoreArgs) -> Result<LockFactory, Failure> {
    let (name, mut store, config) = match (&args.url, &args.config) {
        (_, Some(path)) => from_file(path, args.store.as_deref())?,
        (Some(url), None) => from_url(url)?,
        (None, None) => match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => from_url(&url)?,
            _ => {
                return Err(Failure::new(
                    Exit::Usage,
                    format!("no store: give --url URL, --config FILE, or set {URL_VAR}"),
                ))
            }
        },
    };
    if matches!(store, StoreConfig::Memory(_)) {
        return Err(memory_store(&format!("store `{name}`")));
    }
    if let StoreConfig::Redis(redis) = &mut store {
        // A job is promised its grant's fencing token (VERROU_FENCING_TOKEN), which a Redis
        // store issues only when asked; one take per process makes the cost irrelevant.
        redis.fencing_tokens = true;
    }
    let config = VerrouConfig {
        default: None,
        stores: BTreeMap::from([(name, store)]),
        ..config
    };
    let verrou = Verrou::from_config(config).await?;
    Ok(verrou.default_store().clone())
}

/// Why a memory store (`what`) will not do.
fn memory_store(what: &str) -> Failure {
    Failure::new(
        Exit::Config,
        format!(
            "{what} is a memory store: it lives inside one process, and each verrou command is a \
             process of its own, so it would exclude nothing; use Redis or PostgreSQL"
        ),
    )
}

/// The one store a URL names, by its scheme, with the library's defaults; named after its
/// driver (in log messages).
fn from_url(url: &str) -> Result<(String, StoreConfig, VerrouConfig), Failure> {
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase())
        .unwrap_or_default();
    let (name, store) = match scheme.as_str() {
        "postgres" | "postgresql" => ("postgres", StoreConfig::Postgres(PostgresConfig::new(url))),
        // The Redis store checks the rest: TLS, cluster and sentinel variants, Valkey.
        redis if redis.starts_with("redis") || redis.starts_with("valkey") => {
            ("redis", StoreConfig::Redis(RedisConfig::new(url)))
        }
        "memory" => return Err(memory_store("`--url memory:`")),
        _ => {
            // The URL itself is not repeated: it may carry a password.
            let what = if scheme.is_empty() || scheme.contains('/') {
                "the store URL has no scheme".to_owned()
            } else {
                format!("unsupported store URL scheme `{scheme}:`")
            };
            return Err(Failure::new(
                Exit::Config,
                format!(
                    "{what}; expected redis://, rediss://, redis-cluster://, redis-sentinel://, \
                     postgres:// or postgresql://"
                ),
            ));
        }
    };
    let defaults = VerrouConfig {
        default: None,
        stores: BTreeMap::new(),
        retry: RetryConfig::default(),
    };
    Ok((name.to_owned(), store, defaults))
}

/// The store `wanted` (or the default one) of a configuration file, with environment
/// variables over it as the library reads them (`VERROU_STORES__<NAME>__URL`...), and the
/// file's retry options. Only that store is built: the others may be down, or need other
/// features.
fn from_file(
    path: &Path,
    wanted: Option<&str>,
) -> Result<(String, StoreConfig, VerrouConfig), Failure> {
    let mut config = VerrouConfig::from_file_and_env(path)?;
    let known = config.stores.keys().cloned().collect::<Vec<_>>().join(", ");
    let name = match (wanted, &config.default) {
        (Some(name), _) => name.to_owned(),
        (None, Some(default)) => default.clone(),
        (None, None) if config.stores.len() == 1 => known.clone(),
        (None, None) => {
            return Err(Failure::new(
                Exit::Config,
                format!(
                    "{}: no default store among [{known}]; name one with --store",
                    path.display()
                ),
            ))
        }
    };
    let Some(store) = config.stores.remove(&name) else {
        return Err(verrou::Error::UnknownStore { name, known }.into());
    };
    Ok((name, store, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheme_error(url: &str) -> Failure {
        from_url(url).expect_err("refused")
    }

    #[test]
    fn schemes_pick_the_store() {
        for url in [
            "redis://h",
            "rediss://h",
            "redis-cluster://h:1",
            "redis-sentinel://h:1",
        ] {
            assert!(
                matches!(from_url(url), Ok((_, StoreConfig::Redis(_), _))),
                "{url}"
            );
        }
        for url in ["postgres://h/db", "PostgreSQL://h/db"] {
            assert!(
                matches!(from_url(url), Ok((_, StoreConfig::Postgres(_), _))),
                "{url}"
            );
        }
    }

    #[test]
    fn other_urls_are_refused_without_showing_them() {
        let http = scheme_error("http://user:secret@h");
        assert_eq!(http.code(), Exit::Config.code());
        assert!(http.to_string().contains("`http:`"), "{http}");
        assert!(!http.to_string().contains("secret"), "{http}");
        let bare = scheme_error("cache.internal:6379");
        assert!(bare.to_string().contains("unsupported"), "{bare}");
        let none = scheme_error("just-a-host");
        assert!(none.to_string().contains("no scheme"), "{none}");
        let memory = scheme_error("memory:");
        assert!(memory.to_string().contains("exclude nothing"), "{memory}");
    }
}
