//! Which keys a store accepts: no longer than its table's primary-key index can hold, nor
//! than a `varchar(n)` key column allows, and none that starts like the waiting line of a
//! semaphore or read-write lock.

use verrou_core::{Error, Result};

use crate::family::LINE_MARK;
use crate::identifier::TableName;

/// The longest key a [`PostgresStore`](crate::PostgresStore) accepts, in bytes (UTF-8).
///
/// The key is the table's primary key, and an entry of a btree index must fit in a third of
/// a page: on PostgreSQL's default 8 kB pages, 2692 bytes of a key that does not compress
/// (random text, hashes, compressed data); a longer one fails on the server with "index row
/// size exceeds btree version 4 maximum". The limit is a round number below that, the same
/// for every key whatever its content, and checked when a lock is created or restored,
/// before any round trip. A table whose key column is `varchar(n)` (the Node.js library
/// creates `varchar(255)`) also limits keys to `n` characters.
pub const MAX_KEY_LEN: usize = 2048;

/// Checks `key` against [`MAX_KEY_LEN`] and, when the key column of `table` is declared
/// with a length (`varchar(n)`), against that many characters (`max_chars`); refuses keys
/// starting with U+0001, which the lines of semaphores and read-write locks start with.
pub(crate) fn check_key(key: &str, table: &TableName, max_chars: Option<usize>) -> Result<()> {
    if key.starts_with(LINE_MARK) {
        return Err(Error::invalid_key(
            key,
            "a PostgreSQL store reserves keys starting with U+0001 for the waiting lines of \
             semaphores and read-write locks",
        ));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::invalid_key(
            key,
            format!(
                "a PostgreSQL store takes keys of at most {MAX_KEY_LEN} bytes (what its \
                 primary-key index can hold), this one has {}",
                key.len()
            ),
        ));
    }
    if let Some(max_chars) = max_chars {
        let chars = key.chars().count();
        if chars > max_chars {
            return Err(Error::invalid_key(
                key,
                format!(
                    "the key column of table {} holds at most {max_chars} characters, this \
                     key has {chars}",
                    table.plain()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(key: &str, max_chars: Option<usize>) -> Option<String> {
        let table = TableName::parse("app.locks").expect("valid name");
        match check_key(key, &table, max_chars) {
            Ok(()) => None,
            Err(Error::InvalidKey { reason, .. }) => Some(reason),
            Err(other) => panic!("expected InvalidKey, got {other:?}"),
        }
    }

    #[test]
    fn keys_are_limited_in_bytes() {
        assert_eq!(reason(&"k".repeat(MAX_KEY_LEN), None), None);
        let too_long = reason(&"k".repeat(MAX_KEY_LEN + 1), None).expect("refused");
        assert!(too_long.contains("at most 2048 bytes"), "{too_long}");
        assert!(too_long.contains("has 2049"), "{too_long}");
        let multibyte = "é".repeat(MAX_KEY_LEN / 2 + 1);
        assert!(reason(&multibyte, None).is_some());
    }

    #[test]
    fn keys_starting_like_a_share_line_are_reserved() {
        let reserved = reason("\u{1}semaphore:pool", None).expect("refused");
        assert!(
            reserved.contains("reserves keys starting with U+0001"),
            "{reserved}"
        );
        assert_eq!(reason("pool\u{1}", None), None);
    }

    #[test]
    fn a_declared_column_length_limits_characters() {
        assert_eq!(reason(&"é".repeat(255), Some(255)), None);
        let too_long = reason(&"é".repeat(256), Some(255)).expect("refused");
        assert!(
            too_long.contains("table app.locks holds at most 255 characters"),
            "{too_long}"
        );
        assert!(too_long.contains("has 256"), "{too_long}");
        // The byte limit still applies to a wide column.
        assert!(reason(&"k".repeat(MAX_KEY_LEN + 1), Some(10_000)).is_some());
    }
}
