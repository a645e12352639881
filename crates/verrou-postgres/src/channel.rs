//! The `NOTIFY` channel on which a table's hand-overs are announced, and what an
//! announcement says: which waiter the key of which lock was handed to.

use crate::identifier::TableName;

/// PostgreSQL keeps identifiers (channel names among them) to 63 bytes.
const MAX_CHANNEL_BYTES: usize = 63;

/// What every channel name starts with.
const CHANNEL_PREFIX: &str = "verrou:";

/// How many hex digits of the table name's hash end a shortened channel name.
const HASH_DIGITS: usize = 16;

/// The channel of `table`: `verrou:<table as configured>`, or, when that is longer than 63
/// bytes, `verrou:<start of the table name>#<hash of the whole name>`. Only letters,
/// digits, `_`, `$`, `.`, `:` and `#`: it goes into SQL as a string literal and, quoted, as
/// an identifier.
pub(crate) fn channel(table: &TableName) -> String {
    let name = table.plain();
    if CHANNEL_PREFIX.len() + name.len() <= MAX_CHANNEL_BYTES {
        return format!("{CHANNEL_PREFIX}{name}");
    }
    let kept = MAX_CHANNEL_BYTES - CHANNEL_PREFIX.len() - 1 - HASH_DIGITS;
    // Table names are ASCII (validated), so any byte index is a char boundary.
    let start = name.get(..kept).unwrap_or(name);
    format!("{CHANNEL_PREFIX}{start}#{:016x}", fnv1a(name.as_bytes()))
}

/// An announcement's payload as SQL, from a row of the line with columns `waiter` and
/// `key`: the waiter, a space, the key (waiter ids have no space; keys may). Keys are at
/// most [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes, well within `NOTIFY`'s 8000.
pub(crate) const PAYLOAD_SQL: &str = "place.\"waiter\" || ' ' || place.\"key\"";

/// The key and the waiter an announcement names, if its payload is one (see
/// [`PAYLOAD_SQL`]).
pub(crate) fn parse_payload(payload: &str) -> Option<(&str, &str)> {
    let (waiter, key) = payload.split_once(' ')?;
    Some((key, waiter))
}

/// FNV-1a, 64 bits: stable across platforms and versions, unlike the standard library's
/// hashers, so every process names the channel alike.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel_of(table: &str) -> String {
        channel(&TableName::parse(table).expect("a valid table name"))
    }

    #[test]
    fn channels_name_the_table_within_the_identifier_limit() {
        assert_eq!(channel_of("verrou"), "verrou:verrou");
        assert_eq!(channel_of("app.Locks"), "verrou:app.Locks");
        let longest = format!("{}.{}", "s".repeat(63), "t".repeat(51));
        let channel = channel_of(&longest);
        assert_eq!(channel.len(), MAX_CHANNEL_BYTES, "{channel}");
        assert!(channel.starts_with("verrou:sss"), "{channel}");
        let other = format!("{}.{}", "s".repeat(63), "u".repeat(51));
        assert_ne!(channel_of(&other), channel);
        let fits = format!("sssss.{}", "a".repeat(50));
        assert_eq!(CHANNEL_PREFIX.len() + fits.len(), MAX_CHANNEL_BYTES);
        assert_eq!(channel_of(&fits), format!("verrou:{fits}"));
        // Pinned: processes running different builds must agree.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn payloads_name_the_waiter_then_the_key_which_may_hold_spaces() {
        assert_eq!(parse_payload("0123abcd job 7"), Some(("job 7", "0123abcd")));
        assert_eq!(parse_payload("w "), Some(("", "w")));
        assert_eq!(parse_payload("-42"), None, "an older version's key id");
        assert_eq!(parse_payload(""), None);
    }
}
