//! The portable form of a held lock, byte-compatible with the Node.js library.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, LockKind, Result, Share};

/// A lock as it travels between processes: `{"key","owner","ttl","expirationTime"}`, with the
/// TTL and the expiration time (epoch milliseconds) in milliseconds or `null`. This is the
/// shape `@verrou/core` writes, so a lock can cross between the two libraries both ways.
///
/// Its [`Display`](fmt::Display) is the JSON text and [`FromStr`] reads it back.
///
/// ```
/// use verrou_core::SerializedLock;
///
/// let json = r#"{"key":"invoice:42","owner":"f00d","ttl":30000,"expirationTime":null}"#;
/// let lock: SerializedLock = json.parse()?;
/// assert_eq!(lock.key, "invoice:42");
/// assert_eq!(lock.to_string(), json);
/// # Ok::<(), verrou_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SerializedLock {
    /// The lock's key.
    pub key: String,
    /// The owner token: whoever has it can release the lock. Keep it secret.
    pub owner: String,
    /// The lock's TTL in milliseconds (`None`: never expires). Required when reading: an
    /// explicit `null`, never a missing field.
    #[serde(deserialize_with = "Option::deserialize")]
    pub ttl: Option<u64>,
    /// When the lock expires, in milliseconds since the Unix epoch (`None`: never, or not
    /// acquired). Required when reading: an explicit `null`, never a missing field, so that
    /// an expiry cannot silently disappear.
    #[serde(deserialize_with = "Option::deserialize")]
    pub expiration_time: Option<u64>,
    /// The fencing token of the hold, when the store issues them. Written only when present
    /// (as `fencingToken`), so the JSON stays what `@verrou/core` reads and writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<u64>,
    /// What the lock holds when it is not a plain lock: `permit`, `read` or `write`. Written
    /// only then, so a plain lock's JSON stays the Node.js library's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<SerializedKind>,
    /// A permit's semaphore limit (with `kind` `permit` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// The `kind` of a serialized lock that is not a plain lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerializedKind {
    /// A semaphore permit (the lock also carries its `limit`).
    Permit,
    /// A read-write lock's read side.
    Read,
    /// A read-write lock's write side.
    Write,
}

impl SerializedLock {
    /// The lock kind its `kind` and `limit` describe; an error if they disagree.
    pub(crate) fn lock_kind(&self) -> Result<LockKind> {
        let share = match (self.kind, self.limit) {
            (None, None) => return Ok(LockKind::Exclusive),
            (Some(SerializedKind::Permit), Some(limit)) if limit > 0 => Share::Permit { limit },
            (Some(SerializedKind::Read), None) => Share::Read,
            (Some(SerializedKind::Write), None) => Share::Write,
            _ => return Err(Error::InvalidSerializedLock {
                reason:
                    "its limit must be a positive number with kind `permit`, and absent otherwise"
                        .to_owned(),
            }),
        };
        Ok(LockKind::Shared(share))
    }

    /// The `kind` and `limit` fields that describe `kind`.
    pub(crate) fn kind_fields(kind: LockKind) -> (Option<SerializedKind>, Option<u32>) {
        match kind {
            LockKind::Shared(Share::Permit { limit }) => {
                (Some(SerializedKind::Permit), Some(limit))
            }
            LockKind::Shared(Share::Read) => (Some(SerializedKind::Read), None),
            LockKind::Shared(Share::Write) => (Some(SerializedKind::Write), None),
            LockKind::Exclusive => (None, None),
        }
    }
}

impl fmt::Display for SerializedLock {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        formatter.write_str(&json)
    }
}

impl FromStr for SerializedLock {
    type Err = Error;

    fn from_str(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|error| Error::InvalidSerializedLock {
            reason: error.to_string(),
        })
    }
}

/// Anything [`LockFactory::restore_lock`](crate::LockFactory::restore_lock) accepts: a
/// [`SerializedLock`] or its JSON text.
pub trait IntoSerializedLock {
    /// Reads the value as a serialized lock.
    fn into_serialized_lock(self) -> Result<SerializedLock>;
}

impl IntoSerializedLock for SerializedLock {
    fn into_serialized_lock(self) -> Result<SerializedLock> {
        Ok(self)
    }
}

impl IntoSerializedLock for &SerializedLock {
    fn into_serialized_lock(self) -> Result<SerializedLock> {
        Ok(self.clone())
    }
}

impl IntoSerializedLock for &str {
    fn into_serialized_lock(self) -> Result<SerializedLock> {
        self.parse()
    }
}

impl IntoSerializedLock for String {
    fn into_serialized_lock(self) -> Result<SerializedLock> {
        self.parse()
    }
}

impl IntoSerializedLock for &String {
    fn into_serialized_lock(self) -> Result<SerializedLock> {
        self.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_exactly_what_the_node_library_writes() {
        // JSON.stringify(lock.serialize()) in @verrou/core, key order included.
        let node = r#"{"key":"foo","owner":"tzqyh5p2nb8qfbuwmxbzyxnc","ttl":30000,"expirationTime":1732600000000}"#;
        let lock: SerializedLock = node.parse().unwrap();
        assert_eq!(lock.ttl, Some(30_000));
        assert_eq!(lock.expiration_time, Some(1_732_600_000_000));
        assert_eq!(lock.to_string(), node);
    }

    #[test]
    fn reads_nulls() {
        let lock: SerializedLock = r#"{"key":"k","owner":"o","ttl":null,"expirationTime":null}"#
            .parse()
            .unwrap();
        assert_eq!((lock.ttl, lock.expiration_time), (None, None));
    }

    #[test]
    fn carries_the_fencing_token_only_when_there_is_one() {
        let json = r#"{"key":"k","owner":"o","ttl":1,"expirationTime":null,"fencingToken":7}"#;
        let lock: SerializedLock = json.parse().unwrap();
        assert_eq!(lock.fencing_token, Some(7));
        assert_eq!(lock.to_string(), json);
        let without = SerializedLock {
            fencing_token: None,
            ..lock
        };
        assert!(!without.to_string().contains("fencing"));
    }

    #[test]
    fn ignores_fields_added_by_newer_versions() {
        let lock: SerializedLock =
            r#"{"key":"k","owner":"o","ttl":1,"expirationTime":null,"watchers":[1]}"#
                .parse()
                .unwrap();
        assert_eq!(lock.key, "k");
    }

    #[test]
    fn malformed_input_is_a_clear_error() {
        for bad in [
            "",
            "not json",
            "{}",
            r#"{"key":"k","ttl":1,"expirationTime":null}"#,
            r#"{"key":"k","owner":"o","ttl":"soon","expirationTime":null}"#,
            r#"{"key":"k","owner":"o","ttl":-5,"expirationTime":null}"#,
            r#"{"key":"k","owner":"o","expirationTime":1732600000000}"#,
            r#"{"key":"k","owner":"o","ttl":30000}"#,
            r#"{"key":"k","owner":"o"}"#,
            "[1,2,3]",
        ] {
            match bad.parse::<SerializedLock>() {
                Err(Error::InvalidSerializedLock { reason }) => assert!(!reason.is_empty()),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        let missing_owner = r#"{"key":"k","ttl":1,"expirationTime":null}"#
            .parse::<SerializedLock>()
            .unwrap_err()
            .to_string();
        assert!(missing_owner.contains("owner"), "{missing_owner}");
        let missing_expiry = r#"{"key":"k","owner":"o","ttl":30000}"#
            .parse::<SerializedLock>()
            .unwrap_err()
            .to_string();
        assert!(
            missing_expiry.contains("expirationTime"),
            "{missing_expiry}"
        );
    }
}
