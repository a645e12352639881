//! Environment variables over a configuration, in the convention of figment's
//! `Env::prefixed("VERROU_").split("__")`: after the prefix, `__` separates the levels and
//! names are lowercased, so `VERROU_STORES__REDIS__URL` sets `stores.redis.url` and
//! `VERROU_RETRY__TIMEOUT` sets `retry.timeout`.
//!
//! Only variables whose first level is a field of the configuration (`default`, `stores`,
//! `retry`) are read: `VERROU_REDIS_URL`, which the tests use, is not one.

use serde_json::{Map, Value};

use crate::{Error, Result};

/// The prefix of every variable read.
pub(crate) const PREFIX: &str = "VERROU_";

/// The first levels a variable may set.
const FIELDS: [&str; 3] = ["default", "stores", "retry"];

/// Sets in `config` (a JSON object) every value the variables `vars` name. A value reads as
/// `true`/`false`, `null`, an integer, or else a string.
pub(crate) fn apply(
    config: &mut Value,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<()> {
    for (name, text) in vars {
        let Some(path) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let path: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        if !FIELDS.contains(&path[0].as_str()) {
            continue;
        }
        if path.iter().any(String::is_empty) {
            return Err(Error::InvalidConfig(format!(
                "environment variable {name}: empty level in its name"
            )));
        }
        set(config, &path, value_of(&text)).map_err(|reason| {
            Error::InvalidConfig(format!("environment variable {name}: {reason}"))
        })?;
    }
    Ok(())
}

/// Sets `value` at `path` in `config`, making the objects on the way.
fn set(config: &mut Value, path: &[String], value: Value) -> std::result::Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut node = config;
    for (depth, level) in parents.iter().enumerate() {
        let object = as_object(node, &path[..depth])?;
        node = object
            .entry(level.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    as_object(node, parents)?.insert(last.clone(), value);
    Ok(())
}

fn as_object<'v>(
    node: &'v mut Value,
    path: &[String],
) -> std::result::Result<&'v mut Map<String, Value>, String> {
    match node {
        Value::Object(object) => Ok(object),
        _ => Err(format!("`{}` is not a table", path.join("."))),
    }
}

fn value_of(text: &str) -> Value {
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        _ => text
            .parse::<i64>()
            .map_or_else(|_| Value::String(text.to_owned()), Value::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn variables_set_nested_fields_and_others_are_ignored() {
        let mut config = serde_json::json!({
            "stores": {"redis": {"driver": "redis", "url": "redis://file:6379"}}
        });
        apply(
            &mut config,
            vars(&[
                ("VERROU_STORES__REDIS__URL", "redis://env:6379"),
                ("VERROU_STORES__REDIS__POOL_SIZE", "4"),
                ("VERROU_STORES__LOCAL__DRIVER", "memory"),
                ("VERROU_RETRY__TIMEOUT", "5s"),
                ("VERROU_DEFAULT", "redis"),
                ("VERROU_REDIS_URL", "redis://tests:1"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(
            config,
            serde_json::json!({
                "default": "redis",
                "stores": {
                    "redis": {"driver": "redis", "url": "redis://env:6379", "pool_size": 4},
                    "local": {"driver": "memory"}
                },
                "retry": {"timeout": "5s"}
            })
        );
    }

    #[test]
    fn a_variable_through_a_value_that_is_not_a_table_is_a_clear_error() {
        let mut config = serde_json::json!({"default": "redis"});
        let error = apply(&mut config, vars(&[("VERROU_DEFAULT__X", "1")])).unwrap_err();
        assert!(error.to_string().contains("VERROU_DEFAULT__X"), "{error}");
        let error = apply(&mut config, vars(&[("VERROU_STORES____URL", "x")])).unwrap_err();
        assert!(error.to_string().contains("empty level"), "{error}");
    }
}
