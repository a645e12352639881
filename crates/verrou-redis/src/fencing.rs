//! Where fencing tokens come from: one counter per Redis Cluster hash slot.
//!
//! A token must grow with every grant of a key, so its counter can never expire, and it must
//! live in the lock key's hash slot so that the take script may touch both on Redis Cluster.
//! A counter per lock key would leave one Redis key behind, forever, for every lock name ever
//! used; a counter per hash slot gives every key of the slot strictly growing tokens with at
//! most 16,384 counters, and is in the right slot by construction, whatever braces the lock
//! key contains. The counter of slot `s` is `verrou:fence:{N}`, where `N` is the smallest
//! number whose decimal text hashes to `s`.

use std::sync::LazyLock;

use fred::util::redis_keyslot;

/// Hash slots in Redis Cluster (and in the key hashing of a single server, unused there).
const SLOTS: usize = 16_384;

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

/// The fencing counter for `lock_key`: the counter of its hash slot.
pub(crate) fn counter_key(lock_key: &str) -> String {
    let slot = usize::from(redis_keyslot(lock_key.as_bytes())) % SLOTS;
    format!("verrou:fence:{{{}}}", SLOT_TAGS[slot])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        for (slot, tag) in SLOT_TAGS.iter().enumerate() {
            assert_eq!(usize::from(redis_keyslot(tag.to_string().as_bytes())), slot);
            assert!(*tag < 1 << 20, "slot {slot}: tag {tag}");
        }
    }

    #[test]
    fn the_counter_is_in_the_lock_keys_slot_whatever_its_braces() {
        for key in [
            "job:7",
            "{user:42}:profile",
            "prefix:{tag}name",
            "a}b",
            "a{b",
            "{}x",
            "x{}y{z}",
            "ключ-🔒",
            "verrou:fence:{12}",
        ] {
            let counter = counter_key(key);
            assert!(counter.starts_with("verrou:fence:{"), "{counter}");
            assert_eq!(
                redis_keyslot(counter.as_bytes()),
                redis_keyslot(key.as_bytes()),
                "{key:?} -> {counter:?}"
            );
        }
    }
}
