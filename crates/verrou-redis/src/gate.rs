//! What keeps a free key from the front waiter of its line: the key that
//! [`LEAVE_LINE`](crate::scripts::LEAVE_LINE) and [`NEXT_TAKER`](crate::scripts::NEXT_TAKER)
//! look at before they hand a key over or name who may take it.

use verrou_core::{Family, Share};

use crate::slots::Slot;

/// The argument that tells those scripts that nothing keeps the front out.
pub(crate) const OPEN: &str = "open";

/// The gate of one key of a family.
pub(crate) struct Gate {
    /// The key's slot.
    pub(crate) slot: Slot,
    /// The Redis key whose existence keeps the front out: the lock key itself, or a
    /// read-write lock's writer set (readers let the front in: it may be a reader too). A
    /// semaphore's permits set, for an open gate.
    pub(crate) key: String,
    /// Whether nothing keeps the front out: a semaphore's front may fit beside any number of
    /// permits (its limit is its own), or asks once in vain.
    pub(crate) open: bool,
}

impl Gate {
    /// The gate of `redis_key` in `family` (`None`: plain locks).
    pub(crate) fn new(family: Option<Family>, redis_key: &str) -> Self {
        let slot = Slot::of(redis_key);
        let (key, open) = match family {
            None => (redis_key.to_owned(), false),
            Some(Family::RwLock) => (slot.holders_key(Share::Write, redis_key), false),
            Some(Family::Semaphore | _) => (
                slot.holders_key(Share::Permit { limit: 1 }, redis_key),
                true,
            ),
        };
        Self { slot, key, open }
    }
}
