//! How releases are announced: the `NOTIFY` channel of a table, and the number that stands
//! for a key in announcements and in the advisory locks that say someone waits for it.
//!
//! A key travels as a 64-bit hash, never as itself: keys may be longer than `NOTIFY`'s
//! 8000-byte payload limit, and advisory locks take numbers. Every store computes the hash
//! the same way, from the channel name and the key, so waiters and releasers agree; two keys
//! with the same hash only cost a needless wake-up.

use crate::identifier::TableName;

/// PostgreSQL keeps identifiers (channel names among them) to 63 bytes.
const MAX_CHANNEL_BYTES: usize = 63;

/// What every channel name starts with.
const CHANNEL_PREFIX: &str = "verrou:";

/// How many hex digits of the table name's hash end a shortened channel name.
const HASH_DIGITS: usize = 16;

/// The channel a table's releases are announced on, and the key hashes that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Announcements {
    channel: String,
    /// The hash state after the channel name: key hashes start from it.
    seed: u64,
}

impl Announcements {
    /// The announcements of `table`: channel `verrou:<table as configured>`, or, when that is
    /// longer than 63 bytes, `verrou:<start of the table name>#<hash of the whole name>`.
    pub(crate) fn new(table: &TableName) -> Self {
        let name = table.plain();
        let channel = if CHANNEL_PREFIX.len() + name.len() <= MAX_CHANNEL_BYTES {
            format!("{CHANNEL_PREFIX}{name}")
        } else {
            let kept = MAX_CHANNEL_BYTES - CHANNEL_PREFIX.len() - 1 - HASH_DIGITS;
            // Table names are ASCII (validated), so any byte index is a char boundary.
            let start = name.get(..kept).unwrap_or(name);
            format!(
                "{CHANNEL_PREFIX}{start}#{:016x}",
                fnv1a(FNV_OFFSET, name.as_bytes())
            )
        };
        let seed = fnv1a(FNV_OFFSET, channel.as_bytes());
        Self { channel, seed }
    }

    /// The channel name, as `pg_notify` takes it and `LISTEN` takes it (once quoted).
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// The number standing for `key`: the payload of its release announcements and the
    /// advisory lock its waiters hold.
    pub(crate) fn key_id(&self, key: &str) -> i64 {
        // 0xFF never occurs in UTF-8, so it cleanly separates the channel from the key.
        let hash = fnv1a(fnv1a(self.seed, &[0xFF]), key.as_bytes());
        i64::from_ne_bytes(hash.to_ne_bytes())
    }
}

/// The key id an announcement's payload carries, if it is one.
pub(crate) fn parse_payload(payload: &str) -> Option<i64> {
    payload.parse().ok()
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a, 64 bits: stable across platforms and versions, unlike the standard library's
/// hashers, so every process computes the same ids.
fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcements(table: &str) -> Announcements {
        Announcements::new(&TableName::parse(table).expect("a valid table name"))
    }

    #[test]
    fn channels_name_the_table_within_the_identifier_limit() {
        assert_eq!(announcements("verrou").channel(), "verrou:verrou");
        assert_eq!(announcements("app.Locks").channel(), "verrou:app.Locks");
        let longest = format!("{}.{}", "s".repeat(63), "t".repeat(51));
        let channel = announcements(&longest).channel().to_owned();
        assert_eq!(channel.len(), MAX_CHANNEL_BYTES, "{channel}");
        assert!(channel.starts_with("verrou:sss"), "{channel}");
        let other = format!("{}.{}", "s".repeat(63), "u".repeat(51));
        assert_ne!(announcements(&other).channel(), channel);
        let fits = format!("sssss.{}", "a".repeat(50));
        assert_eq!(CHANNEL_PREFIX.len() + fits.len(), MAX_CHANNEL_BYTES);
        assert_eq!(announcements(&fits).channel(), format!("verrou:{fits}"));
    }

    #[test]
    fn key_ids_depend_on_the_key_and_the_table_and_never_change() {
        let verrou = announcements("verrou");
        assert_eq!(verrou.key_id("job"), verrou.key_id("job"));
        assert_ne!(verrou.key_id("job"), verrou.key_id("jobs"));
        assert_ne!(verrou.key_id("job"), announcements("other").key_id("job"));
        // Pinned: processes running different builds must agree.
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        let long_key = "k".repeat(100_000);
        let id = verrou.key_id(&long_key);
        assert_eq!(parse_payload(&id.to_string()), Some(id));
    }

    #[test]
    fn foreign_payloads_are_ignored() {
        assert_eq!(parse_payload(""), None);
        assert_eq!(parse_payload("job"), None);
        assert_eq!(parse_payload("-42"), Some(-42));
    }
}
