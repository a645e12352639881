//! What keeps a free key from the front waiter of its line: the key that
//! [`LEAVE_LINE`](crate::scripts::LEAVE_LINE) and [`NEXT_TAKER`](crate::scripts::NEXT_TAKER)
//! look at before they hand a key over or name who may take it.

use verrou_core::{Family, Share};

use crate::slots::Slot;

/// The argument that tells those scripts that nothing keeps the front out.
pub(crate) const OPEN: &str = "open";

/// The argument that tells those scripts that the gate is a lock key itself: free when it
/// does not exist or is reserved for a waiter, and reserved for the waiter it is handed to.
pub(crate) const LOCK: &str = "lock";

/// The gate of one key of a family.
pub(crate) struct Gate {
    /// The key's slot.
    pub(crate) slot: Slot,
    /// The Redis key whose existence keeps the front out: the lock key itself, or a
    /// read-write lock's writer set (readers let the front in: it may be a reader too). A
    /// semaphore's permits set, for an open gate.
    pub(crate) key: String,
    /// What tells the scripts the kind of gate, after the keys: [`LOCK`] for a lock key;
    /// [`OPEN`] when nothing keeps the front out (a semaphore's front may fit beside any
    /// number of permits, its limit is its own, or asks once in vain); nothing for a
    /// read-write lock's writer set.
    pub(crate) argument: Option<&'static str>,
    /// The other holders of the key, which must be gone too for nobody to hold it: a
    /// read-write lock's readers set.
    pub(crate) also_held_by: Option<String>,
}

impl Gate {
    /// The gate of `redis_key` in `family` (`None`: plain locks).
    pub(crate) fn new(family: Option<Family>, redis_key: &str) -> Self {
        let slot = Slot::of(redis_key);
        let (key, argument, also_held_by) = match family {
            None => (redis_key.to_owned(), Some(LOCK), None),
            Some(Family::RwLock) => (
                slot.holders_key(Share::Write, redis_key),
                None,
                Some(slot.holders_key(Share::Read, redis_key)),
            ),
            Some(Family::Semaphore | _) => (
                slot.holders_key(Share::Permit { limit: 1 }, redis_key),
                Some(OPEN),
                None,
            ),
        };
        Self {
            slot,
            key,
            argument,
            also_held_by,
        }
    }
}
