//! The boards on which a store reports the hand-overs it hears: one for its locks and one
//! per family of shares (semaphores, read-write locks), all fed by its one listener.

use std::sync::Arc;

use verrou_core::{Family, ReleaseFeed, Waiters};

use crate::family::family_of;

/// Which board: the locks', or a family's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Board {
    /// The locks' board.
    Locks,
    /// The board of a family of shares.
    Shares(Family),
}

impl Board {
    /// Every board.
    pub(crate) const ALL: [Board; 3] = [
        Board::Locks,
        Board::Shares(Family::Semaphore),
        Board::Shares(Family::RwLock),
    ];

    /// The board a hand-over of the line `line_key` goes to, and the key it is for.
    pub(crate) fn of_line_key(line_key: &str) -> (Self, &str) {
        family_of(line_key).map_or((Board::Locks, line_key), |(family, key)| {
            (Board::Shares(family), key)
        })
    }
}

/// A store's boards.
#[derive(Debug)]
pub(crate) struct Boards {
    locks: Waiters,
    semaphores: Waiters,
    rw_locks: Waiters,
}

impl Boards {
    /// The boards, each watching its keys through the feed `feed` makes for it.
    pub(crate) fn new<F: ReleaseFeed>(feed: impl Fn(Board) -> F) -> Self {
        Self {
            locks: Waiters::new(feed(Board::Locks)),
            semaphores: Waiters::new(feed(Board::Shares(Family::Semaphore))),
            rw_locks: Waiters::new(feed(Board::Shares(Family::RwLock))),
        }
    }

    /// The board `board`.
    pub(crate) fn get(&self, board: Board) -> &Waiters {
        match board {
            Board::Locks => &self.locks,
            Board::Shares(Family::RwLock) => &self.rw_locks,
            Board::Shares(Family::Semaphore | _) => &self.semaphores,
        }
    }

    /// Every key watched now on every board, with its board.
    pub(crate) fn watched(&self) -> Vec<(Board, Arc<str>)> {
        Board::ALL
            .into_iter()
            .flat_map(|board| {
                self.get(board)
                    .watched()
                    .into_iter()
                    .map(move |key| (board, key))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_keys_route_to_their_board() {
        assert_eq!(Board::of_line_key("job 7"), (Board::Locks, "job 7"));
        assert_eq!(
            Board::of_line_key("\u{1}rw_lock:cache"),
            (Board::Shares(Family::RwLock), "cache")
        );
        assert_eq!(
            Board::of_line_key("\u{1}semaphore:pool"),
            (Board::Shares(Family::Semaphore), "pool")
        );
    }
}
