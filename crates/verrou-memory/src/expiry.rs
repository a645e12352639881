//! A queue of expiry deadlines, so expired entries are dropped without scanning the map.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Deadlines of the entries of a map, earliest first, each naming its entry by a `K` (its
/// key, or its key's hash).
///
/// Entries are never removed from the queue when their lock is released or extended: a
/// deadline carries the entry's generation and is ignored when the entry has moved on. The
/// queue is rebuilt when such stale deadlines outnumber the live entries, so it never holds
/// more than about twice as many deadlines as the map has entries.
#[derive(Debug)]
pub(crate) struct ExpiryQueue<K> {
    heap: BinaryHeap<Reverse<Deadline<K>>>,
}

impl<K: Ord> Default for ExpiryQueue<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }
}

/// When the entry named `key` with `generation` expires.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Deadline<K> {
    pub(crate) at: Instant,
    pub(crate) generation: u64,
    pub(crate) key: K,
}

impl<K: Ord> ExpiryQueue<K> {
    pub(crate) fn push(&mut self, deadline: Deadline<K>) {
        self.heap.push(Reverse(deadline));
    }

    /// Removes and returns the earliest deadline if it is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Deadline<K>> {
        if self.heap.peek()?.0.at > now {
            return None;
        }
        self.heap.pop().map(|Reverse(deadline)| deadline)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Rebuilds the queue from the live deadlines when it has grown well past them.
    pub(crate) fn compact_if_bloated(
        &mut self,
        live: usize,
        deadlines: impl FnOnce() -> Vec<Deadline<K>>,
    ) {
        if self.heap.len() > 2 * live + 64 {
            self.heap = deadlines().into_iter().map(Reverse).collect();
        }
    }
}
