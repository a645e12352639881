//! Names that live in a lock key's Redis Cluster hash slot: the fencing counter and the
//! release channel.
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
//! Releases are published on `verrou:released:{N}:KEY` (`KEY` the full Redis key, prefix
//! included): one sharded channel per lock key, in its slot.

use std::sync::LazyLock;

use fred::util::redis_keyslot;

/// Hash slots in Redis Cluster (and in the key hashing of a single server, unused there).
const SLOTS: usize = 16_384;

/// What every release channel starts with, up to the slot's number.
pub(crate) const CHANNEL_START: &str = "verrou:released:{";

/// For each hash slot, the smallest number whose decimal text hashes to it.
static SLOT_TAGS: LazyLock<Vec<u32>> = LazyLock::new(|| {
    let mut tags = vec![None; SLOTS];
    let mut missing = SLOTS;
    // Every slot is reached well before 2^20 numbers (a test checks it).
    for number in 0..u32::MAX {
        let slot = &mut tags[usize::from(redis_keyslot(number.to_string().as_bytes())) % SLOTS];
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

/// The number that puts a name in the hash slot of `key`.
fn tag(key: &str) -> u32 {
    SLOT_TAGS[usize::from(redis_keyslot(key.as_bytes())) % SLOTS]
}

/// The fencing counter for `lock_key`: the counter of its hash slot.
pub(crate) fn counter_key(lock_key: &str) -> String {
    format!("verrou:fence:{{{}}}", tag(lock_key))
}

/// The sharded channel on which releases of `lock_key` are published.
pub(crate) fn release_channel(lock_key: &str) -> String {
    format!("{CHANNEL_START}{}}}:{lock_key}", tag(lock_key))
}

/// The lock key whose releases `channel` carries, if it is a release channel.
pub(crate) fn released_key(channel: &str) -> Option<&str> {
    let (number, key) = channel.strip_prefix(CHANNEL_START)?.split_once("}:")?;
    number
        .bytes()
        .all(|byte| byte.is_ascii_digit())
        .then_some(key)
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
    fn every_slot_has_a_tag_that_hashes_to_it() {
        for (slot, tag) in SLOT_TAGS.iter().enumerate() {
            assert_eq!(usize::from(redis_keyslot(tag.to_string().as_bytes())), slot);
            assert!(*tag < 1 << 20, "slot {slot}: tag {tag}");
        }
    }

    #[test]
    fn the_counter_is_in_the_lock_keys_slot_whatever_its_braces() {
        for key in AWKWARD_KEYS {
            let counter = counter_key(key);
            assert!(counter.starts_with("verrou:fence:{"), "{counter}");
            assert_eq!(
                redis_keyslot(counter.as_bytes()),
                redis_keyslot(key.as_bytes()),
                "{key:?} -> {counter:?}"
            );
        }
    }

    #[test]
    fn the_release_channel_is_in_the_lock_keys_slot_and_names_the_key() {
        for key in AWKWARD_KEYS
            .into_iter()
            .chain(["}:", "verrou:released:{1}:x"])
        {
            let channel = release_channel(key);
            assert_eq!(
                redis_keyslot(channel.as_bytes()),
                redis_keyslot(key.as_bytes()),
                "{key:?} -> {channel:?}"
            );
            assert_eq!(released_key(&channel), Some(key), "{channel:?}");
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
