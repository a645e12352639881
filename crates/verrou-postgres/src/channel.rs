//! Where a hand-over is announced: on the `NOTIFY` channel of the store whose waiter it
//! names, so that only that store's listener hears it, however many stores (processes)
//! share the table. A store names each of its waiters in a line (the `waiter` column) by its
//! own id, a dot, then the waiter's id; a hand-over computes the channel from that name.

use std::fmt;

/// What every channel name starts with.
const CHANNEL_PREFIX: &str = "verrou:";

/// SQL: the channel of the store whose waiter the row `place` of a line names (see
/// [`StoreId::in_line`]).
pub(crate) const CHANNEL_SQL: &str = "'verrou:' || split_part(place.\"waiter\", '.', 1)";

/// An announcement's payload as SQL, from a row of the line with columns `waiter` and
/// `key`: the waiter's name in the line, a space, the key (names have no space; keys may).
/// Keys are at most [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes, well within `NOTIFY`'s 8000.
pub(crate) const PAYLOAD_SQL: &str = "place.\"waiter\" || ' ' || place.\"key\"";

/// A store's name among the stores of one database: 64 random bits in hex, fixed when the
/// store is built. Its listener `LISTEN`s on [`channel`](Self::channel).
#[derive(Clone)]
pub(crate) struct StoreId(String);

impl StoreId {
    /// A fresh id.
    pub(crate) fn new() -> Self {
        Self(format!("{:016x}", rand::random::<u64>()))
    }

    /// The channel on which hand-overs to this store's waiters are announced:
    /// `verrou:<id>` (23 bytes: well within PostgreSQL's 63).
    pub(crate) fn channel(&self) -> String {
        format!("{CHANNEL_PREFIX}{}", self.0)
    }

    /// How this store's `waiter` is named in a line: `<store id>.<waiter id>`.
    pub(crate) fn in_line(&self, waiter: &str) -> String {
        format!("{}.{waiter}", self.0)
    }

    /// The waiter a line names, if it is one of this store's (see [`in_line`](Self::in_line)).
    pub(crate) fn own<'name>(&self, in_line: &'name str) -> Option<&'name str> {
        in_line.strip_prefix(self.0.as_str())?.strip_prefix('.')
    }
}

impl fmt::Debug for StoreId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The key and the waiter's name in the line that an announcement names, if its payload is
/// one (see [`PAYLOAD_SQL`]).
pub(crate) fn parse_payload(payload: &str) -> Option<(&str, &str)> {
    let (waiter, key) = payload.split_once(' ')?;
    Some((key, waiter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_knows_its_waiters_by_their_names_in_line() {
        let (store, other) = (StoreId::new(), StoreId::new());
        let name = store.in_line("00ff");
        assert_eq!(store.own(&name), Some("00ff"));
        assert_eq!(other.own(&name), None, "another store's waiter");
        assert_eq!(store.own("00ff"), None, "a name without a store");
        let channel = store.channel();
        assert!(channel.len() <= 63, "{channel}");
        assert_eq!(
            channel,
            format!("verrou:{}", name.split_once('.').expect("a dot").0),
            "the channel CHANNEL_SQL computes from the name"
        );
        assert_ne!(channel, other.channel());
    }

    #[test]
    fn payloads_name_the_waiter_then_the_key_which_may_hold_spaces() {
        assert_eq!(parse_payload("0123abcd job 7"), Some(("job 7", "0123abcd")));
        assert_eq!(parse_payload("w "), Some(("", "w")));
        assert_eq!(parse_payload("-42"), None, "an older version's key id");
        assert_eq!(parse_payload(""), None);
    }
}
