//! The fred clients a [`RedisStore`](crate::RedisStore) sends its commands through.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use fred::clients::{Client, WithOptions};
use fred::interfaces::ClientLike;
use fred::prelude::Options;

use crate::supervise::Seat;

/// The fred clients the store sends commands through, one per seat (see
/// [`crate::supervise`]).
pub(crate) struct Connection {
    /// One seat per client.
    pub(crate) seats: Vec<Arc<Seat>>,
    /// Where the round robin over the seats is.
    next: AtomicUsize,
    /// Whether the store built the clients
    /// ([`RedisStore::connect`](crate::RedisStore::connect)): then it closes them when
    /// dropped. Otherwise it closes only the replacements it made.
    owned: bool,
}

impl Connection {
    /// The store's own clients, or the caller's.
    pub(crate) fn new(clients: &[Client], owned: bool) -> Self {
        Self {
            seats: clients.iter().cloned().map(Seat::new).collect(),
            next: AtomicUsize::new(0),
            owned,
        }
    }

    /// The client for the next command: the only one, or else the next connected one, round
    /// robin (the next one if none is connected).
    pub(crate) fn client(&self) -> Client {
        self.next_seat().client()
    }

    /// The client for the next command (see [`client`](Self::client)), with `options` for
    /// its commands.
    pub(crate) fn with_options(&self, options: &Options) -> WithOptions<Client> {
        self.next_seat().with_options(options)
    }

    /// The seat of the next command's client.
    fn next_seat(&self) -> &Seat {
        // One client (the default): nothing to choose, and no counter shared by every
        // operation to bump.
        if let [seat] = self.seats.as_slice() {
            return seat;
        }
        let count = self.seats.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| &*self.seats[(first + offset) % count])
            .find(|seat| seat.is_connected())
            .unwrap_or(&self.seats[first % count])
    }

    /// Tells the clients the store should close to quit, on a task of the current Tokio
    /// runtime if there is one (without one, the runtime that ran the connections is gone,
    /// and them with it).
    pub(crate) fn close_in_background(&self) {
        let closing: Vec<Client> = self
            .seats
            .iter()
            .filter(|seat| self.owned || seat.is_replaced())
            .map(|seat| seat.client())
            .collect();
        if closing.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for client in closing {
                    // Nothing to do if it fails: the connection is unusable either way.
                    let _ = client.quit().await;
                }
            });
        }
    }
}
