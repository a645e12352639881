//! Names that live in a lock key's Redis Cluster hash slot: the fencing counter, the waiting
//! line and the release channel.
//!
//! A script may only touch keys (and sharded channels) of one hash slot on Redis Cluster,
//! so everything the take and release scripts use besides the lock key must share its slot,
//! whatever braces the key contains. Such a name starts with `verrou:NAMESPACE:{N}`, where
//! `N` is the smallest number whose decimal text hashes to the key's slot: being the first
//! `{...}` of the name, it decides the name's slot.
//!
//! Fencing tokens come from one counter per slot, `verrou:fence:{N}`. A token must grow
//! with every grant of a key, so its counter can never expire; a counter per lock key would
//! leave one Redis key behind, forever, for every lock name ever used, while a counter per
//! slot gives every key of the slot strictly growing tokens with at most 16,384 counters.
//!
//! Each lock key `KEY` (the full Redis key, prefix included) with waiters has a waiting line
//! of two sorted sets, whose members are the waiters' ids (see [`crate::scripts`]):
//!
//! - `verrou:line:{N}:KEY`, scored by arrival: the server's time (`TIME`) in microseconds when
//!   the place was made, raised above the last arrival if the clock went back, so the front
//!   is the member of lowest score;
//! - `verrou:deadline:{N}:KEY`, scored by deadline: the server's time in milliseconds after
//!   which the place has lapsed (its waiter did not ask again).
//!
//! Both expire (`PEXPIRE`) when their last place lapses, so a line left behind goes away.
//!
//! Releases are published on `verrou:released:{N}:KEY`: one sharded channel per lock key, in
//! its slot.
//!
//! Semaphores and read-write locks (see [`crate::share_scripts`]) keep their holders in
//! sorted sets of the key's slot, apart from the lock key itself, so that a lock, a
//! semaphore and a read-write lock of one name never touch each other:
//! `verrou:permits:{N}:KEY` (a semaphore's permits), `verrou:readers:{N}:KEY` and
//! `verrou:writer:{N}:KEY` (a read-write lock's readers and writer). Each family has its own
//! lines and channels, the lock's names with the family after their first word:
//! `verrou:line:semaphore:{N}:KEY`, `verrou:deadline:rwlock:{N}:KEY`,
//! `verrou:released:semaphore:{N}:KEY`, and so on.

use std::sync::LazyLock;

use fred::types::ClusterHash;
use fred::util::redis_keyslot;
use verrou_core::{Family, Share};

/// Hash slots in Redis Cluster (and in the key hashing of a single server, unused there).
const SLOTS: usize = 16_384;

/// What every name of the store's own starts with, counters, lines and channels alike: no
/// lock key may (see [`RedisStore`](crate::RedisStore)'s `validate_key`).
pub(crate) const NAMESPACE: &str = "verrou:";

/// What the fencing counters' names start with, up to the slot's number.
const COUNTER_START: &str = "verrou:fence:{";

/// What every release channel starts with, up to the slot's number.
const CHANNEL_START: &str = "verrou:released:{";

/// What the waiting lines' arrival sets start with, up to the slot's number.
const LINE_START: &str = "verrou:line:{";

/// What the waiting lines' deadline sets start with, up to the slot's number.
const DEADLINE_START: &str = "verrou:deadline:{";

/// What the sets of a semaphore's permits start with, up to the slot's number.
const PERMITS_START: &str = "verrou:permits:{";

/// What the sets of a read-write lock's readers start with, up to the slot's number.
const READERS_START: &str = "verrou:readers:{";

/// What the sets of a read-write lock's writer start with, up to the slot's number.
const WRITER_START: &str = "verrou:writer:{";

/// The starts of the names of one family's lines and release channels.
struct LineNames {
    line: &'static str,
    deadline: &'static str,
    channel: &'static str,
}

/// The names of the plain locks' lines and channels.
const LOCK_NAMES: LineNames = LineNames {
    line: LINE_START,
    deadline: DEADLINE_START,
    channel: CHANNEL_START,
};

/// The names of the semaphores' lines and channels.
const SEMAPHORE_NAMES: LineNames = LineNames {
    line: "verrou:line:semaphore:{",
    deadline: "verrou:deadline:semaphore:{",
    channel: "verrou:released:semaphore:{",
};

/// The names of the read-write locks' lines and channels.
const RW_LOCK_NAMES: LineNames = LineNames {
    line: "verrou:line:rwlock:{",
    deadline: "verrou:deadline:rwlock:{",
    channel: "verrou:released:rwlock:{",
};

/// The names of the lines and channels of `family` (`None`: plain locks).
fn line_names(family: Option<Family>) -> &'static LineNames {
    match family {
        None => &LOCK_NAMES,
        Some(Family::RwLock) => &RW_LOCK_NAMES,
        Some(Family::Semaphore | _) => &SEMAPHORE_NAMES,
    }
}

/// For each hash slot, the smallest number whose decimal text hashes to it.
static SLOT_TAGS: LazyLock<Vec<u32>> = LazyLock::new(|| {
    let mut tags = vec![None; SLOTS];
    let mut missing = SLOTS;
    let mut digits = Digits::default();
    // Every slot is reached well before 2^20 numbers (a test checks it).
    for number in 0..u32::MAX {
        let slot = &mut tags[usize::from(redis_keyslot(digits.of(number))) % SLOTS];
        if slot.is_none() {
            *slot = Some(number);
            missing -= 1;
            if missing == 0 {
                break;
            }
        }
    }
    tags.into_iter().map(Option::unwrap_or_default).collect()
});

/// Builds the slot table now rather than on the first lock taken (a few milliseconds).
pub(crate) fn prepare() {
    LazyLock::force(&SLOT_TAGS);
}

/// The hash slot of a lock key, and the names that share it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot(u16);

impl Slot {
    /// The slot of `key`.
    pub(crate) fn of(key: &str) -> Self {
        Self(redis_keyslot(key.as_bytes()))
    }

    /// Where a command on keys of this slot goes on Redis Cluster.
    pub(crate) fn hash(self) -> ClusterHash {
        ClusterHash::Custom(self.0)
    }

    /// The fencing counter of this slot.
    pub(crate) fn counter_key(self) -> String {
        self.name(COUNTER_START, "")
    }

    /// The migration guard of this slot: a key nothing ever writes, declared by the scripts
    /// that change a waiting line or a holder set (see [`crate::scripts`]). Named beside the
    /// counter, so that the key pattern restricted users have for it covers the guard too.
    pub(crate) fn guard_key(self) -> String {
        self.name(COUNTER_START, "guard")
    }

    /// The waiting line of `lock_key`, a key of this slot: its arrival set and its deadline
    /// set.
    pub(crate) fn line_keys(self, lock_key: &str) -> [String; 2] {
        self.family_line_keys(None, lock_key)
    }

    /// The sharded channel on which releases of `key`, a key of this slot, in `family`
    /// (`None`: plain locks) are published.
    pub(crate) fn family_release_channel(self, family: Option<Family>, key: &str) -> String {
        self.name(line_names(family).channel, key)
    }

    /// The waiting line of `key`, a key of this slot, in `family` (`None`: plain locks).
    pub(crate) fn family_line_keys(self, family: Option<Family>, key: &str) -> [String; 2] {
        let names = line_names(family);
        [self.name(names.line, key), self.name(names.deadline, key)]
    }

    /// The sorted set of the holders of `share` of `key`, a key of this slot: the permits,
    /// the readers or the writer.
    pub(crate) fn holders_key(self, share: Share, key: &str) -> String {
        let start = match share {
            Share::Permit { .. } => PERMITS_START,
            Share::Read => READERS_START,
            Share::Write | _ => WRITER_START,
        };
        self.name(start, key)
    }

    /// `start`, the slot's number, `}`, then `:` and `end` unless `end` is empty. Built by
    /// hand: it runs several times per lock taken and released, and `format!` costs more than the
    /// rest of the work.
    fn name(self, start: &str, end: &str) -> String {
        let mut digits = Digits::default();
        let number = digits.of(SLOT_TAGS[usize::from(self.0) % SLOTS]);
        let mut name = String::with_capacity(start.len() + number.len() + 2 + end.len());
        name.push_str(start);
        name.extend(number.iter().copied().map(char::from));
        name.push('}');
        if !end.is_empty() {
            name.push(':');
            name.push_str(end);
        }
        name
    }
}

/// A buffer for the decimal digits of a `u32`.
#[derive(Default)]
struct Digits([u8; 10]);

impl Digits {
    /// The decimal digits of `number`.
    fn of(&mut self, mut number: u32) -> &[u8] {
        let mut start = self.0.len();
        loop {
            start -= 1;
            // A remainder by 10 always fits in a byte.
            self.0[start] = b'0' + (number % 10) as u8;
            number /= 10;
            if number == 0 {
                return &self.0[start..];
            }
        }
    }
}

/// The key whose releases `channel` carries, with its family (`None`: a plain lock), if it
/// is a release channel.
pub(crate) fn released_key(channel: &str) -> Option<(Option<Family>, &str)> {
    [None, Some(Family::Semaphore), Some(Family::RwLock)]
        .into_iter()
        .find_map(|family| {
            let rest = channel.strip_prefix(line_names(family).channel)?;
            let (number, key) = rest.split_once("}:")?;
            number
                .bytes()
                .all(|byte| byte.is_ascii_digit())
                .then_some((family, key))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWKWARD_KEYS: [&str; 9] = [
        "job:7",
        "{user:42}:profile",
        "prefix:{tag}name",
        "a}b",
        "a{b",
        "{}x",
        "x{}y{z}",
        "ключ-🔒",
        "verrou:fence:{12}",
    ];

    #[test]
    fn the_stores_names_are_in_its_namespace() {
        let families = [LOCK_NAMES, SEMAPHORE_NAMES, RW_LOCK_NAMES];
        let lines = families
            .iter()
            .flat_map(|names| [names.line, names.deadline, names.channel]);
        for start in [COUNTER_START, PERMITS_START, READERS_START, WRITER_START]
            .into_iter()
            .chain(lines)
        {
            assert!(start.starts_with(NAMESPACE), "{start}");
        }
    }

    #[test]
    fn digits_are_decimal() {
        let mut digits = Digits::default();
        for number in [0, 7, 10, 16_383, 1_048_575, u32::MAX] {
            assert_eq!(digits.of(number), number.to_string().as_bytes());
        }
    }

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        for (slot, tag) in SLOT_TAGS.iter().enumerate() {
            assert_eq!(usize::from(redis_keyslot(tag.to_string().as_bytes())), slot);
            assert!(*tag < 1 << 20, "slot {slot}: tag {tag}");
        }
    }

    #[test]
    fn the_counter_and_the_guard_are_in_the_lock_keys_slot_whatever_its_braces() {
        for key in AWKWARD_KEYS {
            let slot = Slot::of(key);
            assert_eq!(slot.guard_key(), format!("{}:guard", slot.counter_key()));
            for (name, start) in [
                (slot.counter_key(), "verrou:fence:{"),
                (slot.guard_key(), "verrou:fence:{"),
            ] {
                assert!(name.starts_with(start), "{name}");
                assert_eq!(
                    redis_keyslot(name.as_bytes()),
                    redis_keyslot(key.as_bytes()),
                    "{key:?} -> {name:?}"
                );
            }
        }
    }

    #[test]
    fn the_release_channel_is_in_the_lock_keys_slot_and_names_the_key() {
        for key in AWKWARD_KEYS
            .into_iter()
            .chain(["}:", "verrou:released:{1}:x"])
        {
            let channel = Slot::of(key).family_release_channel(None, key);
            assert_eq!(
                redis_keyslot(channel.as_bytes()),
                redis_keyslot(key.as_bytes()),
                "{key:?} -> {channel:?}"
            );
            assert_eq!(released_key(&channel), Some((None, key)), "{channel:?}");
        }
    }

    /// The scripts name a line's release channel after the line (`L.channel()`).
    #[test]
    fn a_release_channel_is_its_lines_name_with_released_for_line() {
        for key in AWKWARD_KEYS {
            let slot = Slot::of(key);
            for family in [None, Some(Family::Semaphore), Some(Family::RwLock)] {
                let [line, _] = slot.family_line_keys(family, key);
                let rest = line.strip_prefix("verrou:line:").expect("a line key");
                assert_eq!(
                    slot.family_release_channel(family, key),
                    format!("verrou:released:{rest}")
                );
            }
        }
    }

    #[test]
    fn share_names_are_in_the_keys_slot_and_apart_from_the_locks() {
        for key in AWKWARD_KEYS {
            let slot = Slot::of(key);
            let mut names = vec![slot.counter_key(), slot.family_release_channel(None, key)];
            names.extend(slot.line_keys(key));
            for family in [Family::Semaphore, Family::RwLock] {
                let channel = slot.family_release_channel(Some(family), key);
                assert_eq!(released_key(&channel), Some((Some(family), key)));
                names.push(channel);
                names.extend(slot.family_line_keys(Some(family), key));
            }
            for share in [Share::Permit { limit: 2 }, Share::Read, Share::Write] {
                names.push(slot.holders_key(share, key));
            }
            for name in &names {
                assert_eq!(
                    redis_keyslot(name.as_bytes()),
                    redis_keyslot(key.as_bytes()),
                    "{key:?} -> {name:?}"
                );
            }
            let distinct: std::collections::HashSet<_> = names.iter().collect();
            assert_eq!(distinct.len(), names.len(), "{names:?}");
        }
    }

    #[test]
    fn the_line_is_in_the_lock_keys_slot_and_names_the_key() {
        for key in AWKWARD_KEYS {
            let [line, deadlines] = Slot::of(key).line_keys(key);
            assert!(line.starts_with(LINE_START) && line.ends_with(&format!("}}:{key}")));
            assert!(
                deadlines.starts_with(DEADLINE_START) && deadlines.ends_with(&format!("}}:{key}"))
            );
            for name in [&line, &deadlines] {
                assert_eq!(
                    redis_keyslot(name.as_bytes()),
                    redis_keyslot(key.as_bytes()),
                    "{key:?} -> {name:?}"
                );
            }
        }
    }

    #[test]
    fn other_channels_name_no_key() {
        for channel in [
            "",
            "verrou:released:",
            "verrou:released:{x}:k",
            "other:{1}:k",
        ] {
            assert_eq!(released_key(channel), None, "{channel:?}");
        }
    }
}
