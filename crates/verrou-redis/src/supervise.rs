//! Keeping the store's fred clients alive.
//!
//! A fred client runs one task (its "router") that writes commands and reads replies. When
//! that task ends with an error, fred 10.1 does not start it again: the client keeps
//! accepting commands, which then wait unanswered until their timeout, forever. This
//! happens, for instance, when a Redis Cluster answers `ASK` to a command that has no
//! write attempt left, during a hash slot migration. The client still says it is connected,
//! so nothing but the task's handle shows it.
//!
//! Starting the same client's task again is not enough: the commands that were waiting for
//! the dead task are dropped without fred counting them out, and a client that counts
//! commands still to come never flushes what it writes (until 200 pile up). So a
//! [`Supervisor`] watches the tasks' handles and, when one ends with an error, logs a
//! warning and puts in its [`Seat`] a new client configured like the dead one (fred's
//! `clone_new`: the same configuration, connection and performance settings and reconnect
//! policy), connected and watched in turn; the store takes its clients from the seats. The
//! pause before a replacement doubles while replacements fail (100 ms up to 2 s), and starts
//! over once one connects. A task that ends without an error was stopped on purpose (`quit`)
//! and is left alone. Dropping the supervisor stops the watching.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use fred::clients::{Client, WithOptions};
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, EventInterface};
use fred::prelude::Options;
use fred::types::ConnectHandle;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use verrou_core::Backoff;

use crate::config::{RECONNECT_MAX_DELAY_MS, RECONNECT_MIN_DELAY_MS};

/// The first pause before a dead client is replaced.
const FIRST_PAUSE: Duration = Duration::from_millis(RECONNECT_MIN_DELAY_MS as u64);

/// The longest pause between replacements.
const LONGEST_PAUSE: Duration = Duration::from_millis(RECONNECT_MAX_DELAY_MS as u64);

/// The place of one client of the store: the client given or built at first, or the one
/// that replaced it. Reading it moves no count shared by the threads that send commands
/// (an `ArcSwap`, not a lock): every command of the store reads it.
#[derive(Debug)]
pub(crate) struct Seat {
    client: ArcSwap<Client>,
    /// Whether the client is a replacement (the store's own, to close with the store).
    replaced: AtomicBool,
}

impl Seat {
    /// A seat for `client`.
    pub(crate) fn new(client: Client) -> Arc<Self> {
        Arc::new(Self {
            client: ArcSwap::from_pointee(client),
            replaced: AtomicBool::new(false),
        })
    }

    /// The client in the seat now.
    pub(crate) fn client(&self) -> Client {
        Client::clone(&self.client.load())
    }

    /// The client in the seat now, with `options` for its commands.
    pub(crate) fn with_options(&self, options: &Options) -> WithOptions<Client> {
        self.client.load().with_options(options)
    }

    /// Whether the client in the seat now is connected.
    pub(crate) fn is_connected(&self) -> bool {
        self.client.load().is_connected()
    }

    /// Whether the client in the seat is a replacement.
    pub(crate) fn is_replaced(&self) -> bool {
        self.replaced.load(Ordering::SeqCst)
    }

    fn replace(&self, client: Client) {
        self.client.store(Arc::new(client));
        self.replaced.store(true, Ordering::SeqCst);
    }
}

/// Watches the connection tasks of clients in seats, and replaces the clients whose task
/// ends with an error, until dropped.
#[derive(Debug)]
pub(crate) struct Supervisor {
    /// Dropped with the supervisor, which ends every watch.
    stop: watch::Sender<()>,
}

impl Supervisor {
    /// A supervisor watching nothing yet.
    pub(crate) fn new() -> Self {
        Self {
            stop: watch::Sender::new(()),
        }
    }

    /// Connects the client of each of `seats` (`init`: its first connection is made, or
    /// fails), all at once, and watches their tasks. Fails with the first connection
    /// error; the tasks of the clients that did connect are then left running, for the
    /// caller to `quit`.
    pub(crate) async fn init(&self, seats: &[Arc<Seat>]) -> Result<(), FredError> {
        let clients: Vec<Client> = seats.iter().map(|seat| seat.client()).collect();
        let tasks =
            futures_util::future::try_join_all(clients.iter().map(ClientLike::init)).await?;
        for (seat, task) in seats.iter().zip(tasks) {
            self.watch(Arc::clone(seat), task, false);
        }
        Ok(())
    }

    /// Starts the connection task of the client of `seat`, which must not be running, and
    /// watches it. Needs a Tokio runtime.
    pub(crate) fn connect(&self, seat: &Arc<Seat>) {
        let task = seat.client().connect();
        self.watch(Arc::clone(seat), task, true);
    }

    /// Watches `task`, the connection task of the client of `seat`, on a task of its own;
    /// `connecting` if it is still making its first connection.
    fn watch(&self, seat: Arc<Seat>, task: ConnectHandle, connecting: bool) {
        tokio::spawn(supervise(seat, task, connecting, self.stop.subscribe()));
    }
}

/// Waits for `task` to end and, while it ends with an error, replaces the client of `seat`
/// and watches the new one's task, until `stop` is closed.
async fn supervise(
    seat: Arc<Seat>,
    mut task: ConnectHandle,
    mut connecting: bool,
    mut stop: watch::Receiver<()>,
) {
    let mut client = seat.client();
    let mut connections = client.reconnect_rx();
    let mut backoff = Backoff::new(FIRST_PAUSE, LONGEST_PAUSE);
    loop {
        let ended = loop {
            tokio::select! {
                ended = &mut task => break ended,
                connected = connections.recv(), if connecting => {
                    connecting = false;
                    // Closed only by `quit`, after which the task ends without error.
                    if !matches!(connected, Err(RecvError::Closed)) && backoff.reset() {
                        tracing::info!(client = client.id(), "the new Redis client is connected");
                    }
                }
                _ = stop.changed() => return,
            }
        };
        let error = match ended {
            // Stopped on purpose (`quit`), or its reconnect policy gave up.
            Ok(Ok(())) => return,
            Ok(Err(error)) => error.to_string(),
            Err(failure) => failure.to_string(),
        };
        let pause = backoff.next_pause();
        tracing::warn!(
            client = client.id(),
            %error,
            replaced_in = ?pause,
            "the connection task of a Redis client ended with an error; replacing the client"
        );
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        client = client.clone_new();
        // Listen before connecting, so that the first connection is heard.
        connections = client.reconnect_rx();
        connecting = true;
        task = client.connect();
        seat.replace(client.clone());
    }
}
