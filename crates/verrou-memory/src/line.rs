//! Waiting lines: the waiters of a key in arrival order, each place with a deadline.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::hash_map::RawEntryMut;
use hashbrown::{DefaultHashBuilder, HashMap};

/// A key with its hash, computed once with the store's hasher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hashed<'a> {
    pub(crate) hash: u64,
    pub(crate) key: &'a str,
}

/// The lines of the keys that have waiters (a line that empties is removed).
#[derive(Debug)]
pub(crate) struct Lines {
    by_key: HashMap<Arc<str>, Line, DefaultHashBuilder>,
}

impl Lines {
    /// No line, hashing with `hasher`.
    pub(crate) fn new(hasher: &DefaultHashBuilder) -> Self {
        Self {
            by_key: HashMap::with_hasher(hasher.clone()),
        }
    }

    /// Whether `waiter` (`None`: a take from outside the line) may take `key` now: nobody
    /// waits (lapsed places are dropped first), or it is at the front.
    pub(crate) fn lets(&mut self, key: Hashed<'_>, waiter: Option<&str>, now: Instant) -> bool {
        self.edit(key, |line| {
            line.drop_lapsed(now);
            line.lets(waiter)
        })
        .unwrap_or(true)
    }

    /// Keeps `waiter`'s place in `key`'s line until `deadline`.
    pub(crate) fn keep(&mut self, key: Hashed<'_>, waiter: &str, deadline: Instant) {
        let (_, line) = self
            .by_key
            .raw_entry_mut()
            .from_key_hashed_nocheck(key.hash, key.key)
            .or_insert_with(|| (Arc::from(key.key), Line::default()));
        line.keep(waiter, deadline);
    }

    /// Removes `waiter`'s place from `key`'s line; whether it was at the front.
    pub(crate) fn remove(&mut self, key: Hashed<'_>, waiter: &str) -> bool {
        self.edit(key, |line| line.remove(waiter)).unwrap_or(false)
    }

    /// Hands `key` over to the front waiter of its line (lapsed places dropped first): its
    /// place lasts at most `window` more. The waiter to wake.
    pub(crate) fn hand_over(
        &mut self,
        key: Hashed<'_>,
        now: Instant,
        window: Duration,
    ) -> Option<Arc<str>> {
        self.edit(key, |line| {
            line.drop_lapsed(now);
            line.hand_over(now, window)
        })
        .flatten()
    }

    /// Hands the free `key` over to the front waiter of its line (lapsed places dropped
    /// first), as [`hand_over`](Self::hand_over) does, unless the front's place lasts no
    /// more than `window` already (it was handed the key, and has the window to take it): a
    /// take refused only because of the line wakes the front, so that a front that is gone
    /// holds the line up for one window, not its whole lease. The waiter to wake.
    pub(crate) fn hand_over_unless_handed(
        &mut self,
        key: Hashed<'_>,
        now: Instant,
        window: Duration,
    ) -> Option<Arc<str>> {
        self.edit(key, |line| {
            line.drop_lapsed(now);
            if line.was_handed(now, window) {
                None
            } else {
                line.hand_over(now, window)
            }
        })
        .flatten()
    }

    /// How many keys have a line.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Changes the line of `key`, if it has one (`None` if not), and removes it if that
    /// emptied it; what `change` returned.
    fn edit<T>(&mut self, key: Hashed<'_>, change: impl FnOnce(&mut Line) -> T) -> Option<T> {
        if self.by_key.is_empty() {
            return None;
        }
        let RawEntryMut::Occupied(mut occupied) = self
            .by_key
            .raw_entry_mut()
            .from_key_hashed_nocheck(key.hash, key.key)
        else {
            return None;
        };
        let changed = change(occupied.get_mut());
        if occupied.get().is_empty() {
            occupied.remove();
        }
        Some(changed)
    }
}

/// The places of one key's line, front first.
#[derive(Debug, Default)]
struct Line {
    places: VecDeque<Place>,
}

/// One waiter's place.
#[derive(Debug)]
struct Place {
    waiter: Arc<str>,
    /// When the place lapses unless the waiter asks again.
    deadline: Instant,
}

impl Line {
    /// Drops the places that lapsed by `now`.
    fn drop_lapsed(&mut self, now: Instant) {
        self.places.retain(|place| place.deadline > now);
    }

    /// Whether nobody waits.
    fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// Whether `waiter` may take the key: nobody waits, or `waiter` is at the front.
    fn lets(&self, waiter: Option<&str>) -> bool {
        self.places
            .front()
            .is_none_or(|front| Some(&*front.waiter) == waiter)
    }

    /// Keeps `waiter`'s place until `deadline`: where it was, or at the back.
    fn keep(&mut self, waiter: &str, deadline: Instant) {
        match self
            .places
            .iter_mut()
            .find(|place| &*place.waiter == waiter)
        {
            Some(place) => place.deadline = deadline,
            None => self.places.push_back(Place {
                waiter: Arc::from(waiter),
                deadline,
            }),
        }
    }

    /// Removes `waiter`'s place; whether it was at the front.
    fn remove(&mut self, waiter: &str) -> bool {
        let Some(index) = self
            .places
            .iter()
            .position(|place| &*place.waiter == waiter)
        else {
            return false;
        };
        self.places.remove(index);
        index == 0
    }

    /// Whether the front waiter was handed the key already: its place lasts no more than
    /// `window` from `now`.
    fn was_handed(&self, now: Instant, window: Duration) -> bool {
        self.places.front().is_some_and(|place| {
            now.checked_add(window)
                .is_some_and(|cut| place.deadline <= cut)
        })
    }

    /// Hands the key over to the front waiter: its place now lasts at most `window` more.
    /// Returns the waiter to wake.
    fn hand_over(&mut self, now: Instant, window: Duration) -> Option<Arc<str>> {
        let front = self.places.front_mut()?;
        if let Some(cut) = now.checked_add(window) {
            front.deadline = front.deadline.min(cut);
        }
        Some(Arc::clone(&front.waiter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_keep_their_places_and_the_front_alone_may_take() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let mut line = Line::default();
        assert!(line.lets(None) && line.lets(Some("a")));
        line.keep("a", later);
        line.keep("b", later);
        line.keep("a", later + Duration::from_secs(1));
        assert!(line.lets(Some("a")) && !line.lets(Some("b")) && !line.lets(None));
        assert_eq!(
            line.hand_over(now, Duration::from_millis(100)).as_deref(),
            Some("a")
        );
        line.drop_lapsed(now + Duration::from_millis(200));
        assert!(
            line.lets(Some("b")),
            "the woken front lapsed after its window"
        );
        assert!(line.remove("b"));
        assert!(line.is_empty());
    }
}
