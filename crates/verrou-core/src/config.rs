//! Helpers for store configurations read with serde.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

use crate::duration::{parse_duration, IntoDuration};

/// Reads a duration from a configuration file: a string such as `"250ms"`, `"5s"`, `"1h30m"`,
/// or a number of milliseconds. Use it with `#[serde(deserialize_with = "...")]`.
///
/// ```
/// use std::time::Duration;
///
/// #[derive(serde::Deserialize)]
/// struct Options {
///     #[serde(deserialize_with = "verrou_core::config::duration")]
///     timeout: Duration,
/// }
///
/// let options: Options = serde_json::from_str(r#"{"timeout": "1m30s"}"#).unwrap();
/// assert_eq!(options.timeout, Duration::from_secs(90));
/// let options: Options = serde_json::from_str(r#"{"timeout": 200}"#).unwrap();
/// assert_eq!(options.timeout, Duration::from_millis(200));
/// ```
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// Like [`duration`], for an `Option<Duration>` field (`null` or absent is `None`; pair it
/// with `#[serde(default)]`).
pub fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    deserializer.deserialize_option(OptionalDurationVisitor)
}

struct DurationVisitor;

impl<'de> Visitor<'de> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(
            "a duration such as \"250ms\", \"5s\" or \"1h30m\", or a number of milliseconds",
        )
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Duration, E> {
        parse_duration(value).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Duration, E> {
        value.into_duration().map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Duration, E> {
        value.into_duration().map_err(E::custom)
    }
}

struct OptionalDurationVisitor;

impl<'de> Visitor<'de> for OptionalDurationVisitor {
    type Value = Option<Duration>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        DurationVisitor.expecting(formatter)?;
        formatter.write_str(", or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        duration(deserializer).map(Some)
    }
}
