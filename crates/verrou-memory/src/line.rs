//! The waiting line of one key: waiters in arrival order, each place with a deadline.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The places of one key's line, front first.
#[derive(Debug, Default)]
pub(crate) struct Line {
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
    pub(crate) fn drop_lapsed(&mut self, now: Instant) {
        self.places.retain(|place| place.deadline > now);
    }

    /// Whether nobody waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// Whether `waiter` may take the key: nobody waits, or `waiter` is at the front.
    pub(crate) fn lets(&self, waiter: Option<&str>) -> bool {
        self.places
            .front()
            .is_none_or(|front| Some(&*front.waiter) == waiter)
    }

    /// Keeps `waiter`'s place until `deadline`: where it was, or at the back.
    pub(crate) fn keep(&mut self, waiter: &str, deadline: Instant) {
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
    pub(crate) fn remove(&mut self, waiter: &str) -> bool {
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

    /// Hands the key over to the front waiter: its place now lasts at most `window` more.
    /// Returns the waiter to wake.
    pub(crate) fn hand_over(&mut self, now: Instant, window: Duration) -> Option<Arc<str>> {
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
